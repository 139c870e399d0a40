"""Streaming for time-series models: `POST /v1/models/{name}:stream` takes the latest readings
of one series and answers for each of them, keeping the series' recent readings server-side so
a sensor gateway sends only what is new.

Memory is bounded twice: a series keeps its last window - 1 readings, no more, and a model
keeps at most `max_series` series, dropping the one heard from least recently when a new one
arrives (it then starts over, and says how many readings it still needs). Readings are taken
as consecutive at the model's sampling interval, in the order sent; null is a missing reading
(the task interpolates a few, as for any window). Buffers live in this process: behind several
replicas, route a series to one replica. For a model trained per series (a series id column),
the series must be one it was trained on, checked before anything is buffered; an integer id
is taken as its text, as by :predict.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sampan.data.timeseries import check_series
from sampan.data.timeseries import readings as as_readings
from sampan.errors import DataError
from sampan.serving.admin import json_answer, json_body, read_json_object
from sampan.serving.host import ModelHost

STREAM_BODY = json_body(
    ["series", "readings"],
    series={"oneOf": [{"type": "string", "minLength": 1, "maxLength": 128}, {"type": "integer"}]},
    readings={"type": "array", "minItems": 1, "items": {}},
)
MAX_READINGS = 4096  # per request


class Buffers:
    """The recent readings of each (model, series), least recently used first."""

    def __init__(self, max_series: int) -> None:
        self.max_series = max_series
        self._series: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._series)

    def extend(self, key: tuple[str, str], readings: np.ndarray, keep: int) -> np.ndarray:
        """The kept history followed by readings; keeps the last `keep` of them."""
        old = self._series.pop(key, None)
        joined = readings if old is None else np.concatenate([old, readings])
        self._series[key] = joined[-keep:].copy() if keep > 0 else joined[:0]
        while len(self._series) > self.max_series:
            self._series.popitem(last=False)
        return joined


def _readings(value: Any, columns: list[str]) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise DataError("readings must be a non-empty list (numbers, or lists per reading).")
    if len(value) > MAX_READINGS:
        raise DataError(f"{len(value)} readings is over {MAX_READINGS} per request; split them.")
    return as_readings(value, columns, "the request")


def router(host: ModelHost, max_series: int = 10_000) -> APIRouter:
    api = APIRouter(tags=["native"])
    buffers = Buffers(max_series)

    @api.post(
        "/v1/models/{name}:stream",
        summary="Time series: the latest readings of one series, answered one by one",
        openapi_extra=STREAM_BODY,
    )
    async def stream(name: str, request: Request) -> JSONResponse:
        served = host.get(name)
        contract = served.contract
        if contract.get("kind") != "timeseries":
            raise DataError(f"{name} is a {served.task.name} model; :stream is for time series.")
        body = await read_json_object(request, '{"series": "pump-4", "readings": [...]}')
        series = body.get("series")
        if isinstance(series, int) and not isinstance(series, bool):
            series = str(series)  # as :predict takes it: 7 is series "7"
        if not isinstance(series, str) or not 0 < len(series) <= 128:
            raise DataError("series must be a name of 1 to 128 characters (one per sensor).")
        if contract.get("series_column"):  # trained per series: its statistics are the id's
            series = check_series(contract, series)
        new = _readings(body.get("readings"), contract["columns"])
        window = int(contract["window"])
        history = buffers.extend((name, series), new, window - 1)
        # The new readings that have a whole window behind them, and those windows.
        first = len(history) - len(new)
        positions = [i for i in range(len(new)) if first + i >= window - 1]
        spans = [history[first + i - window + 1 : first + i + 1] for i in positions]
        request.state.model = name
        results: list[dict[str, Any]] = []
        if spans:
            raws = [{"series": series, "values": span} for span in spans]
            rows, _ = await run_in_threadpool(served.prepare, raws)
            served, outputs = await host.submit_call(served, served.check_rows(rows), request.state)
            answers = served.task.postprocess(outputs, served.package.manifest.labels, 1)
            results = [{"reading": p, **a} for p, a in zip(positions, answers)]
        kept = min(len(history), window - 1)
        return json_answer(
            {
                "model": name,
                "series": series,
                "results": results,
                "needs": max(0, window - len(history)),  # readings still missing before answers
                "buffered": kept,
            }
        )

    return api
