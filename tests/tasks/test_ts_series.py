"""Series ids in time-series files: several machines in one file, each on its own grid, cut
into its own segments and normalised by its own statistics, and requests that name their
series (an unknown one is a clear 400)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sampan
from sampan.data import timeseries as ts
from sampan.errors import DataError
from sampan.store import Store
from sampan.tasks import get_task
from sampan.tasks.ts_forecast import forecast_metrics

QUICK = {"epochs": 8, "batch_size": 64, "device": "cpu", "quiet": True, "window": 48}
# (id, level, daily swing, phase in hours): readings near 10, near 10,000 and near 0.5
MACHINES = (("pump-1", 10.0, 2.0, 0), ("press-2", 10_000.0, 800.0, 5), ("fan-3", 0.5, 0.1, 11))
NAMES = [name for name, *_ in MACHINES]


def machines_frame(steps: int = 1000, seed: int = 0):
    """Three hourly series of different lengths, start times and scales, rows interleaved by
    time as a plant historian exports them."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    parts = []
    for i, (name, level, swing, phase) in enumerate(MACHINES):
        n = steps + 100 * i
        t = np.arange(n)
        day = 2 * np.pi * (t + phase) / 24
        shape = np.sin(day) + 0.4 * np.sin(2 * day) * np.sin(t / 200)
        wander = rng.normal(0, 0.03, n).cumsum()  # a level that drifts, as sensors' do
        values = level + swing * (shape + wander + rng.normal(0, 0.05, n))
        stamps = pd.date_range("2025-01-01", periods=n, freq="h") + pd.Timedelta(hours=3 * i)
        parts.append(pd.DataFrame({"timestamp": stamps, "machine": name, "reading": values}))
    frame = pd.concat(parts).sort_values(["timestamp", "machine"], kind="stable")
    return frame.reset_index(drop=True)


@pytest.fixture(scope="module")
def machines_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("machines") / "plant.csv"
    machines_frame().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory, machines_csv):
    home = tmp_path_factory.mktemp("series-home")
    result = sampan.train(
        data=str(machines_csv),
        name="plant",
        task="ts-forecast",
        horizon=12,
        store=Store(home),
        **QUICK,
    )
    return home, result


def window_of(name: str, end: int | None = None) -> np.ndarray:
    """The 48 readings of one machine up to `end` (default: its last), as (48, 1)."""
    frame = machines_frame()
    values = frame.loc[frame["machine"] == name, "reading"].to_numpy()[:, None]
    end = len(values) if end is None else end
    return values[end - 48 : end]


def test_each_series_has_its_grid_windows_segments_and_statistics(machines_csv):
    task = get_task("ts-forecast")
    listing = task.scan(machines_csv)
    contract = task.preprocessing(listing, {"window": 48, "horizon": 12})
    assert contract["series_column"] == "machine"  # found by name: text ids
    assert contract["columns"] == ["reading"] and contract["step_seconds"] == 3600
    samples = task.load(listing, contract)
    frame = machines_frame()
    for name in NAMES:
        rows = frame[frame["machine"] == name]
        own = ts.regular_series(rows, "timestamp", ["reading"], 3, name).values
        windows = {w.tobytes() for w in ts.windows(own, 48, 12, 1)[0]}
        mine = [i for i, s in enumerate(samples.inputs) if s.series == name]
        # A window mixing two machines' readings would be none of its machine's own windows.
        assert all(samples.inputs[i].values.tobytes() in windows for i in mine)
        # Every window of the series but those straddling a segment boundary (11 at each).
        assert len(mine) == len(windows) - 2 * 11
        assert set(samples.segments[mine]) == {0, 1, 2}  # each series in every segment
        scales = np.unique(samples.targets[mine][..., 3])
        assert len(scales) == 1  # one MASE scale per series, its own
    fitted = task.fit(contract, samples.take(np.flatnonzero(samples.segments == 0)))
    assert list(fitted["series"]) == NAMES and fitted["mean"] is None
    for name, level, _, _ in MACHINES:
        stats = fitted["series"][name]
        assert stats["mean"][0] == pytest.approx(level, rel=0.1)
        assert all(float(f"{v:.7g}") == v for v in stats["mean"] + stats["std"])
    # Fitted on the training segment only: the training windows' own mean.
    pump = [
        s.values
        for s, g in zip(samples.inputs, samples.segments)
        if s.series == "pump-1" and g == 0
    ]
    assert fitted["series"]["pump-1"]["mean"][0] == pytest.approx(float(np.mean(pump)), rel=1e-6)
    batch = task.collate(samples.take(np.arange(3)), fitted)
    assert batch.shape == (3, 50, 1)  # each window, then its series' mean and std
    assert batch[0, 48, 0] == np.float32(fitted["series"][samples.inputs[0].series]["mean"][0])


def test_series_columns_found_named_or_refused():
    import pandas as pd

    frame = machines_frame(200)
    assert ts.series_column(frame, None) == "machine"
    assert ts.series_column(frame.drop(columns=["machine"]), None) is None
    numbered = frame.assign(unit=frame["machine"].str[-1].astype(int)).drop(columns=["machine"])
    assert ts.series_column(numbered, None) is None  # numbers could be readings: not guessed
    assert ts.series_column(numbered, "unit") == "unit"
    keys = [key for key, _, _ in ts.split_series(numbered, "unit", "x")]
    assert keys == ["1", "2", "3"]
    with pytest.raises(DataError, match="could each be the series id"):
        ts.series_column(frame.assign(sensor=frame["machine"] + "-t"), None)
    repeated = frame.copy()
    pump = repeated.index[repeated["machine"] == "pump-1"]
    repeated.loc[pump[5], "timestamp"] = repeated.loc[pump[4], "timestamp"]
    with pytest.raises(DataError, match=rf"series 'pump-1' row {pump[5] + 2}: .* repeats"):
        ts.sampling_step(repeated, "timestamp", "machine", "x")
    slower = frame.copy()
    fan = slower["machine"] == "fan-3"
    slower.loc[fan, "timestamp"] = pd.date_range("2025-01-01", periods=int(fan.sum()), freq="2h")
    with pytest.raises(DataError, match="'fan-3' every 7200 s"):
        ts.sampling_step(slower, "timestamp", "machine", "x")
    blank = frame.copy()
    blank.loc[7, "machine"] = None
    with pytest.raises(DataError, match="row 9: no series id"):
        ts.split_series(blank, "machine", "x")


def test_trained_per_series_it_beats_seasonal_naive_on_every_series(forecaster, machines_csv):
    home, result = forecaster
    manifest = result.package.manifest
    contract = manifest.preprocessing
    assert sorted(contract["series"]) == sorted(NAMES)  # the manifest's JSON sorts keys
    assert contract["series"]["press-2"]["std"][0] > 100 * contract["series"]["pump-1"]["std"][0]
    assert manifest.architecture["config"]["series_stats"] is True
    model = sampan.load(result.package.ref, backend="torch", store=Store(home))
    samples = model.task.load(model.task.scan(machines_csv), model.contract)
    for name in NAMES:
        test = np.array(
            [
                i
                for i, (s, seg) in enumerate(zip(samples.inputs, samples.segments))
                if s.series == name and seg == 2
            ]
        )
        metrics = forecast_metrics(model.outputs_decoded(samples.take(test)), samples.targets[test])
        assert metrics["mase"] < metrics["seasonal_naive_mase"], (name, metrics)
    report = sampan.evaluate(result.package.ref, machines_csv, store=Store(home), backend="torch")
    assert report.metrics["skill"] > 0 and report.num_samples > 3 * 100


def test_requests_name_their_series(forecaster, tmp_path):
    home, result = forecaster
    model = sampan.load(result.package.ref, backend="torch", store=Store(home))
    pump, press = window_of("pump-1"), window_of("press-2")
    answers = model.predict(
        [{"series": "pump-1", "window": pump}, {"series": "press-2", "window": press}]
    )
    for answer, window in zip(answers, (pump, press)):  # each in its own series' units
        assert abs(np.mean(answer["forecast"]) / np.mean(window) - 1) < 0.2
    known = r"Series 'pump-9' was not seen in training; this model knows 3: fan-3, press-2, pump-1"
    with pytest.raises(DataError, match=known):
        model.outputs({"series": "pump-9", "window": pump})
    with pytest.raises(DataError, match=r"trained per series .*'machine'"):
        model.outputs(pump)
    unknown = tmp_path / "unknown.csv"
    frame = machines_frame(600)
    frame.loc[frame["machine"] == "fan-3", "machine"] = "fan-4"
    frame.to_csv(unknown, index=False)
    with pytest.raises(DataError, match=r"unknown\.csv: Series 'fan-4' was not seen"):
        sampan.evaluate(result.package.ref, unknown, store=Store(home))
    without = tmp_path / "without.csv"
    frame.drop(columns=["machine"]).to_csv(without, index=False)
    with pytest.raises(DataError, match="lacks the series column 'machine'"):
        sampan.evaluate(result.package.ref, without, store=Store(home))


def test_export_and_serving_per_series(forecaster):
    import httpx

    from sampan.export import export
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from tests.serving.conftest import RunningServer, free_port

    home, result = forecaster
    exported = export(result.package.ref, "onnx", store=Store(home))
    windows = [{"series": name, "window": window_of(name)} for name in NAMES]
    expected = sampan.load(result.package.ref, backend="torch", store=Store(home)).outputs(windows)
    onnx = sampan.load(exported.ref, backend="onnxruntime", store=Store(home))
    assert np.abs(onnx.outputs(windows) - expected).max() <= 1e-3 * np.abs(expected).max()
    relative = np.abs(onnx.outputs(windows) - expected) / np.abs(expected)
    assert relative.max() < 1e-4
    app = build_app([exported.ref], ServeSettings(backend="onnxruntime"), Store(home))
    instances = [{"series": w["series"], "window": w["window"].ravel().tolist()} for w in windows]
    with RunningServer(app, free_port()) as running:
        base = f"{running.url}/v1/models/plant"
        answer = httpx.post(f"{base}:predict", json={"instances": instances})
        unknown = httpx.post(
            f"{base}:predict", json={"instances": [{**instances[0], "series": "pump-9"}]}
        )
        missing = httpx.post(f"{base}:predict", json={"instances": [instances[0]["window"]]})
        v2 = httpx.post(
            f"{running.url}/v2/models/plant/infer",
            json={
                "inputs": [
                    {
                        "name": "input",
                        "shape": [3, 48, 1],
                        "datatype": "FP32",
                        "data": [x for i in instances for x in i["window"]],
                    },
                    {"name": "series", "shape": [3], "datatype": "BYTES", "data": NAMES},
                ]
            },
        )
        v2_unknown = httpx.post(
            f"{running.url}/v2/models/plant/infer",
            json={
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 48],
                        "datatype": "FP32",
                        "data": instances[0]["window"],
                    },
                    {"name": "series", "shape": [1], "datatype": "BYTES", "data": ["pump-9"]},
                ]
            },
        )
        metadata = httpx.get(f"{running.url}/v2/models/plant").json()
        streamed = httpx.post(
            f"{base}:stream",
            json={"series": "press-2", "readings": instances[1]["window"]},
        )
        stream_unknown = httpx.post(f"{base}:stream", json={"series": "pump-9", "readings": [1.0]})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["series"] for p in predictions] == NAMES
    got = np.array([p["forecast"] for p in predictions])
    assert np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()
    for reply in (unknown, v2_unknown, stream_unknown):
        assert reply.status_code == 400, reply.text
        assert "Series 'pump-9' was not seen in training" in reply.json()["error"]
        assert "knows 3: fan-3, press-2, pump-1." in reply.json()["error"]
    assert missing.status_code == 400 and "trained per series" in missing.json()["error"]
    assert v2.status_code == 200, v2.text
    assert np.abs(np.array(v2.json()["outputs"][0]["data"]) - expected.ravel()).max() < 1e-3 * 1e4
    assert [t["name"] for t in metadata["inputs"]] == ["input", "series"]
    assert metadata["inputs"][0]["shape"] == [-1, 48, 1]
    assert streamed.status_code == 200, streamed.text
    results = streamed.json()["results"]
    assert len(results) == 1 and np.allclose(results[0]["forecast"], expected[1], rtol=1e-3)


def test_anomaly_detection_per_series(tmp_path):
    """One detector for machines at 10 and at 10,000: a spike of the same size relative to
    each machine's spread is flagged on both, and the network scores in each one's units."""
    frame = machines_frame(800, seed=2)
    path = tmp_path / "plant.csv"
    frame.to_csv(path, index=False)
    home = tmp_path / "home"
    result = sampan.train(
        data=str(path), name="plant-ad", task="ts-anomaly", store=Store(home), **QUICK
    )
    contract = result.package.manifest.preprocessing
    assert contract["series_column"] == "machine" and sorted(contract["series"]) == sorted(NAMES)
    model = sampan.load(result.package.ref, backend="torch", store=Store(home))
    for name, _, swing, _ in MACHINES:
        window = window_of(name, end=700)
        spiked = window.copy()
        spiked[-1] += 4 * swing
        normal, spike = model.predict(
            [{"series": name, "window": window}, {"series": name, "window": spiked}]
        )
        assert spike["anomaly"] and not normal["anomaly"], (name, normal, spike)
    # The pump's normal readings, read as the fan (which moves 20 times less), are anomalous:
    # the statistics a window is scored with are its series' own.
    window = window_of("pump-1", end=700)
    assert model.predict({"series": "fan-3", "window": window})[0]["anomaly"]
