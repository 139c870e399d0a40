"""The console's usage and health page: metered calls over time from the platform database,
and the server's own state (engines, queue depth, batch sizes) from its Prometheus registry."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sampan.console.charts import bar_chart, line_chart
from sampan.console.web import gate_of, page, signin_redirect, viewer

SINCE = ("1h", "24h", "7d", "30d")
CHARTS = (  # (title, the bucket's field, unit)
    ("Requests", "calls", ""),
    ("Errors (4xx/5xx other than refusals)", "errors", ""),
    ("Refused (401/403/429)", "refused", ""),
    ("Latency p50 (refusals left out)", "p50_ms", "ms"),
    ("Latency p99 (refusals left out)", "p99_ms", "ms"),
)


@functools.lru_cache(maxsize=1)
def _devices() -> list[dict[str, Any]]:
    from sampan.devices import list_devices

    return [
        {"id": d.id, "name": d.name, "memory_gb": d.memory_gb, "details": d.details}
        for d in list_devices()
    ]


def router() -> APIRouter:
    api = APIRouter()

    @api.get("/usage")
    async def usage(request: Request, since: str = "24h", by: str = "model") -> Response:
        who = await viewer(request)
        if who.mode == "keys" and not who.admin:
            if who.key is None:
                return signin_redirect(request)
            message = "Usage covers every app; it needs a key with the admin scope."
            return page(request, "message.html", who, 403, title="Admin only", message=message)
        since = since if since in SINCE else "24h"
        by = by if by in ("model", "app", "key") else "model"
        context: dict[str, Any] = {"since": since, "by": by, "choices": SINCE}
        gate = gate_of(request)
        if gate is not None:
            from sampan.platform.usage import usage_report, usage_timeline

            await gate.recorder.flush()  # what was just served shows at once
            db = gate.recorder.db
            context["totals"] = await asyncio.to_thread(usage_report, db, by, since)
            timeline = await asyncio.to_thread(usage_timeline, db, since, by, 24)
            context["charts"] = usage_charts(timeline)
            context["truncated"] = timeline["truncated"]
        context["server"] = server_health(request)
        context["devices"] = await asyncio.to_thread(_devices)
        return page(request, "usage.html", who, **context)

    return api


def usage_charts(timeline: dict[str, Any]) -> list[Any]:
    """One line chart per measure, a line per group (the six busiest)."""
    groups: dict[str, list[dict[str, Any]]] = timeline["groups"]
    if not groups:
        return []
    busiest = sorted(groups, key=lambda g: -sum(b["calls"] for b in groups[g]))[:6]
    start, end = (dt.datetime.fromisoformat(timeline[k]) for k in ("start", "end"))
    fmt = "%m-%d %H:%M" if end - start > dt.timedelta(days=1) else "%H:%M"
    first = groups[busiest[0]]
    labels = [dt.datetime.fromisoformat(b["t"]).strftime(fmt) + " UTC" for b in first]
    return [
        line_chart(title, labels, {g: [b[field] for b in groups[g]] for g in busiest}, unit)
        for title, field, unit in CHARTS
    ]


def _samples(registry: Any) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the registry by name, collected once: name -> [(labels, value)]."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry.collect():
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), s.value))
    return samples


def batch_histogram(
    cumulative: list[tuple[str, float]], largest: int
) -> tuple[list[str], list[float]]:
    """(labels, counts) of a Prometheus histogram's cumulative buckets [(le, count), ...],
    up to the first bucket that holds the largest possible batch (later ones stay empty)."""
    labels: list[str] = []
    counts: list[float] = []
    below = 0.0
    for le, total in cumulative:
        if le == "+Inf":
            break
        labels.append(f"≤{float(le):g}")
        counts.append(total - below)
        below = total
        if float(le) >= largest:
            break
    return labels, counts


def server_health(request: Request) -> list[dict[str, Any]]:
    """Per loaded model: its engines, queue depth now, and its batch-size histogram, read from
    the server's own Prometheus registry (what /metrics exports)."""
    samples = _samples(request.app.state.metrics.registry)
    depth = {labels["model"]: v for labels, v in samples.get("sampan_queue_depth", [])}
    buckets: dict[str, list[tuple[str, float]]] = {}
    for labels, value in samples.get("sampan_batch_size_bucket", []):
        buckets.setdefault(labels["model"], []).append((labels["le"], value))
    inference = {
        (labels["model"], kind): v
        for kind in ("sum", "count")
        for labels, v in samples.get(f"sampan_inference_seconds_{kind}", [])
    }
    models = []
    for name, served in sorted(request.app.state.host.models.items()):
        sizes, counts = batch_histogram(buckets.get(name, []), served.batcher.max_batch_size)
        batches = inference.get((name, "count"), 0.0)
        mean_ms = 1000 * inference.get((name, "sum"), 0.0) / batches if batches else None
        models.append(
            {
                "model": served.describe(),
                "queue_depth": int(depth.get(name, 0)),
                "batches": int(batches),
                "mean_inference_ms": mean_ms,
                "chart": bar_chart(f"Batch sizes: {name}", sizes, counts),
            }
        )
    return models
