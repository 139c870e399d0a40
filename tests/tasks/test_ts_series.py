"""Series ids in time-series files: several machines in one file, each on its own grid, cut
into its own segments and normalised by its own statistics, and requests that name their
series (an unknown one is a clear 400)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import sampan
from sampan.data import timeseries as ts
from sampan.errors import DataError
from sampan.export.onnx import max_relative_diff
from sampan.serving.v2 import parse_series
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
    from sampan.serving.loadtest import load_test
    from tests.serving.conftest import RunningServer, free_port

    home, result = forecaster
    exported = export(result.package.ref, "onnx", store=Store(home))
    windows = [{"series": name, "window": window_of(name)} for name in NAMES]
    expected = sampan.load(result.package.ref, backend="torch", store=Store(home)).outputs(windows)
    onnx = sampan.load(exported.ref, backend="onnxruntime", store=Store(home))
    assert max_relative_diff(expected, onnx.outputs(windows)) < 1e-4  # each window's own scale
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
        described = httpx.get(base).json()
        # loadtest makes up a window of a series the model names in its description
        made_up = [
            load_test(running.url, "plant", concurrency=2, requests=4, protocol=protocol)
            for protocol in ("native", "v2")
        ]
    details = described["input_details"]
    assert details["series"] == sorted(NAMES) and details["series_count"] == 3
    assert details["window"] == 48 and len(details["columns"]) == 1
    assert [(run.sent, run.ok) for run in made_up] == [(4, 4), (4, 4)]
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["series"] for p in predictions] == NAMES
    got = np.array([p["forecast"] for p in predictions])
    assert max_relative_diff(expected, got) < 1e-4
    for reply in (unknown, v2_unknown, stream_unknown):
        assert reply.status_code == 400, reply.text
        assert "Series 'pump-9' was not seen in training" in reply.json()["error"]
        assert "knows 3: fan-3, press-2, pump-1." in reply.json()["error"]
    assert missing.status_code == 400 and "trained per series" in missing.json()["error"]
    assert v2.status_code == 200, v2.text
    v2_got = np.array(v2.json()["outputs"][0]["data"]).reshape(expected.shape)
    assert max_relative_diff(expected, v2_got) < 1e-4
    assert [t["name"] for t in metadata["inputs"]] == ["input", "series"]
    assert metadata["inputs"][0]["shape"] == [-1, 48, 1]
    assert metadata["outputs"][0]["shape"] == [-1, 12, 1]
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


def test_a_renamed_timestamp_column_is_refused(forecaster, tmp_path):
    home, result = forecaster
    renamed = tmp_path / "renamed.csv"
    machines_frame(600).rename(columns={"timestamp": "time"}).to_csv(renamed, index=False)
    message = r"renamed\.csv series 'pump-1' lacks column\(s\) timestamp .*; rename them back"
    with pytest.raises(DataError, match=message):
        sampan.evaluate(result.package.ref, renamed, store=Store(home))


# Ids a CSV reader would take for numbers: 007 and 7 are two machines, 8 a third.
NUMBERED = dict(zip(NAMES, ("007", "7", "8")))


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """A forecaster trained per machine on a CSV whose ids look like numbers, and the same
    readings as Parquet (ids stored as strings)."""
    folder = tmp_path_factory.mktemp("numbered")
    frame = machines_frame(500)
    frame["machine"] = frame["machine"].map(NUMBERED)
    frame.to_csv(folder / "plant.csv", index=False)
    frame.to_parquet(folder / "plant.parquet")
    home = folder / "home"
    result = sampan.train(
        data=str(folder / "plant.csv"),
        name="numbered",
        task="ts-forecast",
        horizon=12,
        series_column="machine",
        store=Store(home),
        **{**QUICK, "epochs": 2},
    )
    return folder, home, result


def test_ids_that_look_like_numbers_stay_as_written(numbered):
    folder, home, result = numbered
    assert sorted(result.package.manifest.preprocessing["series"]) == ["007", "7", "8"]
    store = Store(home)
    from_csv = sampan.evaluate(result.package.ref, folder / "plant.csv", store=store)
    from_parquet = sampan.evaluate(result.package.ref, folder / "plant.parquet", store=store)
    assert from_parquet.num_samples == from_csv.num_samples
    assert from_parquet.metrics["mae"] == pytest.approx(from_csv.metrics["mae"], rel=1e-6)
    model = sampan.load(result.package.ref, backend="torch", store=store)
    pump, fan = window_of("pump-1"), window_of("fan-3")
    outputs = model.outputs(
        [
            {"series": "007", "window": pump},
            {"series": "7", "window": pump},
            {"series": "8", "window": fan},
            {"series": 8, "window": fan},
            {"series": np.int64(8), "window": fan},
        ]
    )
    assert not np.allclose(outputs[0], outputs[1])  # two machines, each with its statistics
    # 8 and numpy's 8 are series "8" (equal to float noise: rows of one batch)
    assert np.allclose(outputs[3:], outputs[2], rtol=1e-6)
    with pytest.raises(DataError, match=r"Series '9' was not seen in training"):
        model.outputs({"series": 9, "window": pump})


def test_integer_ids_over_stream_and_v2(numbered):
    import httpx

    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from tests.serving.conftest import RunningServer, free_port

    _, home, result = numbered
    model = sampan.load(result.package.ref, backend="torch", store=Store(home))
    pump, fan = window_of("pump-1"), window_of("fan-3")
    expected = model.outputs([{"series": "007", "window": pump}, {"series": "8", "window": fan}])
    app = build_app([result.package.ref], ServeSettings(backend="torch"), Store(home))
    windows = {"name": "input", "shape": [2, 48, 1], "datatype": "FP32"}
    windows["data"] = np.concatenate([pump, fan]).ravel().tolist()

    def series(datatype, data):
        return {"name": "series", "shape": [len(data)], "datatype": datatype, "data": data}

    with RunningServer(app, free_port()) as running:
        base = f"{running.url}/v1/models/numbered"
        streamed = httpx.post(
            f"{base}:stream", json={"series": 8, "readings": fan.ravel().tolist()}
        )
        infer = f"{running.url}/v2/models/numbered/infer"
        as_text = httpx.post(infer, json={"inputs": [windows, series("BYTES", ["007", "8"])]})
        as_int = httpx.post(infer, json={"inputs": [windows, series("INT64", [7, 8])]})
        floats = httpx.post(infer, json={"inputs": [windows, series("FP32", [7.0, 8.0])]})
    assert streamed.status_code == 200, streamed.text
    assert streamed.json()["series"] == "8"
    assert np.allclose(streamed.json()["results"][0]["forecast"], expected[1], rtol=1e-5)
    assert as_text.status_code == 200, as_text.text
    got = np.array(as_text.json()["outputs"][0]["data"]).reshape(expected.shape)
    assert max_relative_diff(expected, got) < 1e-5
    # INT64 7 is series "7", not "007": answered with "7"'s statistics.
    assert as_int.status_code == 200, as_int.text
    seven = model.outputs([{"series": "7", "window": pump}])
    got = np.array(as_int.json()["outputs"][0]["data"]).reshape(expected.shape)
    assert max_relative_diff(np.concatenate([seven, expected[1:]]), got) < 1e-5
    assert floats.status_code == 400 and "'series' must hold one id per window" in floats.text


@pytest.mark.parametrize(
    "datatype, shape, data, message",
    [
        ("FP32", [2], [1.0, 2.0], "'series' must hold one id per window: BYTES (or INT64"),
        ("BYTES", [2, 2], ["a", "b", "c", "d"], "'series' must hold one id per window"),
        ("BYTES", [2], ["a", 3], "'series' data must be a flat list of strings"),
        ("BYTES", [3], ["a", "b"], "The 'series' tensor holds 2 ids; shape [3] says 3"),
        ("INT64", [2], [7, 8.5], "'series' data must be a flat list of integers"),
        ("INT32", [3], [7, 8], "'series' tensor: data has 2 values"),
    ],
)
def test_bad_series_tensors_name_the_series_tensor(datatype, shape, data, message):
    spec = {"name": "series", "shape": shape, "datatype": datatype, "data": data}
    with pytest.raises(DataError, match=re.escape(message)):
        parse_series(spec)


def test_series_tensors_of_text_or_integers():
    import struct

    def spec(datatype, shape, data=None, size=None):
        tensor = {"name": "series", "shape": shape, "datatype": datatype, "data": data}
        return tensor | ({"parameters": {"binary_data_size": size}} if size else {})

    assert parse_series(spec("BYTES", [2, 1], ["007", "pump-1"])) == ["007", "pump-1"]
    assert parse_series(spec("INT64", [2], [7, 8])) == ["7", "8"]
    binary = np.array([7, 8], np.int32).tobytes()
    assert parse_series(spec("INT32", [2], size=len(binary)), binary) == ["7", "8"]
    binary = b"".join(struct.pack("<I", len(x)) + x for x in (b"007", b"\xc3\xa9"))
    assert parse_series(spec("BYTES", [2], size=len(binary)), binary) == ["007", "é"]


def test_numeric_ids_are_suggested_when_timestamps_repeat(tmp_path):
    """Auto-detection skips a numeric id column (numbers may be readings); a file of several
    machines then repeats every timestamp, and the error says which column to name."""
    frame = machines_frame(200)
    frame["machine"] = frame["machine"].map(NUMBERED)
    path = tmp_path / "numbered.csv"
    frame.to_csv(path, index=False)
    task = get_task("ts-forecast")
    listing = task.scan(path)
    message = (
        r"row \d+: timestamp .* repeats .*timestamps must increase strictly; it looks like "
        r"several series in one file: pass --series-column machine\."
    )
    with pytest.raises(DataError, match=message):
        task.preprocessing(listing, {"window": 48, "horizon": 12})
    one = machines_frame(200).query("machine == 'pump-1'")  # one machine: no advice
    one.loc[one.index[5], "timestamp"] = one.loc[one.index[4], "timestamp"]
    with pytest.raises(DataError, match=r"repeats .*increase strictly\.$"):
        ts.sampling_step(one, "timestamp", None, "x")


def test_blank_ids_and_header_only_files_are_clear_errors(tmp_path):
    import pandas as pd

    task = get_task("ts-forecast")
    frame = machines_frame(200)
    frame.loc[7, "machine"] = "   "
    path = tmp_path / "blank.csv"
    frame.to_csv(path, index=False)
    options = {"window": 48, "horizon": 12, "series_column": "machine"}
    with pytest.raises(DataError, match=r"blank\.csv row 9: no series id in column 'machine'"):
        task.preprocessing(task.scan(path), options)
    header = tmp_path / "header.csv"
    header.write_text("timestamp,machine,reading\n")
    with pytest.raises(DataError, match=r"header\.csv holds no readings"):
        task.scan(header)
    empty = pd.DataFrame({"timestamp": [], "machine": [], "reading": []})
    with pytest.raises(DataError, match=r"x holds no readings"):
        ts.sampling_step(empty, "timestamp", "machine", "x")


def test_series_a_little_apart_in_interval_share_one(tmp_path):
    """A logger whose clock runs 0.3% slow is on the same hourly interval (2 hours is not)."""
    import pandas as pd

    frame = machines_frame(300)
    fan = frame["machine"] == "fan-3"
    slow = pd.date_range("2025-01-01 06:00", periods=int(fan.sum()), freq="3611s")
    frame.loc[fan, "timestamp"] = slow
    step = ts.sampling_step(frame, "timestamp", "machine", "x")
    assert step == 3600 and ts.default_period(3611) == 24
    path = tmp_path / "jitter.csv"
    frame.to_csv(path, index=False)
    task = get_task("ts-forecast")
    listing = task.scan(path)
    contract = task.preprocessing(listing, {"window": 48, "horizon": 12})
    assert contract["step_seconds"] == 3600 and contract["period"] == 24
    samples = task.load(listing, contract)
    assert {s.series for s in samples.inputs} == set(NAMES)
