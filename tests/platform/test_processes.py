"""Several real server processes sharing the platform's state, driven over loopback."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from sampan.platform.db import Database
from sampan.platform.keys import Keys
from tests.platform.conftest import REDIS, clear_of_midnight
from tests.platform.test_gate import usage_rows
from tests.serving.conftest import free_port

pytestmark = pytest.mark.slow


class ServerProcess:
    """`sampan serve` in its own process, on its own port."""

    def __init__(self, home: Path, ref: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w")
        command = [sys.executable, "-m", "sampan.cli.main", "serve", "--models", ref]
        command += ["--port", str(self.port), "--backend", "onnxruntime", "--log-level", "warning"]
        self.proc = subprocess.Popen(
            command,
            env={**os.environ, "SAMPAN_HOME": str(home), **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).is_success:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.log.close()
        return code


def image_body(digits_holdout: Path) -> dict:
    png = sorted(digits_holdout.glob("*/*.png"))[0].read_bytes()
    return {"instances": [base64.b64encode(png).decode()]}


@pytest.mark.parametrize("limits", ["database", "redis"])
def test_a_daily_quota_holds_across_two_processes(
    serve_home, database_url, digits_holdout, tmp_path, limits
):
    if limits == "redis" and not REDIS:
        pytest.skip("SAMPAN_TEST_REDIS_URL is not set (.ci/run sets it)")
    home, onnx_ref, _ = serve_home
    clear_of_midnight(120)  # two servers start and take 300 calls well within this
    with Database(database_url) as db:
        keys = Keys(db)
        keys.create_app("plant")
        key, record = keys.create_key("plant", ["predict:digits"], quotas=["100/day"])
    env = {"SAMPAN_DATABASE_URL": database_url}
    if limits == "redis":
        env["SAMPAN_REDIS_URL"] = REDIS or ""
    servers = [ServerProcess(home, onnx_ref, env, tmp_path / f"s{i}.log") for i in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        body, auth = image_body(digits_holdout), {"Authorization": f"Bearer {key}"}

        async def drive() -> list[int]:
            gate = asyncio.Semaphore(64)
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as c:

                async def one(i: int) -> int:
                    async with gate:
                        url = f"{servers[i % 2].url}/v1/models/digits:predict"
                        return (await c.post(url, json=body, headers=auth)).status_code

                return await asyncio.gather(*(one(i) for i in range(300)))

        codes = Counter(asyncio.run(drive()))
    finally:
        exits = [server.stop() for server in servers]
    assert codes == {200: 100, 429: 200}
    assert all(code in (0, -signal.SIGTERM) for code in exits)
    with Database(database_url) as db:
        rows = [r for r in usage_rows(db) if r[1] == record["prefix"]]
    assert len(rows) == 300
    assert Counter(r[3] for r in rows) == {200: 100, 429: 200}


def test_sigterm_under_load_loses_no_answered_call(serve_home, digits_holdout, tmp_path):
    home, onnx_ref, _ = serve_home
    database_url = f"sqlite:///{tmp_path / 'platform.db'}"
    with Database(database_url) as db:
        keys = Keys(db)
        keys.create_app("line")
        key, record = keys.create_key("line", ["predict:*"])
    env = {"SAMPAN_DATABASE_URL": database_url}
    server = ServerProcess(home, onnx_ref, env, tmp_path / "s.log")
    server.wait_ready()
    body, auth = image_body(digits_holdout), {"Authorization": f"Bearer {key}"}
    answered: list[int] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post(f"{server.url}/v1/models/digits:predict", json=body, headers=auth)
                except httpx.HTTPError:  # the server has closed: no answer, nothing to bill
                    return
                answered.append(r.status_code)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    code = server.stop()  # SIGTERM while 8 clients keep calling
    stop.set()
    for thread in threads:
        thread.join(30)
    assert code in (0, -signal.SIGTERM)
    assert answered.count(200) > 10  # it really was under load
    with Database(database_url) as db:
        rows = [r for r in usage_rows(db) if r[1] == record["prefix"]]
    assert Counter(r[3] for r in rows) == Counter(answered)
