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
