"""ts-forecast: the next `horizon` readings of a sensor series from its last `window` readings.

Data: a CSV or Parquet file with a timestamp column and numeric value columns (every numeric
column, or the ones `--columns` names), optionally a series id column (`--series-column`, or
one found by name); see sampan.data.timeseries for gaps and the split.

Normalisation: one mean/std per column fitted on the training windows and built into the
network; or, for a model trained per series, one per series and column, kept in the
contract's "series" and handed to the network with each window (collate), so a series of
readings near 10 and one near 10,000 are both seen in their own units.

Metrics are always printed next to the honest baselines: the seasonal-naive forecast (the
same step one season earlier) and the last value. To keep metrics() a pure function of
(outputs, targets), each window's targets carry, besides the true future, both baselines'
forecasts of it and the MASE scale: targets[..., 0] truth, [..., 1] seasonal naive,
[..., 2] last value, [..., 3] the scale (the seasonal-naive MAE over the training segment,
per channel, of the window's own series; see mase_scale for one that never moves). The
network never sees slots 1-3; the loss reads slot 0.
"""

from __future__ import annotations

import hashlib
import heapq
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sampan.data import timeseries as ts
from sampan.errors import DataError
from sampan.tasks.base import TASKS, Listing, Samples, Task

TRAIN, VAL, TEST = 0, 1, 2
SERIES_SHOWN = 100  # series ids a model's description lists (and how many there are)


def seasonal_naive(inputs: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """For each window (N, W, C): step h of the future is the reading one (or more) whole
    seasons before it, the latest such reading the window holds."""
    window = inputs.shape[1]
    steps = np.arange(horizon)
    back = period * np.ceil((steps + 1) / period).astype(np.int64)
    return inputs[:, window + steps - back]


def mase_scale(values: np.ndarray, period: int) -> np.ndarray:
    """Per channel: the mean absolute seasonal difference of a series (T, C), NaNs skipped.
    Where that is 0 (a series constant over its training segment, or repeating exactly each
    season), the scale stays in the series' own units: its std, else its mean |reading| (a
    constant), and 1.0 only where both are 0 (or nothing was read), so MASE pooled over
    series never mixes units."""
    lag = period if len(values) > period else 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a channel never read: NaN, then 1.0
        seasonal = np.nanmean(np.abs(values[lag:] - values[:-lag]), axis=0)
        spread = np.nanstd(values, axis=0)
        level = np.nanmean(np.abs(values), axis=0)
    scale = np.ones(values.shape[1])
    for candidate in (level, spread, seasonal):  # the last usable one wins
        scale = np.where(np.isfinite(candidate) & (candidate > 0), candidate, scale)
    return scale.astype(np.float32)


def forecast_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE, MASE and sMAPE of the model and of both baselines on the same windows."""
    truth, scale = targets[..., 0], targets[..., 3]  # the scale of each window's own series
    result: dict[str, Any] = {}
    for name, forecast in (
        ("", outputs),
        ("seasonal_naive_", targets[..., 1]),
        ("last_value_", targets[..., 2]),
    ):
        error = forecast - truth
        denom = np.abs(forecast) + np.abs(truth)
        ratio = np.divide(2 * np.abs(error), denom, out=np.zeros_like(denom), where=denom > 0)
        result[f"{name}mae"] = float(np.mean(np.abs(error)))
        result[f"{name}rmse"] = float(np.sqrt(np.mean(error**2)))
        result[f"{name}mase"] = float(np.mean(np.abs(error) / scale))
        result[f"{name}smape"] = float(100 * np.mean(ratio))
    # Higher is better, for early stopping: 0 = as good as seasonal naive, 1 = perfect.
    naive = result["seasonal_naive_mase"]
    result["skill"] = 1.0 - result["mase"] / naive if naive > 1e-9 else -result["mase"]
    result["windows"] = len(outputs)
    return result


def _statistics(windows: Any, channels: int) -> tuple[list[float], list[float]]:
    """Per column: mean and std (1 where a column never moves) of windows' readings, to 7
    significant digits (float32's), not decimals: a sensor may read 1e-6 units."""
    values = np.asarray(windows, dtype=np.float64).reshape(-1, channels)
    std = np.nanstd(values, axis=0)
    return (
        [float(f"{v:.7g}") for v in np.nanmean(values, axis=0)],
        [float(f"{v:.7g}") for v in np.where(std > 0, std, 1.0)],
    )


def normalisation_args(contract: dict[str, Any]) -> dict[str, Any]:
    """How a series network normalises: the contract's mean and std built in as buffers, or,
    for a model trained per series, the statistics each input row carries (see collate)."""
    if contract.get("series_column"):
        return {"series_stats": True}
    return {"mean": contract["mean"], "std": contract["std"]}


@TASKS.register("ts-forecast")
class TimeSeriesForecast(Task):
    name = "ts-forecast"
    description = "Sensor readings: the next `horizon` steps from the last `window` steps."
    monitor = "skill"
    console_form = "forecast"
    train_defaults: ClassVar[dict[str, Any]] = {
        "arch": "patch_mixer",
        "lr": 3e-3,
        "epochs": 30,
        "batch_size": 64,
        "label_smoothing": 0.0,
        "weight_decay": 0.01,
        "patience": 5,
    }

    def scan(self, source: str | Path) -> Listing:
        path = Path(source)
        frame = ts.read_table(path)
        return Listing(str(path), [frame], np.zeros(0, dtype=np.int64), [])

    def preprocessing(self, listing: Listing | None, options: dict[str, Any]) -> dict[str, Any]:
        frame = listing.items[0] if listing is not None else None
        source = listing.source if listing is not None else ""
        time = ts.time_column(frame, options.get("time_column")) if frame is not None else None
        series = None
        if frame is not None:
            series = ts.series_column(frame, options.get("series_column"), (time or "",))
            frame = ts.ids_as_written(frame, series, source)  # "007" stays "007"
        columns = options.get("columns")
        if isinstance(columns, str):
            columns = [c.strip() for c in columns.split(",") if c.strip()]
        if not columns and frame is not None:
            columns = ts.value_columns(frame, time, (series or "",))
        if series is not None and series in (columns or []):
            raise DataError(f"{series!r} is the series id column; it cannot be a value column.")
        window = int(options.get("window") or 96)
        horizon = int(options.get("horizon") or 24)
        step = None
        if frame is not None:
            step = ts.sampling_step(frame, time, series, str(source))
        period = int(options.get("period") or ts.default_period(step))
        if window < 2 or horizon < 1:
            raise DataError(f"window must be >= 2 and horizon >= 1 (got {window}, {horizon}).")
        if period > window:
            raise DataError(
                f"The season ({period} steps) is longer than the window ({window}): the "
                "seasonal-naive baseline needs a whole season in view. Use --window "
                f"{period} or more, or --period."
            )
        return {
            "kind": "timeseries",
            "time_column": time,
            "columns": list(columns or []),
            "series_column": series,
            "window": window,
            "horizon": horizon,
            "stride": int(options.get("stride") or 1),
            "period": period,
            "step_seconds": step,
            "max_gap": int(options.get("max_gap", 3)),
            "max_missing": float(options.get("max_missing", 0.1)),
            "mean": None,
            "std": None,
            "series": None,  # per series id: its mean and std, when trained per series
        }

    def series_of(
        self, listing: Listing, contract: dict[str, Any], extra: Sequence[str] = ()
    ) -> list[tuple[str | None, ts.Series]]:
        """Each series of a file on its own grid, with its id (None for a file that is one
        series); the columns read are the contract's and `extra` ones (a label)."""
        result = []
        source, column = listing.source, contract.get("series_column")
        frame = ts.ids_as_written(listing.items[0], column, source)
        for key, part, rows in ts.split_series(frame, column, source):
            if key is not None and contract.get("series") is not None:
                try:
                    ts.check_series(contract, key)
                except DataError as exc:
                    raise DataError(f"{source}: {exc}") from None
            name = ts.named(source, key)
            series = ts.regular_series(
                part,
                contract["time_column"],
                contract["columns"] + list(extra),
                contract["max_gap"],
                name,
                rows,
            )
            step = contract["step_seconds"]
            if step and series.step_seconds and not ts.same_step(series.step_seconds, step):
                raise DataError(
                    f"{name} is sampled every {series.step_seconds:g} s; the model "
                    f"reads one every {step:g} s. Resample it first."
                )
            result.append((key, series))
        return result

    def _assemble(
        self,
        listing: Listing,
        contract: dict[str, Any],
        parts: list[tuple[str | None, np.ndarray, np.ndarray, np.ndarray]],
        fingerprint: str,
        skipped: list[str],
    ) -> Samples:
        """Samples from each series' (id, windows, targets, segments); a model trained per
        series takes its windows as SeriesWindows, and every series must have training ones."""
        if contract.get("series_column") and contract.get("series") is None:  # training
            for key, _, _, segments in parts:
                if not (segments == TRAIN).any():
                    raise DataError(
                        f"{ts.named(listing.source, key)} leaves no whole window in its "
                        "training segment (its first 70%); use a shorter --window, or leave "
                        "that series out."
                    )
        inputs: Any = np.concatenate([part[1] for part in parts])
        if contract.get("series_column"):
            ids = [str(key) for key, windows, _, _ in parts for _ in range(len(windows))]
            inputs = [ts.SeriesWindow(w, k) for w, k in zip(inputs, ids)]
        return Samples(
            inputs=inputs,
            targets=np.concatenate([part[2] for part in parts]),
            labels=[],
            source=listing.source,
            fingerprint=fingerprint,
            skipped=skipped,
            segments=np.concatenate([part[3] for part in parts]).astype(np.int8),
        )

    def load(self, listing: Listing, contract: dict[str, Any], min_per_class: int = 1) -> Samples:
        return self._load_series(listing, contract, self._windows)

    def _load_series(
        self,
        listing: Listing,
        contract: dict[str, Any],
        windowing: Any,
        extra: Sequence[str] = (),
        digest_columns: bool = True,
    ) -> Samples:
        """Samples from every series of a file: windowing(series, contract, index) gives one
        series' (windows, targets, segments, windows dropped); `extra` columns (a label) are
        read beside the contract's."""
        parts, dropped = [], 0
        digest = hashlib.sha256()
        for index, (key, series) in enumerate(self.series_of(listing, contract, extra)):
            try:
                inputs, targets, segments, lost = windowing(series, contract, index)
            except DataError as exc:
                raise DataError(f"{ts.named(listing.source, key)}: {exc}") from None
            parts.append((key, inputs, targets, segments))
            dropped += lost
            if key is not None:
                digest.update(key.encode() + b"\0")
            digest.update(np.ascontiguousarray(series.values).tobytes())
        if digest_columns:  # as packages written before recorded it: fingerprints must hold
            digest.update(",".join(contract["columns"]).encode())
        skipped = [f"{dropped} window(s) touch a gap longer than {contract['max_gap']} steps"]
        return self._assemble(
            listing, contract, parts, digest.hexdigest(), skipped if dropped else []
        )

    def _windows(
        self, series: ts.Series, contract: dict[str, Any], index: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """One series' (windows, targets, segments, windows dropped for a long gap)."""
        window, horizon, period = contract["window"], contract["horizon"], contract["period"]
        inputs, futures, starts, dropped = ts.windows(
            series.values, window, horizon, contract["stride"]
        )
        if len(inputs) == 0:
            raise DataError("every window touches a gap too long to fill.")
        val_begin, test_begin = ts.segment_bounds(len(series.values))
        ends = starts + horizon
        segments = np.where(ends <= val_begin, TRAIN, np.where(ends <= test_begin, VAL, TEST))
        segments[(starts < val_begin) & (ends > val_begin)] = -1  # straddles: left out
        segments[(starts < test_begin) & (ends > test_begin)] = -1
        keep = segments >= 0
        inputs, futures, segments = inputs[keep], futures[keep], segments[keep]
        scale = mase_scale(series.values[:val_begin], period)
        targets = np.stack(
            [
                futures,
                seasonal_naive(inputs, horizon, period),
                np.repeat(inputs[:, -1:], horizon, axis=1),
                np.broadcast_to(scale, futures.shape),
            ],
            axis=-1,
        ).astype(np.float32)
        return inputs, targets, segments, dropped

    def fit(self, contract: dict[str, Any], train_inputs: Any) -> dict[str, Any]:
        if not contract.get("series_column"):
            mean, std = _statistics(train_inputs, len(contract["columns"]))
            return {**contract, "mean": mean, "std": std}
        groups: dict[str, list[np.ndarray]] = {}
        for sample in train_inputs:
            groups.setdefault(sample.series, []).append(sample.values)
        stats = {}
        for key, windows in groups.items():
            mean, std = _statistics(windows, len(contract["columns"]))
            stats[key] = {"mean": mean, "std": std}
        return {**contract, "series": stats}

    def network_args(self, contract: dict[str, Any]) -> dict[str, Any]:
        return {
            "window": contract["window"],
            "horizon": contract["horizon"],
            "channels": len(contract["columns"]),
            **normalisation_args(contract),
        }

    def as_inputs(self, inputs: Any) -> list[Any]:
        """An array (W, C) or (W,) is one window; (N, W, C) a batch of them; a dict
        {"series": ID, "window": readings} one window of one series."""
        if isinstance(inputs, np.ndarray):
            return [inputs] if inputs.ndim <= 2 else list(inputs)
        if isinstance(inputs, dict):
            return [inputs]
        return super().as_inputs(inputs)

    def input_details(self, contract: dict[str, Any]) -> dict[str, Any]:
        """The readings a window holds (window, and the columns in order) and, for a model
        trained per series, the ids it knows (the first SERIES_SHOWN, sorted as text) and how
        many there are, since each input must name one."""
        details = {"window": contract["window"], "columns": list(contract["columns"])}
        if contract.get("series_column") and contract.get("series"):
            ids = contract["series"]
            details["series"] = heapq.nsmallest(SERIES_SHOWN, ids)
            details["series_count"] = len(ids)
        return details

    def example_json(
        self, input_shape: Sequence[int], details: Mapping[str, Any] | None = None
    ) -> Any:
        """A window of sine readings, (window, columns) as the model takes it (the details'
        window where given: a model trained per series takes two rows of statistics more);
        for a model trained per series, the first series its details name."""
        window, columns = input_shape
        window = int((details or {}).get("window", window))
        wave = np.sin(np.arange(window)[:, None] / 4 + np.arange(columns)).round(4)
        readings = wave[:, 0].tolist() if columns == 1 else wave.tolist()
        known = (details or {}).get("series")
        return {"series": known[0], "window": readings} if known else readings

    def from_json(self, value: Any) -> Any:
        """A window as JSON: a list of readings (numbers for one column, lists for several),
        or {"window": [...]} ("values" likewise), with "series": ID for a model trained per
        series; null is a missing reading."""
        if isinstance(value, dict):
            readings = value.get("window", value.get("values"))
            if not isinstance(readings, list):
                raise DataError(
                    'A window must be a list of readings (or {"series": ID, "window": [...]}).'
                )
            return (
                {"series": value["series"], "values": readings} if "series" in value else readings
            )
        if not isinstance(value, list):
            raise DataError('A window must be a list of readings (or {"values": [...]}).')
        return value

    def decode(self, raw: Any, contract: dict[str, Any]) -> Any:
        """One window: its last `window` readings (W, C) float32, or for a model trained per
        series a SeriesWindow of them and their series' id (a known one); raw is readings, or
        a dict {"series": ID, "values" (or "window"): readings}."""
        series = None
        if isinstance(raw, dict):
            series = raw.get("series")
            raw = raw.get("values", raw.get("window"))
            if raw is None:
                raise DataError('A window needs its readings: {"series": ID, "window": [...]}.')
        if contract.get("series_column"):
            key = ts.check_series(contract, series)
            return ts.SeriesWindow(self._readings(raw, contract), key)
        return self._readings(raw, contract)

    def _readings(self, raw: Any, contract: dict[str, Any]) -> np.ndarray:
        """A window's last `window` readings (W, C) float32; a few missing readings are
        interpolated, more than max_missing of them is an error."""
        window = contract["window"]
        array = ts.readings(raw, contract["columns"], "the window")
        if len(array) < window:
            raise DataError(
                f"A window needs the last {window} readings; got {len(array)}. Send more."
            )
        array = array[-window:]
        missing = np.isnan(array)
        if missing.mean() > contract["max_missing"]:
            raise DataError(
                f"{int(missing.sum())} of the window's {missing.size} readings are missing "
                f"(at most {contract['max_missing']:.0%} may be)."
            )
        if missing.any():
            steps = np.arange(window)
            for c in np.flatnonzero(missing.any(axis=0)):
                good = ~missing[:, c]
                if not good.any():
                    raise DataError(f"Column {contract['columns'][c]} has no reading at all.")
                array[:, c] = np.interp(steps, steps[good], array[good, c])
        return array

    def cheap_to_decode(self, raw: Any) -> bool:
        if isinstance(raw, dict):
            raw = raw.get("values", raw.get("window"))
        return isinstance(raw, list) and len(raw) <= 2048

    def notes(self, sample: Any) -> dict[str, Any]:
        """A model trained per series says which series each answer is for."""
        return {"series": sample.series} if isinstance(sample, ts.SeriesWindow) else {}

    def output_shape(self, contract: dict[str, Any], labels: Sequence[str]) -> list[int]:
        """One forecast: (horizon, columns)."""
        return [int(contract["horizon"]), len(contract["columns"])]

    def input_spec(self, contract: dict[str, Any]) -> Any:
        """(window, columns); per series, two rows more: the series' mean and std."""
        extra = 2 if contract.get("series_column") else 0
        return (contract["window"] + extra, len(contract["columns"])), "float32"

    def collate(self, samples: Any, contract: dict[str, Any]) -> np.ndarray:
        """Windows (N, W, C) float32. Per series, each window is followed by its series' mean
        and std (rows W and W + 1), which the network normalises with and, for forecasts,
        brings its answer back to the series' units with: (N, W + 2, C)."""
        if not contract.get("series_column"):
            return np.ascontiguousarray(np.asarray(samples, dtype=np.float32))
        stats = contract.get("series") or {}
        rows = []
        for sample in samples:
            known = stats.get(sample.series) or stats[ts.check_series(contract, sample.series)]
            rows.append(np.concatenate([sample.values, [known["mean"]], [known["std"]]]))
        return np.ascontiguousarray(np.asarray(rows, dtype=np.float32))

    def postprocess(
        self, outputs: np.ndarray, labels: Sequence[str], top_k: int
    ) -> list[dict[str, Any]]:
        return [{"forecast": row.astype(float).tolist()} for row in outputs]

    def metrics(
        self, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str]
    ) -> dict[str, Any]:
        return forecast_metrics(np.asarray(outputs), np.asarray(targets))

    def loss(self, label_smoothing: float = 0.0) -> Any:
        import torch

        class ScaledError(torch.nn.Module):
            """Mean squared error in units of each channel's MASE scale (targets slot 3), so
            channels of different magnitudes weigh alike."""

            def forward(self, predicted: Any, targets: Any) -> Any:
                scale = targets[..., 3]
                return torch.mean(((predicted - targets[..., 0]) / scale) ** 2)

        return ScaledError()
