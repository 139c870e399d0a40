"""Console sessions: a random session id in an HttpOnly cookie, kept in the platform database.

Someone signs in to the console with an API key once; the server stores a session (the sha256
of a random id, the key's prefix, a CSRF token, an expiry) and gives the browser the id in an
HttpOnly, SameSite=Strict cookie. The browser never holds the key. A call made with the
session must also carry its CSRF token in a header (the gate checks both). Signing out ends
the session in the database, so a copied cookie stops working too; revoking the key ends its
sessions, because every use looks the key up again. Every server process over the same
database shares the sessions (no secret to distribute).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

COOKIE = "sampan_console"
CSRF_HEADER = "x-csrf-token"
LIFETIME = dt.timedelta(hours=8)


@dataclass(frozen=True)
class Session:
    prefix: str  # the API key it was opened with
    csrf: str
    expires_at: dt.datetime


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


class Sessions:
    """Open, find and end console sessions in the platform database."""

    def __init__(self, db: Any, lifetime: dt.timedelta = LIFETIME) -> None:
        self.db, self.lifetime = db, lifetime

    def open(self, prefix: str) -> tuple[str, Session]:
        """(the session id for the cookie, the session); expired sessions are swept."""
        from sqlalchemy import delete

        from sampan.platform.schema import ConsoleSession, utcnow

        now = utcnow()
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        with self.db.session() as s:
            s.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
            s.add(
                ConsoleSession(
                    id_hash=_hash(session_id),
                    key_prefix=prefix,
                    csrf=csrf,
                    created_at=now,
                    expires_at=now + self.lifetime,
                )
            )
        return session_id, Session(prefix, csrf, now + self.lifetime)

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown, ended or expired)."""
        from sampan.platform.schema import ConsoleSession, utcnow

        if not session_id or len(session_id) > 100:
            return None
        with self.db.session() as s:
            row = s.get(ConsoleSession, _hash(session_id))
            if row is None or row.ended_at is not None:
                return None
            expires = _aware(row.expires_at)
            if expires <= utcnow():
                return None
            return Session(row.key_prefix, row.csrf, expires)

    def end(self, session_id: str) -> None:
        from sampan.platform.schema import ConsoleSession, utcnow

        with self.db.session() as s:
            row = s.get(ConsoleSession, _hash(session_id))
            if row is not None and row.ended_at is None:
                row.ended_at = utcnow()


def cookie_value(headers: list[tuple[bytes, bytes]], name: str = COOKIE) -> str | None:
    """One cookie's value from raw ASGI headers, parsed as browsers send them (Starlette's
    lenient parser: one odd cookie on the same host must not hide the session's)."""
    from starlette.requests import cookie_parser

    for key, raw in headers:
        if key == b"cookie":
            value = cookie_parser(raw.decode("latin-1")).get(name)
            if value is not None:
                return value
    return None
