"""Serving throughput and latency: sampan serve vs a plain FastAPI server vs LitServe, all over
the same onnxruntime engine, against the in-process engine as the limit.

One run builds a resnet18 package at 3x64x64 (briefly trained on the digits), exports it to
ONNX, measures the in-process engine (throughput at batch 1 and at batch 32), then starts each
server in its own process on loopback and drives it with wrk (Debian's package: little CPU)
at concurrency 1, 8 and 32 with the same JSON body (one base64 PNG). Prints requests/s and
p50/p99 latency, with ratios to the in-process batched limit.

    apt-get install wrk; pip install litserve      # the baseline's own package
    python benchmarks/serving.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
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


def in_process(package_dir: str, seconds: float) -> dict[str, float]:
    model = _model(package_dir)
    rng = np.random.default_rng(0)
    out = {}
    for batch in (1, 32):
        x = rng.standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
        for _ in range(3):
            model.engine.predict(x)
        times = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            model.engine.predict(x)
            times.append(time.perf_counter() - started)
        out[f"batch{batch}_per_s"] = batch / float(np.mean(times))
        out[f"batch{batch}_p50_ms"] = float(np.median(times) * 1000)
    return out


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
    parser.add_argument("--serve", choices=("fastapi", "litserve"))
    parser.add_argument("--port", type=int)
    parser.add_argument("--package")
    parser.add_argument("--only", help="Measure only the servers whose name contains this.")
    args = parser.parse_args()
    if args.serve:
        {"fastapi": serve_fastapi, "litserve": serve_litserve}[args.serve](args.package, args.port)
        return
    os.environ["SAMPAN_QUIET"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        package_dir, png = build_package(home)
        limit = in_process(package_dir, args.seconds)
        body_file = home / "body.json"
        body_file.write_text(json.dumps({"instances": [base64.b64encode(png).decode()]}))
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
                ],
                "/v1/models/r18:predict",
            ),
        }
        results: dict[str, dict[int, dict[str, float]]] = {}
        if args.only:
            servers = {k: v for k, v in servers.items() if args.only in k}
        for port, (name, (command, path)) in enumerate(servers.items(), start=18701):
            flags = (
                ["--port", str(port)]
                if name == "sampan serve"
                else ["--port", str(port), "--package", package_dir]
            )
            proc = subprocess.Popen(
                command + flags, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                wait_ready(f"http://127.0.0.1:{port}/", proc)
                url = f"http://127.0.0.1:{port}{path}"
                run_wrk(url, body_file, 4, 2)  # warm-up
                results[name] = {c: run_wrk(url, body_file, c, args.seconds) for c in (1, 8, 32)}
            finally:
                proc.terminate()
                proc.wait(30)
    import onnxruntime

    print(
        f"machine: {os.uname().machine}, {os.cpu_count()} cores; onnxruntime "
        f"{onnxruntime.__version__}; resnet18 @ 3x{SIZE}x{SIZE}, fp32"
    )
    print(
        f"in-process engine: {limit['batch1_per_s']:.0f} img/s at batch 1 "
        f"(p50 {limit['batch1_p50_ms']:.2f} ms), {limit['batch32_per_s']:.0f} img/s at batch 32"
    )
    print(
        f"{'server':>20} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
        f" {'/ limit':>8}"
    )
    for name, rows in results.items():
        for conc, r in rows.items():
            print(
                f"{name:>20} {conc:>5} {r['rps']:8.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                f"{r['non_2xx']:>8} {r['rps'] / limit['batch32_per_s']:8.2f}"
            )
    if "sampan serve" not in results or len(results) < 3:
        return
    ours = results["sampan serve"]
    print(
        f"sampan at concurrency 32: {ours[32]['rps'] / limit['batch32_per_s']:.2f}x the "
        f"in-process batched limit (goal 0.85); vs fastapi "
        f"{ours[32]['rps'] / results['fastapi 1-per-call'][32]['rps']:.2f}x, vs litserve "
        f"{ours[32]['rps'] / results['litserve batched'][32]['rps']:.2f}x"
    )
    print(
        f"sampan at concurrency 1: p50 {ours[1]['p50_ms']:.2f} ms vs in-process batch-1 "
        f"{limit['batch1_p50_ms']:.2f} ms (goal: within 2 ms)"
    )


if __name__ == "__main__":
    main()
