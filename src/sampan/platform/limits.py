"""Rate limits (a token bucket per key) and quotas (per day and per month) that hold across
every server process sharing the platform's state: in the database by default, with atomic
conditional updates, or in Redis (one Lua script per call) when SAMPAN_REDIS_URL is set."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from sampan.platform.db import Database
from sampan.platform.keys import KeyInfo


@dataclass
class Decision:
    allowed: bool
    reason: str = ""  # 'rate', 'day' or 'month' when refused
    retry_after: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class Limiter(Protocol):
    async def charge(self, key: KeyInfo, units: int = 1) -> Decision: ...

    async def close(self) -> None: ...


def periods(now: dt.datetime) -> dict[str, tuple[str, float]]:
    """{'day': (period id, seconds until it resets), 'month': (...)} for a UTC time."""
    day_end = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    month_end = (first + dt.timedelta(days=32)).replace(day=1)
    return {
        "day": (f"d:{now:%Y-%m-%d}", (day_end - now).total_seconds()),
        "month": (f"m:{now:%Y-%m}", (month_end - now).total_seconds()),
    }


def _quotas(key: KeyInfo) -> list[tuple[str, int | None]]:
    return [(name, limit) for name, limit in (("day", key.quota_day), ("month", key.quota_month))]


def _refused(reason: str, retry_after: float, limit: int | float) -> Decision:
    retry = max(1, math.ceil(retry_after))
    return Decision(
        False,
        reason,
        retry,
        {
            "Retry-After": str(retry),
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(retry),
        },
    )


def _allowed(remaining: dict[str, tuple[int, int, float]]) -> Decision:
    """Headers describe the tightest quota: (limit, remaining, reset seconds) by period."""
    if not remaining:
        return Decision(True)
    limit, left, reset = min(remaining.values(), key=lambda v: v[1])
    return Decision(
        True,
        headers={
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(left),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        },
    )


class _Batched:
    """Calls charged in batches: calls that arrive while a batch is being charged wait for the
    next one, so under load one round trip serves many calls, and a lone call goes at once.
    A subclass charges a batch (`_charge_all`), in order."""

    def __init__(self, max_in_flight: int = 1) -> None:
        self.max_in_flight = max_in_flight  # batches charged at once
        self._pending: list[tuple[KeyInfo, int, asyncio.Future[Decision]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Future[None]] = set()
        self._starting = False  # a batch task was started and has not taken its calls yet
        self._closed = False

    async def charge(self, key: KeyInfo, units: int = 1) -> Decision:
        if key.rate_per_s is None and key.quota_day is None and key.quota_month is None:
            return Decision(True)
        if self._closed:
            raise RuntimeError("the limiter is closed")
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending.append((key, units, future))
        self._kick()
        return await future

    def _kick(self) -> None:
        # A batch takes the calls pending when its task first runs, one loop step later: the
        # requests that arrived together have all asked by then.
        if self._pending and not self._starting and self._in_flight < self.max_in_flight:
            self._starting = True
            task = asyncio.ensure_future(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():  # perhaps before it took its calls
            self._starting = False

    async def _run(self) -> None:
        self._starting = False
        batch, self._pending = self._pending, []
        self._in_flight += 1
        try:
            decisions = await self._charge_all([(key, units) for key, units, _ in batch])
        except BaseException as exc:  # every caller of the batch hears of it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (*_, future), decision in zip(batch, decisions):
                if not future.done():
                    future.set_result(decision)
        finally:
            self._in_flight -= 1
            self._kick()

    async def _charge_all(self, calls: list[tuple[KeyInfo, int]]) -> list[Decision]:
        raise NotImplementedError

    async def _finish_batches(self) -> None:
        """Refuse new calls and let the batches in flight finish."""
        self._closed = True
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class DatabaseLimiter(_Batched):
    """Counters in the platform database, charged in batches (one transaction each).

    A batch locks its keys' rows (the first write takes SQLite's write lock; PostgreSQL's
    SELECT ... FOR UPDATE locks the rows), grants the calls in arrival order while every limit
    has room, and writes each row once, so processes sharing the database never grant more
    than a limit between them."""

    def __init__(self, db: Database, max_in_flight: int = 1) -> None:
        super().__init__(max_in_flight)  # batches at once: their rows lock apart
        self.db = db
        self._inline = _InlineSqlite(db) if db.is_sqlite else None

    async def _charge_all(self, calls: list[tuple[KeyInfo, int]]) -> list[Decision]:
        decisions = self._inline.charge(self, calls, time.time()) if self._inline else None
        if decisions is None:  # PostgreSQL, or SQLite's write lock is taken right now
            decisions = await asyncio.to_thread(self.charge_batch, calls, time.time())
        return decisions

    def charge_batch(self, calls: list[tuple[KeyInfo, int]], now: float) -> list[Decision]:
        """Decisions for calls, in order, charged in one transaction."""
        # The driver's own connection (sqlite3, psycopg) from the engine's pool, not
        # SQLAlchemy's: this runs for every call, and SQLAlchemy's statement handling cost
        # 4x the database work (415 us a batch on SQLite, 2-core x86), in a thread that
        # holds the GIL the event loop needs.
        connection = self.db.engine.raw_connection()
        try:
            decisions = self.decide(connection.cursor(), calls, now)
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()  # back to the pool
        return decisions

    def decide(self, cursor: Any, calls: list[tuple[KeyInfo, int]], now: float) -> list[Decision]:
        """Decisions for calls, in order, inside the cursor's open transaction."""
        decisions: list[Decision | None] = [None] * len(calls)
        # Grouped by the whole KeyInfo: the gate passes a key with only the limits a charge
        # applies (the rate up front, quotas in task units later), and two groups of one key
        # in a transaction see each other's writes.
        by_key: dict[KeyInfo, list[int]] = {}
        for index, (key, _) in enumerate(calls):
            by_key.setdefault(key, []).append(index)
        # Keys in one order in every batch, so that two batches locking rows (PostgreSQL) can
        # never each hold what the other waits for.
        for _, indices in sorted(by_key.items(), key=lambda item: item[0].prefix):
            key = calls[indices[0]][0]
            units = [calls[i][1] for i in indices]
            for index, decision in zip(indices, self._charge_key(cursor, key, units, now)):
                decisions[index] = decision
        return [d if d is not None else Decision(True) for d in decisions]

    def _charge_key(
        self, cursor: Any, key: KeyInfo, units: list[int], now: float
    ) -> list[Decision]:
        sql = _SQL["sqlite" if self.db.is_sqlite else "postgresql"]
        spans = periods(dt.datetime.fromtimestamp(now, dt.timezone.utc))
        quotas = [(name, limit) for name, limit in _quotas(key) if limit is not None]
        level = burst = updated = 0.0
        if key.rate_per_s is not None:
            burst = float(key.burst or 1)
            # Always a write first: on SQLite it takes the database's write lock before
            # anything is read, so no other process can read the same counts meanwhile.
            cursor.execute(
                sql["ensure_bucket"], {"prefix": key.prefix, "tokens": burst, "updated": now}
            )
            cursor.execute(sql["read_bucket"], {"prefix": key.prefix})
            tokens, updated = cursor.fetchone()
            # Another process may have committed a newer clock reading than ours: then no
            # time has passed for us (a negative elapsed time would drain a fast bucket).
            level = min(burst, tokens + max(0.0, now - updated) * key.rate_per_s)
        room: dict[str, int] = {}
        for name, limit in quotas:
            where = {"prefix": key.prefix, "period": spans[name][0]}
            cursor.execute(sql["ensure_counter"], where)
            cursor.execute(sql["read_counter"], where)
            used = cursor.fetchone()[0]
            room[name] = int(limit or 0) - int(used or 0)
        start_level, start_room = level, dict(room)
        decisions = []
        for n in units:
            if key.rate_per_s is not None and level < n:
                decisions.append(_refused("rate", (n - level) / key.rate_per_s, burst))
                continue
            full = next((name for name, _ in quotas if room[name] < n), None)
            if full is not None:
                decisions.append(_refused(full, spans[full][1], dict(quotas)[full] or 0))
                continue
            level -= n if key.rate_per_s is not None else 0
            for name in room:
                room[name] -= n
            decisions.append(
                _allowed(
                    {name: (int(limit or 0), room[name], spans[name][1]) for name, limit in quotas}
                )
            )
        if key.rate_per_s is not None and level != start_level:
            cursor.execute(
                sql["write_bucket"],
                {"prefix": key.prefix, "tokens": level, "updated": max(now, updated)},
            )
        for name, _ in quotas:
            if room[name] != start_room[name]:
                cursor.execute(
                    sql["add_counter"],
                    {
                        "prefix": key.prefix,
                        "period": spans[name][0],
                        "n": start_room[name] - room[name],
                    },
                )
        return decisions

    async def close(self) -> None:
        await self._finish_batches()
        if self._inline is not None:
            self._inline.close()


class _InlineSqlite:
    """Charges a batch on the event loop itself, on a connection of its own that never waits
    for SQLite's write lock: taken, it gives up at once (None) and the batch goes to a
    thread, which waits its turn. A batch here costs about 70 us of the loop's time; handing
    it to a thread and back cost the loop 100-250 us of CPU per batch, and the thread's own
    Python held the GIL the loop needed (2-core x86, benchmarks/platform_overhead.py)."""

    def __init__(self, db: Database) -> None:
        import sqlite3

        self.errors = (sqlite3.OperationalError,)
        path = db.engine.url.database or ":memory:"
        self.connection = sqlite3.connect(
            path, timeout=0, isolation_level=None, check_same_thread=False
        )
        self.connection.execute("PRAGMA busy_timeout=0")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        # No checkpoints from here (they copy the log into the database and fsync, which can
        # take milliseconds): the pooled connections' usual checkpoints keep the log short.
        self.connection.execute("PRAGMA wal_autocheckpoint=0")

    def charge(
        self, limiter: DatabaseLimiter, calls: list[tuple[KeyInfo, int]], now: float
    ) -> list[Decision] | None:
        if self.connection.in_transaction:  # never left open, but never wait on ourselves
            self._rollback()
        cursor = self.connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")  # the write lock now, or not at all
        except self.errors:
            return None
        try:
            decisions = limiter.decide(cursor, calls, now)
            cursor.execute("COMMIT")
        except self.errors:  # busy after all: nothing was charged; the thread does it
            self._rollback()
            return None
        except BaseException:
            self._rollback()
            raise
        return decisions

    def _rollback(self) -> None:
        import sqlite3

        # SQLite may have rolled back on its own (I/O errors): then there is nothing to do.
        if self.connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.connection.execute("ROLLBACK")

    def close(self) -> None:
        self.connection.close()


def _statements(for_update: str, placeholder: str) -> dict[str, str]:
    """The limiter's SQL for a driver: named parameters as placeholder spells them
    (sqlite3 ':name', psycopg '%(name)s')."""
    statements = {
        "ensure_bucket": "INSERT INTO rate_buckets (prefix, tokens, updated) "
        "VALUES (:prefix, :tokens, :updated) ON CONFLICT DO NOTHING",
        "read_bucket": "SELECT tokens, updated FROM rate_buckets "
        f"WHERE prefix = :prefix{for_update}",
        "write_bucket": "UPDATE rate_buckets SET tokens = :tokens, updated = :updated "
        "WHERE prefix = :prefix",
        "ensure_counter": "INSERT INTO quota_counters (prefix, period, used) "
        "VALUES (:prefix, :period, 0) ON CONFLICT DO NOTHING",
        "read_counter": "SELECT used FROM quota_counters WHERE prefix = :prefix "
        f"AND period = :period{for_update}",
        "add_counter": "UPDATE quota_counters SET used = used + :n "
        "WHERE prefix = :prefix AND period = :period",
    }
    return {k: re.sub(r":(\w+)", placeholder, v) for k, v in statements.items()}


# SQLite has no row locks: the first write of the transaction took the database's lock.
_SQL = {"sqlite": _statements("", r":\1"), "postgresql": _statements(" FOR UPDATE", r"%(\1)s")}


# KEYS: bucket, then one counter per quota. ARGV: units, rate (or ''), burst, then per quota
# its limit and time-to-live. Answers {allowed (1/0), reason index, retry seconds, remaining...}.
_REDIS_SCRIPT = """
local units = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = nil
if ARGV[2] ~= '' then
  local rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
  local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
  tokens = tonumber(state[1]) or burst
  local updated = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
  if tokens < units then
    return {0, 0, tostring((units - tokens) / rate)}
  end
end
local answer = {1, -1, '0'}
for i = 2, #KEYS do
  local limit = tonumber(ARGV[2 + 2 * (i - 1)])
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + units > limit then
    return {0, i - 1, '-1'}
  end
end
for i = 2, #KEYS do
  local limit = tonumber(ARGV[2 + 2 * (i - 1)])
  local used = redis.call('INCRBY', KEYS[i], units)
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3 + 2 * (i - 1)]))
  table.insert(answer, limit - used)
end
if tokens ~= nil then
  redis.call('HSET', KEYS[1], 'tokens', tokens - units, 'updated', now)
  redis.call('EXPIRE', KEYS[1], 3600)
end
return answer
"""


class RedisLimiter(_Batched):
    """Counters in Redis: one atomic Lua script per call, a batch of calls sent as one
    pipeline and awaited without a thread. redis-py's client costs about 170 us of the event
    loop's CPU per awaited pipeline of one call and 30-47 us per further call (2-core x86);
    with hiredis (the `redis` extra) 105 and 25."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        super().__init__()
        self.client = redis.from_url(url)
        self._sha: str | None = None

    async def _charge_all(self, calls: list[tuple[KeyInfo, int]]) -> list[Decision]:
        from redis.exceptions import NoScriptError

        now = dt.datetime.now(dt.timezone.utc)
        spans = periods(now)
        plans = [self._plan(key, units, spans) for key, units in calls]
        answers: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):  # a second time for scripts a restarted Redis forgot
            if self._sha is None:
                self._sha = await self.client.script_load(_REDIS_SCRIPT)
            pipe = self.client.pipeline(transaction=False)
            for i in todo:
                keys, args, _ = plans[i]
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
            for i, result in zip(todo, results):
                answers[i] = result
            todo = [i for i in todo if isinstance(answers[i], NoScriptError)]
            if not todo:
                break
            self._sha = None  # not run, so not charged: load the script and send those again
        decisions = []
        for (key, _), (_, _, quotas), answer in zip(calls, plans, answers):
            if isinstance(answer, Exception):
                raise answer
            decisions.append(_redis_decision(key, quotas, spans, answer))
        return decisions

    @staticmethod
    def _plan(
        key: KeyInfo, units: int, spans: dict[str, tuple[str, float]]
    ) -> tuple[list[str], list[Any], list[tuple[str, int]]]:
        """(Redis keys, script arguments, quotas) of one call."""
        quotas = [(name, limit) for name, limit in _quotas(key) if limit is not None]
        keys = [f"sampan:bucket:{key.prefix}"]
        args: list[Any] = [units, "" if key.rate_per_s is None else key.rate_per_s, key.burst or 1]
        for name, limit in quotas:
            period, reset = spans[name]
            keys.append(f"sampan:quota:{key.prefix}:{period}")
            args += [limit, int(reset) + 3600]
        return keys, args, quotas

    async def close(self) -> None:
        await self._finish_batches()
        await self.client.aclose()


def _redis_decision(
    key: KeyInfo, quotas: list[tuple[str, int]], spans: dict[str, tuple[str, float]], answer: Any
) -> Decision:
    allowed, index, retry, *left = answer
    if not int(allowed):
        if int(index) == 0:
            return _refused("rate", float(retry), key.burst or 1)
        name, limit = quotas[int(index) - 1]
        return _refused(name, spans[name][1], limit)
    return _allowed(
        {
            name: (limit, int(remaining), spans[name][1])
            for (name, limit), remaining in zip(quotas, left)
        }
    )
