"""`sampan loadtest` against wrk: what each measures of the same server, and what each costs.

A load generator on the same machine as the server takes CPU from it: the cheaper it is, the
more of the server it shows. One run builds the resnet18 package of benchmarks/serving.py
(3x64x64, onnxruntime), starts `sampan serve`, and drives it in alternating rounds with wrk
(Debian's, in C) and with `sampan loadtest`, at the same concurrency for the same time with
the same body. Prints each round's requests/s and the generator's own CPU time per request
(user + system, from the kernel's accounting of the finished process), and the median ratio
loadtest / wrk.

    apt-get install wrk
    python benchmarks/loadgen.py [--seconds 6] [--rounds 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from serving import package_and_body, run_wrk, start_server, stop_server, wait_ready


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    os.environ["SAMPAN_QUIET"] = "1"
    c, seconds = args.concurrency, args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        package_dir, body = package_and_body(home)
        env = {**os.environ, "SAMPAN_HOME": str(home)}
        port = 18781
        command = [sys.executable, "-m", "sampan.cli.main", "serve", "--models", package_dir]
        command += ["--backend", "onnxruntime", "--log-level", "warning", "--port", str(port)]
        server = start_server(command, env)
        base = f"http://127.0.0.1:{port}"
        loadtest = [sys.executable, "-m", "sampan.cli.main", "loadtest", base, "--model", "r18"]
        loadtest += ["-c", str(c), "-n", "10000000", "--duration", str(seconds)]
        loadtest += ["--body", str(body), "--out", str(home / "loadtest.json")]
        rows: dict[str, list[tuple[float, float]]] = {"wrk": [], "sampan loadtest": []}
        try:
            wait_ready(f"{base}/", server)
            run_wrk(f"{base}/v1/models/r18:predict", body, 4, 2)  # warm-up
            for round_ in range(args.rounds):
                order = list(rows) if round_ % 2 == 0 else list(rows)[::-1]
                for name in order:
                    before = children_cpu()
                    if name == "wrk":
                        rps = run_wrk(f"{base}/v1/models/r18:predict", body, c, seconds)["rps"]
                        answered = rps * seconds
                    else:
                        subprocess.run(loadtest, env=env, check=True, capture_output=True)
                        report = json.loads((home / "loadtest.json").read_text())
                        rps, answered = report["requests_per_s"], report["ok"]
                    cpu_ms = 1000 * (children_cpu() - before) / max(answered, 1)
                    rows[name].append((rps, cpu_ms))
                    print(
                        f"round {round_ + 1} {name:>16}: {rps:7.1f} req/s, "
                        f"{cpu_ms:.3f} ms of CPU per request",
                        flush=True,
                    )
        finally:
            stop_server(server)
    ratios = [ours[0] / wrk[0] for ours, wrk in zip(rows["sampan loadtest"], rows["wrk"])]
    print(f"machine: {os.uname().machine}, {os.cpu_count()} cores; concurrency {c}")
    print(
        f"sampan loadtest / wrk requests/s: {statistics.median(ratios):.3f} "
        f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}); CPU per request "
        f"{statistics.median(r[1] for r in rows['sampan loadtest']):.3f} ms vs "
        f"{statistics.median(r[1] for r in rows['wrk']):.3f} ms"
    )


if __name__ == "__main__":
    main()
