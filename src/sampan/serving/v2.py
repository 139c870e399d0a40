"""The Open Inference Protocol v2 (KServe, Triton) over HTTP/JSON tensors."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from sampan.errors import DataError
from sampan.serving.host import ModelHost

DATATYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}
NAMES = {np.dtype(v).name: k for k, v in DATATYPES.items()}

INFER_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype", "data"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string"},
                                    "data": {"type": "array"},
                                },
                            },
                        },
                    },
                }
            }
        }
    }
}


HEADER_LENGTH = "inference-header-content-length"


def split_body(raw: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """(JSON request, binary tail): the binary tensor extension puts raw tensor bytes after
    a JSON header of the length the Inference-Header-Content-Length header gives."""
    cut = len(raw)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise DataError("Inference-Header-Content-Length does not fit the body.")
        cut = int(header_length)
    try:
        body = json.loads(raw[:cut])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise DataError("The body must be a JSON object.")
    return body, raw[cut:]


def parse_tensor(spec: Any, binary: bytes = b"") -> np.ndarray:
    """One v2 input tensor as a numpy array (JSON data, or binary_data_size bytes of binary);
    DataError naming what is wrong."""
    if not isinstance(spec, dict):
        raise DataError("Each input must be an object with name, shape, datatype and data.")
    shape, datatype, data = spec.get("shape"), spec.get("datatype"), spec.get("data")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise DataError("shape must be a list of non-negative integers.")
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if (
            datatype not in DATATYPES
            or not isinstance(size, int)
            or size != len(binary)
            or size % np.dtype(DATATYPES[datatype]).itemsize
        ):
            raise DataError("binary_data_size does not match the binary part of the body.")
        array = np.frombuffer(binary, dtype=DATATYPES[datatype])
        if array.size != int(np.prod(shape)):
            raise DataError(
                f"binary data has {array.size} values; shape {shape} needs {int(np.prod(shape))}."
            )
        return array.reshape(shape)
    if datatype not in DATATYPES:
        raise DataError(f"datatype {datatype!r} is not one of {', '.join(DATATYPES)}.")
    if not isinstance(data, list):
        raise DataError("data must be a list (flat, row-major).")
    try:
        array = np.asarray(data, dtype=DATATYPES[datatype])
    except (TypeError, ValueError):
        raise DataError(f"data does not hold {datatype} values.") from None
    if array.size != int(np.prod(shape)):
        raise DataError(f"data has {array.size} values; shape {shape} needs {int(np.prod(shape))}.")
    return array.reshape(shape)


def _wants_binary(body: dict[str, Any]) -> bool:
    """Binary output when the request's parameters or its 'output' entry ask for it."""
    if (body.get("parameters") or {}).get("binary_data_output"):
        return True
    return any(
        (o.get("parameters") or {}).get("binary_data")
        for o in body.get("outputs") or []
        if isinstance(o, dict)
    )


def _binary_response(result: dict[str, Any], outputs: np.ndarray) -> Response:
    data = np.ascontiguousarray(outputs).tobytes()
    entry = result["outputs"][0]
    del entry["data"]
    entry["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps(result).encode()
    return Response(
        header + data,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def router(host: ModelHost) -> APIRouter:
    api = APIRouter(tags=["v2"])

    @api.get("/v2", summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        from sampan import __version__

        return {"name": "sampan", "version": __version__, "extensions": []}

    @api.get("/v2/health/live", summary="Liveness")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @api.get("/v2/health/ready", summary="Readiness: every model loaded, not draining")
    async def ready() -> JSONResponse:
        ok = not host.draining and bool(host.models)
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @api.get("/v2/models/{name}", summary="Model metadata")
    async def metadata(name: str) -> dict[str, Any]:
        served = host.get(name)
        engine = served.engine
        return {
            "name": name,
            "versions": [str(served.package.manifest.version)],
            "platform": engine.name,
            "inputs": [
                {
                    "name": "input",
                    "datatype": NAMES[engine.input_dtype.name],
                    "shape": [-1, *engine.input_shape],
                }
            ],
            "outputs": [
                {
                    "name": "output",
                    "datatype": "FP32",
                    "shape": [-1, len(served.package.manifest.labels)],
                }
            ],
        }

    @api.get("/v2/models/{name}/ready", summary="Model readiness")
    async def model_ready(name: str) -> JSONResponse:
        if host.draining:
            return JSONResponse({"name": name, "ready": False}, status_code=503)
        host.get(name)  # 404 for a model that is not loaded: not a server fault
        ok = True
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)

    @api.post(
        "/v2/models/{name}/infer", summary="Inference on JSON tensors", openapi_extra=INFER_BODY
    )
    async def infer(name: str, request: Request) -> Any:
        served = host.get(name)
        body, binary = split_body(await request.body(), request.headers.get(HEADER_LENGTH))
        if not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
            raise DataError(f"{name} takes exactly one input tensor in 'inputs'.")
        if served.engine.named_inputs is not None:
            raise DataError(
                f"{name} takes text; v2 BYTES tensors are not built yet: use "
                f'POST /v1/models/{name}:predict with {{"instances": ["..."]}}.'
            )
        rows = served.check_rows(parse_tensor(body["inputs"][0], binary))
        if len(rows) > served.batcher.max_batch_size:
            raise DataError(
                f"A batch of {len(rows)} is over this model's limit of "
                f"{served.batcher.max_batch_size}; split it."
            )
        request.state.model = name
        served, outputs = await host.submit_call(served, rows, request.state)
        result: dict[str, Any] = {
            "model_name": name,
            "model_version": str(served.package.manifest.version),
            "outputs": [
                {
                    "name": "output",
                    "datatype": NAMES[outputs.dtype.name],
                    "shape": list(outputs.shape),
                    "data": outputs.ravel().tolist(),
                }
            ],
        }
        if isinstance(body.get("id"), str):
            result["id"] = body["id"]
        if _wants_binary(body):
            return _binary_response(result, outputs)
        return result

    return api
