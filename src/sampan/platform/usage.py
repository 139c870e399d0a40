"""Usage reports over the usage table: calls, units, refusals and latency by app, key, model
or day."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sampan.errors import ConfigError
from sampan.platform.db import Database

GROUPS = ("app", "key", "model", "day")


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """'7d', '24h', '30m' or an ISO date -> the UTC time the report starts at."""
    now = now or dt.datetime.now(dt.timezone.utc)
    match = re.match(r"^(\d+)([dhm])$", text.strip())
    if match:
        unit = {"d": dt.timedelta(days=1), "h": dt.timedelta(hours=1)}.get(
            match[2], dt.timedelta(minutes=1)
        )
        return now - int(match[1]) * unit
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--since {text!r} is not like 7d, 24h or 2026-11-01.") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def usage_report(db: Database, by: str = "app", since: str = "7d") -> list[dict[str, Any]]:
    """One row per group: calls, ok (2xx), refused (401/403/429), errors (other 4xx/5xx),
    units, mean and max latency in ms."""
    from sqlalchemy import Date, case, cast, func, select

    from sampan.platform.schema import UsageRecord as U

    if by not in GROUPS:
        raise ConfigError(f"--by {by!r}: choose one of {', '.join(GROUPS)}.")
    if by == "day":
        group: Any = func.date(U.ts) if db.is_sqlite else cast(U.ts, Date)
    else:
        group = {"app": U.app, "key": U.key_prefix, "model": U.model}[by]
    ok = func.sum(case((U.status < 300, 1), else_=0))
    refused = func.sum(case((U.status.in_((401, 403, 429)), 1), else_=0))
    query = (
        select(
            group.label("group"),
            func.count().label("calls"),
            ok.label("ok"),
            refused.label("refused"),
            func.sum(U.units).label("units"),
            func.avg(U.latency_ms).label("mean_ms"),
            func.max(U.latency_ms).label("max_ms"),
        )
        .where(U.ts >= parse_since(since))
        .group_by(group)
        .order_by(group)
    )
    with db.session() as session:
        rows = session.execute(query).all()
    return [
        {
            by: str(row.group),
            "calls": int(row.calls),
            "ok": int(row.ok or 0),
            "refused": int(row.refused or 0),
            "errors": int(row.calls) - int(row.ok or 0) - int(row.refused or 0),
            "units": int(row.units or 0),
            "mean_ms": round(float(row.mean_ms or 0), 2),
            "max_ms": round(float(row.max_ms or 0), 2),
        }
        for row in rows
    ]


REFUSED = (401, 403, 429)
TIMELINE_ROWS = 200_000  # the most calls a timeline reads; older ones beyond it are left out


def usage_timeline(
    db: Database, since: str = "24h", by: str = "model", buckets: int = 24
) -> dict[str, Any]:
    """Calls, errors, refusals and latency percentiles (of calls not refused) over time, per
    group (model, app or key).

    Returns {"start", "end", "bucket_s", "groups": {group: [{"t", "calls", "errors",
    "refused", "p50_ms", "p99_ms"}, ...]}, "truncated"}. Percentiles are computed here
    rather than in SQL: SQLite has no percentile function, and one query that reads the
    period's rows serves both databases alike."""
    from sqlalchemy import select

    from sampan.platform.schema import UsageRecord as U

    if by not in ("app", "key", "model"):
        raise ConfigError(f"by {by!r}: choose one of app, key, model.")
    if not 1 <= buckets <= 500:
        raise ConfigError("buckets must be between 1 and 500.")
    end = dt.datetime.now(dt.timezone.utc)
    start = parse_since(since, end)
    column = {"app": U.app, "key": U.key_prefix, "model": U.model}[by]
    query = (
        select(U.ts, column, U.status, U.latency_ms)
        .where(U.ts >= start)
        .order_by(U.ts.desc())
        .limit(TIMELINE_ROWS + 1)
    )
    with db.session() as session:
        rows = session.execute(query).all()
    truncated = len(rows) > TIMELINE_ROWS
    span = max((end - start).total_seconds(), 1.0)
    bucket_s = span / buckets
    cells: dict[str, list[list[tuple[int, float]]]] = {}
    for ts, group, status, latency in rows[:TIMELINE_ROWS]:
        ts = ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)
        index = min(int((ts - start).total_seconds() // bucket_s), buckets - 1)
        cells.setdefault(str(group), [[] for _ in range(buckets)])[index].append((status, latency))
    groups = {
        group: [_bucket(start, i * bucket_s, calls) for i, calls in enumerate(series)]
        for group, series in sorted(cells.items())
    }
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "bucket_s": bucket_s,
        "groups": groups,
        "truncated": truncated,
    }


def _bucket(start: dt.datetime, offset_s: float, calls: list[tuple[int, float]]) -> dict[str, Any]:
    import numpy as np

    # Refusals answer in microseconds without running a model: left out of the percentiles,
    # or a burst of them would pull p50 towards zero while real calls slowed down.
    served = [latency for status, latency in calls if status not in REFUSED]
    refused = len(calls) - len(served)
    errors = sum(status >= 400 for status, _ in calls) - refused
    p50, p99 = np.percentile(np.array(served), [50, 99]) if served else (None, None)
    return {
        "t": (start + dt.timedelta(seconds=offset_s)).isoformat(),
        "calls": len(calls),
        "errors": errors,
        "refused": refused,
        "p50_ms": None if p50 is None else round(float(p50), 2),
        "p99_ms": None if p99 is None else round(float(p99), 2),
    }
