"""Inference on the CPU: onnxruntime fp32 vs torch eager, INT8 vs fp32, engine vs raw session.

One run builds a resnet18 package (briefly trained on the digits, so INT8 calibration sees real
images), exports it to ONNX, quantizes it to INT8, then times batches of 8 at 224 px through:

    torch eager     sampan's torch engine (= model(x) under inference_mode)
    ort fp32        sampan's onnxruntime engine on the fp32 export
    ort int8        sampan's onnxruntime engine on the INT8 export
    raw session     onnxruntime.InferenceSession(model.onnx).run(...) with no sampan code

The four alternate in rounds so machine noise hits all of them; medians are reported. Each
round also times one large fp32 matrix product (numpy's BLAS on every core), a reference for
the arithmetic rate these cores reach, against which the fp32 paths' GFLOP/s are put. Where
torch eager is already near it, no fp32 engine can be much faster (on AVX-512 CPUs torch's
oneDNN kernels are; on AVX2 ones less so).

    python benchmarks/inference.py [--size 224] [--batch 8] [--rounds 5] [--seconds 2]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
from _common import resnet18_onnx, timed

from sampan.compress import compress
from sampan.runtime.engine import available_backends, create_engine
from sampan.store import Store


def build_packages(home: Path, size: int) -> tuple[str, str, dict]:
    store = Store(home)
    fp32, _ = resnet18_onnx(home, size, val_fraction=0.9)
    int8 = compress(fp32.ref, store=store, samples=64, force=True)
    return fp32.ref, int8.ref, int8.manifest.exports["onnx"]


def network_macs(network, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of a batch of one, from the convolutions and
    linear layers (what dominates a resnet)."""
    import torch

    total = 0

    def count(module, _inputs, output) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += output.numel() * per_output
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in network.modules()]
    with torch.inference_mode():
        network(torch.zeros(1, *input_shape))
    for hook in hooks:
        hook.remove()
    return total


def sgemm_gflops(n: int = 2048) -> float:
    """The best of a few n x n fp32 matrix products, in GFLOP/s."""
    a = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    times = timed(lambda x: x @ x, a, 0.5, warmup=1, min_calls=3)
    return 2 * n**3 / min(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    os.environ["SAMPAN_QUIET"] = "1"
    import onnxruntime as ort
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        fp32_ref, int8_ref, int8_entry = build_packages(home, args.size)
        store = Store(home)
        fp32_pkg, int8_pkg = store.open(fp32_ref), store.open(int8_ref)
        runners = {
            "torch eager": create_engine(fp32_pkg, "torch", device="cpu").predict,
            "ort fp32": create_engine(fp32_pkg, "onnxruntime", device="cpu").predict,
            "ort int8": create_engine(int8_pkg, "onnxruntime", device="cpu").predict,
        }
        if "openvino" in available_backends(fp32_pkg):
            runners["openvino fp32"] = create_engine(fp32_pkg, "openvino", device="cpu").predict
            runners["openvino int8"] = create_engine(int8_pkg, "openvino", device="cpu").predict
        raw = ort.InferenceSession(
            str(fp32_pkg.export_path("onnx")), providers=["CPUExecutionProvider"]
        )
        name = raw.get_inputs()[0].name
        runners["raw session"] = lambda x: raw.run(None, {name: x})[0]
        batch = (
            np.random.default_rng(0)
            .standard_normal((args.batch, 3, args.size, args.size))
            .astype(np.float32)
        )
        samples: dict[str, list[float]] = {k: [] for k in runners}
        ceiling = []
        for _ in range(args.rounds):
            for key, fn in runners.items():
                samples[key] += timed(fn, batch, args.seconds)
            ceiling.append(sgemm_gflops())
        torch_engine = create_engine(fp32_pkg, "torch", device="cpu")
        macs = network_macs(torch_engine.network, (3, args.size, args.size))
    ms = {k: statistics.median(v) * 1000 for k, v in samples.items()}
    from sampan.devices.cpu import cpu_features

    cpuinfo = Path("/proc/cpuinfo")
    model, isa = cpu_features(cpuinfo.read_text() if cpuinfo.is_file() else "")
    print(
        f"machine: {platform.machine()} {model or '?'}, {os.cpu_count()} cores "
        f"({', '.join(isa) or 'ISA unknown'}), torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}"
    )
    print(f"resnet18 @ {args.size} px, batch {args.batch}, median of {args.rounds} rounds")
    for key, value in ms.items():
        print(f"{key:>12}  {value:8.2f} ms/batch  {args.batch * 1000 / value:7.1f} images/s")
    print(f"onnxruntime fp32 vs torch eager : {ms['torch eager'] / ms['ort fp32']:.2f}x faster")
    print(f"INT8 vs onnxruntime fp32        : {ms['ort fp32'] / ms['ort int8']:.2f}x faster")
    print(
        f"engine overhead vs raw session  : {(ms['ort fp32'] / ms['raw session'] - 1) * 100:+.1f}%"
    )
    # The arithmetic each fp32 path gets through, against a large matrix product's.
    best = statistics.median(ceiling)
    print(f"{'fp32 matmul':>14}: {best:6.1f} GFLOP/s (numpy's BLAS, 2048^3: the reference)")
    gflops = {
        key: 2 * macs * args.batch / (ms[key] / 1000) / 1e9
        for key in ("torch eager", "ort fp32", "openvino fp32")
        if key in ms
    }
    for key, rate in gflops.items():
        print(
            f"{key:>14}: {rate:6.1f} GFLOP/s, {rate / best:.0%} of the matmul's "
            f"({macs / 1e9:.2f} GMAC an image)"
        )
    goal = 1.6 * gflops["torch eager"]
    print(
        f"the goal (ort fp32 >= 1.6x torch eager) needs {goal:.1f} GFLOP/s here, "
        f"{goal / best:.0%} of the matmul's"
    )
    before, after = int8_entry["accuracy_before"], int8_entry["accuracy_after"]
    size_before = int8_entry["size_before_bytes"] / 1e6
    size_after = int8_entry["size_after_bytes"] / 1e6
    print(
        f"INT8 accuracy {before:.4f} -> {after:.4f} (model trained 1 epoch; speed is the "
        f"point here), size {size_before:.1f} -> {size_after:.1f} MB"
    )


if __name__ == "__main__":
    main()
