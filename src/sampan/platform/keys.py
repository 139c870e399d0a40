"""Apps and API keys: create, list, revoke, and verify a presented key.

A key reads `smp_<prefix>_<secret>`. The prefix (12 hex characters) is public: it names the key
in lists, logs and usage records. The secret (32 random bytes) is shown once, at creation; the
database keeps only its sha256. Random secrets of that length need no slow password hash: what
a slow hash protects against, guessing a human's password, does not apply.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sampan.errors import ConfigError, Forbidden, NotFoundError, Unauthorized
from sampan.platform.db import Database
from sampan.platform.schema import ApiKey, App, AuditEntry, utcnow

_KEY = re.compile(r"^smp_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SCOPE = re.compile(r"^(admin|predict:[A-Za-z0-9._*?-]{1,64})$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(?:/(s|sec|second|m|min|minute))?$")
_QUOTA = re.compile(r"^(\d+)/(day|d|month|mo)$")


@dataclass(frozen=True)
class KeyInfo:
    """What the server needs to know about a verified key (never the secret)."""

    prefix: str
    app: str
    scopes: tuple[str, ...]
    rate_per_s: float | None
    burst: int | None
    quota_day: int | None
    quota_month: int | None
    expires_at: dt.datetime | None
    quota_units: str = "requests"  # what quotas count: calls, or the task's units (images)
    quota_model: str | None = None  # quotas count only calls to models matching this pattern

    def quotas_apply_to(self, model: str) -> bool:
        return self.quota_model is None or fnmatch.fnmatchcase(model, self.quota_model)

    def allows(self, scope: str) -> bool:
        """scope is 'admin' or 'predict:<model name>'."""
        if scope == "admin":
            return "admin" in self.scopes
        kind, _, model = scope.partition(":")
        return any(
            s.startswith(f"{kind}:") and fnmatch.fnmatchcase(model, s.split(":", 1)[1])
            for s in self.scopes
        )

    def check(self, scope: str) -> None:
        if not self.allows(scope):
            raise Forbidden(
                f"Key {self.prefix} (app {self.app}) has no scope for {scope}; its scopes: "
                f"{', '.join(self.scopes)}."
            )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_rate(text: str) -> float:
    """'20/s', '600/min', '5' (per second) -> calls per second."""
    match = _RATE.match(text.strip().lower())
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"Rate {text!r} is not like 20/s or 600/min.")
    value = float(match[1])
    return value / 60 if match[2] and match[2].startswith("m") else value


def parse_quota(text: str) -> tuple[str, int]:
    """'10000/day' -> ('day', 10000); '300000/month' -> ('month', 300000)."""
    match = _QUOTA.match(text.strip().lower())
    if not match or not 0 < int(match[1]) < 2**31:
        raise ConfigError(f"Quota {text!r} is not like 10000/day or 300000/month.")
    return ("day" if match[2] in ("day", "d") else "month"), int(match[1])


def parse_expiry(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """'30d', '12h' or an ISO date/time -> an aware UTC datetime."""
    now = now or utcnow()
    match = re.match(r"^(\d+)([dh])$", text.strip())
    if match:
        unit = dt.timedelta(days=1) if match[2] == "d" else dt.timedelta(hours=1)
        return now + int(match[1]) * unit
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"Expiry {text!r} is not like 30d, 12h or 2027-01-31.") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)


class Keys:
    """Administration of apps and keys; every change is written to the audit log."""

    def __init__(self, db: Database, actor: str = "cli") -> None:
        self.db = db
        self.actor = actor

    def _audit(self, session: Any, action: str, target: str, **detail: Any) -> None:
        session.add(AuditEntry(actor=self.actor, action=action, target=target, detail=detail))

    # -- apps ----------------------------------------------------------------------------------

    def create_app(self, name: str, description: str = "") -> dict[str, Any]:
        from sqlalchemy import select

        if not _APP_NAME.match(name):
            raise ConfigError(f"{name!r} is not an app name (letters, digits, '.', '_', '-').")
        if len(description) > 500:
            raise ConfigError("An app's description is at most 500 characters.")
        with self.db.session() as session:
            if session.scalar(select(App).where(App.name == name)) is not None:
                raise ConfigError(f"App {name!r} exists already; `sampan apps list` shows it.")
            app = App(name=name, description=description)
            session.add(app)
            self._audit(session, "app.create", name)
            session.flush()
            return {"name": app.name, "description": app.description, "created_at": app.created_at}

    def list_apps(self) -> list[dict[str, Any]]:
        from sqlalchemy import func, select

        with self.db.session() as session:
            rows = session.execute(
                select(App, func.count(ApiKey.id))
                .outerjoin(ApiKey, (ApiKey.app_id == App.id) & ApiKey.revoked_at.is_(None))
                .group_by(App.id)
                .order_by(App.name)
            ).all()
            return [
                {
                    "name": app.name,
                    "description": app.description,
                    "active_keys": count,
                    "created_at": _aware(app.created_at),
                }
                for app, count in rows
            ]

    # -- keys ----------------------------------------------------------------------------------

    def create_key(
        self,
        app: str,
        scopes: list[str],
        rate: str | None = None,
        burst: int | None = None,
        quotas: list[str] | None = None,
        expires: str | None = None,
        name: str = "",
        quota_units: str = "requests",
        quota_model: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """(the key, shown this once; its record without the secret)."""
        from sqlalchemy import select

        if not scopes:
            raise ConfigError("Give the key at least one scope, e.g. --scope 'predict:*'.")
        if len(name) > 64:
            raise ConfigError("A key's name is at most 64 characters.")
        for scope in scopes:
            if not _SCOPE.match(scope):
                raise ConfigError(
                    f"Scope {scope!r} is not 'admin' or 'predict:<model pattern>' "
                    "(e.g. predict:digits, predict:inspect-*)."
                )
        rate_per_s = parse_rate(rate) if rate else None
        if burst is not None and burst < 1:
            raise ConfigError("--burst must be at least 1.")
        limits = dict(parse_quota(q) for q in quotas or [])
        if quota_units not in ("requests", "units"):
            raise ConfigError(f"--quota-units {quota_units!r}: choose requests or units.")
        if quota_model is not None and not _SCOPE.match(f"predict:{quota_model}"):
            raise ConfigError(f"--quota-model {quota_model!r} is not a model name pattern.")
        expires_at = parse_expiry(expires) if expires else None
        prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self.db.session() as session:
            owner = session.scalar(select(App).where(App.name == app))
            if owner is None:
                raise NotFoundError(f"No app {app!r}; create it with `sampan apps create {app}`.")
            key = ApiKey(
                app_id=owner.id,
                prefix=prefix,
                secret_hash=_hash(secret),
                name=name,
                scopes=list(scopes),
                rate_per_s=rate_per_s,
                burst=burst or (max(1, round(rate_per_s)) if rate_per_s else None),
                quota_day=limits.get("day"),
                quota_month=limits.get("month"),
                quota_units=quota_units,
                quota_model=quota_model,
                expires_at=expires_at,
            )
            session.add(key)
            self._audit(session, "key.create", prefix, app=app, scopes=list(scopes))
            session.flush()
            return f"smp_{prefix}_{secret}", self._describe(key, app)

    @staticmethod
    def _describe(key: ApiKey, app: str) -> dict[str, Any]:
        return {
            "prefix": key.prefix,
            "app": app,
            "name": key.name,
            "scopes": list(key.scopes),
            "rate_per_s": key.rate_per_s,
            "burst": key.burst,
            "quota_day": key.quota_day,
            "quota_month": key.quota_month,
            "quota_units": key.quota_units,
            "quota_model": key.quota_model,
            "created_at": _aware(key.created_at),
            "expires_at": _aware(key.expires_at),
            "revoked_at": _aware(key.revoked_at),
        }

    def list_keys(self, app: str | None = None) -> list[dict[str, Any]]:
        from sqlalchemy import select

        with self.db.session() as session:
            query = select(ApiKey, App.name).join(App).order_by(App.name, ApiKey.created_at)
            if app:
                query = query.where(App.name == app)
            return [self._describe(key, name) for key, name in session.execute(query).all()]

    def count_active(self) -> int:
        """Keys neither revoked nor expired."""
        from sqlalchemy import func, or_, select

        with self.db.session() as session:
            return int(
                session.scalar(
                    select(func.count(ApiKey.id)).where(
                        ApiKey.revoked_at.is_(None),
                        or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > utcnow()),
                    )
                )
                or 0
            )

    def revoke(self, prefix: str) -> None:
        from sqlalchemy import select

        prefix = prefix.removeprefix("smp_").split("_")[0]
        with self.db.session() as session:
            key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
            if key is None:
                raise NotFoundError(f"No key {prefix!r}; `sampan keys list` shows the prefixes.")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
                self._audit(session, "key.revoke", prefix)

    # -- verification --------------------------------------------------------------------------

    def verify(self, presented: str, now: dt.datetime | None = None) -> KeyInfo:
        """The key's KeyInfo, or Unauthorized (never saying which part was wrong)."""

        match = _KEY.match(presented or "")
        if not match:
            raise Unauthorized("Send a valid API key as 'Authorization: Bearer smp_...'.")
        prefix, secret = match[1], match[2]
        with self.db.session() as session:
            row = _by_prefix(session, prefix)
        # Compare a hash either way, so an unknown prefix costs the same as a wrong secret.
        stored = row[0].secret_hash if row else _hash("")
        if not hmac.compare_digest(_hash(secret), stored) or row is None:
            raise Unauthorized("Unknown API key.")
        key, app = row
        return _info(key, app, now or utcnow())

    def info(self, prefix: str, now: dt.datetime | None = None) -> KeyInfo:
        """The KeyInfo of a key named by its prefix (a console session holds only that), or
        Unauthorized if it is unknown, revoked or expired."""

        with self.db.session() as session:
            row = _by_prefix(session, prefix)
        if row is None:
            raise Unauthorized("Unknown API key.")
        return _info(row[0], row[1], now or utcnow())

    def set_limits(
        self,
        prefix: str,
        rate: str | None = None,
        burst: int | None = None,
        quotas: list[str] | None = None,
    ) -> dict[str, Any]:
        """Replace a key's rate limit and quotas (None / empty: no limit); audited."""

        rate_per_s = parse_rate(rate) if rate else None
        if burst is not None and burst < 1:
            raise ConfigError("--burst must be at least 1.")
        limits = dict(parse_quota(q) for q in quotas or [])
        with self.db.session() as session:
            row = _by_prefix(session, prefix)
            if row is None:
                raise NotFoundError(f"No key {prefix!r}; `sampan keys list` shows the prefixes.")
            key, app = row
            key.rate_per_s = rate_per_s
            key.burst = burst or (max(1, round(rate_per_s)) if rate_per_s else None)
            key.quota_day, key.quota_month = limits.get("day"), limits.get("month")
            self._audit(
                session, "key.limits", prefix, rate=rate, burst=key.burst, quotas=quotas or []
            )
            session.flush()
            return self._describe(key, app)


def _by_prefix(session: Any, prefix: str) -> Any:
    """(ApiKey, its app's name) for a prefix, or None."""
    from sqlalchemy import select

    return session.execute(
        select(ApiKey, App.name).join(App).where(ApiKey.prefix == prefix)
    ).first()


def _info(key: ApiKey, app: str, now: dt.datetime) -> KeyInfo:
    if key.revoked_at is not None:
        raise Unauthorized(f"API key {key.prefix} has been revoked.")
    expires_at = _aware(key.expires_at)
    if expires_at is not None and expires_at <= now:
        raise Unauthorized(f"API key {key.prefix} expired at {expires_at:%Y-%m-%d %H:%M} UTC.")
    return KeyInfo(
        prefix=key.prefix,
        app=app,
        scopes=tuple(key.scopes),
        rate_per_s=key.rate_per_s,
        burst=key.burst,
        quota_day=key.quota_day,
        quota_month=key.quota_month,
        expires_at=expires_at,
        quota_units=key.quota_units,
        quota_model=key.quota_model,
    )
