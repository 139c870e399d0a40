"""A real server on loopback: uvicorn in a thread, over the session's exported package."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest


def serve_process(home, ref: str, port: int, log_file, *flags: str) -> subprocess.Popen:
    """`sampan serve` of ref on onnxruntime in its own process, its output to log_file; SIGINT
    as in a terminal (a test runner started in the background ignores it, and its children
    would inherit that)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sampan.cli.main",
            "serve",
            "--models",
            ref,
            "--port",
            str(port),
            "--backend",
            "onnxruntime",
            *flags,
        ],
        env={**os.environ, "SAMPAN_HOME": str(home)},
        stdout=log_file,
        stderr=log_file,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    def __init__(self, app, port: int) -> None:
        import uvicorn

        self.app, self.port = app, port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def host(self):
        return self.app.state.host


@pytest.fixture
def server(serve_home) -> Iterator[RunningServer]:
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    home, onnx_ref, _ = serve_home
    settings = ServeSettings(backend="onnxruntime", max_body_bytes=2 * 2**20)
    with RunningServer(build_app([onnx_ref], settings, Store(home)), free_port()) as running:
        yield running
