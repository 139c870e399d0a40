"""The platform database: SQLite (WAL) under SAMPAN_HOME by default, PostgreSQL when
SAMPAN_DATABASE_URL says so; migrated to the newest schema by Alembic on open."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sampan.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"


def database_url(home: Path | None = None) -> str:
    """SAMPAN_DATABASE_URL, else sqlite:///SAMPAN_HOME/platform.db."""
    url = os.environ.get("SAMPAN_DATABASE_URL")
    if url:
        return normalise_url(url)
    from sampan.store import sampan_home

    root = home or sampan_home()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'platform.db'}"


def normalise_url(url: str) -> str:
    """postgresql:// and postgres:// mean psycopg 3 (the driver sampan installs)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    if not url.startswith(("sqlite://", "postgresql+")):
        raise ConfigError(
            f"SAMPAN_DATABASE_URL must be sqlite:///PATH or postgresql://..., not "
            f"{url.split('://')[0]}://..."
        )
    return url


class Database:
    """An engine and a session factory over one platform database, migrated on open."""

    def __init__(self, url: str | None = None, home: Path | None = None) -> None:
        from sqlalchemy import create_engine, event
        from sqlalchemy.orm import sessionmaker

        self.url = normalise_url(url) if url else database_url(home)
        self.is_sqlite = self.url.startswith("sqlite")
        options: dict[str, Any] = {"pool_pre_ping": True}
        if self.is_sqlite:
            options["connect_args"] = {"timeout": 30, "check_same_thread": False}
        try:
            self.engine = create_engine(self.url, **options)
        except Exception as exc:  # a bad URL or a missing driver
            raise ConfigError(f"Cannot use database {self.safe_url}: {exc}") from None
        if self.is_sqlite:

            @event.listens_for(self.engine, "connect")
            def _pragmas(connection: Any, _: Any) -> None:
                cursor = connection.cursor()
                # WAL: readers never block the writer; NORMAL: a commit does not fsync the
                # database each time (a crash can lose the last commits, never corrupt it).
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.migrate()

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return self.url.split("://")[0] + "://..."

    def migrate(self) -> None:
        """Bring the schema to Alembic's head, one process at a time."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self._migration_lock(), self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except ConfigError:
            raise
        except Exception as exc:
            if "OperationalError" in type(exc).__name__ or "connect" in str(exc).lower():
                raise ConfigError(
                    f"Cannot reach the platform database {self.safe_url} "
                    f"({str(exc).splitlines()[0]}); check SAMPAN_DATABASE_URL."
                ) from None
            raise

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.is_sqlite:
            path = Path(self.url.removeprefix("sqlite:///") + ".migrate-lock")
            with path.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                yield
            return
        from sqlalchemy import text

        with self.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(72657)"))
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(72657)"))
                connection.commit()

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self.sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
