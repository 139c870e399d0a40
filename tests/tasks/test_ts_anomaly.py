"""ts-anomaly: documented injected anomalies, training on normal windows, the calibrated
threshold, metrics next to the rolling z-score, and a served detector flagging a replayed
stream over HTTP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sampan
from sampan.data.anomalies import LENGTHS, inject_anomalies
from sampan.data.timeseries import segment_bounds
from sampan.store import Store
from sampan.tasks.ts_anomaly import detection_metrics, events
from tests.tasks.test_ts_forecast import sensor_frame

QUICK = {"epochs": 8, "device": "cpu", "quiet": True, "window": 48}


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> tuple[Path, object]:
    frame = sensor_frame(2400, seed=3).drop(columns=["pressure"]).interpolate()
    injected = inject_anomalies(frame, ["temp"], seed=1, per_kind=2)
    path = tmp_path_factory.mktemp("stream") / "line3.csv"
    injected.to_csv(path, index=False)
    return path, injected


@pytest.fixture(scope="module")
def detector(tmp_path_factory, stream):
    home = tmp_path_factory.mktemp("ad-home")
    result = sampan.train(
        data=str(stream[0]), name="line3", task="ts-anomaly", store=Store(home), **QUICK
    )
    return home, result


def test_injection_is_documented_and_after_training(stream):
    _, injected = stream
    labels = injected["label"].to_numpy()
    assert labels[: int(len(labels) * 0.7)].sum() == 0  # training stays normal
    runs = events(labels)
    assert len(runs) == 8 and {e - b for b, e in runs} <= set(LENGTHS.values())


def test_detection_metrics_on_known_values():
    labels = np.array([0, 0, 1, 1, 1, 0, 0, 1, 0, 0])
    scores = np.array([0.1, 0.2, 0.9, 2.0, 0.3, 0.1, 1.5, 0.2, 0.1, 0.4])
    m = detection_metrics(scores, scores > 1.0, labels)
    assert m["precision"] == 0.5 and m["recall"] == 0.25
    assert m["event_recall"] == 0.5  # the first event is found, the second is not
    assert 0 < m["roc_auc"] < 1 and 0 < m["pr_auc"] <= 1


def test_training_calibrates_a_threshold_and_reports_beside_zscore(detector, stream):
    home, result = detector
    m = result.package.manifest
    threshold = m.preprocessing["threshold"]
    assert m.task == "ts-anomaly" and m.architecture["name"] == "mlp_autoencoder"
    assert threshold > 0 and m.architecture["config"]["threshold"] == threshold
    assert m.preprocessing["label_column"] == "label" and m.preprocessing["columns"] == ["temp"]
    report = sampan.evaluate(result.package.ref, stream[0], store=Store(home), backend="torch")
    for key in ("f1", "roc_auc", "pr_auc", "event_recall"):
        assert key in report.metrics and f"zscore_{key}" in report.metrics
    assert report.metrics["roc_auc"] > 0.5  # better than chance on the test segment


def test_conv_autoencoder_exports_and_flags_the_spikes(tmp_path, stream):
    """The convolutional autoencoder through the same task: it trains on the stream's normal
    windows, exports to ONNX with a dynamic batch axis, scores alike on onnxruntime and torch,
    flags every injected spike (all after the training segment) with few false alarms, and
    ranks the test segment's readings better than chance."""
    from sampan.export import export

    path, injected = stream
    store = Store(tmp_path)
    options = {**QUICK, "arch": "conv_autoencoder", "window": 44}  # padded to 48 inside
    result = sampan.train(
        data=str(path), name="line3-conv", task="ts-anomaly", store=store, **options
    )
    assert result.package.manifest.architecture["name"] == "conv_autoencoder"
    exported = export(result.package.ref, "onnx", store=store)
    assert exported.manifest.exports["onnx"]["dynamic_axes"]["input"] == ["batch"]
    values = injected["temp"].to_numpy()
    labels = injected["label"].to_numpy()
    ends = np.arange(segment_bounds(len(values))[0], len(values))  # validation and test
    windows = np.stack([values[t - 43 : t + 1] for t in ends])[..., None]
    scores = sampan.load(exported.ref, backend="onnxruntime", store=store).outputs(windows)
    expected = sampan.load(result.package.ref, backend="torch", store=store).outputs(windows)
    assert np.abs(scores - expected).max() < 1e-3 * max(1.0, np.abs(expected).max())
    newest = dict(zip(ends.tolist(), scores[:, -1]))
    spikes = [b for b, e in events(labels) if e - b == 1]
    quiet = [t for t in newest if not labels[max(0, t - 56) : t + 1].any()]
    assert spikes and all(newest[t] > 1.0 for t in spikes), [newest[t] for t in spikes]
    assert np.mean([newest[t] > 1.0 for t in quiet]) < 0.05
    report = sampan.evaluate(result.package.ref, path, store=store, backend="torch")
    assert report.metrics["roc_auc"] > 0.5


def test_the_served_detector_flags_a_replayed_stream(detector, stream):
    """Windows replayed over HTTP one reading at a time, as a line would send them: every
    injected spike is flagged, and few normal readings are."""
    import httpx

    from sampan.export import export
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from tests.serving.conftest import RunningServer, free_port

    home, result = detector
    exported = export(result.package.ref, "onnx", store=Store(home))
    _, injected = stream
    values = injected["temp"].to_numpy()
    labels = injected["label"].to_numpy()
    spikes = [b for b, e in events(labels) if e - b == 1]
    normal = [t for t in range(1700, 2400) if not labels[max(0, t - 60) : t + 1].any()]
    ends = spikes + normal[::7]
    app = build_app([exported.ref], ServeSettings(backend="onnxruntime"), Store(home))
    with RunningServer(app, free_port()) as running:
        url = f"{running.url}/v1/models/line3:predict"
        answers = {}
        for end in ends:
            window = values[end - 47 : end + 1].tolist()
            reply = httpx.post(url, json={"instances": [window]}, timeout=30)
            assert reply.status_code == 200, reply.text
            answers[end] = reply.json()["predictions"][0]
    assert all(answers[t]["anomaly"] for t in spikes), [answers[t] for t in spikes]
    false_alarms = np.mean([answers[t]["anomaly"] for t in normal[::7]])
    assert false_alarms < 0.05


def test_the_stream_endpoint_keeps_each_series_window(detector, stream):
    """A gateway sends each series' new readings as they come (a few at a time); the server
    keeps the recent window per series, answers every reading once a window is full, and
    flags the injected spikes. Memory stays bounded: window - 1 readings per series, and at
    most max_series series."""
    import httpx

    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.serving.stream import Buffers
    from tests.serving.conftest import RunningServer, free_port

    home, result = detector
    _, injected = stream
    values = injected["temp"].to_numpy()
    labels = injected["label"].to_numpy()
    spikes = {b for b, e in events(labels) if e - b == 1}
    start = min(spikes) - 120
    app = build_app([result.package.ref], ServeSettings(backend="torch"), Store(home))
    flagged: dict[int, bool] = {}
    with RunningServer(app, free_port()) as running:
        url = f"{running.url}/v1/models/line3:stream"
        first = httpx.post(url, json={"series": "line3-temp", "readings": values[:10].tolist()})
        assert first.json() == {
            "model": "line3",
            "series": "line3-temp",
            "results": [],
            "needs": 38,
            "buffered": 10,
        }
        position = start
        httpx.post(url, json={"series": "b", "readings": values[start - 47 : start].tolist()})
        while position < max(spikes) + 5:  # replay in chunks of 1 to 5 readings
            chunk = 1 + position % 5
            reply = httpx.post(
                url, json={"series": "b", "readings": values[position : position + chunk].tolist()}
            )
            assert reply.status_code == 200, reply.text
            answers = reply.json()["results"]
            assert [a["reading"] for a in answers] == list(range(chunk))
            for answer in answers:
                flagged[position + answer["reading"]] = answer["anomaly"]
            position += chunk
        wrong = httpx.post(url, json={"series": "b", "readings": [[1.0, 2.0]]})
        other = httpx.post(f"{running.url}/v1/models/nosuch:stream", json={"series": "b"})
    assert all(flagged[t] for t in spikes)
    quiet = [t for t in flagged if not labels[max(0, t - 60) : t + 1].any()]
    assert np.mean([flagged[t] for t in quiet]) < 0.05
    assert wrong.status_code == 400 and "1 value(s)" in wrong.json()["error"]
    assert other.status_code == 404
    buffers = Buffers(max_series=2)
    for name in ("a", "b", "c"):
        kept = buffers.extend(("m", name), np.zeros((100, 1), np.float32), 47)
        assert len(kept) == 100
    assert len(buffers) == 2


def test_an_event_ends_where_its_series_does():
    """Two series' test windows follow each other in the targets: an anomaly at the end of
    the first and one at the start of the second are two events, each to be found."""
    labels = np.array([0, 0, 1, 1, 1, 1, 0, 0], dtype=np.float32)
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=np.float32)
    assert events(labels) == [(2, 6)]
    assert events(labels, groups) == [(2, 4), (4, 6)]
    flags = np.array([0, 0, 1, 0, 0, 0, 0, 0], dtype=bool)  # only the first series' is flagged
    scores = flags.astype(np.float64)
    assert detection_metrics(scores, flags, labels)["event_recall"] == 1.0
    assert detection_metrics(scores, flags, labels, groups)["event_recall"] == 0.5
