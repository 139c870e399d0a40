"""ts-forecast: reading sensor files (gaps, bad timestamps), windows and the chronological
split, the baselines and metrics, training, export and serving a forecaster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sampan
from sampan.data import timeseries as ts
from sampan.errors import DataError
from sampan.store import Store
from sampan.tasks.ts_forecast import forecast_metrics, mase_scale, seasonal_naive

QUICK = {"epochs": 8, "batch_size": 64, "device": "cpu", "quiet": True, "window": 48}


def sensor_frame(steps: int = 2400, seed: int = 0):
    """Two hourly channels with a daily cycle whose shape drifts, a trend, noise, a short gap
    (2 readings) and a long one (10 readings)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    day = 2 * np.pi * t / 24
    temp = 20 + 4 * np.sin(day) + 1.5 * np.sin(2 * day) * np.sin(t / 300) + 0.002 * t
    pressure = 100 + 3 * np.cos(day) + rng.normal(0, 0.2, steps).cumsum() * 0.05
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2025-01-01", periods=steps, freq="h"),
            "temp": temp + rng.normal(0, 0.2, steps),
            "pressure": pressure,
        }
    )
    frame.loc[300:301, "temp"] = np.nan
    frame.loc[900:909, "pressure"] = np.nan
    return frame


@pytest.fixture(scope="module")
def sensor_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sensor") / "line3.csv"
    sensor_frame().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory, sensor_csv):
    home = tmp_path_factory.mktemp("ts-home")
    result = sampan.train(
        data=str(sensor_csv),
        name="line3",
        task="ts-forecast",
        horizon=12,
        store=Store(home),
        **QUICK,
    )
    return home, result


def test_gaps_short_ones_filled_long_ones_left_out(sensor_csv):
    frame = ts.read_table(sensor_csv)
    series = ts.regular_series(frame, "timestamp", ["temp", "pressure"], 3, "line3")
    assert series.values.shape == (2400, 2) and series.step_seconds == 3600
    assert series.filled == 2 and series.missing == 10
    assert np.isfinite(series.values[300:302, 0]).all()
    assert np.isnan(series.values[900:910, 1]).all()
    inputs, futures, _, dropped = ts.windows(series.values, 48, 12, 1)
    assert dropped == 48 + 12 + 10 - 1  # every window whose span touches the long gap
    assert not np.isnan(inputs).any() and inputs.shape[1:] == (48, 2)
    assert np.array_equal(futures[0], series.values[48:60])


def test_missing_rows_are_put_back_on_the_grid(tmp_path):
    frame = sensor_frame(200).drop(index=[50, 51])  # two hours never reported
    series = ts.regular_series(frame, "timestamp", ["temp"], 3, "x")
    assert len(series.values) == 200 and series.filled == 2


def test_bad_files_get_clear_errors(tmp_path):
    frame = sensor_frame(300)
    cases = []
    repeated = frame.copy()
    repeated.loc[10, "timestamp"] = repeated.loc[9, "timestamp"]
    cases.append((repeated, "row 12: timestamp .* repeats"))
    backwards = frame.copy()
    backwards.loc[20, "timestamp"] = backwards.loc[5, "timestamp"]
    cases.append((backwards, "goes back in time"))
    not_time = frame.astype({"timestamp": str})
    not_time.loc[3, "timestamp"] = "yesterday"
    cases.append((not_time, "row 5: 'yesterday' is not a time"))
    for bad, message in cases:
        with pytest.raises(DataError, match=message):
            ts.regular_series(bad, "timestamp", ["temp"], 3, "x")
    with pytest.raises(DataError, match="lacks column"):
        ts.regular_series(frame, "timestamp", ["vibration"], 3, "x")
    with pytest.raises(DataError, match="needs at least that many"):
        ts.windows(np.zeros((50, 1), np.float32), 48, 12, 1)
    text = tmp_path / "x.txt"
    text.write_text("a")
    with pytest.raises(DataError, match=r"\.csv .* or \.parquet"):
        ts.read_table(text)


def test_mase_scale_of_a_series_that_never_moves_is_in_its_own_units():
    constant = np.full((100, 2), [500.0, -0.25], np.float32)
    assert mase_scale(constant, 24).tolist() == [500.0, 0.25]  # its mean |reading|, not 1.0
    with_gaps = constant.copy()
    with_gaps[10:20, 0] = np.nan
    assert mase_scale(with_gaps, 24).tolist() == [500.0, 0.25]
    assert mase_scale(np.zeros((100, 1), np.float32), 24).tolist() == [1.0]  # nothing else
    assert mase_scale(np.full((100, 1), np.nan, np.float32), 24).tolist() == [1.0]
    # Pooled, a forecast 1% off scores alike on a pump at 500 and a fan at 0.25.
    truth = np.ones((1, 4, 1), np.float32) * constant[0]
    scale = mase_scale(constant, 24) * np.ones_like(truth)
    targets = np.stack([truth, truth, truth, scale], -1)
    assert forecast_metrics(truth * 1.01, targets)["mase"] == pytest.approx(0.01)


def test_baselines_and_metrics_on_known_values():
    # A series that repeats every 4 steps: seasonal naive is exact, last value is not.
    cycle = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    inputs = np.tile(cycle, 3)[None, :, None]  # (1, 12, 1)
    naive = seasonal_naive(inputs, 6, 4)
    assert naive[0, :, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 1.0, 2.0]
    # Seasonal differences all 0: the scale falls back to the series' std, in its own units.
    assert mase_scale(np.tile(cycle, 5)[:, None], 4) == pytest.approx([np.std(cycle)])
    truth = naive.copy()
    targets = np.stack([truth, naive, np.full_like(truth, 4.0), np.ones_like(truth)], -1)
    m = forecast_metrics(truth + 0.5, targets)
    assert m["mae"] == pytest.approx(0.5) and m["seasonal_naive_mae"] == 0.0
    assert m["last_value_mae"] == pytest.approx(np.mean(np.abs(truth - 4.0)))
    assert m["mase"] == pytest.approx(0.5) and m["skill"] < 0


def test_training_beats_seasonal_naive_on_the_test_segment(forecaster, sensor_csv):
    home, result = forecaster
    m = result.package.manifest
    assert m.task == "ts-forecast" and m.architecture["name"] == "patch_mixer"
    contract = m.preprocessing
    assert contract["columns"] == ["temp", "pressure"] and contract["period"] == 24
    assert (contract["window"], contract["horizon"], contract["step_seconds"]) == (48, 12, 3600)
    assert len(contract["mean"]) == 2 and contract["std"][0] > 1
    dataset = m.training["dataset"]
    assert dataset["num_train"] > 3 * dataset["num_val"] > 0
    report = sampan.evaluate(result.package.ref, sensor_csv, store=Store(home), backend="torch")
    metrics = report.metrics
    assert metrics["windows"] == report.num_samples > 300
    assert metrics["mase"] < metrics["seasonal_naive_mase"], metrics
    assert metrics["last_value_mase"] > metrics["seasonal_naive_mase"]  # the season matters


def test_decode_windows_and_their_errors(forecaster):
    home, result = forecaster
    model = sampan.load(result.package.ref, backend="torch", store=Store(home))
    frame = sensor_frame(100)
    window = frame[["temp", "pressure"]].to_numpy()[-60:]  # longer: the last 48 are used
    forecast = model.predict(window)  # one (W, C) array is one window
    assert np.array(forecast[0]["forecast"]).shape == (12, 2)
    assert np.allclose(model.outputs(window), model.outputs(window[-48:]))
    holes = window.copy()
    holes[[-5, -9], 0] = np.nan  # 2 of 96 readings: interpolated
    assert np.isfinite(model.outputs(holes)).all()
    too_many = window.copy()
    too_many[-30:, 1] = np.nan
    for bad, message in (
        (window[-10:], "needs the last 48 readings; got 10"),
        (window[:, :1], "readings of 2 column"),
        (too_many, "are missing"),
        ([["a", "b"]] * 48, "must be numbers"),
    ):
        with pytest.raises(DataError, match=message):
            model.outputs([bad])


def test_a_renamed_column_is_refused_at_evaluation(forecaster, tmp_path):
    home, result = forecaster
    renamed = tmp_path / "renamed.csv"
    sensor_frame(600).rename(columns={"temp": "temperature"}).to_csv(renamed, index=False)
    with pytest.raises(DataError, match=r"lacks column.* temp"):
        sampan.evaluate(result.package.ref, renamed, store=Store(home))
    timed = tmp_path / "timed.csv"
    sensor_frame(600).rename(columns={"timestamp": "time"}).to_csv(timed, index=False)
    with pytest.raises(DataError, match=r"timed\.csv lacks column\(s\) timestamp .*rename"):
        sampan.evaluate(result.package.ref, timed, store=Store(home))


def test_export_and_serving(forecaster):
    import httpx

    from sampan.export import export
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.serving.loadtest import load_test
    from tests.serving.conftest import RunningServer, free_port

    home, result = forecaster
    exported = export(result.package.ref, "onnx", store=Store(home))
    window = sensor_frame(100)[["temp", "pressure"]].to_numpy()[-48:]
    expected = sampan.load(result.package.ref, backend="torch", store=Store(home)).outputs(window)
    onnx = sampan.load(exported.ref, backend="onnxruntime", store=Store(home))
    assert np.abs(onnx.outputs(window) - expected).max() < 1e-3
    app = build_app([exported.ref], ServeSettings(backend="onnxruntime"), Store(home))
    with RunningServer(app, free_port()) as running:
        url = f"{running.url}/v1/models/line3:predict"
        answer = httpx.post(url, json={"instances": [window.tolist(), window.tolist()]})
        assert answer.status_code == 200, answer.text
        got = np.array([p["forecast"] for p in answer.json()["predictions"]])
        short = httpx.post(url, json={"instances": [window[:5].tolist()]})
        tensor = {
            "name": "input",
            "shape": [1, 48, 2],
            "datatype": "FP32",
            "data": window.astype(np.float32).ravel().tolist(),
        }
        infer = f"{running.url}/v2/models/line3/infer"
        v2 = httpx.post(infer, json={"inputs": [tensor]})
        top_2 = [{"name": "output", "parameters": {"classification": 2}}]
        classes = httpx.post(infer, json={"inputs": [tensor], "outputs": top_2})
        metadata = httpx.get(f"{running.url}/v2/models/line3").json()
        made_up = load_test(running.url, "line3", concurrency=2, requests=4)  # its own window
    assert metadata["outputs"][0]["shape"] == [-1, 12, 2]  # horizon x columns
    assert classes.status_code == 400 and "line3 is not a classifier" in classes.json()["error"]
    assert got.shape == (2, 12, 2) and np.abs(got[0] - expected[0]).max() < 1e-3
    assert short.status_code == 400 and "needs the last 48" in short.json()["error"]
    assert v2.status_code == 200, v2.text
    assert np.abs(np.array(v2.json()["outputs"][0]["data"]) - expected.ravel()).max() < 1e-3
    assert (made_up.sent, made_up.ok) == (4, 4)


def test_real_series_from_installed_packages(tmp_path):
    pytest.importorskip("pmdarima", reason="the dev extras install it")
    from sampan.data.series import export_series
    from sampan.tasks import get_task

    task = get_task("ts-forecast")
    for name, steps, column in (("electricity", 4032, "demand_mw"), ("co2", 2284, "co2_ppm")):
        listing = task.scan(export_series(name, tmp_path))
        contract = task.preprocessing(listing, {"window": 104, "horizon": 13})
        samples = task.load(listing, contract)
        assert contract["columns"] == [column]
        assert contract["period"] == (48 if name == "electricity" else 52)
        series = ts.regular_series(listing.items[0], "timestamp", [column], 3, name)
        assert len(series.values) == steps
        assert set(np.unique(samples.segments)) == {0, 1, 2}
    assert series.filled > 0  # CO2's missing weeks: the short gaps were interpolated


def test_messy_timestamps_and_cells(tmp_path):
    import pandas as pd

    # Local time across a daylight-saving change: two offsets, one timeline.
    stamps = pd.date_range("2025-03-30 00:00", periods=6, freq="h", tz="Europe/Berlin")
    frame = pd.DataFrame({"Time (UTC)": stamps.astype(str), "v": np.arange(6.0)})
    time = ts.time_column(frame, None)
    assert time == "Time (UTC)"
    series = ts.regular_series(frame, time, ["v"], 3, "dst")
    assert series.values[:, 0].tolist() == list(range(6)) and series.step_seconds == 3600
    # A logger's clock a few seconds off stays on its own step.
    jitter = pd.to_datetime(pd.date_range("2025-01-01", periods=50, freq="h"))
    jitter = jitter + pd.to_timedelta(np.tile([2, -2], 25), unit="s")
    frame = pd.DataFrame({"timestamp": jitter, "v": np.arange(50.0)})
    series = ts.regular_series(frame, "timestamp", ["v"], 3, "jitter")
    assert series.values[:, 0].tolist() == list(range(50)) and series.filled == 0
    # One unreadable cell is one missing reading, not a lost column.
    frame = pd.DataFrame({"timestamp": jitter, "v": [str(x) for x in range(50)]})
    frame.loc[7, "v"] = "ERR"
    assert ts.value_columns(frame, "timestamp") == ["v"]
    series = ts.regular_series(frame, "timestamp", ["v"], 3, "err")
    assert series.filled == 1 and series.values[7, 0] == 7.0
