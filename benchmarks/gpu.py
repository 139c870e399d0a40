"""Inference on an NVIDIA GPU: every CUDA path sampan has, checked for parity, then timed.

One run builds a resnet18 package (trained briefly on the digits on the GPU with amp='auto',
so the mixed-precision training path runs too), exports it to ONNX and converts it to fp16,
then checks each runner's top-1 against torch fp32 on the CPU on real digits images, and times
batches at 224 px through:

    torch eager         sampan's torch engine on cuda, fp32
    torch amp           the same under autocast (bf16 where the GPU has it)
    torch compile       the same through torch.compile, fp32
    ort cuda fp32       sampan's onnxruntime engine on the fp32 export, device='cuda'
    ort cuda fp16       the same on the fp16 package (`sampan compress --fp16`)
    raw session         onnxruntime.InferenceSession(model.onnx, [that provider]).run(...)

Every call is host to host: a numpy batch in, numpy logits out, as a user's code sees it.
The runners alternate in rounds so noise hits all of them; medians are reported.

    python benchmarks/gpu.py [--size 224] [--batch 8,32] [--rounds 5] [--seconds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import timed

import sampan
from sampan.compress import compress
from sampan.data.digits import export_digits
from sampan.export import export
from sampan.runtime.engine import create_engine
from sampan.store import Store


def gpu_timed(fn, batch: np.ndarray, seconds: float) -> list[float]:
    # At least 200 calls: a GPU call takes about a millisecond, and fewer leave the medians
    # at the mercy of a busy host.
    return timed(fn, batch, seconds, warmup=5, min_calls=200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", default="8,32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    os.environ["SAMPAN_QUIET"] = "1"
    import onnxruntime as ort
    import torch

    from sampan.devices import list_devices

    for info in list_devices():
        print(f"device {info.id}: {info.name} {info.memory_gb or ''} {info.details}")
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(f"onnxruntime providers: {', '.join(ort.get_available_providers())}")

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        store = Store(home)
        data = export_digits(home / "digits")
        started = time.perf_counter()
        trained = sampan.train(
            data=str(data),
            name="r18",
            arch="resnet18",
            input_size=args.size,
            channels=3,
            epochs=2,
            batch_size=64,
            patience=0,
            device=args.device,
            quiet=True,
            store=store,
        )
        print(
            f"trained resnet18 on {args.device} (amp auto) in {time.perf_counter() - started:.1f}"
            f" s: val accuracy {trained.metrics['accuracy']:.4f}"
        )
        fp32 = export(trained.package.ref, "onnx", store=store, samples=64)
        fp16 = compress(fp32.ref, method="fp16", store=store, samples=64, force=True)
        entry = fp16.manifest.exports["onnx"]
        print(
            f"fp16 package: accuracy {entry['accuracy_before']:.4f} -> "
            f"{entry['accuracy_after']:.4f}, {entry['size_before_bytes'] / 1e6:.1f} -> "
            f"{entry['size_after_bytes'] / 1e6:.1f} MB"
        )
        fp32_pkg, fp16_pkg = store.open(fp32.ref), store.open(fp16.ref)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runners = {
                "torch eager": create_engine(fp32_pkg, "torch", device=args.device),
                "torch amp": create_engine(fp32_pkg, "torch", device=args.device, amp=True),
                "torch compile": create_engine(fp32_pkg, "torch", device=args.device, compile=True),
                "ort cuda fp32": create_engine(fp32_pkg, "onnxruntime", device=args.device),
                "ort cuda fp16": create_engine(fp16_pkg, "onnxruntime", device=args.device),
            }
        for warning in caught:
            if issubclass(warning.category, RuntimeWarning):  # ours: fallbacks
                print(f"warning: {warning.message}")
        provider = runners["ort cuda fp32"].device
        print(f"onnxruntime engine runs on: {provider}")
        raw = ort.InferenceSession(str(fp32_pkg.export_path("onnx")), providers=[provider])
        name = raw.get_inputs()[0].name
        calls = {key: engine.predict for key, engine in runners.items()}
        calls["raw session"] = lambda x: raw.run(None, {name: x})[0]

        # Parity on real images: every GPU path vs torch fp32 on the CPU.
        files = sorted(data.glob("*/*.png"))[::6][:256]
        reference = sampan.load(fp32.ref, backend="torch", device="cpu", store=store)
        batch_in = reference.task.collate(reference._decoded(files), reference.contract)
        expected = reference.engine.predict(batch_in)
        print(f"parity on {len(files)} digits images vs torch fp32 on the CPU:")
        for key, fn in calls.items():
            got = np.concatenate([fn(batch_in[i : i + 64]) for i in range(0, len(files), 64)])
            agree = np.mean(got.argmax(1) == expected.argmax(1))
            diff = np.abs(got - expected).max()
            print(f"  {key:>14}: top-1 agreement {agree:.4f}, max |diff| {diff:.2e}")

        # A serving process that never imports torch still gets the GPU.
        probe = (
            "import sys, warnings; warnings.simplefilter('ignore');"
            "from sampan.store import Store; from sampan.runtime.engine import create_engine;"
            f"e = create_engine(Store({str(home)!r}).open({fp32.ref!r}), 'onnxruntime', "
            f"device={args.device!r}); print(e.device, 'torch imported:', 'torch' in sys.modules)"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=False
        )
        print(f"onnxruntime engine in a fresh process: {(result.stdout + result.stderr).strip()}")

        sizes = [int(b) for b in args.batch.split(",")]
        rng = np.random.default_rng(0)
        for size in sizes:
            batch = rng.standard_normal((size, 3, args.size, args.size)).astype(np.float32)
            samples: dict[str, list[float]] = {k: [] for k in calls}
            for _ in range(args.rounds):
                for key, fn in calls.items():
                    samples[key] += gpu_timed(fn, batch, args.seconds)
            ms = {k: statistics.median(v) * 1000 for k, v in samples.items()}
            print(f"resnet18 @ {args.size} px, batch {size}, median of {args.rounds} rounds")
            for key, value in ms.items():
                print(f"  {key:>14}  {value:8.3f} ms/batch  {size * 1000 / value:8.1f} images/s")
            print(
                f"  ort cuda fp32 vs torch eager : {ms['torch eager'] / ms['ort cuda fp32']:.2f}x"
            )
            print(
                f"  ort cuda fp16 vs fp32        : {ms['ort cuda fp32'] / ms['ort cuda fp16']:.2f}x"
            )
            print(f"  torch amp vs torch eager     : {ms['torch eager'] / ms['torch amp']:.2f}x")
            print(
                f"  torch compile vs eager       : {ms['torch eager'] / ms['torch compile']:.2f}x"
            )
            overhead = (ms["ort cuda fp32"] / ms["raw session"] - 1) * 100
            print(f"  engine overhead vs raw session: {overhead:+.1f}%")


if __name__ == "__main__":
    main()
