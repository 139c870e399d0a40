"""The native REST protocol: /v1/models, /v1/models/{name}, /v1/models/{name}:predict."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sampan.errors import DataError
from sampan.serving.admin import json_answer, read_json_object
from sampan.serving.host import ModelHost, ServedModel

PREDICT_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {"type": "array", "minItems": 1, "items": {}},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": 100},
                        "truncate": {"type": "boolean"},
                    },
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


# Small inputs (the task says which) are decoded on the event loop: a small PNG decodes in
# well under 100 us, less than handing it to a worker thread and back costs (seen with py-spy
# under wrk at concurrency 32: 590 -> 810 req/s). Others go to a thread so the loop keeps
# serving.


def truncate_option(body: dict[str, Any]) -> dict[str, Any]:
    """A JSON body's "truncate": false (refuse texts over the model's maximum length) as
    contract options; texts are truncated, and their answers say so, by default."""
    value = body.get("truncate", True)
    if not isinstance(value, bool):
        raise DataError(f"truncate must be true or false, not {value!r}.")
    return {} if value else {"truncate": False}


async def _inputs(request: Request, served: ServedModel) -> tuple[list[Any], int, dict[str, Any]]:
    """Raw inputs, top_k and decode options from a JSON body or a multipart upload."""
    content_type = request.headers.get("content-type", "")
    top_k = 5
    if content_type.startswith("multipart/form-data"):
        async with request.form() as form:  # closes the uploaded files' spool
            raws = [await item.read() for _, item in form.multi_items() if hasattr(item, "read")]
            if "top_k" in form:
                top_k = _int(form["top_k"])
        if not raws:
            raise DataError("The multipart request holds no file; send the image as 'file'.")
        return raws, top_k, {}
    body = await read_json_object(request, '{"instances": [...]}')
    if not isinstance(body.get("instances"), list):
        raise DataError('The body must be {"instances": [...]} (or a multipart file upload).')
    if not body["instances"]:
        raise DataError("instances is empty: send at least one.")
    top_k = _int(body.get("top_k", 5))
    instances = [served.task.from_json(v) for v in body["instances"]]
    return instances, top_k, truncate_option(body)


def _int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DataError(f"top_k must be an integer, not {value!r}.") from None
    if not 1 <= number <= 100:
        raise DataError("top_k must be between 1 and 100.")
    return number


def router(host: ModelHost) -> APIRouter:
    api = APIRouter(tags=["native"])

    @api.get("/v1/models", summary="Models being served")
    async def list_models() -> dict[str, Any]:
        return {"models": [m.describe() for m in host.models.values()]}

    @api.get("/v1/models/{name}", summary="One model's details")
    async def get_model(name: str) -> dict[str, Any]:
        return host.get(name).describe()

    @api.post(
        "/v1/models/{name}:predict",
        summary="Predict (JSON instances or a file upload)",
        openapi_extra=PREDICT_BODY,
    )
    async def predict(name: str, request: Request) -> JSONResponse:
        served = host.get(name)
        raws, top_k, options = await _inputs(request, served)
        if len(raws) > served.batcher.max_batch_size:
            raise DataError(
                f"{len(raws)} instances is over this model's limit of "
                f"{served.batcher.max_batch_size} per request; split them."
            )
        if len(raws) <= 4 and all(served.task.cheap_to_decode(raw) for raw in raws):
            # small: a thread hop would cost more than this
            rows, notes = served.prepare(raws, options)
        else:
            rows, notes = await run_in_threadpool(served.prepare, raws, options)
        rows = served.check_rows(rows)
        request.state.model = name
        served, outputs = await host.submit_call(served, rows, request.state)
        predictions = served.task.postprocess(outputs, served.package.manifest.labels, top_k)
        for prediction, note in zip(predictions, notes):
            prediction.update(note)
        return json_answer(
            {"model": name, "version": served.package.manifest.version, "predictions": predictions}
        )

    return api
