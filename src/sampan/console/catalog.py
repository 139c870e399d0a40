"""Console pages over the store: the catalog, one package's versions and card, and try-it."""

from __future__ import annotations

import asyncio
import csv
import functools
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sampan.console.web import may_see_or_404, page, signin_redirect, viewer
from sampan.errors import NotFoundError, SampanError
from sampan.store import Store

# The try-it forms the page's script knows (a task picks one with Task.console_form); a task
# that names none gets a box of JSON instances.
FORMS = ("image", "text", "embedding", "forecast", "anomaly", "json")


@functools.lru_cache(maxsize=1)
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    # html=False: raw HTML in a card (a label, a data source) is shown as text, never run.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


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


def _summary(manifest: Any) -> dict[str, Any]:
    return {
        "manifest": manifest,
        "operation": manifest.lineage.get("operation", "train"),
        "parent": manifest.lineage.get("parent"),
        "size": sum(int(entry.get("size", 0)) for entry in manifest.files.values()),
        "headline": _headline(manifest),
        "exports": sorted(manifest.exports),
    }


def _versions(store: Store, name: str) -> list[dict[str, Any]]:
    """Every version of a package, oldest first; one that cannot be read says why."""
    rows = []
    for version in store.versions(name):
        try:
            rows.append(_summary(store.open(f"{name}@{version}", verify=False).manifest))
        except SampanError as exc:
            rows.append({"version": version, "broken": str(exc)})
    return rows


def _catalog(store: Store, visible: Any) -> list[dict[str, Any]]:
    """Per package the newest readable version, and how many versions there are."""
    rows = []
    for name in filter(visible, store.names()):
        versions = _versions(store, name)
        readable = [v for v in versions if "broken" not in v]
        if readable:
            rows.append({"name": name, "count": len(versions), **readable[-1]})
    return rows


# markdown-it aligns table columns with style attributes, which the console's CSP (no inline
# styles) would block: the same alignment as classes. Text in a card is escaped before this
# runs, so only markdown-it's own attributes can match.
_ALIGN = re.compile(r' style="text-align:(left|right|center)"')


def _card(package: Any) -> str:
    path = package.path / "README.md"
    if not path.is_file():
        return ""
    html = str(_markdown().render(path.read_text(encoding="utf-8", errors="replace")))
    return _ALIGN.sub(r' class="align-\1"', html)


def router(store: Store) -> APIRouter:
    api = APIRouter()

    @api.get("/models")
    async def catalog(request: Request) -> Response:
        who = await viewer(request)
        if not who.can_browse:
            return signin_redirect(request)
        rows = await asyncio.to_thread(_catalog, store, who.may_see)
        loaded = request.app.state.host.models
        for row in rows:
            served = loaded.get(row["name"])
            row["loaded"] = served.package.manifest.version if served else None
        return page(request, "catalog.html", who, rows=rows, home=str(store.root))

    @api.get("/models/{name}")
    async def package(request: Request, name: str, version: str = "") -> Response:
        who = await viewer(request)
        if not who.can_browse:
            return signin_redirect(request)
        may_see_or_404(who, name)
        history = await asyncio.to_thread(_versions, store, name)
        readable = [row["manifest"].version for row in history if "broken" not in row]
        if not history:
            raise NotFoundError(f"No package {name!r} in the store.")
        if version and (not version.isdigit() or int(version) not in readable):
            raise NotFoundError(f"{name} has no readable version {version!r}; see its page.")
        chosen = int(version) if version else (readable[-1] if readable else None)
        card, manifest = "", None
        if chosen is not None:
            pkg = await asyncio.to_thread(store.open, f"{name}@{chosen}", False)
            card, manifest = await asyncio.to_thread(_card, pkg), pkg.manifest
        served = request.app.state.host.models.get(name)
        return page(
            request,
            "package.html",
            who,
            name=name,
            chosen=manifest,
            history=history,
            card=card,
            loaded=served.package.manifest.version if served else None,
        )

    @api.get("/try/{name}")
    async def try_it(request: Request, name: str) -> Response:
        who = await viewer(request)
        if not who.can_browse:
            return signin_redirect(request)
        may_see_or_404(who, name)
        served = request.app.state.host.models.get(name)
        if served is None:
            loaded = sorted(n for n in request.app.state.host.models if who.may_see(n))
            return page(request, "not_loaded.html", who, status=404, name=name, loaded=loaded)
        return page(request, "try.html", who, model=served.describe(), config=_try_config(served))

    return api


def _try_config(served: Any) -> dict[str, Any]:
    """What the try-it page's script needs to build the request (never a secret)."""
    contract = served.package.manifest.preprocessing
    form = getattr(served.task, "console_form", "json")
    config: dict[str, Any] = {
        "name": served.name,
        "task": served.package.manifest.task,
        "form": form if form in FORMS else "json",
        "max_batch_size": served.batcher.max_batch_size,
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
    from sampan.data.text import pairs_path

    with open(pairs_path(), newline="", encoding="utf-8") as handle:
        texts = [row["text2"] for row in csv.DictReader(handle)]
    return list(dict.fromkeys(texts))[:40]
