"""Admin REST for the platform (admin-scope keys only): apps, keys, usage and the audit log.

The same operations as `sampan apps|keys|usage`, each written to the audit log with the
calling key's prefix as the actor.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from sampan.errors import DataError, Forbidden
from sampan.platform.db import Database
from sampan.platform.keys import Keys
from sampan.serving.admin import json_body, read_json_object

STRING = {"type": "string"}
STRINGS = {"type": "array", "items": STRING}
APP_BODY = json_body(["name"], name=STRING, description=STRING)
KEY_BODY = json_body(
    ["app", "scopes"],
    app=STRING,
    scopes=STRINGS,
    rate={"type": "string", "example": "20/s"},
    burst={"type": "integer"},
    quotas=STRINGS,
    expires={"type": "string", "example": "30d"},
    name=STRING,
    quota_units={"type": "string", "enum": ["requests", "units"]},
    quota_model=STRING,
)


def _admin(request: Request, db: Database) -> Keys:
    key = getattr(request.state, "api_key", None)
    if not getattr(request.state, "admin", False) or key is None:
        raise Forbidden("The platform's admin endpoints need an API key with the admin scope.")
    return Keys(db, actor=f"key:{key.prefix}")


async def _body(request: Request) -> dict[str, Any]:
    return await read_json_object(request, "a JSON object")


def _text(body: dict[str, Any], name: str, required: bool = False) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise DataError(f"'{name}' must be a non-empty string.")
    return value


def router(db: Database) -> APIRouter:
    api = APIRouter(tags=["platform admin"])

    @api.get("/v1/admin/apps", summary="Apps and their active keys")
    async def list_apps(request: Request) -> dict[str, Any]:
        keys = _admin(request, db)
        return {"apps": await asyncio.to_thread(keys.list_apps)}

    @api.post("/v1/admin/apps", summary="Create an app", openapi_extra=APP_BODY)
    async def create_app(request: Request) -> dict[str, Any]:
        keys, body = _admin(request, db), await _body(request)
        name, description = _text(body, "name", True), _text(body, "description") or ""
        return {"app": await asyncio.to_thread(keys.create_app, name, description)}

    @api.get("/v1/admin/keys", summary="Keys (prefixes, scopes, limits; never secrets)")
    async def list_keys(request: Request, app: str | None = None) -> dict[str, Any]:
        keys = _admin(request, db)
        return {"keys": await asyncio.to_thread(keys.list_keys, app)}

    @api.post("/v1/admin/keys", summary="Create a key (shown once)", openapi_extra=KEY_BODY)
    async def create_key(request: Request) -> dict[str, Any]:
        keys, body = _admin(request, db), await _body(request)
        scopes, quotas = body.get("scopes"), body.get("quotas") or []
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise DataError("'scopes' must be a list of strings, e.g. [\"predict:digits*\"].")
        if not isinstance(quotas, list) or not all(isinstance(q, str) for q in quotas):
            raise DataError("'quotas' must be a list of strings, e.g. [\"10000/day\"].")
        burst = body.get("burst")
        if burst is not None and (not isinstance(burst, int) or isinstance(burst, bool)):
            raise DataError("'burst' must be an integer.")
        secret, record = await asyncio.to_thread(
            keys.create_key,
            _text(body, "app", True),
            scopes,
            rate=_text(body, "rate"),
            burst=burst,
            quotas=quotas,
            expires=_text(body, "expires"),
            name=_text(body, "name") or "",
            quota_units=_text(body, "quota_units") or "requests",
            quota_model=_text(body, "quota_model"),
        )
        note = "Store the key now; it is not shown again."
        return {"key": secret, "record": record, "note": note}

    @api.delete("/v1/admin/keys/{prefix}", summary="Revoke a key")
    async def revoke_key(prefix: str, request: Request) -> dict[str, Any]:
        keys = _admin(request, db)
        await asyncio.to_thread(keys.revoke, prefix)
        gate = getattr(request.app.state, "extension", None)
        if gate is not None:
            gate.forget(prefix.removeprefix("smp_").split("_")[0])
        return {"revoked": prefix}

    @api.get("/v1/admin/usage", summary="Usage by app, key, model or day")
    async def usage(request: Request, by: str = "app", since: str = "7d") -> dict[str, Any]:
        from sampan.platform.usage import usage_report

        _admin(request, db)
        rows = await asyncio.to_thread(usage_report, db, by, since)
        return {"by": by, "since": since, "rows": rows}

    @api.get("/v1/admin/audit", summary="The audit log, newest first")
    async def audit(request: Request, limit: int = 100) -> dict[str, Any]:
        _admin(request, db)
        return {"entries": await asyncio.to_thread(audit_log, db, max(1, min(limit, 1000)))}

    return api


def audit_log(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from sampan.platform.schema import AuditEntry

    with db.session() as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))
        return [
            {
                "ts": e.ts.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "detail": e.detail,
            }
            for e in entries
        ]
