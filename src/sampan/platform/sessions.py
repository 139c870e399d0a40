"""Console sessions: a signed cookie that names an API key by its prefix, never the key.

Someone signs in to the console with an API key once; the server answers with a cookie
holding the key's prefix, an expiry and a CSRF token, signed with HMAC-SHA256. The browser
keeps nothing that can call the API on its own: the cookie is HttpOnly and SameSite=Strict,
and a call made with it must also carry the CSRF token in a header (the gate checks both).
Revoking the key ends its sessions, because every use looks the key up again by prefix.

Stateless on purpose, so several server processes accept each other's sessions when they
share SAMPAN_CONSOLE_SECRET; without it each process signs with its own random secret and a
restart signs everyone out. (Starlette's SessionMiddleware would need itsdangerous and keeps
the session readable in the cookie; what is here is twenty lines of the standard library.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

COOKIE = "sampan_console"
CSRF_HEADER = "x-csrf-token"
LIFETIME_S = 8 * 3600


@dataclass(frozen=True)
class Session:
    prefix: str  # the API key it was opened with
    csrf: str
    expires: float  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Issues and reads signed session cookies."""

    def __init__(self, secret: str | None = None, lifetime_s: float = LIFETIME_S) -> None:
        secret = secret or os.environ.get("SAMPAN_CONSOLE_SECRET") or secrets.token_hex(32)
        self._key = hashlib.sha256(b"sampan-console:" + secret.encode()).digest()
        self.lifetime_s = lifetime_s

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, prefix: str, now: float | None = None) -> tuple[str, Session]:
        """(the cookie's value, the session it holds)."""
        session = Session(prefix, secrets.token_urlsafe(24), (now or time.time()) + self.lifetime_s)
        body = json.dumps({"p": session.prefix, "c": session.csrf, "e": round(session.expires)})
        payload = _b64(body.encode())
        return f"{payload}.{self._sign(payload)}", session

    def read(self, value: str | None, now: float | None = None) -> Session | None:
        """The session a cookie holds, or None if it is missing, forged or expired."""
        if not value or value.count(".") != 1:
            return None
        payload, signature = value.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["p"]), str(data["c"]), float(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > (now or time.time()) else None


def cookie_value(headers: list[tuple[bytes, bytes]], name: str = COOKIE) -> str | None:
    """One cookie's value from raw ASGI headers."""
    from http.cookies import SimpleCookie

    for key, raw in headers:
        if key == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(raw.decode("latin-1"))
            except Exception:  # a malformed Cookie header is no session
                return None
            if name in jar:
                return jar[name].value
    return None
