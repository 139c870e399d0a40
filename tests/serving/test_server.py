"""End to end over real HTTP on loopback."""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serving.conftest import RunningServer, free_port


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
    ],
)
def test_bad_requests_get_clear_4xx(server, path, kwargs, status, message):
    r = httpx.post(server.url + path, **kwargs)
    assert r.status_code == status and message in r.json()["error"], r.text


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


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests(serve_home, digits_holdout, tmp_path):
    """Requests in flight when SIGTERM arrives are answered; later ones get 503 or are refused;
    none goes unanswered on an accepted connection."""
    import os
    import signal
    import subprocess
    import sys
    import time

    home, onnx_ref, _ = serve_home
    port = free_port()
    env = {**os.environ, "SAMPAN_HOME": str(home)}
    log_path = tmp_path / "server.log"
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sampan.cli.main",
            "serve",
            "--models",
            onnx_ref,
            "--port",
            str(port),
            "--backend",
            "onnxruntime",
            "--log-level",
            "info",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    images = [b64(p) for p in sorted(digits_holdout.glob("*/*.png"))[:32]]
    body = {"instances": images}
    stop = threading.Event()
    term_sent = threading.Event()
    outcomes: list[tuple[str, bool]] = []  # (status or error kind, after SIGTERM?)

    def client() -> None:
        while not stop.is_set():
            try:
                r = httpx.post(f"{url}/v1/models/digits:predict", json=body, timeout=30)
                outcomes.append((str(r.status_code), term_sent.is_set()))
                if r.status_code == 503:  # a well-behaved client honours Retry-After
                    time.sleep(float(r.headers["retry-after"]))
            except httpx.ConnectError:  # refused: the server no longer accepts
                outcomes.append(("refused", True))
                return
            except httpx.HTTPError as exc:
                outcomes.append((type(exc).__name__, term_sent.is_set()))
                return

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    term_sent.set()
    # uvicorn re-raises the signal after a graceful shutdown, so the status says SIGTERM.
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    log_file.close()
    log = log_path.read_text()
    assert "Application shutdown complete" in log, log[-2000:]
    stop.set()
    for t in threads:
        t.join(30)
    answered = [o for o in outcomes if o[0].isdigit()]
    # Before SIGTERM: 200. After: 200 (in flight, drained) or 503 (draining, told to retry).
    assert all(code == "200" for code, after in answered if not after), outcomes
    assert all(code in ("200", "503") for code, after in answered if after), outcomes
    # Clients kept sending until told to stop, so answers came after SIGTERM: the server
    # answered during its drain instead of dropping connections.
    assert any(after for _, after in answered), "nothing was answered after SIGTERM"
    assert {kind for kind, _ in outcomes if not kind.isdigit()} <= {"refused"}, outcomes
