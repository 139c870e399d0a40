"""ts-anomaly: is this machine behaving abnormally right now? Unsupervised, trained on normal
readings: an autoencoder learns to reconstruct normal windows, and a window whose newest
reading it cannot reconstruct is anomalous.

Data: as ts-forecast (timestamp, value columns, optional series id column), plus an optional
0/1 label column (`label`, `anomaly` or `is_anomaly`) used only to leave anomalous windows out
of training and to score. Per series, windows are normalised by their own series' statistics,
so one series' normal level is not another's anomaly.
The network returns, per window, each step's reconstruction error in units of the threshold
calibrated after training (a quantile of the validation windows' errors, stored in the
package): a score above 1 is an anomaly. A window's score is its newest step's, so a served
window answers for the latest reading.

Metrics, when labels exist, are per window (point-wise: one window per time step, labelled by
its newest step) and per event (a run of labelled steps counts as found when any of its
windows is flagged): precision, recall and F1 at the calibrated threshold, ROC-AUC and PR-AUC,
each next to a rolling z-score baseline over the same window (the newest reading's distance
from the window's mean, in the window's standard deviations). targets[:, 0] is the label and
targets[:, 1] the baseline's score and targets[:, 2] the window's series (its index in the
file), so metrics() stays a pure function of (outputs, targets) and an event never runs from
the end of one series into the start of the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from sampan.data import timeseries as ts
from sampan.tasks.base import TASKS, Listing, Samples
from sampan.tasks.ts_forecast import TEST, TRAIN, VAL, TimeSeriesForecast, normalisation_args

LABEL_COLUMNS = ("label", "anomaly", "is_anomaly")


def zscore_baseline(inputs: np.ndarray) -> np.ndarray:
    """Per window (N, W, C): the newest reading's |z| against the rest of the window, max over
    channels."""
    history = inputs[:, :-1]
    spread = history.std(axis=1) + 1e-6
    scores: np.ndarray = np.max(np.abs(inputs[:, -1] - history.mean(axis=1)) / spread, axis=1)
    return scores


def events(labels: np.ndarray, groups: np.ndarray | None = None) -> list[tuple[int, int]]:
    """(begin, end) of each run of 1s; a run also ends where `groups` (the series) changes."""
    flagged = (labels > 0).astype(np.int8)
    edges = np.diff(np.concatenate([[0], flagged, [0]]))
    begins: list[int] = np.flatnonzero(edges == 1).tolist()
    ends: list[int] = np.flatnonzero(edges == -1).tolist()
    if groups is None or len(groups) < 2:
        return list(zip(begins, ends))
    cuts = set((np.flatnonzero(np.diff(groups) != 0) + 1).tolist())
    runs = []
    for begin, end in zip(begins, ends):
        start = begin
        for cut in sorted(c for c in cuts if begin < c < end):
            runs.append((start, cut))
            start = cut
        runs.append((start, end))
    return runs


def detection_metrics(
    scores: np.ndarray, flags: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None
) -> dict[str, Any]:
    """Point-wise precision, recall and F1 of flags; event recall (an event, a run of labelled
    readings within one series, is found when any of its readings is flagged); ROC-AUC and
    PR-AUC of scores."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    hits = flags & (labels > 0)
    precision = float(hits.sum() / max(flags.sum(), 1))
    recall = float(hits.sum() / max((labels > 0).sum(), 1))
    found = [bool(flags[b:e].any()) for b, e in events(labels, groups)]
    both = len(set(labels.tolist())) == 2
    return {
        "precision": precision,
        "recall": recall,
        "f1": 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall),
        "event_recall": float(np.mean(found)) if found else float("nan"),
        "roc_auc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "pr_auc": float(average_precision_score(labels, scores)) if both else float("nan"),
    }


@TASKS.register("ts-anomaly")
class TimeSeriesAnomaly(TimeSeriesForecast):
    name = "ts-anomaly"
    description = "Sensor readings: an anomaly score and flag for the newest reading."
    monitor = "neg_error"
    console_form = "anomaly"
    train_defaults: ClassVar[dict[str, Any]] = {
        **TimeSeriesForecast.train_defaults,
        "arch": "mlp_autoencoder",
        "lr": 2e-3,
        "window": 48,
    }
    quantile = 0.995  # of validation errors: the threshold

    def preprocessing(self, listing: Listing | None, options: dict[str, Any]) -> dict[str, Any]:
        frame = listing.items[0] if listing is not None else None
        label = None
        if frame is not None:
            label = next((str(c) for c in frame.columns if str(c).lower() in LABEL_COLUMNS), None)
            time = ts.time_column(frame, options.get("time_column"))
            series = ts.series_column(
                frame, options.get("series_column"), (time or "", label or "")
            )
            options = {**options, "series_column": series}
            if not options.get("columns"):
                exclude = (label or "", series or "")
                options = {**options, "columns": ts.value_columns(frame, time, exclude)}
        contract = super().preprocessing(listing, {**options, "horizon": 1, "period": 1})
        contract.pop("horizon")
        contract.pop("period")
        return {**contract, "label_column": label, "threshold": None, "quantile": self.quantile}

    def load(self, listing: Listing, contract: dict[str, Any], min_per_class: int = 1) -> Samples:
        label = contract.get("label_column")
        extra = [label] if label and label in listing.items[0].columns else []
        return self._load_series(
            listing, contract, self._scored_windows, extra, digest_columns=False
        )

    def _scored_windows(
        self, series: ts.Series, contract: dict[str, Any], index: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """One series' (windows, targets: label, z-score and the series' index in the file,
        segments, windows dropped)."""
        columns = contract["columns"]
        values = series.values[:, : len(columns)]
        labels = np.zeros(len(values), dtype=np.float32)
        if series.values.shape[1] > len(columns):
            labels = (np.nan_to_num(series.values[:, -1]) > 0).astype(np.float32)
        window = contract["window"]
        inputs, _, starts, dropped = ts.windows(values, window, 0, contract["stride"])
        ends = starts - 1  # the newest step of each window
        window_labels = np.lib.stride_tricks.sliding_window_view(labels, window)
        keep_index = starts - window  # first step of each kept window
        any_anomaly = window_labels[keep_index].max(axis=1) > 0
        val_begin, test_begin = ts.segment_bounds(len(values))
        segments = np.where(ends < val_begin, TRAIN, np.where(ends < test_begin, VAL, TEST))
        # Training is on normal data: a training window touching a labelled anomaly goes.
        keep = ~((segments == TRAIN) & any_anomaly)
        inputs, ends, segments = inputs[keep], ends[keep], segments[keep]
        group = np.full(len(ends), index, dtype=np.float32)
        targets = np.stack([labels[ends], zscore_baseline(inputs), group], axis=1).astype(
            np.float32
        )
        return inputs, targets, segments, dropped

    def network_args(self, contract: dict[str, Any]) -> dict[str, Any]:
        return {
            "window": contract["window"],
            "channels": len(contract["columns"]),
            **normalisation_args(contract),
            "threshold": contract.get("threshold") or 1.0,
        }

    def calibrate(
        self, outputs: np.ndarray, targets: np.ndarray, contract: dict[str, Any]
    ) -> dict[str, Any]:
        """The threshold: the `quantile` of the newest-step errors of validation windows
        labelled normal (all of them when there are no labels)."""
        errors = outputs[:, -1] * float(contract.get("threshold") or 1.0)
        normal = errors[targets[:, 0] == 0] if (targets[:, 0] == 0).any() else errors
        return {**contract, "threshold": float(np.quantile(normal, contract["quantile"]))}

    def output_shape(self, contract: dict[str, Any], labels: Sequence[str]) -> list[int]:
        """Scores per step of the window (autoencoders) or for the newest reading only."""
        return [-1]

    def postprocess(
        self, outputs: np.ndarray, labels: Sequence[str], top_k: int
    ) -> list[dict[str, Any]]:
        return [{"score": float(row[-1]), "anomaly": bool(row[-1] > 1.0)} for row in outputs]

    def metrics(
        self, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str]
    ) -> dict[str, Any]:
        outputs, targets = np.asarray(outputs), np.asarray(targets)
        scores, truth = outputs[:, -1], targets[:, 0]
        groups = targets[:, 2] if targets.shape[1] > 2 else None
        result: dict[str, Any] = {"neg_error": -float(np.mean(outputs[truth == 0]))}
        if truth.any():
            result.update(detection_metrics(scores, scores > 1.0, truth, groups))
            baseline = targets[:, 1]
            # The baseline flags at 3 standard deviations, the usual rule.
            for key, value in detection_metrics(baseline, baseline > 3.0, truth, groups).items():
                result[f"zscore_{key}"] = value
        result["flagged"] = int((scores > 1.0).sum())
        result["windows"] = len(scores)
        return result

    def loss(self, label_smoothing: float = 0.0) -> Any:
        import torch

        class MeanError(torch.nn.Module):
            """The network's output is its reconstruction error: training lowers it."""

            def forward(self, errors: Any, targets: Any) -> Any:
                return errors.mean()

        return MeanError()
