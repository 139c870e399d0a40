"""The console's routes in one router: pages over the store (catalog.py), usage and health
(usage.py), sign-in (signin.py), administration (admin.py), and its static files."""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from sampan.console import admin, catalog, signin, usage
from sampan.console.web import SECURITY_HEADERS
from sampan.errors import NotFoundError
from sampan.store import Store

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}


@functools.lru_cache(maxsize=1)
def _static_files() -> dict[str, tuple[bytes, str]]:
    """The console's files, read once: name -> (content, media type). Only these are served."""
    return {
        path.name: (path.read_bytes(), STATIC_TYPES[path.suffix])
        for path in STATIC.iterdir()
        if path.suffix in STATIC_TYPES
    }


def console_router(store: Store | None = None) -> APIRouter:
    """The console; mount with build_app(..., routers=[console_router(store)])."""
    api = APIRouter(prefix="/console", include_in_schema=False)

    @api.get("")
    async def home() -> RedirectResponse:
        return RedirectResponse("/console/models", status_code=303)

    @api.get("/static/{name}")
    async def static(name: str) -> Response:
        found = _static_files().get(name)
        if found is None:
            raise NotFoundError(f"No console file {name!r}.")
        headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=300"}
        return Response(found[0], media_type=found[1], headers=headers)

    api.include_router(catalog.router(store or Store()))
    api.include_router(usage.router())
    api.include_router(signin.router())
    api.include_router(admin.router())
    return api
