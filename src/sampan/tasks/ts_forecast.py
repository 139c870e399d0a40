"""ts-forecast: the next `horizon` readings of a sensor series from its last `window` readings.

Data: a CSV or Parquet file with a timestamp column and numeric value columns (every numeric
column, or the ones `--columns` names); see sampan.data.timeseries for gaps and the split.

Metrics are always printed next to the honest baselines: the seasonal-naive forecast (the
same step one season earlier) and the last value. To keep metrics() a pure function of
(outputs, targets), each window's targets carry, besides the true future, both baselines'
forecasts of it and the MASE scale: targets[..., 0] truth, [..., 1] seasonal naive,
[..., 2] last value, [..., 3] the scale (the seasonal-naive MAE over the training segment,
per channel). The network never sees slots 1-3; the loss reads slot 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sampan.data import timeseries as ts
from sampan.errors import DataError
from sampan.tasks.base import TASKS, Listing, Samples, Task

TRAIN, VAL, TEST = 0, 1, 2


def seasonal_naive(inputs: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """For each window (N, W, C): step h of the future is the reading one (or more) whole
    seasons before it, the latest such reading the window holds."""
    window = inputs.shape[1]
    steps = np.arange(horizon)
    back = period * np.ceil((steps + 1) / period).astype(np.int64)
    return inputs[:, window + steps - back]


def mase_scale(values: np.ndarray, period: int) -> np.ndarray:
    """Per channel: the mean absolute seasonal difference of a series (T, C), NaNs skipped."""
    lag = period if len(values) > period else 1
    diffs = np.abs(values[lag:] - values[:-lag])
    scale = np.nanmean(diffs, axis=0)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0).astype(np.float32)


def forecast_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE, MASE and sMAPE of the model and of both baselines on the same windows."""
    truth, scale = targets[..., 0], targets[:1, :1, :, 3]
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


@TASKS.register("ts-forecast")
class TimeSeriesForecast(Task):
    name = "ts-forecast"
    description = "Sensor readings: the next `horizon` steps from the last `window` steps."
    monitor = "skill"
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
        time = ts.time_column(frame, options.get("time_column")) if frame is not None else None
        columns = options.get("columns")
        if isinstance(columns, str):
            columns = [c.strip() for c in columns.split(",") if c.strip()]
        if not columns and frame is not None:
            columns = ts.value_columns(frame, time)
        window = int(options.get("window") or 96)
        horizon = int(options.get("horizon") or 24)
        step = None
        if frame is not None and time is not None:
            step = ts.timestamps(frame, time, str(listing.source))[1] / 1e9
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
            "window": window,
            "horizon": horizon,
            "stride": int(options.get("stride") or 1),
            "period": period,
            "step_seconds": step,
            "max_gap": int(options.get("max_gap", 3)),
            "max_missing": float(options.get("max_missing", 0.1)),
            "mean": None,
            "std": None,
        }

    def load(self, listing: Listing, contract: dict[str, Any], min_per_class: int = 1) -> Samples:
        frame = listing.items[0]
        series = ts.regular_series(
            frame,
            contract["time_column"],
            contract["columns"],
            contract["max_gap"],
            listing.source,
        )
        step = contract["step_seconds"]
        if step and series.step_seconds and abs(series.step_seconds - step) > 1e-6:
            raise DataError(
                f"{listing.source} is sampled every {series.step_seconds:g} s; the model "
                f"reads one every {step:g} s. Resample it first."
            )
        window, horizon, period = contract["window"], contract["horizon"], contract["period"]
        inputs, futures, starts, dropped = ts.windows(
            series.values, window, horizon, contract["stride"]
        )
        if len(inputs) == 0:
            raise DataError(f"{listing.source}: every window touches a gap too long to fill.")
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
        digest = hashlib.sha256(np.ascontiguousarray(series.values).tobytes())
        digest.update(",".join(series.columns).encode())
        skipped = [f"{dropped} window(s) touch a gap longer than {contract['max_gap']} steps"]
        return Samples(
            inputs=inputs,
            targets=targets,
            labels=[],
            source=listing.source,
            fingerprint=digest.hexdigest(),
            skipped=skipped if dropped else [],
            segments=segments.astype(np.int8),
        )

    def fit(self, contract: dict[str, Any], train_inputs: Any) -> dict[str, Any]:
        values = np.asarray(train_inputs, dtype=np.float64).reshape(-1, len(contract["columns"]))
        std = np.nanstd(values, axis=0)
        return {
            **contract,
            # 7 significant digits (float32's), not decimals: a sensor may read 1e-6 units
            "mean": [float(f"{v:.7g}") for v in np.nanmean(values, axis=0)],
            "std": [float(f"{v:.7g}") for v in np.where(std > 0, std, 1.0)],
        }

    def network_args(self, contract: dict[str, Any]) -> dict[str, Any]:
        return {
            "window": contract["window"],
            "horizon": contract["horizon"],
            "channels": len(contract["columns"]),
            "mean": contract["mean"],
            "std": contract["std"],
        }

    def as_inputs(self, inputs: Any) -> list[Any]:
        """An array (W, C) or (W,) is one window; (N, W, C) a batch of them."""
        if isinstance(inputs, np.ndarray):
            return [inputs] if inputs.ndim <= 2 else list(inputs)
        return super().as_inputs(inputs)

    def from_json(self, value: Any) -> Any:
        """A window as JSON: a list of readings (numbers for one column, lists for several),
        or {"values": [...]}; null is a missing reading."""
        if isinstance(value, dict):
            value = value.get("values")
        if not isinstance(value, list):
            raise DataError('A window must be a list of readings (or {"values": [...]}).')
        return value

    def decode(self, raw: Any, contract: dict[str, Any]) -> np.ndarray:
        """One window: its last `window` readings (W, C) float32; a few missing readings are
        interpolated, more than max_missing of them is an error."""
        window, channels = contract["window"], len(contract["columns"])
        try:
            array = np.array(raw, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError("A window's readings must be numbers (null for missing).") from None
        if array.ndim == 1 and channels == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[1] != channels:
            raise DataError(
                f"A window must hold readings of {channels} column(s) "
                f"({', '.join(contract['columns'])}); got shape {list(array.shape)}."
            )
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
        return isinstance(raw, list) and len(raw) <= 2048

    def input_spec(self, contract: dict[str, Any]) -> Any:
        return (contract["window"], len(contract["columns"])), "float32"

    def collate(self, samples: Any, contract: dict[str, Any]) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(samples, dtype=np.float32))

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
