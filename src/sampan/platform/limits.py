"""Rate limits (a token bucket per key) and quotas (per day and per month) that hold across
every server process sharing the platform's state: in the database by default, with atomic
conditional updates, or in Redis (one Lua script per call) when SAMPAN_REDIS_URL is set."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
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


class DatabaseLimiter:
    """Counters in the platform database. Each call is one short transaction of conditional
    UPDATEs (a row changes only while it is under its limit), so concurrent processes never
    grant more than a limit; run in a thread so the event loop never waits on the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def charge(self, key: KeyInfo, units: int = 1) -> Decision:
        if key.rate_per_s is None and key.quota_day is None and key.quota_month is None:
            return Decision(True)
        return await asyncio.to_thread(self._charge, key, units, time.time())

    def _charge(self, key: KeyInfo, units: int, now: float) -> Decision:
        insert = _insert_ignore(self.db)
        clock = dt.datetime.fromtimestamp(now, dt.timezone.utc)
        try:
            return self._charge_in(session_of(self.db), insert, key, units, now, clock)
        except _Refuse as refusal:  # the transaction rolled back: nothing was spent
            return refusal.decision

    def _charge_in(
        self, sessions: Any, insert: Any, key: KeyInfo, units: int, now: float, clock: Any
    ) -> Decision:
        from sqlalchemy import case, select, update

        from sampan.platform.schema import Bucket, Counter

        with sessions as session:
            if key.rate_per_s is not None:
                burst = float(key.burst or 1)
                session.execute(insert(Bucket).values(prefix=key.prefix, tokens=burst, updated=now))
                refilled = Bucket.tokens + (now - Bucket.updated) * key.rate_per_s
                level = case((refilled > burst, burst), else_=refilled)
                taken = session.execute(
                    update(Bucket)
                    .where(Bucket.prefix == key.prefix, level >= units)
                    .values(tokens=level - units, updated=now)
                ).rowcount
                if not taken:
                    tokens = session.scalar(select(level).where(Bucket.prefix == key.prefix))
                    wait = (units - (tokens or 0.0)) / key.rate_per_s
                    raise _Refuse(_refused("rate", wait, burst))
            remaining: dict[str, tuple[int, int, float]] = {}
            for name, limit in _quotas(key):
                if limit is None:
                    continue
                period, reset = periods(clock)[name]
                session.execute(insert(Counter).values(prefix=key.prefix, period=period, used=0))
                counted = session.execute(
                    update(Counter)
                    .where(
                        Counter.prefix == key.prefix,
                        Counter.period == period,
                        Counter.used + units <= limit,
                    )
                    .values(used=Counter.used + units)
                    .returning(Counter.used)
                ).first()
                if counted is None:  # the rate token and any other quota stay unspent
                    raise _Refuse(_refused(name, reset, limit))
                remaining[name] = (limit, limit - counted[0], reset)
        return _allowed(remaining)

    async def close(self) -> None:
        return None


class _Refuse(Exception):
    def __init__(self, decision: Decision) -> None:
        self.decision = decision


def session_of(db: Database) -> Any:
    return db.session()


def _insert_ignore(db: Database) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for this database's dialect."""
    if db.is_sqlite:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return lambda table: _IgnoringInsert(sqlite_insert(table))
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return lambda table: _IgnoringInsert(pg_insert(table))


class _IgnoringInsert:
    def __init__(self, statement: Any) -> None:
        self.statement = statement

    def values(self, **values: Any) -> Any:
        return self.statement.values(**values).on_conflict_do_nothing()


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


class RedisLimiter:
    """Counters in Redis: one atomic Lua script per call, awaited without a thread."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self.client = redis.from_url(url)
        self.script = self.client.register_script(_REDIS_SCRIPT)

    async def charge(self, key: KeyInfo, units: int = 1) -> Decision:
        quotas = [(name, limit) for name, limit in _quotas(key) if limit is not None]
        if key.rate_per_s is None and not quotas:
            return Decision(True)
        now = dt.datetime.now(dt.timezone.utc)
        spans = periods(now)
        keys = [f"sampan:bucket:{key.prefix}"]
        args: list[Any] = [
            units,
            "" if key.rate_per_s is None else key.rate_per_s,
            key.burst or 1,
        ]
        for name, limit in quotas:
            period, reset = spans[name]
            keys.append(f"sampan:quota:{key.prefix}:{period}")
            args += [limit, int(reset) + 3600]
        allowed, index, retry, *left = await self.script(keys=keys, args=args)
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

    async def close(self) -> None:
        await self.client.aclose()
