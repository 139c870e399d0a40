"""What the benchmarks share: a resnet18 package, briefly trained on the digits, exported."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sampan
from sampan.data.digits import export_digits
from sampan.export import export
from sampan.store import Store


def resnet18_onnx(home: Path, size: int, val_fraction: float = 0.5) -> tuple[Any, Path]:
    """(fp32 ONNX package, digits folder). One epoch of training: these measure speed, and
    calibration and parity still see real images."""
    store = Store(home)
    data = export_digits(home / "digits")
    trained = sampan.train(
        data=str(data),
        name="r18",
        arch="resnet18",
        input_size=size,
        channels=3,
        epochs=1,
        batch_size=32,
        val_fraction=val_fraction,
        patience=0,
        device="cpu",
        quiet=True,
        store=store,
    )
    return export(trained.package.ref, "onnx", store=store, samples=64), data


def timed(
    fn: Callable[[Any], Any], batch: Any, seconds: float, warmup: int = 2, min_calls: int = 5
) -> list[float]:
    """Seconds per call of fn(batch): warm-up calls first, then calls for `seconds` (at least
    min_calls of them)."""
    for _ in range(warmup):
        fn(batch)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < min_calls:
        started = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - started)
    return times
