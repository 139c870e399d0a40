"""Rate limits and quotas: exact under concurrency, in the database and in Redis."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from sampan.platform.keys import Keys
from sampan.platform.limits import DatabaseLimiter, RedisLimiter, periods
from tests.platform.conftest import REDIS


@pytest.fixture(params=["database", "redis"])
def limiter_kind(request):
    if request.param == "redis" and not REDIS:
        pytest.skip("SAMPAN_TEST_REDIS_URL is not set (.ci/run sets it)")
    return request.param


def make_limiter(kind, db):
    return DatabaseLimiter(db) if kind == "database" else RedisLimiter(REDIS)


def key_with(db, **limits):
    keys = Keys(db)
    if not keys.list_apps():
        keys.create_app("tenant")
    key, _ = keys.create_key("tenant", ["predict:*"], **limits)
    return keys.verify(key)


def test_a_quota_grants_exactly_its_limit_to_concurrent_callers(db, limiter_kind):
    info = key_with(db, quotas=["20/day", "1000/month"])

    async def main():
        limiter = make_limiter(limiter_kind, db)
        try:
            return await asyncio.gather(*(limiter.charge(info) for _ in range(60)))
        finally:
            await limiter.close()

    decisions = asyncio.run(main())
    allowed = [d for d in decisions if d.allowed]
    refused = [d for d in decisions if not d.allowed]
    assert len(allowed) == 20 and len(refused) == 40
    assert {d.reason for d in refused} == {"day"}
    assert all(d.headers["X-RateLimit-Limit"] == "20" for d in refused)
    assert int(refused[0].headers["Retry-After"]) >= 1
    remaining = sorted(int(d.headers["X-RateLimit-Remaining"]) for d in allowed)
    assert remaining == list(range(20))  # each grant saw its own count


def test_a_refused_call_spends_nothing(db, limiter_kind):
    info = key_with(db, quotas=["3/day", "4/month"])

    async def main():
        limiter = make_limiter(limiter_kind, db)
        try:
            return [await limiter.charge(info) for _ in range(5)]
        finally:
            await limiter.close()

    decisions = asyncio.run(main())
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    # the day quota refused calls 4 and 5, so the month still has one call left
    assert decisions[2].headers["X-RateLimit-Remaining"] == "0"
    assert decisions[3].reason == "day"


def test_the_token_bucket_allows_its_burst_then_refuses(db, limiter_kind):
    info = key_with(db, rate="1/min", burst=3)  # refills one call a minute: no refill here

    async def main():
        limiter = make_limiter(limiter_kind, db)
        try:
            return await asyncio.gather(*(limiter.charge(info) for _ in range(8)))
        finally:
            await limiter.close()

    decisions = asyncio.run(main())
    assert sum(d.allowed for d in decisions) == 3
    refused = [d for d in decisions if not d.allowed]
    assert {d.reason for d in refused} == {"rate"} and int(refused[0].retry_after) >= 1


def test_periods_reset_at_utc_midnight_and_month_start():
    now = dt.datetime(2026, 12, 31, 23, 0, tzinfo=dt.timezone.utc)
    spans = periods(now)
    assert spans["day"] == ("d:2026-12-31", 3600.0)
    assert spans["month"] == ("m:2026-12", 3600.0)


def test_calls_committing_out_of_clock_order_do_not_drain_the_bucket(db):
    info = key_with(db, rate="1000000/s", burst=10)
    limiter = DatabaseLimiter(db)

    # Two threads read the clock, then commit in the other order: the later commit carries
    # the older reading. A negative elapsed time must not take a million tokens away.
    def charge(now):
        return limiter.charge_batch([(info, 1)], now)[0].allowed

    assert charge(1000.0)
    assert charge(999.0)
    assert all(charge(999.5) for _ in range(8))
    assert not charge(1000.0)  # 10 spent, no time has passed


def test_quotas_for_one_model_pattern_leave_other_models_alone(db):
    from sampan.platform.gate import split_limits

    keys = Keys(db)
    keys.create_app("tenant")
    key, _ = keys.create_key(
        "tenant", ["predict:*"], quotas=["2/day"], rate="9/s", quota_model="ocr-*"
    )
    info = keys.verify(key)
    upfront, later = split_limits(info, "ocr-invoices")
    assert (upfront.quota_day, upfront.rate_per_s, later) == (2, 9.0, None)
    upfront, later = split_limits(info, "digits")
    assert (upfront.quota_day, upfront.rate_per_s, later) == (None, 9.0, None)
    limiter = DatabaseLimiter(db)
    ocr = split_limits(info, "ocr-invoices")[0]
    other = split_limits(info, "digits")[0]
    decisions = limiter.charge_batch([(ocr, 1), (other, 1), (ocr, 1), (other, 1), (ocr, 1)], 1.0)
    assert [d.allowed for d in decisions] == [True, True, True, True, False]
    assert decisions[-1].reason == "day"


def test_sqlite_charges_on_the_loop_and_waits_in_a_thread_while_another_writer_holds_it(
    tmp_path,
):
    import sqlite3
    import time

    from sampan.platform.db import Database

    with Database(f"sqlite:///{tmp_path / 'platform.db'}") as db:
        info = key_with(db, quotas=["3/day"])
        limiter = DatabaseLimiter(db)
        assert limiter._inline.charge(limiter, [(info, 1)], time.time())[0].allowed  # loop
        other = sqlite3.connect(tmp_path / "platform.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing
        assert limiter._inline.charge(limiter, [(info, 1)], time.time()) is None  # at once

        async def main():
            try:
                waiting = asyncio.ensure_future(limiter.charge(info))
                await asyncio.sleep(0.3)
                held = waiting.done()  # the thread waits for the lock; the loop does not
                other.execute("ROLLBACK")
                rest = [await waiting] + [await limiter.charge(info) for _ in range(2)]
                return held, rest
            finally:
                await limiter.close()

        held, rest = asyncio.run(main())
        other.close()
    assert not held
    assert [d.allowed for d in rest] == [True, True, False]  # 3 a day, the first one included


def test_the_loop_connection_recovers_from_a_transaction_left_open_and_close_waits(tmp_path):
    import time

    from sampan.platform.db import Database

    with Database(f"sqlite:///{tmp_path / 'platform.db'}") as db:
        info = key_with(db, quotas=["2/day"])
        limiter = DatabaseLimiter(db)
        limiter._inline.connection.execute("BEGIN IMMEDIATE")  # as if a ROLLBACK was lost
        assert limiter._inline.charge(limiter, [(info, 1)], time.time())[0].allowed

        async def main():
            pending = asyncio.ensure_future(limiter.charge(info))
            await asyncio.sleep(0)  # asked; its batch has not run yet
            await limiter.close()  # waits for it
            closed = pending.done()
            try:
                await limiter.charge(info)
            except RuntimeError as exc:
                return closed, (await pending).allowed, str(exc)

        closed, allowed, refused = asyncio.run(main())
    assert closed and allowed and "closed" in refused
