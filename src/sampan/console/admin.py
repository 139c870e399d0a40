"""Console administration: apps, keys (the secret shown once), limits, revocation, audit log.

Every action goes through platform.keys.Keys, as `sampan apps|keys` and the admin REST do, so
it is validated and audited the same way; the actor is the signed-in key's prefix."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from sampan.console.web import Viewer, check_form, form_fields, gate_of, page, viewer
from sampan.errors import ConfigError, SampanError

# What a finished action says on the page it redirects to: a code and a checked argument in
# the URL, never free text (a crafted link cannot put its own words on the admin page).
DONE = {
    "app": (re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), "App {} created."),
    "revoked": (re.compile(r"^[0-9a-f]{12}$"), "Key {} revoked."),
    "limits": (re.compile(r"^[0-9a-f]{12}$"), "Limits of key {} saved."),
}
# Create-key forms already answered (by their one-time nonce), so reloading the page that
# shows a new secret does not make a second key. Per process, bounded.
_ANSWERED: OrderedDict[str, str] = OrderedDict()


async def _admin_viewer(request: Request) -> Viewer | Response:
    """The signed-in admin, or the page to show instead."""
    who = await viewer(request)
    if who.mode == "off":
        message = (
            "This server runs with --auth off: there is no platform database, so no apps or "
            "keys. Start it with --auth auto (the default) to administer them here."
        )
        return page(request, "message.html", who, 404, title="No platform", message=message)
    if who.key is None:
        return RedirectResponse("/console/login?next=/console/admin", status_code=303)
    if not who.admin:
        message = f"Key {who.key.prefix} has no admin scope; sign in with an admin key."
        return page(request, "message.html", who, 403, title="Admin only", message=message)
    return who


def _keys(request: Request, who: Viewer) -> Any:
    from sampan.platform.keys import Keys

    return Keys(gate_of(request).recorder.db, actor=f"console:key:{who.key.prefix}")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _burst(text: str) -> int | None:
    if not text.strip():
        return None
    if not text.strip().isdigit():
        raise ConfigError(f"Burst {text!r} is not a whole number of calls.")
    return int(text)


def rate_text(per_s: float | None) -> str:
    """A key's rate as the form's field shows it, in a unit parse_rate reads back exactly."""
    if not per_s:
        return ""
    per_min = per_s * 60
    if per_s < 1 and abs(per_min - round(per_min)) < 1e-9:
        return f"{round(per_min)}/min"
    return f"{per_s:.6f}".rstrip("0").rstrip(".") + "/s"


def done_message(code: str) -> str:
    kind, _, argument = code.partition(":")
    if kind in DONE and DONE[kind][0].match(argument):
        return DONE[kind][1].format(argument)
    return ""


async def _state(keys: Any) -> dict[str, Any]:
    from sampan.platform.admin_api import audit_log
    from sampan.platform.schema import utcnow

    listed = await asyncio.to_thread(keys.list_keys)
    now = utcnow()
    for key in listed:
        expired = key["expires_at"] is not None and key["expires_at"] <= now
        key["state"] = "revoked" if key["revoked_at"] else "expired" if expired else "active"
        key["rate_text"] = rate_text(key["rate_per_s"])
    return {
        "apps": await asyncio.to_thread(keys.list_apps),
        "keys": listed,
        "audit": await asyncio.to_thread(audit_log, keys.db, 50),
        "nonce": secrets.token_urlsafe(12),
    }


def router() -> APIRouter:
    api = APIRouter(prefix="/admin")

    async def show(request: Request, who: Viewer, status: int = 200, **context: Any) -> Response:
        state = await _state(_keys(request, who))
        return page(request, "admin.html", who, status, **state, **context)

    async def act(request: Request, action: Any) -> Response:
        """Run a form's action; on a user error show the page again with the message."""
        who = await _admin_viewer(request)
        if not isinstance(who, Viewer):
            return who
        try:
            fields = await form_fields(request)
            check_form(request, fields, who.csrf)
            result = await action(_keys(request, who), fields)
        except SampanError as exc:
            return await show(request, who, 400, error=str(exc))
        if isinstance(result, dict):
            return await show(request, who, **result)  # a new secret: shown this once
        return RedirectResponse(f"/console/admin?done={result}", status_code=303)

    @api.get("")
    async def admin_page(request: Request, done: str = "") -> Response:
        who = await _admin_viewer(request)
        if not isinstance(who, Viewer):
            return who
        return await show(request, who, done=done_message(done))

    @api.post("/apps")
    async def create_app(request: Request) -> Response:
        async def action(keys: Any, f: dict[str, str]) -> str:
            name, description = f.get("name", ""), f.get("description", "")
            app = await asyncio.to_thread(keys.create_app, name, description)
            return f"app:{app['name']}"

        return await act(request, action)

    @api.post("/keys")
    async def create_key(request: Request) -> Response:
        async def action(keys: Any, f: dict[str, str]) -> dict[str, Any]:
            nonce = f.get("nonce", "")
            if nonce and nonce in _ANSWERED:
                note = f"This form was sent already: key {_ANSWERED[nonce]} was created then."
                return {"error": note}
            secret, record = await asyncio.to_thread(
                keys.create_key,
                f.get("app", ""),
                _split(f.get("scopes", "")),
                rate=f.get("rate") or None,
                burst=_burst(f.get("burst", "")),
                quotas=_split(f.get("quotas", "")),
                expires=f.get("expires") or None,
                name=f.get("name", ""),
            )
            if nonce:
                _ANSWERED[nonce] = record["prefix"]
                while len(_ANSWERED) > 1000:
                    _ANSWERED.popitem(last=False)
            return {"created": {"secret": secret, "record": record}}

        return await act(request, action)

    @api.post("/keys/{prefix}/revoke")
    async def revoke(request: Request, prefix: str) -> Response:
        async def action(keys: Any, f: dict[str, str]) -> str:
            await asyncio.to_thread(keys.revoke, prefix)
            gate_of(request).forget(prefix)
            return f"revoked:{prefix}"

        return await act(request, action)

    @api.post("/keys/{prefix}/limits")
    async def limits(request: Request, prefix: str) -> Response:
        async def action(keys: Any, f: dict[str, str]) -> str:
            await asyncio.to_thread(
                keys.set_limits,
                prefix,
                f.get("rate") or None,
                _burst(f.get("burst", "")),
                _split(f.get("quotas", "")),
            )
            gate_of(request).forget(prefix)
            return f"limits:{prefix}"

        return await act(request, action)

    return api
