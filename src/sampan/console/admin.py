"""Console administration: apps, keys (the secret shown once), limits, revocation, audit log.

Every action goes through platform.keys.Keys, as `sampan apps|keys` and the admin REST do, so
it is validated and audited the same way; the actor is the signed-in key's prefix."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from sampan.console.web import Viewer, check_form, gate_of, page, viewer
from sampan.errors import SampanError


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


async def _state(keys: Any) -> dict[str, Any]:
    from sampan.platform.admin_api import audit_log

    return {
        "apps": await asyncio.to_thread(keys.list_apps),
        "keys": await asyncio.to_thread(keys.list_keys),
        "audit": await asyncio.to_thread(audit_log, keys.db, 50),
    }


async def _form(request: Request, who: Viewer) -> dict[str, str]:
    async with request.form() as form:
        fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    check_form(request, fields, who.csrf)
    return fields


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
            fields = await _form(request, who)
            result = await action(_keys(request, who), fields)
        except SampanError as exc:
            return await show(request, who, 400, error=str(exc))
        if isinstance(result, dict) and "secret" in result:
            return await show(request, who, created=result)  # shown this once, never stored
        return RedirectResponse(f"/console/admin?done={result}", status_code=303)

    @api.get("")
    async def admin_page(request: Request, done: str = "") -> Response:
        who = await _admin_viewer(request)
        if not isinstance(who, Viewer):
            return who
        return await show(request, who, done=done[:200])

    @api.post("/apps")
    async def create_app(request: Request) -> Response:
        async def action(keys: Any, f: dict[str, str]) -> str:
            app = await asyncio.to_thread(
                keys.create_app, f.get("name", ""), f.get("description", "")
            )
            return f"App {app['name']} created."

        return await act(request, action)

    @api.post("/keys")
    async def create_key(request: Request) -> Response:
        async def action(keys: Any, f: dict[str, str]) -> dict[str, Any]:
            secret, record = await asyncio.to_thread(
                keys.create_key,
                f.get("app", ""),
                _split(f.get("scopes", "")),
                rate=f.get("rate") or None,
                quotas=_split(f.get("quotas", "")),
                expires=f.get("expires") or None,
                name=f.get("name", ""),
            )
            return {"secret": secret, "record": record}

        return await act(request, action)

    @api.post("/keys/{prefix}/revoke")
    async def revoke(request: Request, prefix: str) -> Response:
        async def action(keys: Any, f: dict[str, str]) -> str:
            await asyncio.to_thread(keys.revoke, prefix)
            gate_of(request).forget(prefix)
            return f"Key {prefix} revoked."

        return await act(request, action)

    @api.post("/keys/{prefix}/limits")
    async def limits(request: Request, prefix: str) -> Response:
        async def action(keys: Any, f: dict[str, str]) -> str:
            await asyncio.to_thread(
                keys.set_limits, prefix, f.get("rate") or None, None, _split(f.get("quotas", ""))
            )
            gate_of(request).forget(prefix)
            return f"Limits of key {prefix} saved."

        return await act(request, action)

    return api
