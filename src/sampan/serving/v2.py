"""The Open Inference Protocol v2 (KServe, Triton) over HTTP/JSON tensors.

Image models take numeric tensors; text models take one BYTES tensor of shape [N] (one
string per text): JSON strings, or in the binary extension each element as a 4-byte
little-endian length followed by its bytes. Texts go through the task's decode and collate.
A time-series model trained per series takes two tensors: "input", the windows [N, W, C], and
"series", a BYTES (or INT64/INT32) tensor [N] naming each window's series; both go through the
task's decode (which refuses a series it was not trained on) and collate.

Of the protocol's extensions (as Triton names them in its server metadata): binary_tensor_data;
classification (an output asked for with parameters {"classification": K} answers, per row,
the K highest scores as BYTES "score:index:label", highest first, as Triton does);
model_configuration (GET .../config: a Triton-style configuration of what is served); and
model_repository (in sampan.serving.admin, behind the admin token).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from sampan.errors import DataError, NotFoundError
from sampan.serving.admin import json_answer
from sampan.serving.host import ModelHost, ServedModel

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


def _fields(spec: Any) -> tuple[list[int], Any, Any, Any]:
    """(shape, datatype, data, binary_data_size) of one v2 input, the shape checked."""
    if not isinstance(spec, dict):
        raise DataError("Each input must be an object with name, shape, datatype and data.")
    shape, datatype, data = spec.get("shape"), spec.get("datatype"), spec.get("data")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise DataError("shape must be a list of non-negative integers.")
    parameters = spec.get("parameters")
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    return shape, datatype, data, size


def parse_tensor(spec: Any, binary: bytes = b"") -> np.ndarray:
    """One v2 input tensor as a numpy array (JSON data, or binary_data_size bytes of binary);
    DataError naming what is wrong."""
    shape, datatype, data, size = _fields(spec)
    if size is not None:
        if (
            datatype not in DATATYPES
            or not isinstance(size, int)
            or size != len(binary)
            or size % np.dtype(DATATYPES[datatype]).itemsize
        ):
            raise DataError("binary_data_size does not match the binary part of the body.")
        array: np.ndarray = np.frombuffer(binary, dtype=DATATYPES[datatype])
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


def parse_texts(spec: Any, binary: bytes = b"") -> list[Any]:
    """A v2 BYTES tensor of shape [N] (or [N, 1]) as N raw texts for the task's decode: str
    from JSON, bytes from the binary extension; DataError naming what is wrong."""
    shape, datatype, data, size = _fields(spec)
    if datatype != "BYTES":
        raise DataError(
            f"This model takes text: send datatype BYTES with shape [N], not {datatype!r}."
        )
    if len(shape) not in (1, 2) or shape[1:] not in ([], [1]):
        raise DataError(f"shape {shape} is not [N]: a text tensor holds one string per row.")
    if shape[0] == 0:
        raise DataError("The tensor holds no texts: send at least one.")
    if size is not None:
        if not isinstance(size, int) or size != len(binary):
            raise DataError("binary_data_size does not match the binary part of the body.")
        texts = _split_bytes(binary)
    elif isinstance(data, list) and all(isinstance(text, str) for text in data):
        texts = list(data)
    else:
        raise DataError("data must be a flat list of strings, one per text.")
    if len(texts) != shape[0]:
        raise DataError(f"The tensor holds {len(texts)} texts; shape {shape} says {shape[0]}.")
    return texts


def parse_series(spec: Any, binary: bytes = b"") -> list[str]:
    """The 'series' tensor of a model trained per series as N ids: BYTES [N] (or [N, 1]) of
    strings, or INT64/INT32 ids as text (7 is series "7"); DataError naming the tensor."""
    shape, datatype, data, size = _fields(spec)
    usage = "'series' must hold one id per window: BYTES (or INT64, INT32) of shape [N]"
    if datatype not in ("BYTES", "INT64", "INT32"):
        raise DataError(f"{usage}, not {datatype!r}.")
    if len(shape) not in (1, 2) or shape[1:] not in ([], [1]) or shape[0] == 0:
        raise DataError(f"{usage}; got shape {shape}.")
    if datatype != "BYTES":
        if size is None and not (
            isinstance(data, list)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in data)
        ):
            raise DataError(f"'series' data must be a flat list of integers for {datatype}.")
        try:
            numbers = parse_tensor(spec, binary)
        except DataError as exc:
            raise DataError(f"'series' tensor: {exc}") from None
        return [str(int(v)) for v in numbers.ravel()]
    if size is not None:
        if not isinstance(size, int) or size != len(binary):
            raise DataError("'series' binary_data_size does not match its binary part.")
        try:
            ids = [element.decode("utf-8") for element in _split_bytes(binary)]
        except UnicodeDecodeError:
            raise DataError("A 'series' id is not valid UTF-8.") from None
    elif isinstance(data, list) and all(isinstance(v, str) for v in data):
        ids = list(data)
    else:
        raise DataError("'series' data must be a flat list of strings, one id per window.")
    if len(ids) != shape[0]:
        raise DataError(f"The 'series' tensor holds {len(ids)} ids; shape {shape} says {shape[0]}.")
    return ids


def _split_bytes(binary: bytes) -> list[bytes]:
    """The elements of a binary BYTES tensor: each a 4-byte little-endian length, then bytes."""
    elements, offset = [], 0
    while offset < len(binary):
        if offset + 4 > len(binary):
            raise DataError("The binary BYTES tensor ends inside an element's 4-byte length.")
        (length,) = struct.unpack_from("<I", binary, offset)
        offset += 4
        if offset + length > len(binary):
            raise DataError(
                f"A binary BYTES element says {length} bytes; only {len(binary) - offset} remain."
            )
        elements.append(binary[offset : offset + length])
        offset += length
    return elements


EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
]
TRITON_PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "torch": "pytorch_libtorch"}
TRITON_TYPES = {"BYTES": "TYPE_STRING", **{k: f"TYPE_{k}" for k in DATATYPES}}


def requested_classes(body: dict[str, Any], served: ServedModel) -> int | None:
    """K of the classification extension, when the request's output asks for it; the outputs
    a request may name are the model's one, "output"."""
    requested = body.get("outputs")
    if requested is None:
        return None
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise DataError("'outputs' must be a list of objects, each naming an output.")
    classes = None
    for entry in requested:
        if entry.get("name") != "output":
            raise DataError(f"{served.name} has one output, 'output'; not {entry.get('name')!r}.")
        value = (entry.get("parameters") or {}).get("classification")
        if value is None:
            continue
        labels = served.package.manifest.labels
        preprocessing = served.package.manifest.preprocessing
        if not labels or served.task.output_shape(preprocessing, labels) != [len(labels)]:
            raise DataError(
                f"{served.name} is not a classifier: the classification parameter is for "
                "models answering one score per label."
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"classification must be a whole number >= 1, not {value!r}.")
        classes = min(value, len(labels))
    return classes


def classified(scores: np.ndarray, k: int, labels: list[str]) -> np.ndarray:
    """Per row, the k highest scores as "score:index:label" strings, highest first: [N, k]."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.array(
        [[f"{row[i]:f}:{i}:{labels[i]}" for i in order] for row, order in zip(scores, top)],
        dtype=object,
    ).reshape(len(scores), k)


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
    if outputs.dtype == object:  # BYTES: each element's length (4 bytes, little-endian) first
        encoded = [x.encode() for x in outputs.ravel()]
        data = b"".join(struct.pack("<I", len(x)) + x for x in encoded)
    else:
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


async def _rows(served: ServedModel, spec: Any, binary: bytes) -> Any:
    """The model's checked input rows from one v2 tensor: numeric tensors as they are, texts
    decoded and collated (tokenised) in a thread."""
    if not served.takes_text:
        rows = served.check_rows(parse_tensor(spec, binary))
        _within_limit(served, len(rows))
        return rows
    texts = parse_texts(spec, binary)
    _within_limit(served, len(texts))
    rows, _ = await run_in_threadpool(served.prepare, texts)
    return served.check_rows(rows)


def _per_series(served: ServedModel) -> bool:
    """Whether the model was trained per series: its inputs name their series."""
    return bool(served.contract.get("series_column"))


def _binary_parts(specs: list[Any], binary: bytes) -> list[bytes]:
    """Each input's share of the binary tail, in order: its binary_data_size bytes, or none
    for an input sent as JSON data."""
    parts, offset = [], 0
    for spec in specs:
        size = _fields(spec)[3]
        if size is None:
            parts.append(b"")
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise DataError("binary_data_size must be a number of bytes.")
        parts.append(binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise DataError(
            "The inputs' binary_data_size do not add up to the binary part of the body."
        )
    return parts


async def _series_rows(served: ServedModel, specs: Any, binary: bytes) -> Any:
    """The checked rows of a model trained per series, from its "input" windows and their
    "series" ids, decoded and collated by the task (unknown ids refused there)."""
    window, columns = served.contract["window"], len(served.contract["columns"])
    usage = (
        f"{served.name} was trained per series: send two tensors, 'input' (the windows, FP32 "
        f"[N, {window}, {columns}]) and 'series' (BYTES or INT64 [N], each window's series "
        "id)."
    )
    if (
        not isinstance(specs, list)
        or len(specs) != 2
        or not all(isinstance(s, dict) for s in specs)
    ):
        raise DataError(usage)
    parts = dict(zip([spec.get("name") for spec in specs], _binary_parts(specs, binary)))
    named = {spec.get("name"): spec for spec in specs}
    if set(named) != {"input", "series"}:
        raise DataError(usage)
    windows = parse_tensor(named["input"], parts["input"])
    ids = parse_series(named["series"], parts["series"])
    if len(ids) != len(windows):
        raise DataError(f"'series' names {len(ids)} series for {len(windows)} windows: one each.")
    _within_limit(served, len(windows))
    raws = [{"series": key, "values": w} for key, w in zip(ids, windows)]
    rows, _ = await run_in_threadpool(served.prepare, raws)
    return served.check_rows(rows)


def _within_limit(served: ServedModel, rows: int) -> None:
    if rows > served.batcher.max_batch_size:
        raise DataError(
            f"A batch of {rows} is over this model's limit of "
            f"{served.batcher.max_batch_size}; split it."
        )


def loaded_version(host: ModelHost, name: str, version: str | None) -> ServedModel:
    """The model a v2 path names; with /versions/{version}, only the version loaded (a server
    holds one version of each model: another is 404, as an unloaded model is)."""
    served = host.get(name)
    loaded = str(served.package.manifest.version)
    if version is not None and version != loaded:
        raise NotFoundError(f"{name} version {version} is not loaded (serving version {loaded}).")
    return served


def router(host: ModelHost) -> APIRouter:
    """The v2 routes, each also under /v2/models/{name}/versions/{version}/..., as the
    protocol has them."""
    api = APIRouter(tags=["v2"])

    @api.get("/v2", summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        from sampan import __version__

        return {"name": "sampan", "version": __version__, "extensions": EXTENSIONS}

    @api.get("/v2/health/live", summary="Liveness")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @api.get("/v2/health/ready", summary="Readiness: every model loaded, not draining")
    async def ready() -> JSONResponse:
        ok = not host.draining and bool(host.models)
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    # Before /v2/models/{name}: "stats" here is the extension's path, not a model's name.
    @api.get("/v2/models/stats", summary="Statistics of every model (Triton's extension)")
    async def all_statistics() -> dict[str, Any]:
        return {"model_stats": host.statistics()}

    @api.get("/v2/models/{name}/stats", summary="A model's statistics, every version loaded")
    async def statistics(name: str) -> dict[str, Any]:
        return {"model_stats": host.statistics(name)}

    @api.get("/v2/models/{name}/versions/{version}/stats", summary="One version's statistics")
    async def version_statistics(name: str, version: str) -> dict[str, Any]:
        return {"model_stats": host.statistics(name, version)}

    @api.get("/v2/models/{name}/versions/{version}", summary="Model metadata of a version")
    async def version_metadata(name: str, version: str) -> dict[str, Any]:
        return _metadata(loaded_version(host, name, version))

    @api.get("/v2/models/{name}", summary="Model metadata")
    async def metadata(name: str) -> dict[str, Any]:
        return _metadata(host.get(name))

    def _metadata(served: ServedModel) -> dict[str, Any]:
        name = served.name
        engine, manifest = served.engine, served.package.manifest
        tensors = [
            {"name": "text", "datatype": "BYTES", "shape": [-1]}
            if served.takes_text
            else {
                "name": "input",
                "datatype": NAMES[engine.input_dtype.name],
                "shape": [-1, *engine.input_shape],
            }
        ]
        if _per_series(served):  # windows (without the statistics collate adds) and their ids
            shape = [-1, served.contract["window"], len(served.contract["columns"])]
            tensors = [
                {"name": "input", "datatype": "FP32", "shape": shape},
                {"name": "series", "datatype": "BYTES", "shape": [-1]},
            ]
        # the task's own shape (classifiers: one score per label; forecasts: horizon x
        # columns); embeddings: the vector's size, when recorded
        shape = served.task.output_shape(manifest.preprocessing, manifest.labels)
        if shape == [-1] and manifest.training.get("dimension"):
            shape = [int(manifest.training["dimension"])]
        return {
            "name": name,
            "versions": [str(manifest.version)],
            "platform": engine.name,
            "inputs": tensors,
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, *shape]}],
        }

    @api.get("/v2/models/{name}/versions/{version}/config", summary="Configuration, by version")
    async def version_config(name: str, version: str) -> dict[str, Any]:
        return _config(loaded_version(host, name, version))

    @api.get("/v2/models/{name}/config", summary="Model configuration (Triton's extension)")
    async def config(name: str) -> dict[str, Any]:
        return _config(host.get(name))

    def _config(served: ServedModel) -> dict[str, Any]:
        """What is served, as Triton's model configuration says it: dims without the batch
        axis (max_batch_size > 0), the dynamic batcher's delay, the engine instances."""
        meta = _metadata(served)

        def tensors(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                {
                    "name": t["name"],
                    "data_type": TRITON_TYPES[t["datatype"]],
                    "dims": t["shape"][1:] or [1],
                }
                for t in entries
            ]

        device = served.engine.device.split(":")[0]
        kind = {"cpu": "KIND_CPU", "cuda": "KIND_GPU", "rocm": "KIND_GPU"}.get(device, "KIND_MODEL")
        return {
            "name": served.name,
            "platform": TRITON_PLATFORMS.get(meta["platform"], meta["platform"]),
            "backend": meta["platform"],
            "max_batch_size": served.batcher.max_batch_size,
            "input": tensors(meta["inputs"]),
            "output": tensors(meta["outputs"]),
            "dynamic_batching": {
                "max_queue_delay_microseconds": int(served.settings.max_wait_ms * 1000),
                "default_queue_policy": {
                    "max_queue_size": served.settings.max_queue,
                    "default_timeout_microseconds": int(served.settings.timeout_s * 1e6),
                },
            },
            "instance_group": [{"count": len(served.engines), "kind": kind}],
        }

    @api.get("/v2/models/{name}/versions/{version}/ready", summary="Readiness of a version")
    async def version_ready(name: str, version: str) -> JSONResponse:
        return _ready(name, version)

    @api.get("/v2/models/{name}/ready", summary="Model readiness")
    async def model_ready(name: str) -> JSONResponse:
        return _ready(name, None)

    def _ready(name: str, version: str | None) -> JSONResponse:
        if host.draining:
            return JSONResponse({"name": name, "ready": False}, status_code=503)
        loaded_version(host, name, version)  # 404 for a model that is not loaded
        return JSONResponse({"name": name, "ready": True})

    @api.post(
        "/v2/models/{name}/versions/{version}/infer",
        summary="Inference on JSON tensors, by a version",
        openapi_extra=INFER_BODY,
    )
    async def version_infer(name: str, version: str, request: Request) -> Any:
        return await _infer(loaded_version(host, name, version), request, version)

    @api.post(
        "/v2/models/{name}/infer", summary="Inference on JSON tensors", openapi_extra=INFER_BODY
    )
    async def infer(name: str, request: Request) -> Any:
        return await _infer(host.get(name), request)

    async def _infer(served: ServedModel, request: Request, version: str | None = None) -> Any:
        name = served.name
        body, binary = split_body(await request.body(), request.headers.get(HEADER_LENGTH))
        requested_classes(body, served)  # a bad "outputs" before any decoding
        if _per_series(served):
            rows = await _series_rows(served, body.get("inputs"), binary)
        elif not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
            raise DataError(f"{name} takes exactly one input tensor in 'inputs'.")
        else:
            rows = await _rows(served, body["inputs"][0], binary)
        request.state.model = name
        served, outputs = await host.submit_call(served, rows, request.state)
        answered = str(served.package.manifest.version)
        if version is not None and answered != version:  # replaced while this one waited
            raise NotFoundError(
                f"{name} version {version} was replaced by version {answered} while this "
                "request waited; send it again to the version now loaded."
            )
        classes = requested_classes(body, served)  # of the version that answered
        if classes is not None:
            outputs = classified(outputs, classes, served.package.manifest.labels)
        result: dict[str, Any] = {
            "model_name": name,
            "model_version": answered,
            "outputs": [
                {
                    "name": "output",
                    "datatype": "BYTES" if outputs.dtype == object else NAMES[outputs.dtype.name],
                    "shape": list(outputs.shape),
                    "data": outputs.ravel().tolist(),
                }
            ],
        }
        if isinstance(body.get("id"), str):
            result["id"] = body["id"]
        if _wants_binary(body):
            return _binary_response(result, outputs)
        return json_answer(result)

    return api
