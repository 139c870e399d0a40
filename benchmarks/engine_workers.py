"""Engine threads or engine worker processes: which serves faster.

The server drives each engine instance from a thread of its own (the engines release the GIL
while they compute). The alternative is a worker process per instance: the engine thread
then only hands each batch to its process through shared memory and waits for the outputs,
and the engine's own Python (onnxruntime's run wrapper, input and output conversion) no longer
shares the interpreter with the event loop. This script measures both, in one run on the same
machine: `sampan serve` as it is, and the same server with each engine instance moved into a
worker process (the prototype below; the batcher, routes and everything else unchanged),
over the resnet18 package of benchmarks/serving.py (3x64x64, onnxruntime), driven by wrk with
the same body at concurrency 1, 8 and 32, the two servers alternating for several rounds.
Prints requests/s and p50 for each, and per concurrency the median ratio process / thread.

    apt-get install wrk
    python benchmarks/engine_workers.py [--seconds 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from serving import package_and_body, run_wrk, start_server, stop_server, wait_ready

HERE = Path(__file__).resolve()


def _worker(path: str, backend: str, device: str | None, options: dict, conn, names) -> None:
    """The worker process: load the engine, then run each batch the parent put in shared
    memory, writing the outputs back beside it."""
    from sampan.package import open_package
    from sampan.runtime.engine import create_engine

    engine = create_engine(open_package(Path(path)), backend=backend, device=device, **options)
    inputs, outputs = (shared_memory.SharedMemory(name=n) for n in names)
    shape = (-1, *engine.input_shape)
    conn.send("ready")
    while (rows := conn.recv()) is not None:
        try:
            x = np.ndarray((rows, *shape[1:]), np.float32, buffer=inputs.buf)
            y = np.ascontiguousarray(engine.predict(x), dtype=np.float32)
            np.ndarray(y.shape, np.float32, buffer=outputs.buf)[...] = y
            conn.send(y.shape)
        except Exception as exc:  # the parent raises it for the batch's callers
            conn.send(exc)


class ProcessEngine:
    """An engine instance in a worker process, with the interface the server uses: predict()
    copies the batch into shared memory, and the worker answers through the same."""

    MAX_ROWS = 64

    def __init__(self, package, backend: str = "onnxruntime", device=None, **options: Any):
        from sampan.runtime.engine import create_engine

        # a one-thread copy in this process answers the server's questions about the model
        self.local = create_engine(package, backend=backend, device=device, threads=1)
        row = int(np.prod(self.local.input_shape)) * 4
        self.shm_in = shared_memory.SharedMemory(create=True, size=row * self.MAX_ROWS)
        self.shm_out = shared_memory.SharedMemory(create=True, size=1 << 20)
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        names = (self.shm_in.name, self.shm_out.name)
        args = (str(package.path), backend, device, options, child, names)
        self.process = context.Process(target=_worker, args=args, daemon=True)
        self.process.start()
        assert self.conn.recv() == "ready"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        np.ndarray(batch.shape, np.float32, buffer=self.shm_in.buf)[...] = batch
        self.conn.send(len(batch))
        answer = self.conn.recv()
        if isinstance(answer, Exception):
            raise answer
        return np.ndarray(answer, np.float32, buffer=self.shm_out.buf).copy()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)


def serve_with_processes(package_dir: str, port: int) -> None:
    import sampan.serving.host
    from sampan.cli.main import main

    sampan.serving.host.create_engine = ProcessEngine
    serve = ["serve", "--models", package_dir, "--backend", "onnxruntime"]
    main([*serve, "--port", str(port), "--log-level", "warning"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve-processes", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--package", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_processes:
        serve_with_processes(args.package, args.port)
        return
    os.environ["SAMPAN_QUIET"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        package_dir, body = package_and_body(home)
        env = {**os.environ, "SAMPAN_HOME": str(home)}
        serve = [sys.executable, "-m", "sampan.cli.main", "serve", "--models", package_dir]
        serve += ["--backend", "onnxruntime", "--log-level", "warning", "--port"]
        commands = {
            "threads": lambda port: [*serve, str(port)],
            "processes": lambda port: [
                *(sys.executable, str(HERE), "--serve-processes", "--package", package_dir),
                *("--port", str(port)),
            ],
        }
        results: dict[str, dict[int, list[dict]]] = {k: {1: [], 8: [], 32: []} for k in commands}
        for round_ in range(args.rounds):
            order = list(commands) if round_ % 2 == 0 else list(commands)[::-1]
            for port, name in enumerate(order, start=18751):
                proc = start_server(commands[name](port), env)
                try:
                    wait_ready(f"http://127.0.0.1:{port}/", proc)
                    url = f"http://127.0.0.1:{port}/v1/models/r18:predict"
                    run_wrk(url, body, 4, 2)  # warm-up
                    for c in (1, 8, 32):
                        result = run_wrk(url, body, c, args.seconds)
                        results[name][c].append(result)
                        print(
                            f"round {round_ + 1} {name:>9} c{c:<3} {result['rps']:7.1f} req/s"
                            f"  p50 {result['p50_ms']:6.2f} ms  non-2xx {result['non_2xx']}",
                            flush=True,
                        )
                finally:
                    stop_server(proc)
    print(f"machine: {os.uname().machine}, {os.cpu_count()} cores; resnet18 @ 3x64x64, fp32")
    for c in (1, 8, 32):
        ratios = [
            p["rps"] / t["rps"] for p, t in zip(results["processes"][c], results["threads"][c])
        ]
        added = [
            p["p50_ms"] - t["p50_ms"]
            for p, t in zip(results["processes"][c], results["threads"][c])
        ]
        print(
            f"concurrency {c:>2}: processes / threads {statistics.median(ratios):.3f} "
            f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}); p50 "
            f"{statistics.median(added):+.2f} ms"
        )


if __name__ == "__main__":
    main()
