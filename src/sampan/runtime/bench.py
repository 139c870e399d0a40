"""Latency and throughput of a package per backend and batch size, and the best one here."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sampan.errors import ConfigError
from sampan.store import Store
from sampan.tasks.base import get_task


@dataclass
class BenchRow:
    backend: str
    device: str
    batch: int
    threads: int | None
    p50_ms: float
    p99_ms: float
    throughput: float  # samples per second
    runs: int


def _time_engine(engine: Any, batch: np.ndarray, seconds: float, min_runs: int) -> list[float]:
    for _ in range(3):  # warm-up: first runs allocate and pick kernels
        engine.predict(batch)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        started = time.perf_counter()
        engine.predict(batch)
        times.append(time.perf_counter() - started)
        if len(times) >= 10_000:
            break
    return times


def benchmark(
    ref: str,
    backends: list[str] | None = None,
    batches: tuple[int, ...] = (1, 8, 32),
    threads: int | None = None,
    seconds: float = 2.0,
    min_runs: int = 10,
    store: Store | None = None,
    device: str | None = "auto",
) -> list[BenchRow]:
    """Time every backend that can run the package at each batch size (random inputs of the
    package's input shape: timing does not depend on the values)."""
    from sampan.runtime.engine import available_backends, create_engine

    store = store or Store()
    package = store.open(ref)
    runnable = available_backends(package)
    chosen = backends or runnable
    missing = [b for b in chosen if b not in runnable]
    if missing:
        raise ConfigError(
            f"{package.ref} cannot run on {', '.join(missing)} here (runnable: "
            f"{', '.join(runnable) or 'none'}); `sampan export` adds ONNX."
        )
    shape, dtype = get_task(package.manifest.task).input_spec(package.manifest.preprocessing)
    rng = np.random.default_rng(0)
    rows = []
    for backend in chosen:
        options: dict[str, Any] = {"threads": threads} if threads else {}
        if backend == "torch" and threads:
            import torch

            torch.set_num_threads(threads)
        engine = create_engine(package, backend=backend, device=device, **options)
        for size in batches:
            batch = rng.standard_normal((size, *shape)).astype(dtype)
            times = np.array(_time_engine(engine, batch, seconds, min_runs)) * 1000
            rows.append(
                BenchRow(
                    backend,
                    engine.device,
                    size,
                    threads,
                    float(np.percentile(times, 50)),
                    float(np.percentile(times, 99)),
                    float(size * 1000 / times.mean()),
                    len(times),
                )
            )
    return rows


def best(rows: list[BenchRow]) -> dict[str, Any]:
    """The backend with the highest throughput at the largest batch measured."""
    largest = max(r.batch for r in rows)
    winner = max((r for r in rows if r.batch == largest), key=lambda r: r.throughput)
    return {
        "backend": winner.backend,
        "threads": winner.threads,
        "measured_batch": largest,
        "throughput": round(winner.throughput, 2),
        "rows": [asdict(r) for r in rows],
    }
