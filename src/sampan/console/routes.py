"""Console pages: catalog, try-it, usage and health, sign-in; admin pages in admin.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from sampan.console import admin
from sampan.console.charts import bar_chart, line_chart
from sampan.console.web import (
    LOGIN_CSRF_COOKIE,
    SECURITY_HEADERS,
    Viewer,
    check_form,
    gate_of,
    login_token,
    page,
    viewer,
)
from sampan.errors import NotFoundError, SampanError, Unauthorized
from sampan.platform.sessions import COOKIE
from sampan.store import Store

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}
SINCE = ("1h", "24h", "7d", "30d")
# Which try-it form a task gets (Task.console_form); others get a JSON instances box.
FORMS = ("image", "text", "embedding", "forecast", "anomaly", "json")


def _signin(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target, safe='/')}", status_code=303)


@functools.lru_cache(maxsize=1)
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    # html=False: raw HTML in a card (a label, a data source) is shown as text, never run.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


@functools.lru_cache(maxsize=1)
def _devices() -> list[dict[str, Any]]:
    from sampan.devices import list_devices

    return [
        {"id": d.id, "name": d.name, "memory_gb": d.memory_gb, "details": d.details}
        for d in list_devices()
    ]


def _size(manifest: Any) -> int:
    return sum(int(entry.get("size", 0)) for entry in manifest.files.values())


def _headline(manifest: Any) -> tuple[str, Any] | None:
    """The metric the package was selected on (its task's monitor), else its first one."""
    from sampan.tasks.base import get_task

    try:
        monitor = get_task(manifest.task).monitor
    except SampanError:
        monitor = ""
    scalars = {k: v for k, v in manifest.metrics.items() if isinstance(v, (int, float))}
    if monitor in scalars:
        return monitor, scalars[monitor]
    return next(iter(sorted(scalars.items())), None)


def _catalog(store: Store) -> list[dict[str, Any]]:
    rows = []
    for name in store.names():
        manifests = []
        for version in store.versions(name):
            try:
                manifests.append(store.open(f"{name}@{version}", verify=False).manifest)
            except SampanError:  # a broken version is listed on its own page, not here
                continue
        if manifests:
            rows.append({"name": name, "latest": manifests[-1], "versions": manifests})
    return rows


def _version_row(manifest: Any) -> dict[str, Any]:
    return {
        "manifest": manifest,
        "operation": manifest.lineage.get("operation", "train"),
        "parent": manifest.lineage.get("parent"),
        "size": _size(manifest),
        "headline": _headline(manifest),
        "exports": sorted(manifest.exports),
    }


def console_router(store: Store | None = None) -> APIRouter:
    """The console's routes; mount with build_app(..., routers=[console_router(store)])."""
    store = store or Store()
    api = APIRouter(prefix="/console", include_in_schema=False)

    @api.get("")
    async def home() -> RedirectResponse:
        return RedirectResponse("/console/models", status_code=303)

    @api.get("/static/{name}")
    async def static(name: str) -> Response:
        path = STATIC / name
        if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES:
            raise NotFoundError(f"No console file {name!r}.")
        if not path.is_file():
            raise NotFoundError(f"No console file {name!r}.")
        headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=300"}
        return Response(path.read_bytes(), media_type=STATIC_TYPES[path.suffix], headers=headers)

    @api.get("/models")
    async def catalog(request: Request) -> Response:
        who = await viewer(request)
        if not who.can_browse:
            return _signin(request)
        rows = await asyncio.to_thread(_catalog, store)
        loaded = request.app.state.host.models
        for row in rows:
            row.update(_version_row(row["latest"]))
            served = loaded.get(row["name"])
            row["loaded"] = served.package.manifest.version if served else None
        return page(request, "catalog.html", who, rows=rows, home=str(store.root))

    @api.get("/models/{name}")
    async def package(request: Request, name: str, version: int | None = None) -> Response:
        who = await viewer(request)
        if not who.can_browse:
            return _signin(request)
        versions = await asyncio.to_thread(store.versions, name)
        if not versions:
            raise NotFoundError(f"No package {name!r} in the store.")
        chosen = version if version in versions else versions[-1]
        pkg = await asyncio.to_thread(store.open, f"{name}@{chosen}", False)
        rows = [r for r in await asyncio.to_thread(_catalog, store) if r["name"] == name]
        history = [_version_row(m) for m in (rows[0]["versions"] if rows else [])]
        card_path = pkg.path / "README.md"
        card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
        served = request.app.state.host.models.get(name)
        return page(
            request,
            "package.html",
            who,
            name=name,
            chosen=pkg.manifest,
            history=history,
            card=_markdown().render(card) if card else "",
            loaded=served.package.manifest.version if served else None,
        )

    @api.get("/try/{name}")
    async def try_it(request: Request, name: str) -> Response:
        who = await viewer(request)
        if not who.can_browse:
            return _signin(request)
        served = request.app.state.host.models.get(name)
        if served is None:
            loaded = sorted(request.app.state.host.models)
            return page(request, "not_loaded.html", who, status=404, name=name, loaded=loaded)
        config = _try_config(served)
        return page(request, "try.html", who, model=served.describe(), config=config)

    @api.get("/usage")
    async def usage(request: Request, since: str = "24h", by: str = "model") -> Response:
        who = await viewer(request)
        gate = gate_of(request)
        if who.mode == "keys" and not who.admin:
            return _signin(request) if who.key is None else _forbidden(request, who)
        since = since if since in SINCE else "24h"
        by = by if by in ("model", "app", "key") else "model"
        context: dict[str, Any] = {"since": since, "by": by, "choices": SINCE}
        if gate is not None:
            from sampan.platform.usage import usage_report, usage_timeline

            await gate.recorder.flush()  # what was just served shows at once
            db = gate.recorder.db
            context["totals"] = await asyncio.to_thread(usage_report, db, by, since)
            timeline = await asyncio.to_thread(usage_timeline, db, since, by, 24)
            context["charts"] = _usage_charts(timeline)
            context["truncated"] = timeline["truncated"]
        context["server"] = _server_health(request)
        context["devices"] = await asyncio.to_thread(_devices)
        return page(request, "usage.html", who, **context)

    @api.get("/login")
    async def login_form(request: Request, next: str = "/console/models") -> Response:
        who = await viewer(request)
        token = login_token()
        response = page(request, "login.html", who, csrf=token, next=_safe_next(next))
        _set_cookie(request, response, LOGIN_CSRF_COOKIE, token, 600)
        return response

    @api.post("/login")
    async def login(request: Request) -> Response:
        who = await viewer(request)
        gate = gate_of(request)
        async with request.form() as form:
            fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        target = _safe_next(fields.get("next", ""))
        try:
            check_form(request, fields, request.cookies.get(LOGIN_CSRF_COOKIE, ""))
            if gate is None:
                raise Unauthorized("This server runs with --auth off: there are no keys.")
            key = await gate.authenticate(fields.get("key", "").strip())
        except SampanError as exc:
            token = login_token()
            response = page(
                request, "login.html", who, 401, csrf=token, next=target, error=str(exc)
            )
            _set_cookie(request, response, LOGIN_CSRF_COOKIE, token, 600)
            return response
        from sampan.platform.gate import write_audit

        await asyncio.to_thread(
            write_audit, gate.recorder.db, f"key:{key.prefix}", "console.signin", key.app
        )
        value, _ = gate.sessions.issue(key.prefix)
        response = RedirectResponse(target, status_code=303)
        _set_cookie(request, response, COOKIE, value, int(gate.sessions.lifetime_s))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
        return response

    @api.post("/logout")
    async def logout(request: Request) -> Response:
        who = await viewer(request)
        async with request.form() as form:
            check_form(request, form, who.csrf)
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    api.include_router(admin.router())
    return api


def _forbidden(request: Request, who: Viewer) -> Response:
    message = "This page needs a key with the admin scope; sign in with one."
    return page(request, "message.html", who, 403, title="Admin only", message=message)


def _safe_next(target: str) -> str:
    """Only console pages are followed after sign-in (no open redirect)."""
    if target.startswith("/console/") and not target.startswith("/console//"):
        return target
    return "/console/models"


def _set_cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/" if name == COOKIE else "/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _try_config(served: Any) -> dict[str, Any]:
    """What the try-it page's script needs to build the request (never a secret)."""
    contract = served.package.manifest.preprocessing
    form = getattr(served.task, "console_form", "json")
    config: dict[str, Any] = {
        "name": served.name,
        "task": served.package.manifest.task,
        "form": form if form in FORMS else "json",
        "max_batch_size": served.batcher.max_batch_size,
        "labels": len(served.package.manifest.labels),
    }
    for key in ("window", "horizon", "columns", "max_length", "period"):
        if key in contract:
            config[key] = contract[key]
    if contract.get("series"):  # trained per series: each request names one of them
        config["series"] = sorted(contract["series"])
    if config["form"] == "embedding":
        config["examples"] = _embedding_examples()
    return config


@functools.lru_cache(maxsize=1)
def _embedding_examples() -> list[str]:
    """Sentences to rank against a query: the distinct second texts of the bundled pairs."""
    import csv

    from sampan.data.text import pairs_path

    with open(pairs_path(), newline="", encoding="utf-8") as handle:
        texts = [row["text2"] for row in csv.DictReader(handle)]
    return list(dict.fromkeys(texts))[:40]


def _usage_charts(timeline: dict[str, Any]) -> list[Any]:
    groups: dict[str, list[dict[str, Any]]] = timeline["groups"]
    if not groups:
        return []
    busiest = sorted(groups, key=lambda g: -sum(b["calls"] for b in groups[g]))[:6]
    first = next(iter(groups.values()))
    span = dt.datetime.fromisoformat(timeline["end"]) - dt.datetime.fromisoformat(timeline["start"])
    fmt = "%m-%d %H:%M" if span > dt.timedelta(days=1) else "%H:%M"
    labels = [dt.datetime.fromisoformat(b["t"]).strftime(fmt) + " UTC" for b in first]
    pick = {g: groups[g] for g in busiest}
    return [
        line_chart("Requests", labels, {g: [b["calls"] for b in s] for g, s in pick.items()}),
        line_chart(
            "Errors (4xx/5xx other than refusals)",
            labels,
            {g: [b["errors"] for b in s] for g, s in pick.items()},
        ),
        line_chart(
            "Refused (401/403/429)", labels, {g: [b["refused"] for b in s] for g, s in pick.items()}
        ),
        line_chart(
            "Latency p50", labels, {g: [b["p50_ms"] for b in s] for g, s in pick.items()}, "ms"
        ),
        line_chart(
            "Latency p99", labels, {g: [b["p99_ms"] for b in s] for g, s in pick.items()}, "ms"
        ),
    ]


def _samples(registry: Any, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (dict(s.labels), s.value)
        for family in registry.collect()
        for s in family.samples
        if s.name == name
    ]


def _server_health(request: Request) -> list[dict[str, Any]]:
    """Per loaded model: its engines, queue depth now, and its batch-size histogram, read from
    the server's own Prometheus registry (what /metrics exports)."""
    registry = request.app.state.metrics.registry
    depth = {labels["model"]: v for labels, v in _samples(registry, "sampan_queue_depth")}
    buckets: dict[str, list[tuple[str, float]]] = {}
    for labels, value in _samples(registry, "sampan_batch_size_bucket"):
        buckets.setdefault(labels["model"], []).append((labels["le"], value))
    inference = {
        (labels["model"], kind): v
        for kind in ("sum", "count")
        for labels, v in _samples(registry, f"sampan_inference_seconds_{kind}")
    }
    models = []
    for name, served in sorted(request.app.state.host.models.items()):
        cumulative = buckets.get(name, [])
        counts = [b - a for (_, a), (_, b) in zip([("0", 0.0), *cumulative], cumulative)]
        # Buckets past the model's largest batch are always empty: leave them off the chart.
        edges = [float(le) for le, _ in cumulative]
        largest = served.batcher.max_batch_size
        shown = [i for i in range(len(edges)) if i == 0 or edges[i - 1] < largest]
        labels = [f"≤{edges[i]:g}" for i in shown]
        counts = [counts[i] for i in shown]
        batches = inference.get((name, "count"), 0.0)
        mean_ms = 1000 * inference.get((name, "sum"), 0.0) / batches if batches else None
        models.append(
            {
                "model": served.describe(),
                "queue_depth": int(depth.get(name, 0)),
                "batches": int(batches),
                "mean_inference_ms": mean_ms,
                "chart": bar_chart(f"Batch sizes: {name}", labels, counts),
            }
        )
    return models
