"""The server application: protocol routes over a model host, errors mapped to HTTP answers,
and the middleware stack in one visible list."""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sampan.errors import (
    ConfigError,
    DataError,
    Forbidden,
    NotFoundError,
    PackageError,
    RateLimited,
    SampanError,
    Unauthorized,
)
from sampan.serving import admin, openai_api, rest, stream, v2
from sampan.serving.admin import AdminDisabled
from sampan.serving.batcher import DeadlineExceeded, Overloaded
from sampan.serving.host import ModelHost, ServeSettings
from sampan.serving.metrics import Metrics
from sampan.serving.middleware import AccessLog, BodyLimit, CompressAnswers
from sampan.store import Store

# SampanError subclass -> HTTP status; the first match wins.
STATUS = (
    (Overloaded, 503),
    (DeadlineExceeded, 504),
    (NotFoundError, 404),
    (DataError, 400),
    (ConfigError, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (RateLimited, 429),
    (AdminDisabled, 403),
    (PackageError, 422),  # a package in the store that fails verification or cannot load
)
HEADERS = {503: {"Retry-After": "1"}, 401: {"WWW-Authenticate": "Bearer"}}


def _handled(exc: SampanError | ClientDisconnect) -> Response:
    """The answer to a SampanError or a vanished client, on any route."""
    if isinstance(exc, ClientDisconnect):
        # The caller hung up while sending its body (a load generator stopping, a timeout):
        # nobody reads this answer; 499 (as nginx logs it) keeps a traceback out of the log
        # and the call visible in metrics and usage.
        return Response(status_code=499)
    return _error_response(exc)


def _error_response(exc: SampanError) -> JSONResponse:
    status = next((code for cls, code in STATUS if isinstance(exc, cls)), 500)
    headers = exc.headers if isinstance(exc, RateLimited) else HEADERS.get(status)
    return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)


# The routes every inference call takes. FastAPI (0.165) finds a request's route by walking
# every route of every included router and then solves the endpoint's parameters: about 120 us
# of a predict call's 540 us on the event loop (2-core x86, 64x64 PNG). These endpoints read
# their requests themselves, so plain Starlette routes in front of FastAPI's router reach the
# same functions for a fraction of that; FastAPI's routes still describe them in /openapi.json.
HOT_ROUTES = frozenset(
    {
        "/v1/models/{name}:predict",
        "/v1/models/{name}:stream",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v1/embeddings",
    }
)


def plain_route(route: APIRoute) -> Route:
    """route's endpoint, which takes its path parameters and the request and returns a
    Response, as a plain Starlette route (checked here, when the app is built)."""
    endpoint = route.endpoint
    takes = set(inspect.signature(endpoint).parameters)
    if takes != set(route.param_convertors) | {"request"}:
        raise TypeError(f"{route.path}: a plain route's endpoint takes its path and request")

    async def call(request: Request) -> Response:
        response: Response = await endpoint(request=request, **request.path_params)
        return response

    return Route(route.path, call, methods=sorted(route.methods or ()), include_in_schema=False)


class ServerApp(FastAPI):
    """FastAPI with a front door for the plain routes of HOT_ROUTES: a POST to one of them
    goes through the server's own middleware list straight to its endpoint. FastAPI's stack
    (error, telemetry and body-limit middleware, then exception handling, the exit stack, the
    router and Starlette's request wrapper: eight layers) took 12% of the event loop's CPU
    time per predict call at concurrency 32 (0.451 -> 0.395 ms, 3 alternating runs on a
    2-core x86, 64x64 PNG). Everything else, errors of these routes included, answers as
    FastAPI would: SampanError and ClientDisconnect as `_handled` maps them, other
    exceptions as uvicorn's 500 (uvicorn answers an exception before a response with it)."""

    hot_routes: Sequence[Route] = ()  # build_app sets them
    _hot_stack: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route in self.hot_routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    scope["app"] = self
                    if self._hot_stack is None:
                        stack: ASGIApp = _call_endpoint
                        for cls, args, kwargs in reversed(self.user_middleware):
                            stack = cls(stack, *args, **kwargs)
                        self._hot_stack = stack
                    await self._hot_stack(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


async def _call_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """The innermost layer of ServerApp's front door: a plain route's endpoint, its user
    errors answered as on every other route."""
    try:
        response = await scope["endpoint"](Request(scope, receive, send))
    except (SampanError, ClientDisconnect) as exc:
        response = _handled(exc)
    await response(scope, receive, send)


class Extension(Protocol):
    """What a higher floor (the platform's gate) plugs into the server: one middleware in the
    list, started before the models load and closed after they drain."""

    def middleware(self) -> Middleware: ...

    def routers(self) -> list[APIRouter]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI >= 0.16x asks OpenTelemetry on every request whether anyone listens (about 5% of
    the event loop's time under load, seen with py-spy). The server exports its own Prometheus
    metrics; SAMPAN_FASTAPI_TELEMETRY=1 keeps FastAPI's for those who collect traces."""
    import inspect
    import os

    if os.environ.get("SAMPAN_FASTAPI_TELEMETRY") == "1":
        return {}
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


# What a browser page may send and read beyond CORS's safelisted headers: keys, the binary
# tensor extension's split, request ids, limits and the compressed bodies tritonclient sends.
CORS_REQUEST_HEADERS = [
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "Content-Encoding",
    "Inference-Header-Content-Length",
    "X-Request-ID",
]
CORS_ANSWER_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "Inference-Header-Content-Length",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
]


def browser_origin(origin: str) -> str:
    """origin as a browser sends it in its Origin header (scheme and host in lower case, no
    default port), or ConfigError: Starlette compares origins exactly, so
    "https://Dash.example.com:443" or "https://dash.example.com/" would never match, and every
    call from that page would fail with no clue why."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
        or "#" in origin
        or "?" in origin
    ):
        raise ConfigError(
            f"--cors-origin {origin!r} is not an origin: give * or scheme://host[:port] "
            "(e.g. https://dashboard.example.com), with no path or trailing slash."
        )
    scheme = parts.scheme.lower()
    default = {"http": 80, "https": 443}[scheme]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"  # IPv6
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def cors_middleware(origins: Sequence[str]) -> Middleware:
    """Starlette's CORS middleware for these origins ("*": any), each as browsers send it."""
    allowed = [o if o == "*" else browser_origin(o) for o in origins]
    from starlette.middleware.cors import CORSMiddleware

    return Middleware(
        CORSMiddleware,
        allow_origins=allowed,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_ANSWER_HEADERS,
        max_age=600,  # preflights cached 10 minutes
    )


def build_app(
    refs: list[str],
    settings: ServeSettings | None = None,
    store: Store | None = None,
    extension: Extension | None = None,
    routers: Sequence[APIRouter] = (),
) -> ServerApp:
    """An ASGI app serving the packages refs (loaded at startup); routers are higher floors'
    pages (the console), which find the host in `request.app.state`."""
    settings = settings or ServeSettings()
    if settings.switch_interval_ms is not None and settings.switch_interval_ms <= 0:
        raise ConfigError(
            f"switch_interval_ms must be > 0 (got {settings.switch_interval_ms}), or None."
        )
    metrics = Metrics()
    host = ModelHost(settings, metrics, store)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        switch_interval = sys.getswitchinterval()
        if settings.switch_interval_ms is not None:
            sys.setswitchinterval(settings.switch_interval_ms / 1000)
        try:
            if extension is not None:
                await extension.start()
            for ref in refs:
                await host.load(ref)
            yield
            await host.shutdown()  # uvicorn stopped accepting and finished in-flight requests
            if extension is not None:
                await extension.close()  # e.g. the last usage records
        finally:
            sys.setswitchinterval(switch_interval)

    middleware = [  # outermost first
        Middleware(AccessLog, metrics=metrics),
        # before the gate: a browser's preflight carries no API key
        *([cors_middleware(settings.cors_origins)] if settings.cors_origins else []),
        Middleware(CompressAnswers),  # large answers, for callers that accept gzip or deflate
        *([extension.middleware()] if extension is not None else []),  # keys, limits, usage
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
    ]
    from sampan import __version__

    app = ServerApp(
        **_no_native_telemetry(),
        title="Sampan model server",
        version=__version__,
        lifespan=lifespan,
        middleware=middleware,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.host = host
    app.state.metrics = metrics
    app.state.extension = extension

    @app.exception_handler(SampanError)
    @app.exception_handler(ClientDisconnect)
    async def handled(request: Request, exc: SampanError | ClientDisconnect) -> Response:
        return _handled(exc)

    # {"error": ...} as every other answer of this server (and as Triton's clients read
    # errors), not FastAPI's {"detail": ...}: an unknown path, a method not allowed, a bad
    # query parameter
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = f"{exc.detail}: {request.method} {request.url.path}."
        return JSONResponse({"error": message}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg')}"
            for e in exc.errors()
        )
        return JSONResponse({"error": f"Invalid request: {problems}."}, 422)

    protocols = [
        rest.router(host),
        v2.router(host),
        openai_api.router(host),
        stream.router(host),
        admin.router(host),
    ]
    for api in protocols:
        app.include_router(api)
    app.hot_routes = [
        plain_route(route)
        for api in protocols
        for route in api.routes
        if isinstance(route, APIRoute) and route.path in HOT_ROUTES
    ]
    app.router.routes[0:0] = app.hot_routes  # the same routes for what the front door passes
    for extra in [*(extension.routers() if extension is not None else []), *routers]:
        app.include_router(extra)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def root() -> dict[str, Any]:
        return {"sampan": __version__, "models": sorted(host.models), "docs": "/docs"}

    return app
