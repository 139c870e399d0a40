"""The platform's tables (SQLAlchemy 2). Changes go through an Alembic migration in
migrations/versions/, never through create_all."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class App(Base):
    """A tenant: an application that calls the API. It owns keys."""

    __tablename__ = "apps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    keys: Mapped[list[ApiKey]] = relationship(back_populates="app")


class ApiKey(Base):
    """A key: a visible prefix and the sha256 of its random secret (the secret is never kept)."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64), default="")
    scopes: Mapped[list[str]] = mapped_column(JSON)
    rate_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_month: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_units: Mapped[str] = mapped_column(String(16), default="requests")  # or "units"
    quota_model: Mapped[str | None] = mapped_column(String(64), nullable=True)  # a pattern
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    app: Mapped[App] = relationship(back_populates="keys")


class Counter(Base):
    """Calls counted against a key in one quota period ('d:2026-11-23', 'm:2026-11')."""

    __tablename__ = "quota_counters"
    prefix: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class Bucket(Base):
    """A key's token bucket for its rate limit (shared by every server process)."""

    __tablename__ = "rate_buckets"
    prefix: Mapped[str] = mapped_column(String(32), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)  # unix seconds


class UsageRecord(Base):
    """One call: who, what, how it went. Written in batches, off the hot path."""

    __tablename__ = "usage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    app: Mapped[str] = mapped_column(String(64))
    key_prefix: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    units: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_usage_ts", "ts"), Index("ix_usage_app_ts", "app", "ts"))


class AuditEntry(Base):
    """One administrative action (apps and keys created, keys revoked, models loaded)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ConsoleSession(Base):
    """A console sign-in. The browser holds a random session id; the database keeps only its
    sha256, the key the session was opened with (by prefix) and its CSRF token."""

    __tablename__ = "console_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_prefix: Mapped[str] = mapped_column(String(32))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_console_sessions_expires", "expires_at"),)
