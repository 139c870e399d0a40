"""`sampan loadtest` against a real server on loopback."""

from __future__ import annotations

import json
import re
import time

import httpx
import numpy as np
import pytest

from sampan.errors import ConfigError, DataError, NotFoundError, SampanError
from sampan.serving.loadtest import _Run, latency_summary, load_test
from tests.serving.conftest import RunningServer, free_port


def ok_count(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(
        r'sampan_requests_total\{code="200",model="digits",protocol="v1"\} (\S+)', text
    )
    return float(found[1]) if found else 0.0


def test_latency_summary_interpolates_between_ranks():
    summary = latency_summary([ms / 1000 for ms in range(1, 101)])  # 1..100 ms
    assert summary == {
        "min": 1.0,
        "p50": 50.5,
        "p90": 90.1,
        "p99": 99.01,
        "max": 100.0,
        "mean": 50.5,
    }
    assert set(latency_summary([]).values()) == {None}  # JSON null, not NaN


def test_an_open_loop_run_schedules_requests_by_rate_not_by_answers():
    """At 4 requests/s request i is due at i/4 s, whatever the clock says when it is taken
    (a caller freed late sends a late request, measured from when it was due); the run stops
    at the first request due at or after its deadline. A closed loop sends when it is asked."""
    now = [100.0]
    run = _Run(requests=10, started=100.0, deadline=101.0, rate=4, clock=lambda: now[0])
    assert [run.take() for _ in range(2)] == [100.0, 100.25]
    now[0] = 100.6  # callers busy until now: the next two are already due, and late
    assert [run.take(), run.take(), run.take()] == [100.5, 100.75, None]
    assert (run.sent, run.stopped_by) == (4, "duration")
    closed = _Run(requests=2, started=100.0, deadline=200.0, clock=lambda: now[0])
    assert [closed.take(), closed.take(), closed.take()] == [100.6, 100.6, None]
    assert closed.stopped_by == "requests"


def test_loadtest_sends_and_counts_every_request(server):
    before = ok_count(server.url)
    report = load_test(server.url, "digits", concurrency=4, requests=40)
    assert (report.sent, report.ok, report.errors, report.stopped_by) == (40, 40, {}, "requests")
    lat = report.latency_ms
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert report.requests_per_s == report.ok_per_s > 0
    # the server saw the run's 40 requests and the one that checked the request first
    assert ok_count(server.url) - before == 41


def test_loadtest_sends_a_given_file_and_speaks_v2(server, digits_holdout):
    image = sorted(digits_holdout.glob("*/*.png"))[0]
    report = load_test(server.url, "digits", concurrency=2, requests=10, input_file=image)
    assert (report.sent, report.ok) == (10, 10)
    v2 = load_test(server.url, "digits", concurrency=2, requests=10, protocol="v2")
    assert (v2.sent, v2.ok, v2.protocol) == (10, 10, "v2")
    paced = load_test(server.url, "digits", concurrency=4, requests=20, rate=200)
    assert (paced.sent, paced.ok, paced.rate, paced.stopped_by) == (20, 20, 200, "requests")
    assert paced.latency_ms["min"] > 0  # nothing sent before it was due


def test_loadtest_counts_errors_by_status(serve_home):
    """An overloaded server (queue of 1, a slow engine) refuses most of 8 callers with 503:
    the run goes on and counts them, with the server's message; answers later than the
    caller's timeout count as timeouts."""
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    home, onnx_ref, _ = serve_home
    settings = ServeSettings(backend="onnxruntime", max_batch_size=1, max_queue=1)
    with RunningServer(build_app([onnx_ref], settings, Store(home)), free_port()) as running:
        engine = running.host.get("digits").engines[0]
        original = engine._run
        engine._run = lambda batch: (time.sleep(0.02), original(batch))[1]
        report = load_test(running.url, "digits", concurrency=8, requests=120)
        engine._run = lambda batch: (time.sleep(1.0), original(batch))[1]
        late = load_test(running.url, "digits", concurrency=1, requests=2, timeout=0.1)
    assert report.sent == 120 and report.ok > 0 and report.errors["503"] > 0
    assert report.ok + sum(report.errors.values()) == report.sent
    assert set(report.errors) == {"503"} and "queue is full" in report.error_samples["503"]
    # answers slower than the caller's timeout are counted as timeouts, not waited for
    assert (late.sent, late.ok, late.errors) == (2, 0, {"timeout": 2})


def test_loadtest_stops_at_its_duration(server):
    report = load_test(server.url, "digits", concurrency=2, requests=1_000_000, duration=0.5)
    assert report.stopped_by == "duration" and 0 < report.sent < 1_000_000
    assert report.ok == report.sent  # what was sent before the time was up was answered


def test_loadtest_refuses_what_it_cannot_run(server, tmp_path):
    with pytest.raises(NotFoundError, match="No model 'nope' is loaded"):
        load_test(server.url, "nope", requests=1)
    with pytest.raises(SampanError, match=r"Cannot reach .* Is the server running"):
        load_test(f"http://127.0.0.1:{free_port()}", "digits", requests=1)
    with pytest.raises(ConfigError, match="not a server address"):
        load_test("127.0.0.1:8000", "digits")
    every_bound = r"--concurrency .*; --requests .*; --duration .*; --rate"
    with pytest.raises(ConfigError, match=every_bound):
        load_test(server.url, "digits", concurrency=0, requests=0, duration=0, rate=0)
    with pytest.raises(ConfigError, match="not a model name"):
        load_test(server.url, "../etc", requests=1)
    refused = tmp_path / "refused.json"
    refused.write_text(json.dumps({"instances": ["!!"]}))
    with pytest.raises(SampanError, match="answered 400: An image instance is not valid base64"):
        load_test(server.url, "digits", requests=1, body_file=refused)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="is not a JSON request body"):
        load_test(server.url, "digits", requests=1, body_file=broken)


def test_loadtest_cli_prints_a_table_and_writes_json(server, tmp_path, capsys):
    from sampan.cli.main import main

    out = tmp_path / "run.json"
    main(["loadtest", server.url, "--model", "digits", "-c", "2", "-n", "12", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "req/s" in printed and "p99 ms" in printed and f"Written: {out}" in printed
    written = json.loads(out.read_text())
    assert (written["sent"], written["ok"], written["errors"]) == (12, 12, {})
    assert set(written["latency_ms"]) == {"min", "p50", "p90", "p99", "max", "mean"}
    with pytest.raises(SystemExit) as exited:
        main(["loadtest", server.url, "--model", "digits", "-c", "0"])
    assert exited.value.code == ConfigError.exit_code
    assert "--concurrency must be 1 to 1024" in capsys.readouterr().err


def test_tasks_make_up_inputs_their_models_take():
    from sampan.tasks.base import get_task

    image = get_task("image-classification")
    raw = image.from_json(image.example_json([3, 24, 32]))
    contract = {"input_size": [24, 32], "channels": 3, "resample": "bilinear"}
    assert image.decode(raw, contract).shape == (24, 32, 3)
    window = get_task("ts-forecast").example_json([16, 2])
    assert np.asarray(window).shape == (16, 2)
    assert np.asarray(get_task("ts-anomaly").example_json([8, 1])).shape == (8,)
    assert isinstance(get_task("text-classification").example_json([-1]), str)


def test_loadtest_does_not_follow_a_redirect_with_its_key():
    """A redirect would take the Authorization header to another address: it is refused."""
    import http.server
    import threading

    seen: list[str | None] = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/elsewhere")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", free_port()), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(SampanError, match="answered 302"):
            load_test(url, "digits", requests=1, api_key="smp_secret")
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["Bearer smp_secret"]  # asked once, not again at /elsewhere
