"""What every console page shares: templates, security headers, who is signed in, CSRF."""

from __future__ import annotations

import functools
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from sampan.errors import Forbidden, NotFoundError, Unauthorized
from sampan.platform.sessions import COOKIE

LOGIN_CSRF_COOKIE = "sampan_login_csrf"
# No inline script or style may run: everything a package or a caller wrote is text.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@functools.lru_cache(maxsize=1)
def templates() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("sampan.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = _number
    env.filters["size"] = _bytes
    return env


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _bytes(value: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return str(value)


@dataclass
class Viewer:
    """Who is looking: the auth mode of the server, and the signed-in key if any."""

    mode: str  # "keys" (every call needs a key), "open" (none needed), "off" (no platform)
    key: Any = None  # KeyInfo of the session's key
    csrf: str = ""  # the session's CSRF token (forms and the try-it page's API calls)

    @property
    def admin(self) -> bool:
        return self.key is not None and "admin" in self.key.scopes

    @property
    def can_browse(self) -> bool:
        """Catalog and try-it: anyone on an open server, a signed-in key otherwise."""
        return self.mode != "keys" or self.key is not None

    def may_see(self, model: str) -> bool:
        """Where keys are required, a key sees the models it may call (an admin key, all):
        one tenant's key does not list another's packages, cards and metrics."""
        if self.mode != "keys" or self.admin:
            return True
        return self.key is not None and self.key.allows(f"predict:{model}")


def gate_of(request: Request) -> Any:
    return getattr(request.app.state, "extension", None)


async def viewer(request: Request) -> Viewer:
    gate = gate_of(request)
    if gate is None:
        return Viewer("off")
    mode = "open" if gate.open else "keys"
    session = await gate.session(request.cookies.get(COOKIE))
    if session is None:
        return Viewer(mode)
    try:
        key = await gate.key_by_prefix(session.prefix)
    except Unauthorized:  # revoked or expired since: the session ends with it
        return Viewer(mode)
    return Viewer(mode, key, session.csrf)


def check_form(request: Request, form: dict[str, str], expected: str) -> None:
    """A state-changing form must carry the page's CSRF token and come from this origin."""
    given = form.get("csrf", "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("The form's security token is missing or stale; reload the page.")
    origin = request.headers.get("origin")
    if origin is not None:
        # The host only, not the scheme: behind a TLS proxy the server sees http while the
        # browser says https. An opaque origin ("null": a sandboxed frame) is refused.
        host = origin.partition("://")[2]
        if origin == "null" or host != request.headers.get("host", ""):
            raise Forbidden("Cross-site form refused.")


async def form_fields(request: Request) -> dict[str, str]:
    """A form's text fields (uploads ignored)."""
    async with request.form() as form:
        return {k: v for k, v in form.items() if isinstance(v, str)}


def may_see_or_404(who: Viewer, name: str) -> None:
    """A model the viewer may not see is answered as if it did not exist."""
    if not who.may_see(name):
        raise NotFoundError(f"No package {name!r} in the store.")


def page(
    request: Request,
    template: str,
    who: Viewer,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    html = templates().get_template(template).render(viewer=who, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def login_token() -> str:
    return secrets.token_urlsafe(24)


def signin_redirect(request: Request) -> RedirectResponse:
    """To the sign-in page, coming back here afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target, safe='/')}", status_code=303)
