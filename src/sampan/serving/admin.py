"""Admin endpoints: load, replace and unload models while the server runs.

Off unless the server was given an admin token (`sampan serve --admin-token`, or the
SAMPAN_ADMIN_TOKEN variable); every call then carries it as `Authorization: Bearer <token>`.
The open API's per-application keys (apps, quotas) are a separate floor; this is the operator's
switch for one server.

The same switch serves Triton's model-repository extension, so tritonclient's
get_model_repository_index, load_model and unload_model work unchanged (with the token in their
headers): the index lists the store's packages, READY with the version loaded or UNAVAILABLE;
load takes a package's latest version (replacing a loaded one, as above); unload drains first.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sampan.errors import DataError, SampanError, Unauthorized
from sampan.serving.host import ModelHost, ServedModel, check_model_name


class AdminDisabled(SampanError):
    """The server was started without an admin token."""


def json_body(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    """openapi_extra for a route that reads a JSON object itself (so FastAPI does not)."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def read_json_object(request: Request, example: str) -> dict[str, Any]:
    """The request's JSON object, or a DataError saying what to send (example)."""
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"The body is not valid JSON; send {example}.") from None
    if not isinstance(body, dict):
        raise DataError(f"The body must be a JSON object: {example}.")
    return body


def json_answer(body: dict[str, Any]) -> JSONResponse:
    """A JSON answer serialised at once. FastAPI would first walk the returned dict with
    jsonable_encoder: 29 us for a classifier's answer, 2.6 ms of the event loop's time for 32
    embeddings of 384 floats (measured), for data that is already plain JSON."""
    return JSONResponse(body)


LOAD_BODY = json_body(["model"], model={"type": "string", "description": "NAME or NAME@VERSION"})


def _authorize(host: ModelHost, request: Request) -> None:
    if getattr(request.state, "admin", False):  # an API key with the admin scope (platform)
        return
    token = host.settings.admin_token
    if not token:
        raise AdminDisabled(
            "Admin endpoints are off; start the server with --admin-token (or "
            "SAMPAN_ADMIN_TOKEN) to load and unload models at run time."
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("Send the admin token as 'Authorization: Bearer <token>'.")


async def _ref(request: Request) -> str:
    body = await read_json_object(request, '{"model": "NAME[@VERSION]"}')
    ref = body.get("model")
    if not isinstance(ref, str) or not ref:
        raise DataError('The body must be {"model": "NAME[@VERSION]"}.')
    name, _, version = ref.partition("@")
    check_model_name(name)
    if version and version != "latest" and not version.isdigit():
        raise DataError(f"{ref!r}: a version is a number or 'latest', e.g. {name}@2.")
    return ref


async def _audit(request: Request, action: str, target: str) -> None:
    """Record an admin action where the server keeps an audit log (the platform puts an
    `audit` callable in the request's state; a server without it logs nothing here)."""
    audit = getattr(request.state, "audit", None)
    if audit is not None:
        await audit(action, target)


def router(host: ModelHost) -> APIRouter:
    api = APIRouter(tags=["admin"])

    async def _load(request: Request, ref: str) -> ServedModel:  # both protocols' load
        served = await host.load(ref)
        await _audit(request, "model.load", served.package.ref)
        return served

    async def _unload(request: Request, name: str) -> None:
        await host.unload(name)
        await _audit(request, "model.unload", name)

    @api.post(
        "/v1/admin/models",
        summary="Load a model from the store (replaces a loaded version of the same name)",
        openapi_extra=LOAD_BODY,
    )
    async def load_model(request: Request) -> dict[str, Any]:
        _authorize(host, request)
        return {"loaded": (await _load(request, await _ref(request))).describe()}

    @api.delete("/v1/admin/models/{name}", summary="Unload a model (its queue drains first)")
    async def unload_model(name: str, request: Request) -> dict[str, Any]:
        _authorize(host, request)
        await _unload(request, name)
        return {"unloaded": name}

    @api.post("/v2/repository/index", summary="The store's models and their state (Triton)")
    async def repository_index(request: Request) -> JSONResponse:
        _authorize(host, request)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError('The body is not valid JSON; send {} or {"ready": true}.') from None
        only_ready = isinstance(body, dict) and body.get("ready") is True
        store = host.store

        def latest() -> dict[str, int]:  # the store's folders: off the event loop
            return {name: store.versions(name)[-1] for name in store.names()}

        stored = await asyncio.to_thread(latest)
        index = []
        for name in sorted(set(stored) | set(host.models)):
            served = host.models.get(name)
            if served is not None:
                version = str(served.package.manifest.version)
                index.append({"name": name, "version": version, "state": "READY"})
            elif not only_ready:
                entry = {"name": name, "version": str(stored[name]), "state": "UNAVAILABLE"}
                index.append({**entry, "reason": "unloaded"})
        return JSONResponse(index)

    @api.post("/v2/repository/models/{name}/load", summary="Load a model's latest (Triton)")
    async def repository_load(name: str, request: Request) -> dict[str, Any]:
        _authorize(host, request)
        raw = await request.body()
        if raw.strip():
            body = await read_json_object(request, "{} (or no body)")
            if body.get("parameters"):
                raise DataError(
                    "sampan loads packages from its store as they are: a load's config and "
                    "files parameters are not supported; build a package and load that."
                )
        await _load(request, check_model_name(name))
        return {}

    @api.post("/v2/repository/models/{name}/unload", summary="Unload a model (Triton)")
    async def repository_unload(name: str, request: Request) -> dict[str, Any]:
        _authorize(host, request)
        await _unload(request, name)
        return {}

    return api
