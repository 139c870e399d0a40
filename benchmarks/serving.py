"""Serving throughput and latency: sampan serve vs a plain FastAPI server vs LitServe, all over
the same onnxruntime engine, against the in-process engine as the limit.

One run builds a resnet18 package at 3x64x64 (briefly trained on the digits), exports it to
ONNX, then starts each server in its own process on loopback and drives it with wrk (Debian's
package: little CPU) at concurrency 1, 8 and 32 with the same JSON body (one base64 PNG).
Around every point the in-process engine is measured too, just before and just after it
(throughput at batch 32, latency at batch 1), while the server idles: a shared machine's speed
drifts within a minute, so each point is compared with the limit of its own moment. Prints
requests/s and p50/p99 latency with the ratio to that limit, and with --rounds N the median of
N ratios at concurrency 32.

    apt-get install wrk; pip install litserve      # the baseline's own package
    python benchmarks/serving.py [--seconds 8] [--rounds 1] [--only sampan]
        [--serve-flags "--instances 2 --threads 1"]      # more `sampan serve` options
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request  # module level: FastAPI resolves the annotations here

HERE = Path(__file__).resolve()
SIZE = 64


# -- the servers under test (each runs as: python serving.py --serve KIND --port P --package DIR)


def _model(package_dir: str):
    import sampan

    return sampan.load(package_dir, backend="onnxruntime", device="cpu")


def serve_fastapi(package_dir: str, port: int) -> None:
    """The baseline a user writes first: one request, one engine call."""
    import uvicorn

    model = _model(package_dir)
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        body = await request.json()
        raw = base64.b64decode(body["instances"][0])
        batch = model.task.collate([model.task.decode(raw, model.contract)], model.contract)
        return {"predictions": model.task.postprocess(model.engine.predict(batch), model.labels, 5)}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


try:  # the LitServe baseline (pip install litserve); its API class must be importable by
    import litserve as ls  # name, because LitServe pickles it into its worker process

    class EngineAPI(ls.LitAPI):
        """LitServe's lifecycle over the same engine and task functions as the others."""

        def __init__(self, package_dir: str, **options) -> None:
            super().__init__(**options)
            self.package_dir = package_dir

        def setup(self, device):
            self.model = _model(self.package_dir)

        def decode_request(self, request):
            raw = base64.b64decode(request["instances"][0])
            return self.model.task.decode(raw, self.model.contract)

        def batch(self, inputs):
            return self.model.task.collate(inputs, self.model.contract)

        def predict(self, x):
            return self.model.engine.predict(x)

        def unbatch(self, output):
            return list(output)

        def encode_response(self, output):
            labels = self.model.labels
            return {"predictions": self.model.task.postprocess(output[None], labels, 5)}

except ImportError:
    ls = None


def serve_litserve(package_dir: str, port: int) -> None:
    """LitServe with its batching (max 32, 5 ms), over the same engine."""
    if ls is None:
        raise SystemExit("pip install litserve (or make benchmark) for the LitServe baseline")
    api = EngineAPI(package_dir, max_batch_size=32, batch_timeout=0.005)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(port=port, host="127.0.0.1", log_level="warning", generate_client_file=False)


# -- the driver ------------------------------------------------------------------------------


def build_package(home: Path) -> tuple[str, bytes]:
    from _common import resnet18_onnx

    package, data = resnet18_onnx(home, SIZE)
    return str(package.path), sorted(data.glob("3/*.png"))[0].read_bytes()


def package_and_body(home: Path) -> tuple[str, Path]:
    """The resnet18 package, and the file of the JSON body every serving benchmark sends."""
    package_dir, png = build_package(home)
    body = home / "body.json"
    body.write_text(json.dumps({"instances": [base64.b64encode(png).decode()]}))
    return package_dir, body


def in_process(model, batch: int, seconds: float) -> dict[str, float]:
    """The engine called directly with a batch: images/s and the median call in ms."""
    x = np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    for _ in range(3):
        model.engine.predict(x)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        model.engine.predict(x)
        times.append(time.perf_counter() - started)
    return {"per_s": batch / float(np.mean(times)), "p50_ms": float(np.median(times) * 1000)}


def limit_around(model, seconds: float, point) -> tuple[dict[str, float], dict[str, float]]:
    """point()'s result and the in-process limit of the same moment: batch-32 throughput and
    batch-1 latency, each the mean of a measurement just before and one just after."""
    before = in_process(model, 32, seconds), in_process(model, 1, seconds / 2)
    result = point()
    after = in_process(model, 32, seconds), in_process(model, 1, seconds / 2)
    return result, {
        "batch32_per_s": (before[0]["per_s"] + after[0]["per_s"]) / 2,
        "batch1_p50_ms": (before[1]["p50_ms"] + after[1]["p50_ms"]) / 2,
    }


def start_server(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A server in its own process group, so that stop_server ends its workers too."""
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_server(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the server's whole process group (LitServe's inference worker outlives
    its parent otherwise, and goes on taking CPU from the next server measured), then wait."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):  # anything of the group still there
        os.killpg(proc.pid, signal.SIGKILL)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def run_wrk(
    url: str,
    body_file: Path,
    concurrency: int,
    seconds: float,
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    script = body_file.with_suffix(".lua")
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n{extra}'
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*all")\n'
        "f:close()\n"
    )
    threads = min(concurrency, 2)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": int(errors[1]) if errors else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="Passes over the servers.")
    parser.add_argument("--serve", choices=("fastapi", "litserve"))
    parser.add_argument("--port", type=int)
    parser.add_argument("--package")
    parser.add_argument("--only", help="Measure only the servers whose name contains this.")
    parser.add_argument(
        "--serve-flags", default="", help="More `sampan serve` options, e.g. '--instances 1'."
    )
    args = parser.parse_args()
    if args.serve:
        {"fastapi": serve_fastapi, "litserve": serve_litserve}[args.serve](args.package, args.port)
        return
    os.environ["SAMPAN_QUIET"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        package_dir, body_file = package_and_body(home)
        model = _model(package_dir)
        env = {**os.environ, "SAMPAN_HOME": str(home)}
        servers = {
            "fastapi 1-per-call": ([sys.executable, str(HERE), "--serve", "fastapi"], "/predict"),
            "litserve batched": ([sys.executable, str(HERE), "--serve", "litserve"], "/predict"),
            "sampan serve": (
                [
                    sys.executable,
                    "-m",
                    "sampan.cli.main",
                    "serve",
                    "--models",
                    package_dir,
                    "--backend",
                    "onnxruntime",
                    "--log-level",
                    "warning",
                    *args.serve_flags.split(),
                ],
                "/v1/models/r18:predict",
            ),
        }
        if args.only:
            servers = {k: v for k, v in servers.items() if args.only in k}
        # results[name][concurrency]: one (wrk result, limit of its moment) per round
        results: dict[str, dict[int, list[tuple[dict, dict]]]] = {
            name: {c: [] for c in (1, 8, 32)} for name in servers
        }
        for _ in range(args.rounds):
            for port, (name, (command, path)) in enumerate(servers.items(), start=18701):
                flags = ["--port", str(port)]
                if name != "sampan serve":
                    flags += ["--package", package_dir]
                proc = start_server(command + flags, env)
                try:
                    wait_ready(f"http://127.0.0.1:{port}/", proc)
                    url = f"http://127.0.0.1:{port}{path}"
                    run_wrk(url, body_file, 4, 2)  # warm-up
                    for c in (1, 8, 32):
                        point = functools.partial(run_wrk, url, body_file, c, args.seconds)
                        results[name][c].append(limit_around(model, 2.0, point))
                finally:
                    stop_server(proc)
    report(results)


def report(results: dict[str, dict[int, list[tuple[dict, dict]]]]) -> None:
    import onnxruntime

    print(
        f"machine: {os.uname().machine}, {os.cpu_count()} cores; onnxruntime "
        f"{onnxruntime.__version__}; resnet18 @ 3x{SIZE}x{SIZE}, fp32"
    )
    print(
        f"{'server':>20} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
        f" {'limit/s':>8} {'/ limit':>8}"
    )
    for name, points in results.items():
        for conc, runs in points.items():
            for r, limit in runs:
                print(
                    f"{name:>20} {conc:>5} {r['rps']:8.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                    f"{r['non_2xx']:>8} {limit['batch32_per_s']:8.1f} "
                    f"{r['rps'] / limit['batch32_per_s']:8.2f}"
                )

    def ratio(name: str) -> float:
        return statistics.median(r["rps"] / lim["batch32_per_s"] for r, lim in results[name][32])

    if "sampan serve" not in results:
        return
    ours = results["sampan serve"]
    line = f"sampan at concurrency 32: {ratio('sampan serve'):.2f}x the in-process batched limit"
    line += f" (median of {len(ours[32])}; goal 0.85)"
    for peer in ("fastapi 1-per-call", "litserve batched"):
        if peer in results:
            line += f"; {ratio('sampan serve') / ratio(peer):.2f}x {peer}"
    print(line)
    added = statistics.median(r["p50_ms"] - lim["batch1_p50_ms"] for r, lim in ours[1])
    print(
        f"sampan at concurrency 1: p50 {added:+.2f} ms over the in-process batch-1 call "
        "(goal: within 2 ms)"
    )


if __name__ == "__main__":
    main()
