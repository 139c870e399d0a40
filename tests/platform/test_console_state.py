"""What the console keeps in the platform database, on SQLite and PostgreSQL: sessions, keys
looked up by prefix, limits changed in place, and usage over time."""

from __future__ import annotations

import datetime as dt

import pytest

from sampan.errors import ConfigError, NotFoundError, Unauthorized
from sampan.platform.keys import Keys
from sampan.platform.sessions import Sessions, cookie_value


def test_a_session_holds_a_hashed_id_and_ends(db):
    from sqlalchemy import text

    sessions = Sessions(db)
    session_id, session = sessions.open("0123456789ab")
    found = sessions.get(session_id)
    assert found is not None and (found.prefix, found.csrf) == ("0123456789ab", session.csrf)
    with db.engine.connect() as connection:
        assert session_id not in repr(
            connection.execute(text("SELECT * FROM console_sessions")).all()
        )
    assert sessions.get(session_id + "x") is None and sessions.get("") is None
    sessions.end(session_id)
    assert sessions.get(session_id) is None  # a copied cookie stops working too


def test_an_expired_session_is_refused_and_swept(db):
    from sqlalchemy import func, select

    from sampan.platform.schema import ConsoleSession

    short = Sessions(db, lifetime=dt.timedelta(seconds=-1))
    old_id, _ = short.open("0123456789ab")
    assert short.get(old_id) is None
    Sessions(db).open("0123456789ab")  # opening sweeps expired ones
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ConsoleSession)) == 1


def test_the_session_cookie_is_found_beside_odd_cookies():
    for header in (
        b"a=b c; sampan_console=abc",
        b'json={"x":1}; sampan_console=abc',
        b'a="b; sampan_console=abc',
    ):
        assert cookie_value([(b"cookie", header)]) == "abc", header
    assert cookie_value([(b"cookie", b"other=1")]) is None


def test_keys_by_prefix_and_limits_changed_in_place(db):
    keys = Keys(db, actor="console:key:test")
    keys.create_app("plant")
    secret, record = keys.create_key("plant", ["predict:*"], rate="10/s", quotas=["50/day"])
    prefix = record["prefix"]
    assert keys.info(prefix) == keys.verify(secret)
    changed = keys.set_limits(prefix, "120/min", 4, ["1000/month"])
    assert (changed["rate_per_s"], changed["burst"]) == (2.0, 4)
    assert (changed["quota_day"], changed["quota_month"]) == (None, 1000)
    assert keys.info(prefix).quota_month == 1000
    with pytest.raises(ConfigError):
        keys.set_limits(prefix, "fast", None, [])
    with pytest.raises(NotFoundError):
        keys.set_limits("ffffffffffff", "1/s", None, [])
    with pytest.raises(ConfigError, match="at most 64"):
        keys.create_key("plant", ["predict:*"], name="x" * 65)
    with pytest.raises(ConfigError):
        keys.create_key("plant", ["predict:*"], quotas=["9999999999/day"])
    keys.revoke(prefix)
    with pytest.raises(Unauthorized, match="revoked"):
        keys.info(prefix)
    with pytest.raises(Unauthorized):
        keys.info("ffffffffffff")


def test_usage_timeline_buckets_calls_and_leaves_refusals_out_of_latency(db):
    from sampan.platform.schema import UsageRecord
    from sampan.platform.usage import usage_timeline

    now = dt.datetime.now(dt.timezone.utc)
    rows = [  # (minutes ago, model, status, latency ms)
        (50, "digits", 200, 10.0),
        (50, "digits", 200, 30.0),
        (50, "digits", 429, 0.1),
        (50, "digits", 429, 0.1),
        (50, "digits", 429, 0.1),
        (5, "digits", 500, 2.0),
        (5, "ocr", 200, 100.0),
        (120, "digits", 200, 999.0),  # before the hour: not counted
    ]
    with db.session() as s:
        for ago, model, status, latency in rows:
            s.add(
                UsageRecord(
                    ts=now - dt.timedelta(minutes=ago),
                    app="plant",
                    key_prefix="0123456789ab",
                    model=model,
                    status=status,
                    latency_ms=latency,
                )
            )
    timeline = usage_timeline(db, "1h", "model", buckets=6)  # 10-minute buckets
    digits, ocr = timeline["groups"]["digits"], timeline["groups"]["ocr"]
    assert len(digits) == 6 and not timeline["truncated"]
    first, last = digits[0], digits[-1]
    assert (first["calls"], first["refused"], first["errors"]) == (5, 3, 0)
    assert first["p50_ms"] == 20.0 and 29 < first["p99_ms"] <= 30  # refusals left out
    assert (last["calls"], last["errors"], last["p50_ms"]) == (1, 1, 2.0)
    assert sum(b["calls"] for b in digits) == 6 and sum(b["calls"] for b in ocr) == 1
    assert all(b["p50_ms"] is None for b in digits[1:-1])
    with pytest.raises(ConfigError):
        usage_timeline(db, "1h", "colour")
