"""The platform's cost: sampan serve with API keys, rate limits, quotas and usage metering on,
against the same server with them off (--auth off), at concurrency 32.

One run builds the resnet18 package of benchmarks/serving.py (3x64x64, onnxruntime), creates an
app and a key whose rate limit and daily quota are charged on every call but never reached,
then starts both servers in turn and drives each with wrk (same body; the key in the
Authorization header) for several alternating rounds, at concurrency 32 and then alone
(concurrency 1). Prints requests/s and p50 for each, each round's throughput ratio and their
median, and the added p50.
Goal: at most 10% lower throughput, at most 1 ms more p50. At concurrency 32 a closed-loop
load generator keeps the server saturated, so p50 there is about 32 / throughput (Little's
law): any throughput cost shows up as p50 too. The lone caller's p50 is the platform's own
latency.

    apt-get install wrk
    python benchmarks/platform_overhead.py [--seconds 8] [--rounds 2] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from serving import package_and_body, run_wrk, start_server, stop_server, wait_ready


def start(port: int, package_dir: str, env: dict[str, str], auth: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "sampan.cli.main", "serve", "--models", package_dir]
    command += ["--backend", "onnxruntime", "--port", str(port), "--log-level", "warning"]
    command += ["--auth", auth]
    return start_server(command, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--redis", help="Charge limits through this Redis instead of the DB.")
    args = parser.parse_args()
    os.environ["SAMPAN_QUIET"] = "1"
    from sampan.platform.db import Database
    from sampan.platform.keys import Keys

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        package_dir, body_file = package_and_body(home)
        env = {**os.environ, "SAMPAN_HOME": str(home)}
        if args.redis:
            env["SAMPAN_REDIS_URL"] = args.redis
        with Database(home=home) as db:
            keys = Keys(db)
            keys.create_app("bench")
            key, _ = keys.create_key(
                "bench", ["predict:*"], rate="1000000/s", burst=1000000, quotas=["1000000000/day"]
            )
        results: dict[str, list[dict[str, float]]] = {"off": [], "keys": []}
        for round_ in range(args.rounds):
            order = (("off", 18811), ("keys", 18812))
            for auth, port in order if round_ % 2 == 0 else order[::-1]:  # drift cancels
                proc = start(port, package_dir, env, auth)
                try:
                    wait_ready(f"http://127.0.0.1:{port}/v2/health/live", proc)
                    url = f"http://127.0.0.1:{port}/v1/models/r18:predict"
                    headers = {"Authorization": f"Bearer {key}"}
                    run_wrk(url, body_file, 4, 2, headers)  # warm-up
                    result = run_wrk(url, body_file, args.concurrency, args.seconds, headers)
                    lone = run_wrk(url, body_file, 1, args.seconds / 2, headers)
                    if result["non_2xx"] or lone["non_2xx"]:
                        raise RuntimeError(f"{auth}: non-2xx answers")
                    results[auth].append({**result, "lone_p50_ms": lone["p50_ms"]})
                finally:
                    stop_server(proc, 60)
        with Database(home=home) as db:
            from sampan.platform.usage import usage_report

            metered = sum(row["calls"] for row in usage_report(db, by="app", since="1d"))
    rps = {k: statistics.median(r["rps"] for r in v) for k, v in results.items()}
    p50 = {k: statistics.median(r["p50_ms"] for r in v) for k, v in results.items()}
    lone = {k: statistics.median(r["lone_p50_ms"] for r in v) for k, v in results.items()}
    limits = "Redis" if args.redis else "SQLite (the default database)"
    print(f"machine: {os.uname().machine}, {os.cpu_count()} cores; limits through {limits}")
    print(f"concurrency {args.concurrency}, {args.rounds} rounds of {args.seconds:g} s each")
    for auth, label in (("off", "platform off"), ("keys", "keys+limits+metering")):
        print(
            f"{label:>22}: {rps[auth]:8.1f} req/s  p50 {p50[auth]:6.2f} ms at concurrency "
            f"{args.concurrency}; p50 {lone[auth]:5.2f} ms alone"
        )
    # Each round's two servers ran back to back: their ratio is what a shared machine's
    # drifting speed disturbs least.
    ratios = [k["rps"] / o["rps"] for k, o in zip(results["keys"], results["off"])]
    added_alone = statistics.median(
        k["lone_p50_ms"] - o["lone_p50_ms"] for k, o in zip(results["keys"], results["off"])
    )
    print("per round, keys / off: " + ", ".join(f"{r:.3f}" for r in ratios))
    print(
        f"throughput with the platform: {statistics.median(ratios):.3f}x, the median of "
        f"{len(ratios)} rounds (goal >= 0.90)"
    )
    print(
        f"added p50: {p50['keys'] - p50['off']:+.2f} ms at concurrency {args.concurrency}, "
        f"{added_alone:+.2f} ms for a lone caller (median of the rounds; goal <= 1 ms)"
    )
    print(f"usage records written: {metered}")


if __name__ == "__main__":
    main()
