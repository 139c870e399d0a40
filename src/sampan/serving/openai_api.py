"""OpenAI-compatible routes, for tasks that fit them: `POST /v1/embeddings` for text-embedding
packages, so OpenAI client libraries work pointed at sampan (base_url=http://host:port/v1)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sampan.errors import DataError
from sampan.serving.admin import json_answer, json_body, read_json_object
from sampan.serving.host import ModelHost
from sampan.serving.rest import truncate_option

EMBEDDINGS_BODY = json_body(
    ["model", "input"],
    model={"type": "string"},
    input={"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    encoding_format={"type": "string", "enum": ["float", "base64"]},
    truncate={"type": "boolean"},
)


def _texts(value: Any, limit: int) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise DataError("'input' must be a string or a non-empty list of strings.")
    if len(texts) > limit:
        raise DataError(f"{len(texts)} inputs is over this model's limit of {limit}; split them.")
    return texts


def router(host: ModelHost) -> APIRouter:
    api = APIRouter(tags=["openai-compatible"])

    @api.post(
        "/v1/embeddings", summary="Embeddings (OpenAI-compatible)", openapi_extra=EMBEDDINGS_BODY
    )
    async def embeddings(request: Request) -> JSONResponse:
        body = await read_json_object(request, '{"model": "NAME", "input": ["text", ...]}')
        if not isinstance(body.get("model"), str):
            raise DataError("The body must name a 'model'.")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise DataError("'encoding_format' must be float or base64.")
        served = host.get(body["model"])
        if served.task.name != "text-embedding":
            raise DataError(f"{served.name} is a {served.task.name} model, not an embedding model.")
        texts = _texts(body.get("input"), served.batcher.max_batch_size)
        request.state.model = served.name

        options = truncate_option(body)
        rows, notes = await run_in_threadpool(served.prepare, texts, options)
        rows = served.check_rows(rows)
        authorize = getattr(request.state, "authorize", None)
        if authorize is not None:  # the platform: scope and limits for the model in the body
            await authorize(served.name, served.task.units(rows))
        served, outputs = await host.submit_call(served, rows, request.state)
        tokens = request.state.units
        vectors = np.asarray(outputs, dtype=np.float32)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
                if encoding == "base64"
                else v.tolist(),
                **notes[i],  # "truncated": true for a text over the model's maximum length
            }
            for i, v in enumerate(vectors)
        ]
        return json_answer(
            {
                "object": "list",
                "data": data,
                "model": served.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    return api
