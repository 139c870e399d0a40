"""Graceful shutdown for uvicorn: drain first, then stop.

On the first SIGTERM/SIGINT the host turns draining: readiness answers 503 (so load balancers
stop sending), new predictions get 503 with Retry-After, and the batches in flight finish.
Only when every batcher is idle (plus a short grace, for requests already on the wire) does
uvicorn stop accepting and close connections. Stopping at once would close connections whose
request had arrived but not yet been read: those requests would get no answer at all.
A second signal stops at once.

uvicorn then closes idle keep-alive connections (and each busy one once its answer is
written) and waits for them to go. Over TLS a close waits for the client's close_notify
(asyncio's and uvloop's ssl_shutdown_timeout: 30 s, which uvicorn does not expose), and a
pooled client that is not reading never sends it: every shutdown would take 30 s. So during
the stop a connection that has been closing with nothing left to write for close_wait_s is
aborted. One with a request in flight is not closing, and one still writing an answer (a
slow reader) keeps its bytes: both are left to finish, within uvicorn's own bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from types import FrameType
from typing import Any

import uvicorn

from sampan.serving.host import ModelHost


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        host: ModelHost,
        grace_s: float = 0.5,
        timeout_s: float = 30.0,
        close_wait_s: float = 1.0,
    ) -> None:
        super().__init__(config)
        self.host, self.grace_s, self.timeout_s = host, grace_s, timeout_s
        self.close_wait_s = close_wait_s
        self._draining = False

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        watchdog = asyncio.create_task(self._abort_half_closed())
        try:
            await super().shutdown(sockets)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _abort_half_closed(self, every_s: float = 0.1) -> None:
        """Until cancelled: abort the connections closing with nothing left to write since
        close_wait_s ago (each is only waiting for its client's TLS close)."""
        since: dict[Any, float] = {}  # connection -> when it was first seen so
        while True:
            now = time.monotonic()
            waiting = {}
            for connection in list(self.server_state.connections):
                transport = getattr(connection, "transport", None)
                if (
                    transport is not None
                    and transport.is_closing()
                    and not transport.get_write_buffer_size()
                ):
                    waiting[connection] = first = since.get(connection, now)
                    if now - first >= self.close_wait_s:
                        transport.abort()
            since = waiting
            await asyncio.sleep(every_s)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:  # a second signal: stop now
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self.host.draining = True
        threading.Thread(target=self._stop_when_drained, args=(sig, frame), daemon=True).start()

    def _stop_when_drained(self, sig: int, frame: Any) -> None:
        deadline = time.monotonic() + self.timeout_s
        time.sleep(self.grace_s)
        while not self.host.idle and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(self.grace_s)  # answers being written; requests that were already sent
        super().handle_exit(sig, frame)
