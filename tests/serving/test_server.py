"""End to end over real HTTP on loopback."""

from __future__ import annotations

import base64
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serving.conftest import RunningServer, free_port, serve_process


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_rest_json_and_multipart_predict(server, digits_holdout):
    files = sorted(digits_holdout.glob("*/*.png"))[:4]
    r = httpx.post(
        f"{server.url}/v1/models/digits:predict",
        json={"instances": [b64(f) for f in files], "top_k": 2},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "digits" and len(body["predictions"]) == 4
    assert all(len(p["top_k"]) == 2 for p in body["predictions"])
    with files[0].open("rb") as f:
        up = httpx.post(f"{server.url}/v1/models/digits:predict", files={"file": f})
    assert up.status_code == 200 and up.json()["predictions"][0] == body["predictions"][0] | {
        "top_k": up.json()["predictions"][0]["top_k"]
    }
    listed = httpx.get(f"{server.url}/v1/models").json()["models"]
    assert [m["name"] for m in listed] == ["digits"] and listed[0]["backend"] == "onnxruntime"


def test_v2_with_tritonclient(server, digits_holdout):
    import tritonclient.http as triton
    import tritonclient.utils as triton_utils

    import sampan

    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits")
    meta = client.get_model_metadata("digits")
    assert meta["inputs"][0]["shape"] == [-1, 1, 16, 16]
    model = sampan.load(server.host.get("digits").package.path.as_posix(), backend="onnxruntime")
    files = sorted(digits_holdout.glob("*/*.png"))[:3]
    batch = model.task.collate(
        [model.task.decode(f, model.contract) for f in files], model.contract
    )
    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    expected = model.engine.predict(batch)
    # The client's defaults (binary tensors both ways), then plain JSON both ways.
    result = client.infer("digits", [tensor])
    assert np.allclose(result.as_numpy("output"), expected, atol=1e-5)
    tensor.set_data_from_numpy(batch, binary_data=False)
    json_out = triton.InferRequestedOutput("output", binary_data=False)
    result = client.infer("digits", [tensor], outputs=[json_out])
    assert np.allclose(result.as_numpy("output"), expected, atol=1e-5)
    # The classification extension: per row the 3 highest scores, "score:index:label".
    labels = model.labels
    for binary in (True, False):
        top = triton.InferRequestedOutput("output", binary_data=binary, class_count=3)
        got = client.infer("digits", [tensor], outputs=[top]).as_numpy("output")
        assert got.shape == (3, 3)
        for row, scores in zip(got, expected):
            order = np.argsort(-scores)[:3]
            parts = [(x.decode() if binary else x).split(":") for x in row]  # JSON: str
            assert [int(p[1]) for p in parts] == list(order)
            assert [p[2] for p in parts] == [labels[i] for i in order]
            assert np.allclose([float(p[0]) for p in parts], scores[order], atol=1e-5)
    assert "classification" in client.get_server_metadata()["extensions"]
    config = client.get_model_config("digits")
    assert config["max_batch_size"] == server.host.get("digits").batcher.max_batch_size
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [1, 16, 16]}]
    assert config["output"][0]["dims"] == [len(labels)]
    assert "statistics" in client.get_server_metadata()["extensions"]
    # Compressed requests and answers asked for, as the client offers them.
    for algorithm in ("gzip", "deflate"):
        result = client.infer(
            "digits",
            [tensor],
            outputs=[json_out],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        assert np.allclose(result.as_numpy("output"), expected, atol=1e-5)
    # The protocol's versioned paths: the version loaded answers, another is not found.
    version = meta["versions"][0]
    assert client.is_model_ready("digits", version)
    assert client.get_model_metadata("digits", model_version=version)["inputs"] == meta["inputs"]
    result = client.infer("digits", [tensor], model_version=version)
    assert np.allclose(result.as_numpy("output"), expected, atol=1e-5)
    assert result.get_response()["model_version"] == version
    assert not client.is_model_ready("digits", "999")
    with pytest.raises(triton_utils.InferenceServerException, match="version 999 is not loaded"):
        client.infer("digits", [tensor], model_version="999")
    # An answer large enough to be compressed (32 rows of scores as JSON), both ways.
    big = np.concatenate([batch] * 11)[:32]
    tensor = triton.InferInput("input", list(big.shape), "FP32")
    tensor.set_data_from_numpy(big, binary_data=False)
    for algorithm in ("gzip", "deflate"):
        result = client.infer(
            "digits", [tensor], outputs=[json_out], response_compression_algorithm=algorithm
        )
        assert np.allclose(result.as_numpy("output"), model.engine.predict(big), atol=1e-5)


def test_large_answers_are_compressed_for_callers_that_accept_it(server):
    import zlib

    url = f"{server.url}/openapi.json"  # tens of kilobytes of JSON
    plain = httpx.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and len(plain.content) > 4096
    for accept, coding in [
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("deflate;q=0.5, gzip;q=0.9", "gzip"),
        ("gzip;q=0.1, deflate", "deflate"),
        ("x-gzip", "gzip"),
    ]:
        with httpx.stream("GET", url, headers={"Accept-Encoding": accept}) as r:
            sent = b"".join(r.iter_raw())  # as it came over the wire, before httpx decodes it
        assert r.headers["content-encoding"] == coding, accept
        assert "Accept-Encoding" in r.headers["vary"]
        assert int(r.headers["content-length"]) == len(sent) < len(plain.content) / 3
        wbits = 16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS
        assert json.loads(zlib.decompress(sent, wbits)) == plain.json()
    for accept in ("gzip;q=0", "br", "identity", ""):  # nothing it takes: as it is
        r = httpx.get(url, headers={"Accept-Encoding": accept})
        assert "content-encoding" not in r.headers, accept
        assert r.content == plain.content
    # an inference answer, through the server's front door for hot routes: 32 rows of scores
    zeros = {**ZEROS, "shape": [32, 1, 16, 16], "data": [0.0] * 256 * 32}
    infer = f"{server.url}/v2/models/digits/infer"
    for coding in ("gzip", "deflate"):
        with httpx.stream(
            "POST", infer, json={"inputs": [zeros]}, headers={"Accept-Encoding": coding}
        ) as r:
            sent = b"".join(r.iter_raw())
        assert r.status_code == 200 and r.headers["content-encoding"] == coding
        wbits = 16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS
        answer = json.loads(zlib.decompress(sent, wbits))
        assert answer["outputs"][0]["shape"] == [32, 10] and len(sent) < 4096
    small = httpx.get(f"{server.url}/v2/health/live", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers and small.json() == {"live": True}


ZEROS = {"name": "input", "shape": [1, 1, 16, 16], "datatype": "FP32", "data": [0.0] * 256}


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "message"),
    [
        ("/v1/models/nope:predict", {"json": {"instances": ["x"]}}, 404, "No model 'nope'"),
        ("/v1/models/..:predict", {"json": {"instances": ["x"]}}, 400, "not a model name"),
        ("/v1/models/digits:predict", {"content": b"{not json"}, 400, "not valid JSON"),
        ("/v1/models/digits:predict", {"json": {"instances": []}}, 400, "instances is empty"),
        ("/v1/models/digits:predict", {"json": {"instances": ["%%%"]}}, 400, "not valid base64"),
        (
            "/v1/models/digits:predict",
            {"json": {"instances": [base64.b64encode(b"junk").decode()]}},
            400,
            "Cannot read image",
        ),
        (
            "/v2/models/digits/infer",
            {
                "json": {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 3, 16, 16],
                            "datatype": "FP32",
                            "data": [0.0] * 768,
                        }
                    ]
                }
            },
            400,
            "does not fit digits",
        ),
        (
            "/v2/models/digits/infer",
            {
                "json": {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 1, 16, 16],
                            "datatype": "FP32",
                            "data": [0.0] * 5,
                        }
                    ]
                }
            },
            400,
            "needs 256",
        ),
        ("/v1/models/digits:predict", {"content": b"x" * (3 * 2**20)}, 413, "byte limit"),
        *(
            (
                "/v2/models/digits/infer",
                {"json": {"inputs": [ZEROS], "outputs": outputs}},
                400,
                message,
            )
            for outputs, message in (
                ([{"name": "scores"}], "has one output, 'output'; not 'scores'"),
                ([{"name": "output", "parameters": {"classification": 0}}], "whole number >= 1"),
                ({"name": "output"}, "'outputs' must be a list of objects"),
            )
        ),
        ("/v2/no/such/path", {"json": {}}, 404, "Not Found: POST /v2/no/such/path."),
    ],
)
def test_bad_requests_get_clear_4xx(server, path, kwargs, status, message):
    r = httpx.post(server.url + path, **kwargs)
    assert r.status_code == status and message in r.json()["error"], r.text


def test_a_body_without_a_declared_length_is_limited_as_it_streams(server, digits_holdout):
    def chunks(total: int, size: int = 2**16):
        for _ in range(total // size):
            yield b"x" * size

    url = server.url + "/v1/models/digits:predict"
    big = httpx.post(url, content=chunks(3 * 2**20))  # chunked: no Content-Length
    assert big.status_code == 413 and "byte limit" in big.json()["error"]
    png = next(iter(sorted(digits_holdout.glob("*/*.png")))).read_bytes()
    body = json.dumps({"instances": [base64.b64encode(png).decode()]}).encode()
    small = httpx.post(url, content=iter([body[:10], body[10:]]))
    assert small.status_code == 200 and small.json()["predictions"][0]["label"]


def test_compressed_bodies_are_inflated_within_the_limit(server, digits_holdout):
    import gzip
    import zlib

    url = f"{server.url}/v1/models/digits:predict"
    body = json.dumps({"instances": [b64(sorted(digits_holdout.glob("*/*.png"))[0])]}).encode()
    plain = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
    raw_deflate = zlib.compressobj(wbits=-15)
    for encoding, data in (
        ("gzip", gzip.compress(body)),
        ("GZip", gzip.compress(body[:50]) + gzip.compress(body[50:])),  # two members
        ("deflate", zlib.compress(body)),
        ("deflate", raw_deflate.compress(body) + raw_deflate.flush()),
    ):
        answer = httpx.post(url, content=data, headers={"Content-Encoding": encoding})
        assert answer.status_code == 200, (encoding, answer.text)
        assert answer.json()["predictions"] == plain.json()["predictions"]
    bomb = gzip.compress(b" " * (3 * 2**20))  # 3 MiB of spaces in 3 KiB; the limit is 2 MiB
    for encoding, data, status, message in (
        ("gzip", bomb, 413, "inflates to over the 2,097,152-byte limit"),
        ("gzip", gzip.compress(body)[:-12], 400, "not valid gzip data"),  # cut short
        ("gzip", b"not gzip at all", 400, "not valid gzip data"),
        ("br", body, 415, "Content-Encoding 'br' is not supported; send gzip, deflate"),
    ):
        answer = httpx.post(url, content=data, headers={"Content-Encoding": encoding})
        assert answer.status_code == status and message in answer.json()["error"], answer.text
    # over INLINE_INFLATE compressed bytes: inflated in a thread, then read as the body it is
    noise = gzip.compress(np.random.default_rng(0).bytes(100_000))
    answer = httpx.post(url, content=noise, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"]
    empty = httpx.get(f"{server.url}/v2/health/live", headers={"Content-Encoding": "gzip"})
    assert empty.status_code == 200  # no body: nothing to inflate
    identity = httpx.post(url, content=body, headers={"Content-Encoding": "identity"})
    assert identity.status_code == 200
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200  # still serving


def test_decompression_bomb_is_refused(server, monkeypatch):
    import sampan.data.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((200, 200), dtype=np.uint8)).save(buffer, format="PNG")
    r = httpx.post(
        f"{server.url}/v1/models/digits:predict",
        json={"instances": [base64.b64encode(buffer.getvalue()).decode()]},
    )
    assert r.status_code == 400 and "pixel limit" in r.json()["error"]


def test_full_queue_answers_503_with_retry_after(serve_home, digits_holdout):
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    home, onnx_ref, _ = serve_home
    settings = ServeSettings(backend="onnxruntime", max_batch_size=1, max_queue=1)
    app = build_app([onnx_ref], settings, Store(home))
    with RunningServer(app, free_port()) as running:
        engine = running.host.get("digits").engines[0]
        gate = threading.Event()
        original = engine._run
        engine._run = lambda batch: (gate.wait(10), original(batch))[1]
        body = {"instances": [b64(sorted(digits_holdout.glob("*/*.png"))[0])]}
        url = f"{running.url}/v1/models/digits:predict"
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(httpx.post, url, json=body, timeout=30) for _ in range(4)]
            import time

            time.sleep(1.0)  # one running, one queued, the rest refused at once
            gate.set()
            codes = sorted(f.result().status_code for f in futures)
            refused = [f.result() for f in futures if f.result().status_code == 503]
        assert codes == [200, 200, 503, 503]
        assert all(r.headers["retry-after"] == "1" for r in refused)


def test_a_request_past_its_deadline_answers_504(serve_home, digits_holdout):
    """--timeout bounds the whole wait, the engine's call included: a stuck engine answers
    its callers 504 at their deadline, and the server goes on serving once it recovers."""
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    home, onnx_ref, _ = serve_home
    settings = ServeSettings(backend="onnxruntime", timeout_s=0.3)
    with RunningServer(build_app([onnx_ref], settings, Store(home)), free_port()) as running:
        engine = running.host.get("digits").engines[0]
        gate = threading.Event()
        original = engine._run
        engine._run = lambda batch: (gate.wait(10), original(batch))[1]
        url = f"{running.url}/v1/models/digits:predict"
        body = {"instances": [b64(sorted(digits_holdout.glob("*/*.png"))[0])]}
        late = httpx.post(url, json=body, timeout=30)
        gate.set()
        after = httpx.post(url, json=body, timeout=30)
        metrics = httpx.get(f"{running.url}/metrics").text
    assert late.status_code == 504 and "No answer within 0.3s" in late.json()["error"]
    assert after.status_code == 200
    assert 'sampan_requests_total{code="504",model="digits",protocol="v1"} 1.0' in metrics


def test_metrics_count_what_was_sent(server, digits_holdout):
    body = {"instances": [b64(sorted(digits_holdout.glob("*/*.png"))[0])]}
    for _ in range(3):
        assert httpx.post(f"{server.url}/v1/models/digits:predict", json=body).status_code == 200
    httpx.post(f"{server.url}/v1/models/digits:predict", json={"instances": []})
    text = httpx.get(f"{server.url}/metrics").text
    assert 'sampan_requests_total{code="200",model="digits",protocol="v1"} 3.0' in text
    assert 'sampan_requests_total{code="400",model="-",protocol="v1"} 1.0' in text
    assert "sampan_batch_size_count" in text and "sampan_queue_depth" in text


def test_openapi_document_lists_the_protocols(server):
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/v1/models/{name}:predict", "/v2/models/{name}/infer", "/v2/health/ready"} <= set(
        paths
    )


def test_inference_routes_are_answered_by_the_front_door(server):
    """A POST to a hot route goes through the server's middleware straight to the plain
    route's endpoint; the same routes lead FastAPI's router for everything else."""
    from starlette.routing import Route

    from sampan.serving.app import HOT_ROUTES

    app = server.app
    front = app.router.routes[: len(HOT_ROUTES)]
    assert all(type(r) is Route for r in front) and {r.path for r in front} == HOT_ROUTES
    assert front == app.hot_routes
    predict = next(r for r in front if r.path.endswith(":predict"))
    original, seen = predict.endpoint, []

    async def spy(request):
        seen.append(request.url.path)
        return await original(request)

    predict.endpoint = spy
    try:
        answer = httpx.post(f"{server.url}/v1/models/nope:predict", json={"instances": ["x"]})
        wrong_method = httpx.get(f"{server.url}/v1/models/nope:predict")
    finally:
        predict.endpoint = original
    assert seen == ["/v1/models/nope:predict"] and answer.status_code == 404
    assert "No model 'nope'" in answer.json()["error"]  # SampanErrors mapped as before
    assert answer.headers["content-type"] == "application/json"
    # a GET passes the front door (the spy saw one call): FastAPI's GET /v1/models/{name}
    # answers it, refusing "nope:predict" as a model name
    assert wrong_method.status_code == 400
    metrics = httpx.get(f"{server.url}/metrics").text  # the middleware list saw the call
    assert 'sampan_requests_total{code="404",model="-",protocol="v1"} 1.0' in metrics


def test_an_unexpected_error_on_a_hot_route_is_a_500_and_the_server_goes_on(server, caplog):
    import logging

    predict = next(r for r in server.app.hot_routes if r.path.endswith(":predict"))
    original = predict.endpoint

    async def broken(request):
        raise RuntimeError("a bug")

    predict.endpoint = broken
    caplog.set_level(logging.ERROR, logger="sampan.server")
    try:
        answer = httpx.post(f"{server.url}/v1/models/digits:predict", json={"instances": ["x"]})
    finally:
        predict.endpoint = original
    assert answer.status_code == 500 and "a bug" not in answer.text
    rid = answer.headers["x-request-id"]  # the answer and the log's traceback share the id
    assert rid in answer.json()["error"]
    logged = [r for r in caplog.records if r.name == "sampan.server"]
    assert len(logged) == 1 and rid in logged[0].getMessage()
    assert "a bug" in str(logged[0].exc_info[1])
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200


def test_a_plain_route_takes_only_path_parameters_and_the_request():
    from fastapi.routing import APIRoute

    from sampan.serving.app import plain_route

    async def endpoint(name: str, request, top_k: int = 5): ...

    with pytest.raises(TypeError, match="takes its path and request"):
        plain_route(APIRoute("/v1/models/{name}:predict", endpoint, methods=["POST"]))


def test_drain_answers_in_flight_requests_and_refuses_new_ones(serve_home, digits_holdout):
    """What SIGTERM starts, step by step: in-flight requests are answered, new ones get 503 +
    Retry-After, readiness says 503, and the server stops only after that."""
    import signal
    import time

    import uvicorn

    from sampan.serving.app import build_app
    from sampan.serving.drain import DrainingServer
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    home, onnx_ref, _ = serve_home
    app = build_app([onnx_ref], ServeSettings(backend="onnxruntime"), Store(home))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = DrainingServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"),
        app.state.host,
        grace_s=0.2,
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    engine = app.state.host.get("digits").engines[0]
    gate = threading.Event()
    original = engine._run
    engine._run = lambda batch: (gate.wait(10), original(batch))[1]
    body = {"instances": [b64(sorted(digits_holdout.glob("*/*.png"))[0])]}
    predict = f"{url}/v1/models/digits:predict"
    with ThreadPoolExecutor(3) as pool:
        in_flight = [pool.submit(httpx.post, predict, json=body, timeout=30) for _ in range(3)]
        time.sleep(0.5)  # all three admitted, one in the engine, two queued
        server.handle_exit(signal.SIGTERM, None)
        assert httpx.get(f"{url}/v2/health/ready").status_code == 503
        late = httpx.post(predict, json=body)
        assert late.status_code == 503 and late.headers["retry-after"] == "1"
        assert "shutting down" in late.json()["error"]
        assert thread.is_alive()  # still serving its in-flight requests
        gate.set()
        assert [f.result().status_code for f in in_flight] == [200, 200, 200]
    thread.join(30)
    assert not thread.is_alive()


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_sigterm_stops_the_server_process_gracefully(serve_home, tmp_path, stop):
    import signal
    import time

    home, onnx_ref, _ = serve_home
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log_file:
        proc = serve_process(home, onnx_ref, port, log_file)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        proc.send_signal(getattr(signal, stop))
        # uvicorn re-raises the signal after a graceful shutdown, so the status says SIGTERM;
        # Ctrl-C (SIGINT) is a normal end: 0, not the CLI's "aborted" (130)
        code = proc.wait(timeout=60)
    assert code in ((0, -signal.SIGTERM) if stop == "SIGTERM" else (0,)), code
    log = log_path.read_text()
    assert "Application shutdown complete" in log and "aborted" not in log


def test_the_cli_serves_through_the_draining_server(serve_home, monkeypatch):
    """`sampan serve` runs DrainingServer (the drain tested above), over its app's host, with
    the longest request timeout as its drain bound; a server that did not start exits 3."""
    from sampan.cli.main import main
    from sampan.serving.drain import DrainingServer

    home, onnx_ref, _ = serve_home
    monkeypatch.setenv("SAMPAN_HOME", str(home))
    ran = []
    monkeypatch.setattr(DrainingServer, "run", lambda self: ran.append(self))
    with pytest.raises(SystemExit) as stop:  # run() returned without starting
        main(["serve", "--models", onnx_ref, "--auth", "off", "--timeout", "7"])
    assert stop.value.code == 3
    (server,) = ran
    assert isinstance(server, DrainingServer) and server.timeout_s == 7
    assert server.host is server.config.app.state.host  # the app's (models load at start-up)
    assert server.config.timeout_graceful_shutdown == 12


def test_admin_endpoints_load_replace_and_unload_models(serve_home, digits_holdout):
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    home, onnx_ref, int8_ref = serve_home
    settings = ServeSettings(backend="onnxruntime", admin_token="s3cret")
    app = build_app([onnx_ref], settings, Store(home))
    auth = {"Authorization": "Bearer s3cret"}
    body = {"instances": [b64(sorted(digits_holdout.glob("*/*.png"))[0])]}
    with RunningServer(app, free_port()) as running:
        admin, predict = f"{running.url}/v1/admin/models", f"{running.url}/v1/models/digits:predict"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = httpx.post(admin, json={"model": int8_ref}, headers=headers)
            assert r.status_code == 401 and "Bearer" in r.json()["error"], r.text
        assert httpx.post(admin, json={"model": "nope"}, headers=auth).status_code == 404
        assert httpx.post(admin, json={"model": "../x"}, headers=auth).status_code == 400
        assert httpx.post(admin, json={"model": "digits@v2"}, headers=auth).status_code == 400
        assert httpx.post(admin, content=b"{", headers=auth).status_code == 400

        # Replace the served version while clients keep calling: none of them sees an error.
        def call_many(_: int) -> list[int]:
            return [httpx.post(predict, json=body, timeout=30).status_code for _ in range(8)]

        with ThreadPoolExecutor(3) as pool:
            pending = [pool.submit(call_many, i) for i in range(3)]
            r = httpx.post(admin, json={"model": int8_ref}, headers=auth, timeout=60)
            codes = [code for f in pending for code in f.result(timeout=120)]
        assert r.status_code == 200, r.text
        assert r.json()["loaded"]["version"] == int(int8_ref.split("@")[1])
        assert codes == [200] * 24
        answer = httpx.post(predict, json=body).json()
        assert answer["version"] == int(int8_ref.split("@")[1])

        r = httpx.delete(f"{admin}/digits", headers=auth, timeout=60)
        assert r.status_code == 200 and r.json() == {"unloaded": "digits"}
        assert httpx.post(predict, json=body).status_code == 404
        assert httpx.get(f"{running.url}/v2/models/digits/ready").status_code == 404
        assert httpx.delete(f"{admin}/digits", headers=auth).status_code == 404


def test_tritonclient_loads_and_unloads_through_the_repository_extension(serve_home):
    import tritonclient.http as triton
    import tritonclient.utils as triton_utils

    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    home, onnx_ref, _ = serve_home
    settings = ServeSettings(backend="onnxruntime", admin_token="s3cret")
    app = build_app([onnx_ref], settings, Store(home))
    auth = {"Authorization": "Bearer s3cret"}
    with RunningServer(app, free_port()) as running:
        client = triton.InferenceServerClient(url=running.url.removeprefix("http://"))
        assert "model_repository" in client.get_server_metadata()["extensions"]
        with pytest.raises(triton_utils.InferenceServerException, match="admin token"):
            client.get_model_repository_index()
        with pytest.raises(triton_utils.InferenceServerException, match="admin token"):
            client.unload_model("digits", headers={"Authorization": "Bearer wrong"})
        index = client.get_model_repository_index(headers=auth)
        client.load_model("digits", headers=auth)  # the store's latest version
        latest = client.get_model_metadata("digits")["versions"]
        client.unload_model("digits", headers=auth)
        unloaded = client.is_model_ready("digits")
        after = client.get_model_repository_index(headers=auth)
        with pytest.raises(triton_utils.InferenceServerException, match="No package named"):
            client.load_model("nope", headers=auth)
        with pytest.raises(triton_utils.InferenceServerException, match="not supported"):
            client.load_model("digits", headers=auth, config='{"max_batch_size": 4}')
    assert index == [{"name": "digits", "version": onnx_ref.split("@")[1], "state": "READY"}]
    newest = str(Store(home).versions("digits")[-1])  # other tests may have added versions
    assert newest != onnx_ref.split("@")[1] and latest == [newest]
    assert not unloaded
    assert after == [
        {
            "name": "digits",
            "version": newest,
            "state": "UNAVAILABLE",
            "reason": "unloaded",
        }
    ]


def test_tritonclient_reads_statistics_that_count_what_was_sent(serve_home, digits_holdout):
    import dataclasses
    import time

    import tritonclient.http as triton
    import tritonclient.utils as triton_utils

    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    home, onnx_ref, int8_ref = serve_home
    version, int8_version = onnx_ref.split("@")[1], int8_ref.split("@")[1]
    app = build_app([onnx_ref], ServeSettings(backend="onnxruntime", admin_token="t"), Store(home))
    images = [b64(p) for p in sorted(digits_holdout.glob("*/*.png"))[:3]]
    with RunningServer(app, free_port()) as running:
        client = triton.InferenceServerClient(url=running.url.removeprefix("http://"))
        before = client.get_inference_statistics()["model_stats"]
        started_ms = time.time() * 1000
        # one request of 3 rows, then one of 2 (each its own batch: they go one after the other)
        predict = f"{running.url}/v1/models/digits:predict"
        assert httpx.post(predict, json={"instances": images}).status_code == 200
        assert httpx.post(predict, json={"instances": images[:2]}).status_code == 200
        served = running.host.get("digits")
        served.settings = dataclasses.replace(served.settings, timeout_s=1e-6)  # past at once
        assert httpx.post(predict, json={"instances": images[:1]}).status_code == 504
        stats = client.get_inference_statistics("digits")["model_stats"]
        assert client.get_inference_statistics("digits", version)["model_stats"] == stats
        assert client.get_inference_statistics()["model_stats"] == stats
        with pytest.raises(triton_utils.InferenceServerException, match="has not been loaded"):
            client.get_inference_statistics("digits", "999")
        with pytest.raises(triton_utils.InferenceServerException, match="No model 'nope'"):
            client.get_inference_statistics("nope")
        # a replaced version keeps its counters; loading it again goes on counting
        auth = {"Authorization": "Bearer t"}
        admin = f"{running.url}/v1/admin/models"
        assert httpx.post(admin, json={"model": int8_ref}, headers=auth, timeout=60).is_success
        both = client.get_inference_statistics("digits")["model_stats"]
        assert httpx.post(admin, json={"model": onnx_ref}, headers=auth, timeout=60).is_success
        assert httpx.post(predict, json={"instances": images[:1]}).status_code == 200
        again = client.get_inference_statistics("digits", version)["model_stats"][0]
    assert [(m["name"], m["version"], m["inference_count"]) for m in before] == [
        ("digits", version, 0)
    ]
    [stat] = stats
    assert (stat["name"], stat["version"]) == ("digits", version)
    assert stat["inference_count"] == 5 and stat["execution_count"] == 2
    assert started_ms <= stat["last_inference"] <= time.time() * 1000
    inference = stat["inference_stats"]
    assert inference["success"]["count"] == 2 and inference["fail"]["count"] == 1
    assert inference["fail"]["ns"] > 0 and inference["success"]["ns"] > 0
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert inference[phase]["count"] == 2, phase
    assert inference["compute_infer"]["ns"] > 0
    assert inference["cache_hit"] == {"count": 0, "ns": 0}
    assert [b["batch_size"] for b in stat["batch_stats"]] == [2, 3]
    for batch in stat["batch_stats"]:
        assert batch["compute_infer"]["count"] == 1 and batch["compute_infer"]["ns"] > 0
    # each request's compute is its batch's: the per-request total is the sum of the batches'
    per_batch = sum(b["compute_infer"]["ns"] for b in stat["batch_stats"])
    assert inference["compute_infer"]["ns"] == per_batch
    assert [(m["version"], m["inference_count"]) for m in both] == sorted(
        [(version, 5), (int8_version, 0)]
    )
    assert again["inference_count"] == 6 and again["inference_stats"]["success"]["count"] == 3


def test_a_version_pinned_call_is_not_answered_by_its_replacement(serve_home, monkeypatch):
    """A v2 call to /versions/N that found version N loaded, and reaches the batcher only after
    N was replaced, is refused (404: send it again) rather than answered by the new version."""
    from sampan.serving import v2
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    home, onnx_ref, int8_ref = serve_home
    settings = ServeSettings(backend="onnxruntime", admin_token="s3cret")
    with RunningServer(build_app([onnx_ref], settings, Store(home)), free_port()) as running:
        version = onnx_ref.split("@")[1]
        tensor = {"name": "input", "shape": [1, 1, 16, 16], "datatype": "FP32"}
        body = json.dumps({"inputs": [{**tensor, "data": [0.0] * 256}]}).encode()
        replaced, checked = threading.Event(), threading.Event()
        found = v2.loaded_version

        def loaded_version(*args):
            served = found(*args)
            checked.set()  # the call found version N
            return served

        monkeypatch.setattr(v2, "loaded_version", loaded_version)

        def slow_body():  # the call is under way (its version checked) before the replacement
            yield body[:10]
            replaced.wait(60)
            yield body[10:]

        url = f"{running.url}/v2/models/digits/versions/{version}/infer"
        with ThreadPoolExecutor(1) as pool:
            pinned = pool.submit(httpx.post, url, content=slow_body(), timeout=60)
            assert checked.wait(60)
            admin = httpx.post(
                f"{running.url}/v1/admin/models",
                json={"model": int8_ref},
                headers={"Authorization": "Bearer s3cret"},
                timeout=60,
            )
            replaced.set()
            answer = pinned.result(timeout=60)
    assert admin.status_code == 200, admin.text
    assert answer.status_code == 404, answer.text
    assert f"version {version} was replaced by version {int8_ref.split('@')[1]}" in answer.text


def test_admin_endpoints_are_off_without_a_token(server):
    r = httpx.post(
        f"{server.url}/v1/admin/models",
        json={"model": "digits"},
        headers={"Authorization": "Bearer anything"},
    )
    assert r.status_code == 403 and "--admin-token" in r.json()["error"]


@pytest.mark.parametrize("spin", [False, True])
def test_serve_settings_reach_the_onnxruntime_engine(serve_home, spin):
    from sampan.serving.host import ModelHost, ServeSettings
    from sampan.serving.metrics import Metrics
    from sampan.store import Store

    home, onnx_ref, _ = serve_home
    settings = ServeSettings(backend="onnxruntime", threads=1, spin=spin, instances=2)
    served = ModelHost(settings, Metrics(), Store(home))._build(onnx_ref)
    assert len(served.engines) == 2
    for engine in served.engines:
        options = engine.session.get_session_options()
        assert options.intra_op_num_threads == 1
        spinning = options.get_session_config_entry("session.intra_op.allow_spinning")
        assert spinning == ("1" if spin else "0")
        assert engine.lone_session is None  # one thread: no workers to keep spinning


def test_serve_runs_lone_rows_on_a_spinning_session_unless_told_not_to(serve_home):
    from sampan.serving.host import ModelHost, ServeSettings
    from sampan.serving.metrics import Metrics
    from sampan.store import Store

    home, onnx_ref, _ = serve_home

    def engine(**settings):
        settings = ServeSettings(backend="onnxruntime", threads=2, **settings)
        return ModelHost(settings, Metrics(), Store(home))._build(onnx_ref).engine

    assert engine().lone_session is not None  # the default
    assert engine(lone_spin=False).lone_session is None
    assert engine(spin=True).lone_session is None


def test_models_warm_up_before_they_are_ready_and_one_that_cannot_run_fails_its_load(
    serve_home, monkeypatch
):
    """Each engine runs the task's made-up input as one row and as a full batch at load (so
    callers do not wait for first runs); an engine that fails, or that answers the wrong number
    of rows, fails the load with the package named."""
    from sampan.errors import SampanError
    from sampan.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from sampan.serving.host import ModelHost, ServeSettings
    from sampan.serving.metrics import Metrics
    from sampan.store import Store

    home, onnx_ref, _ = serve_home
    seen: list[tuple[int, tuple[int, ...]]] = []
    original = OnnxRuntimeBackend.predict

    def recording(self, batch):
        seen.append((id(self), batch.shape))
        return original(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, "predict", recording)
    settings = ServeSettings(backend="onnxruntime", instances=2, max_batch_size=6)
    served = ModelHost(settings, Metrics(), Store(home))._build(onnx_ref)
    shape = tuple(served.engine.input_shape)
    assert seen == [(id(engine), (rows, *shape)) for engine in served.engines for rows in (1, 6)]
    for broken, message in (
        (lambda self, batch: 1 / 0, rf"{onnx_ref} failed its warm-up run of 1 row\(s\) on "),
        (lambda self, batch: original(self, batch)[:1], "answered 1 rows for 6"),
    ):
        monkeypatch.setattr(OnnxRuntimeBackend, "predict", broken)
        host = ModelHost(settings, Metrics(), Store(home))
        with pytest.raises(SampanError, match=message):
            host._build(onnx_ref)
        assert host._statistics == {}  # a version never served lists no statistics


def test_the_gil_switch_interval_is_short_while_serving_and_restored_after(serve_home):
    import sys

    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    home, onnx_ref, _ = serve_home
    before = sys.getswitchinterval()
    settings = ServeSettings(backend="onnxruntime", switch_interval_ms=0.25)
    with RunningServer(build_app([onnx_ref], settings, Store(home)), free_port()):
        assert sys.getswitchinterval() == pytest.approx(0.00025)
    assert sys.getswitchinterval() == before


def test_a_client_that_hangs_up_mid_body_is_a_499_not_a_traceback(server, caplog):
    import socket
    import time

    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(
            b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"instances": ['
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{server.url}/metrics").text
        if 'code="499"' in metrics:
            break
        time.sleep(0.1)
    assert 'sampan_requests_total{code="499",model="-",protocol="v1"} 1.0' in metrics
    assert "Traceback" not in caplog.text and "Exception in ASGI" not in caplog.text


def test_inflate_bounds_what_it_writes():
    import gzip
    import zlib

    from sampan.serving.middleware import MAX_GZIP_MEMBERS, TooLarge, inflate

    gz = 16 + zlib.MAX_WBITS
    assert inflate(gzip.compress(b"a" * 100), gz, 100) == b"a" * 100  # exactly the limit
    with pytest.raises(TooLarge):
        inflate(gzip.compress(b"a" * 101), gz, 100)
    with pytest.raises(TooLarge):  # the limit holds across members
        inflate(gzip.compress(b"a" * 60) * 2, gz, 100)
    assert inflate(gzip.compress(b"a" * 60) * 2, gz, 120) == b"a" * 120
    assert inflate(gzip.compress(b"abc") + b"\0" * 8, gz, 100) == b"abc"  # zero padding
    assert inflate(b"", gz, 100) == b""
    assert inflate(gzip.compress(b"") * MAX_GZIP_MEMBERS, gz, 100) == b""
    with pytest.raises(zlib.error, match="more than 64 gzip members"):  # bounded work
        inflate(gzip.compress(b"") * (MAX_GZIP_MEMBERS + 1), gz, 100)
    with pytest.raises(zlib.error):
        inflate(zlib.compress(b"abc")[:-3], zlib.MAX_WBITS, 100)  # truncated


def test_a_declared_length_does_not_hide_a_chunked_body_from_the_limit():
    from sampan.serving.middleware import BodyLimit

    sent = []

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive():
        return {"type": "http.request", "body": b"x" * 600, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "headers": [(b"content-length", b"10"), (b"transfer-encoding", b"chunked")],
    }
    import asyncio

    asyncio.run(BodyLimit(app, max_bytes=1000)(scope, receive, send))
    assert sent[0]["status"] == 413


def test_models_take_settings_of_their_own(serve_home, digits_holdout, tmp_path):
    """Per-model settings over the server's: the model's own batch limit, wait, queue,
    timeout and instances, described at /v1/models/{name}."""
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings, load_model_settings
    from sampan.store import Store

    home, onnx_ref, _ = serve_home
    file = tmp_path / "models.yaml"
    file.write_text(
        "digits: {max_batch_size: 4, max_wait_ms: 7, max_queue: 9, timeout_s: 12, instances: 2}\n"
        "other: {max_batch_size: 64}\n"
    )
    settings = ServeSettings(backend="onnxruntime", models=load_model_settings(file))
    with RunningServer(build_app([onnx_ref], settings, Store(home)), free_port()) as running:
        described = httpx.get(f"{running.url}/v1/models/digits").json()
        served = running.host.get("digits")
        image = b64(sorted(digits_holdout.glob("*/*.png"))[0])
        url = f"{running.url}/v1/models/digits:predict"
        four = httpx.post(url, json={"instances": [image] * 4})
        five = httpx.post(url, json={"instances": [image] * 5})
    assert {k: described[k] for k in ("max_batch_size", "max_wait_ms", "max_queue")} == {
        "max_batch_size": 4,
        "max_wait_ms": 7.0,
        "max_queue": 9,
    }
    assert described["timeout_s"] == 12.0 and described["instances"] == 2
    assert len(served.engines) == 2 and served.batcher.max_queue == 9
    assert served.settings.backend == "onnxruntime"  # the server's, where the model sets none
    assert four.status_code == 200 and len(four.json()["predictions"]) == 4
    assert five.status_code == 400 and "limit of 4 per request" in five.json()["error"]


def test_bad_model_settings_are_one_error_naming_each_problem(tmp_path, serve_home, monkeypatch):
    from sampan.cli.main import main
    from sampan.errors import ConfigError
    from sampan.serving.host import ModelSettings, ServeSettings, model_settings

    with pytest.raises(ConfigError) as caught:
        model_settings(
            {
                "digits": {"max_batch_size": 0, "timeout_s": 0},
                "d2": {"max_wiat_ms": 5},
                "x/..": {},
                "t": {"threads": "2"},
                "f": {"max_wait_ms": float("inf"), "timeout_s": float("nan")},
            }
        )
    message = str(caught.value)
    assert "digits: max_batch_size must be >= 1 (got 0); timeout_s must be > 0" in message
    assert "unknown option 'max_wiat_ms'" in message and "max_wait_ms" in message  # suggested
    assert "'x/..' is not a model name" in message
    assert "threads must be an integer" in message
    assert "f: timeout_s must be > 0 and finite (got nan); max_wait_ms must be finite" in message
    with pytest.raises(ConfigError, match="must map model names to their settings"):
        model_settings(["digits"])
    merged = ServeSettings(max_wait_ms=2, models={"a": ModelSettings(max_wait_ms=9)})
    assert merged.for_model("a").max_wait_ms == 9 and merged.for_model("b").max_wait_ms == 2
    home, onnx_ref, _ = serve_home
    monkeypatch.setenv("SAMPAN_HOME", str(home))
    typo = tmp_path / "typo.yaml"
    typo.write_text("digts: {max_batch_size: 8}\n")
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--models", onnx_ref, "--model-settings", str(typo)])
    assert stop.value.code == ConfigError.exit_code
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--models", onnx_ref, "--max-wait-ms", "inf"])
    assert stop.value.code == ConfigError.exit_code
    broken = tmp_path / "broken.yaml"
    broken.write_text("digits: [unclosed\n")
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--models", onnx_ref, "--model-settings", str(broken)])
    assert stop.value.code == ConfigError.exit_code


def test_access_log_is_one_json_line_per_request_with_its_request_id(server, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="sampan.access")
    url = f"{server.url}/v1/models/digits:predict"
    given = httpx.post(url, json={"instances": []}, headers={"X-Request-ID": "line7-cam2-0042"})
    made = httpx.get(f"{server.url}/v1/models/digits")
    refused = httpx.get(f"{server.url}/v1/models/digits", headers={"X-Request-ID": "a b" * 100})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sampan.access"]
    # (the fixture's readiness calls may be logged after the test began: not these)
    lines = [line for line in lines if line["path"].startswith("/v1/")]
    assert given.headers["x-request-id"] == "line7-cam2-0042"
    assert len(made.headers["x-request-id"]) == 32 and made.headers["x-request-id"].isalnum()
    assert refused.headers["x-request-id"] != "a b" * 100  # not kept: spaces, too long
    assert [(line["method"], line["status"], line["request_id"]) for line in lines] == [
        ("POST", 400, "line7-cam2-0042"),
        ("GET", 200, made.headers["x-request-id"]),
        ("GET", 200, refused.headers["x-request-id"]),
    ]
    assert lines[0]["path"] == "/v1/models/digits:predict" and lines[0]["client"] == "127.0.0.1"
    assert all(isinstance(line["ms"], float) and line["ts"] > 0 for line in lines)


@pytest.mark.parametrize(
    ("status", "headers", "chunks", "compressed"),
    [
        (200, [(b"content-type", b"application/json")], [b"x" * 5000], True),
        (200, [(b"content-type", b"application/json")], [b"x" * 100], False),  # small
        (206, [(b"content-range", b"bytes 0-4999/9000")], [b"x" * 5000], False),  # a range
        (200, [(b"content-encoding", b"br")], [b"x" * 5000], False),  # already encoded
        (200, [(b"content-type", b"image/png")], [b"x" * 5000], False),
        (200, [], [b"x" * 5000, b"y" * 5000], False),  # streamed: its length is unknown
    ],
)
def test_only_whole_uncompressed_answers_are_compressed(status, headers, chunks, compressed):
    import asyncio
    import gzip

    from sampan.serving.middleware import CompressAnswers

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, chunk in enumerate(chunks):
            await send(
                {"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1}
            )

    sent: list[dict] = []

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "headers": [(b"accept-encoding", b"gzip")]}
    asyncio.run(CompressAnswers(app)(scope, None, send))
    start, bodies = sent[0], [m.get("body", b"") for m in sent[1:]]
    assert start["status"] == status
    encoding = dict(start["headers"]).get(b"content-encoding")
    if compressed:
        assert encoding == b"gzip" and gzip.decompress(b"".join(bodies)) == b"".join(chunks)
        assert dict(start["headers"])[b"content-length"] == str(len(bodies[0])).encode()
    else:
        assert encoding == dict(headers).get(b"content-encoding") and bodies == chunks
