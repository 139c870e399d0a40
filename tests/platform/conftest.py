"""Platform databases for tests: SQLite always; PostgreSQL when SAMPAN_TEST_POSTGRES_URL is
set (CI sets it), each test in a schema of its own that is dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES = os.environ.get("SAMPAN_TEST_POSTGRES_URL")
REDIS = os.environ.get("SAMPAN_TEST_REDIS_URL")
BACKENDS = ["sqlite", "postgres"]


def _postgres_schema_url() -> Iterator[str]:
    from sqlalchemy import create_engine, text

    from sampan.platform.db import normalise_url

    assert POSTGRES is not None
    schema = f"sampan_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(POSTGRES))
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in POSTGRES else "?"
    try:
        yield f"{POSTGRES}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty platform database: sqlite, then postgres (skipped where none)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'platform.db'}"
        return
    if not POSTGRES:
        pytest.skip("SAMPAN_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    yield from _postgres_schema_url()


@pytest.fixture
def db(database_url: str):
    from sampan.platform.db import Database

    database = Database(database_url)
    yield database
    database.close()


def clear_of_midnight(seconds: float) -> None:
    """Wait, if need be, until the next `seconds` will not cross midnight UTC: a daily quota
    resets there, and a test that counts calls against one would see two days' worth (seen
    in CI: a two-process quota test that ran from 23:59:57 to 00:00:05 let 200 calls of a
    100/day quota through, as it should)."""
    import datetime as dt
    import time

    now = dt.datetime.now(dt.timezone.utc)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    left = (midnight - now).total_seconds()
    if left < seconds:
        time.sleep(left + 0.5)
