"""Usage metering: every call becomes a row of the usage table, written in batches off the
hot path. A call only appends to a list; a background task writes the list every
`interval` seconds (or sooner when it grows), and close() writes what is left, so a graceful
stop (SIGTERM) loses nothing. A hard crash loses at most the last interval's records."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

from sampan.platform.db import Database

log = logging.getLogger("sampan.usage")


class UsageRecorder:
    def __init__(
        self,
        db: Database,
        interval: float = 1.0,
        max_batch: int = 2000,
        max_pending: int = 200_000,
    ) -> None:
        self.db = db
        self.interval = interval
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.pending: list[dict[str, Any]] = []
        self.dropped = 0
        self.written = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def record(
        self,
        app: str,
        key_prefix: str,
        model: str,
        status: int,
        latency_ms: float,
        units: int = 0,
        version: int | None = None,
    ) -> None:
        """Queue one call's record (no I/O here)."""
        if len(self.pending) >= self.max_pending:  # the database has been down a long while
            self.pending.pop(0)
            self.dropped += 1
        self.pending.append(
            {
                "ts": dt.datetime.now(dt.timezone.utc),
                "app": app,
                "key_prefix": key_prefix,
                "model": model[:64],
                "version": version,
                "status": status,
                "latency_ms": round(latency_ms, 3),
                "units": units,
            }
        )
        if len(self.pending) >= self.max_batch:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything pending; on a database error keep it for the next try."""
        async with self._lock:
            while self.pending:
                batch = self.pending[: self.max_batch]
                try:
                    await asyncio.to_thread(self._write, batch)
                except Exception as exc:  # the database is down: keep the records, retry
                    log.warning("usage records not written yet (%s); will retry", exc)
                    return
                del self.pending[: len(batch)]
                self.written += len(batch)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        from sampan.platform.schema import UsageRecord

        # Core executemany: a second's worth of records in one statement, no ORM objects.
        table: Any = UsageRecord.__table__
        with self.db.engine.begin() as connection:
            connection.execute(table.insert(), rows)

    async def close(self) -> None:
        """Stop the background task and write everything pending. The task is never cancelled
        mid-write: a cancelled await would leave the thread writing a batch that the final
        flush then writes again."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()
