"""Signing in to the console with an API key, and out again."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from sampan.console.web import (
    LOGIN_CSRF_COOKIE,
    Viewer,
    check_form,
    form_fields,
    gate_of,
    login_token,
    page,
    viewer,
)
from sampan.errors import SampanError, Unauthorized
from sampan.platform.sessions import COOKIE


def safe_next(target: str) -> str:
    """Only console pages are followed after sign-in (no open redirect)."""
    if target.startswith("/console/") and not target.startswith(("/console//", "/console/\\")):
        return target
    return "/console/models"


def set_cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/" if name == COOKIE else "/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _form_page(
    request: Request, who: Viewer, status: int, target: str, error: str = ""
) -> Response:
    token = login_token()  # a fresh double-submit token for each form shown
    response = page(request, "login.html", who, status, csrf=token, next=target, error=error)
    set_cookie(request, response, LOGIN_CSRF_COOKIE, token, 600)
    return response


def router() -> APIRouter:
    api = APIRouter()

    @api.get("/login")
    async def login_form(request: Request, next: str = "/console/models") -> Response:
        return _form_page(request, await viewer(request), 200, safe_next(next))

    @api.post("/login")
    async def login(request: Request) -> Response:
        who, gate = await viewer(request), gate_of(request)
        fields = await form_fields(request)
        target = safe_next(fields.get("next", ""))
        try:
            check_form(request, fields, request.cookies.get(LOGIN_CSRF_COOKIE, ""))
            if gate is None or gate.sessions is None:
                raise Unauthorized("This server runs with --auth off: there are no keys.")
            key = await gate.authenticate(fields.get("key", "").strip())
        except SampanError as exc:
            return _form_page(request, who, 401, target, str(exc))
        from sampan.platform.gate import write_audit

        session_id, _ = await asyncio.to_thread(gate.sessions.open, key.prefix)
        await asyncio.to_thread(
            write_audit, gate.recorder.db, f"key:{key.prefix}", "console.signin", key.app
        )
        response = RedirectResponse(target, status_code=303)
        age = int(gate.sessions.lifetime.total_seconds())
        set_cookie(request, response, COOKIE, session_id, age)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
        return response

    @api.post("/logout")
    async def logout(request: Request) -> Response:
        who, gate = await viewer(request), gate_of(request)
        fields = await form_fields(request)
        session_id = request.cookies.get(COOKIE)
        if who.key is not None:  # a live session: only its own page may end it
            check_form(request, fields, who.csrf)
            if gate is not None and session_id:
                await gate.end_session(session_id)
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    return api
