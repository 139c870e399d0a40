"""Graceful shutdown for uvicorn: drain first, then stop.

On the first SIGTERM/SIGINT the host turns draining: readiness answers 503 (so load balancers
stop sending), new predictions get 503 with Retry-After, and the batches in flight finish.
Only when every batcher is idle (plus a short grace, for requests already on the wire) does
uvicorn stop accepting and close connections. Stopping at once would close connections whose
request had arrived but not yet been read: those requests would get no answer at all.
A second signal stops at once.
"""

from __future__ import annotations

import threading
import time
from types import FrameType
from typing import Any

import uvicorn

from sampan.serving.host import ModelHost


class DrainingServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, host: ModelHost, grace_s: float = 0.5, timeout_s: float = 30.0
    ) -> None:
        super().__init__(config)
        self.host, self.grace_s, self.timeout_s = host, grace_s, timeout_s
        self._draining = False

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
