"""The dynamic batcher: the one place where batching invariants live.

Requests are numpy arrays of k >= 1 rows. Engine threads (one per engine instance) take what
is queued, up to max_batch_size rows, run it off the event loop, and split the output rows
back to their callers. Invariants, enforced here and nowhere else:

- every caller gets exactly its own rows back (the engine must return as many rows as it got);
- an exception in a batch reaches every caller of that batch, and no one else;
- parameters are checked when the batcher is built;
- a full queue refuses at once (Overloaded) instead of letting latency grow without bound;
- a request whose deadline passed while queued is failed (DeadlineExceeded), not computed;
  one whose batch is still running at its deadline is answered DeadlineExceeded at once;
  a request answered while queued gives up its place in a full queue and its rows in a batch;
- named rows (text) are sequences zero-padded on axis 1: a batch that would waste more than
  max_padding of its cells on padding runs as one engine call per length group (rows sorted by
  length, each group cut to its own longest), and the outputs go back in the callers' order.

Batching must not tax a lone caller, nor idle a busy engine: a thread waits up to max_wait_ms
for more rows only for a lone queued request after a batch that showed concurrency (more than
one request); a backlog runs at once, and so does a lone caller. With adaptive_wait=False it
always waits, as a fixed-delay batcher does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sampan.errors import ConfigError, SampanError


def count_rows(rows: Any) -> int:
    """Rows in a request: an array's first axis, or that of a dict of named arrays."""
    if isinstance(rows, dict):
        return len(next(iter(rows.values())))
    return len(rows)


def merge_rows(parts: list[Any]) -> Any:
    """Requests' rows into one batch. Named arrays (text: ids and mask) of different sequence
    lengths are padded with zeros to the longest first; a zero mask hides the padding."""
    if not isinstance(parts[0], dict):
        return np.concatenate(parts)
    merged = {}
    for name in parts[0]:
        arrays = [part[name] for part in parts]
        longest = max(a.shape[1] for a in arrays)
        merged[name] = np.concatenate(
            [np.pad(a, [(0, 0), (0, longest - a.shape[1])]) for a in arrays]
        )
    return merged


def row_lengths(rows: dict[str, np.ndarray]) -> np.ndarray:
    """Each row's sequence length: one past its last non-zero column in any named array
    (collate and merge_rows pad with zeros, and a mask is 1 on every real token)."""
    lengths = np.zeros(count_rows(rows), dtype=np.int64)
    for array in rows.values():
        used = (array != 0).reshape(len(array), array.shape[1], -1).any(axis=2)
        last = array.shape[1] - np.argmax(used[:, ::-1], axis=1)
        lengths = np.maximum(lengths, np.where(used.any(axis=1), last, 0))
    return lengths


def padding_waste(lengths: np.ndarray) -> float:
    """The share of a batch's cells that padding to its longest row would fill."""
    longest = int(lengths.max()) if len(lengths) else 0
    return 0.0 if longest == 0 else 1.0 - float(lengths.sum()) / (len(lengths) * longest)


def length_groups(lengths: np.ndarray, max_waste: float, min_rows: int) -> list[np.ndarray]:
    """Row indices in groups of similar length, one engine call each.

    One group, every row in its own order, when padding wastes at most max_waste of the
    batch's cells or no cut leaves min_rows rows on both sides. Otherwise rows are taken
    longest first, and a group closes before the row that would push its waste past max_waste
    if it holds min_rows rows and at least min_rows remain. So every group holds >= min_rows
    rows, and a group wasting more than max_waste is one min_rows forced: exactly min_rows
    rows, or the last (shortest) group.
    """
    lengths = np.asarray(lengths)
    n = len(lengths)
    if n < 2 * min_rows or padding_waste(lengths) <= max_waste:
        return [np.arange(n)]
    order = np.argsort(-lengths, kind="stable")
    groups, start, total = [], 0, 0
    for i, row in enumerate(order):
        longest = int(lengths[order[start]])  # longest first: adding rows only adds waste
        total += int(lengths[row])
        fits = longest == 0 or 1 - total / ((i - start + 1) * longest) <= max_waste
        if not fits and i - start >= min_rows and n - i >= min_rows:
            groups.append(order[start:i])
            start, total = i, int(lengths[row])
    if not groups:  # min_rows allowed no cut
        return [np.arange(n)]
    groups.append(order[start:])
    return groups


def take_rows(rows: dict[str, np.ndarray], index: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """The given rows of named arrays, cut to length on the sequence axis."""
    return {name: np.ascontiguousarray(a[index, :length]) for name, a in rows.items()}


class Overloaded(SampanError):
    """The queue is full: retry later."""


class Retired(Overloaded):
    """The batcher was closed (its model replaced, unloaded or shutting down)."""


class DeadlineExceeded(SampanError):
    """The request waited in the queue past its deadline."""


@dataclass
class _Item:
    rows: np.ndarray
    future: asyncio.Future[np.ndarray]
    deadline: float  # time.monotonic() seconds; inf = none
    enqueued: float = field(default_factory=time.monotonic)


BatchFn = Callable[[Any], np.ndarray]  # rows: an array, or a dict of named arrays


@dataclass(frozen=True)
class Execution:
    """Where one batch's time went, and whom it answered (Triton's statistics extension
    reports these). Reported on the event loop just before its callers get their rows, for
    the callers still waiting then: one whose deadline passed while the batch ran, or who hung
    up, is not among them."""

    calls: tuple[tuple[int, float], ...]  # each engine call's rows and seconds (length groups)
    requests: int  # callers answered
    rows: int  # their rows
    queued_s: float  # summed over them: from each one's arrival to the batch's start
    input_s: float  # joining the requests' rows into one batch (and into length groups)
    output_s: float  # putting the outputs back in the callers' order

    @property
    def infer_s(self) -> float:
        return sum(seconds for _, seconds in self.calls)


@dataclass
class BatchStats:
    """Callbacks the server's metrics hang on (no-ops by default); on_batch and on_calls are
    called from the engine threads."""

    on_batch: Callable[[int, float], None] = lambda rows, seconds: None
    on_queue: Callable[[int], None] = lambda depth: None
    on_calls: Callable[[int], None] = lambda calls: None  # engine calls per batch (length groups)
    on_executed: Callable[[Execution], None] = lambda execution: None  # on the event loop


class Batcher:
    """Dynamic batching over one or more engine instances, each driven by its own thread.

    The threads take batches from the queue themselves and hand results back to the event
    loop with one call per batch. Driving the engines from asyncio tasks instead (a task per
    engine, the engine call in an executor) left the engine idle between batches until the
    busy event loop came round to the task: 9 ms between 35 ms batches, median, at
    concurrency 32 on 2 cores (benchmarks/serving.py). Worker processes instead of threads
    (each batch through shared memory) served 0.87x the requests/s at concurrency 32
    (benchmarks/engine_workers.py, 4 alternating rounds on 2 cores).
    """

    def __init__(
        self,
        engines: Sequence[BatchFn],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        max_queue: int = 256,
        adaptive_wait: bool = True,
        max_padding: float = 0.5,
        min_group_rows: int = 8,
        stats: BatchStats | None = None,
    ) -> None:
        problems = []
        if not engines:
            problems.append("at least one engine instance is needed")
        if max_batch_size < 1:
            problems.append(f"max_batch_size must be >= 1 (got {max_batch_size})")
        if max_wait_ms < 0:
            problems.append(f"max_wait_ms must be >= 0 (got {max_wait_ms})")
        if max_queue < 1:
            problems.append(f"max_queue must be >= 1 (got {max_queue})")
        if not 0 <= max_padding <= 1:
            problems.append(f"max_padding must be between 0 and 1 (got {max_padding})")
        if min_group_rows < 1:
            problems.append(f"min_group_rows must be >= 1 (got {min_group_rows})")
        if problems:
            raise ConfigError("Invalid batcher settings: " + "; ".join(problems) + ".")
        self.engines = list(engines)
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.adaptive_wait = adaptive_wait
        self.max_padding = max_padding  # 1.0: never split a batch by length
        self.min_group_rows = min_group_rows
        self.stats = stats or BatchStats()
        self._pending: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._closed = False
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, args=(fn,), name="sampan-engine", daemon=True)
            for fn in self.engines
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Take no new requests (submit raises Retired); what is queued still runs."""
        self._closed = True

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until everything queued or running has finished (for graceful shutdown)."""
        deadline = time.monotonic() + timeout
        while (self.depth or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Stop the engine threads (each finishes the batch it is running) and fail whatever
        is still queued."""
        self._closed = True
        with self._cond:
            self._stopping = True
            left = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for item in left:
            if not item.future.done():
                item.future.set_exception(Overloaded("The server is shutting down."))
        threads, self._threads = self._threads, []
        for thread in threads:
            await asyncio.to_thread(thread.join)
        await asyncio.sleep(0)  # let the last batch's results reach their callers

    @property
    def busy(self) -> int:
        """Batches running now."""
        return self._busy

    @property
    def depth(self) -> int:
        return len(self._pending)

    # -- callers (event loop) ------------------------------------------------------------------

    async def submit(self, rows: np.ndarray, timeout: float | None = None) -> np.ndarray:
        """Queue rows (k, ...) and wait for their k output rows."""
        if self._loop is None:
            raise RuntimeError("Batcher.start() was not called")
        if self._closed:
            raise Retired("This model version is no longer taking requests.")
        if count_rows(rows) > self.max_batch_size:
            raise ConfigError(
                f"A request of {count_rows(rows)} rows is over max_batch_size "
                f"{self.max_batch_size}; split it."
            )
        future: asyncio.Future[np.ndarray] = self._loop.create_future()
        deadline = time.monotonic() + timeout if timeout else float("inf")
        with self._cond:
            if len(self._pending) >= self.max_queue:
                # requests answered while queued (past their deadline, hung up) free their places
                self._pending = collections.deque(i for i in self._pending if not i.future.done())
            if len(self._pending) >= self.max_queue:
                raise Overloaded(f"The queue is full ({self.max_queue} waiting); retry shortly.")
            self._pending.append(_Item(rows, future, deadline))
            self._cond.notify()
            depth = len(self._pending)
        with contextlib.suppress(Exception):  # metrics never cost a caller its answer
            self.stats.on_queue(depth)
        if not timeout:
            return await future
        # The deadline also holds while its batch runs: an engine stuck in a call answers
        # nobody, and its callers hear 504 instead of waiting for ever. A timer, not
        # asyncio.wait_for: no extra future or task on every request's path.
        timer = self._loop.call_later(timeout, _expire, future, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    # -- engine threads ------------------------------------------------------------------------

    def _work(self, fn: BatchFn) -> None:
        wait = not self.adaptive_wait
        while True:
            items = self._next_batch(wait)
            if items is None:
                return
            try:
                live = self._drop_expired(items)
                if live:
                    self._run(fn, live)
            except Exception as exc:  # a bug outside the engine: its callers hear of it
                self._settle(items, None, exc)  # and the thread goes on serving
            finally:
                with self._cond:
                    self._busy -= 1
            wait = (len(items) > 1) if self.adaptive_wait else True

    def _next_batch(self, wait: bool) -> list[_Item] | None:
        """The next batch, taken from the queue (None: stop). A backlog (requests queued
        while the engines were busy) runs at once, up to max_batch_size rows: waiting for
        more would only idle the engine. A lone request waits up to max_wait for company
        when wait is set (the previous batch showed concurrency, or adaptive_wait is off)."""
        with self._cond:
            while not self._pending:
                if self._stopping:
                    return None
                self._cond.wait()
            self._busy += 1
            items = [self._pending.popleft()]
            rows = count_rows(items[0].rows)
            backlog = bool(self._pending) and self.adaptive_wait
            until = time.monotonic() + (self.max_wait if wait and not backlog else 0.0)
            while rows < self.max_batch_size and not self._stopping:
                if self._pending and self._pending[0].future.done():
                    self._pending.popleft()  # answered while queued: it takes no rows
                    continue
                if self._pending:
                    more = count_rows(self._pending[0].rows)
                    if rows + more > self.max_batch_size:
                        break  # it keeps its place: first of the next batch
                    items.append(self._pending.popleft())
                    rows += more
                    continue
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            depth = len(self._pending)
            if depth:  # left for the next batch: another idle engine may take it now
                self._cond.notify()
        with contextlib.suppress(Exception):  # metrics never cost a batch its answers
            self.stats.on_queue(depth)
        return items

    def _drop_expired(self, items: list[_Item]) -> list[_Item]:
        now = time.monotonic()
        live: list[_Item] = []
        expired: list[_Item] = []
        for item in items:
            if item.future.done():  # the caller went away
                continue
            (expired if now > item.deadline else live).append(item)
        for item in expired:
            late = DeadlineExceeded(
                f"Waited {now - item.enqueued:.2f}s in the queue, past the deadline."
            )
            self._settle([item], None, late)
        return live

    def _call(self, fn: BatchFn, batch: Any) -> tuple[np.ndarray, list[tuple[int, float]], float]:
        """(fn's outputs for batch, each engine call's rows and seconds, seconds spent putting
        outputs back in order): named rows of very different lengths run as one call per
        length group, their outputs put back in the batch's order."""
        groups = None  # images: one call, always
        if isinstance(batch, dict):
            lengths = row_lengths(batch)
            groups = length_groups(lengths, self.max_padding, self.min_group_rows)
        if groups is None or len(groups) == 1:
            started = time.perf_counter()
            outputs = _rows_back(fn(batch), count_rows(batch))
            return outputs, [(len(outputs), time.perf_counter() - started)], 0.0
        parts, calls = [], []
        for g in groups:
            rows = take_rows(batch, g, max(int(lengths[g].max()), 1))
            started = time.perf_counter()
            parts.append(_rows_back(fn(rows), len(g)))
            calls.append((len(g), time.perf_counter() - started))
        started = time.perf_counter()
        outputs = np.concatenate(parts)
        restored = np.empty_like(outputs)
        restored[np.concatenate(groups)] = outputs
        return restored, calls, time.perf_counter() - started

    def _run(self, fn: BatchFn, items: list[_Item]) -> None:
        began = time.monotonic()  # the queue's clock
        started = time.perf_counter()
        try:
            batch = items[0].rows if len(items) == 1 else merge_rows([i.rows for i in items])
            merged = time.perf_counter()
            outputs, calls, restoring = self._call(fn, batch)
        except BaseException as exc:  # every caller of this batch hears of it
            self._settle(items, None, exc)
            if not isinstance(exc, Exception):
                raise
            return
        done = time.perf_counter()
        cutting = done - merged - sum(seconds for _, seconds in calls) - restoring  # groups

        def report(answered: list[_Item]) -> None:
            self.stats.on_executed(
                Execution(
                    tuple(calls),
                    len(answered),
                    sum(count_rows(i.rows) for i in answered),
                    sum(began - i.enqueued for i in answered),
                    merged - started + cutting,
                    restoring,
                )
            )

        self._settle(items, outputs, None, report)
        with contextlib.suppress(Exception):  # metrics never cost a batch its answers
            self.stats.on_batch(count_rows(batch), done - started)
            self.stats.on_calls(len(calls))

    def _settle(
        self,
        items: list[_Item],
        outputs: np.ndarray | None,
        error: BaseException | None,
        report: Callable[[list[_Item]], None] | None = None,
    ) -> None:
        """Hand a batch's outputs (or its error) to its callers, on the event loop; report
        hears first which of them were still waiting."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(_deliver, items, outputs, error, report)


def _expire(future: asyncio.Future[np.ndarray], timeout: float) -> None:
    if not future.done():
        future.set_exception(
            DeadlineExceeded(f"No answer within {timeout:g}s (the engine is busy or stuck).")
        )


def _deliver(
    items: list[_Item],
    outputs: np.ndarray | None,
    error: BaseException | None,
    report: Callable[[list[_Item]], None] | None = None,
) -> None:
    if isinstance(error, StopIteration):  # futures refuse it (it would end a coroutine)
        error = RuntimeError(f"the engine raised {error!r}")
    if report is not None:  # before the answers: a caller that then asks sees its batch
        with contextlib.suppress(Exception):  # metrics never cost a batch its answers
            report([item for item in items if not item.future.done()])
    offset = 0
    for item in items:
        k = count_rows(item.rows)
        if not item.future.done():
            if error is not None:
                item.future.set_exception(error)
            else:
                assert outputs is not None
                item.future.set_result(outputs[offset : offset + k])
        offset += k


def _rows_back(outputs: np.ndarray, rows: int) -> np.ndarray:
    """outputs, unless the engine broke the rows-in == rows-out contract."""
    if len(outputs) != rows:
        raise RuntimeError(f"engine returned {len(outputs)} rows for {rows}")
    return outputs
