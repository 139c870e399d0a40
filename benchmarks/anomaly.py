"""Anomaly detection on a real series with documented injected anomalies, beside a rolling
z-score baseline: same file, same chronological split, same seed.

The series is England and Wales half-hourly electricity demand (pmdarima); 16 anomalies
(4 each of spike, level shift, drift, frozen sensor; sampan/data/anomalies.py) go into the
last 30% of it, so training sees normal readings only. The three detectors (the MLP and
convolutional autoencoders, the forecasting residual) are scored on the test segment per
window (its newest reading) and per event; the z-score flags at 3 standard deviations of the
same window. Each detector's training time (seconds, CPU) is printed beside it.

    pip install -e '.[bench]'
    python benchmarks/anomaly.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

KEYS = ("precision", "recall", "f1", "event_recall", "roc_auc", "pr_auc")
DETECTORS = ("mlp_autoencoder", "conv_autoencoder", "mlp_residual")
ZSCORE = "rolling z-score (3 sd)"


def main() -> None:
    import pandas as pd

    import sampan
    from sampan.data.anomalies import inject_anomalies
    from sampan.data.series import export_series
    from sampan.store import Store

    rows: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "home")
        clean = export_series("electricity", Path(tmp))
        path = Path(tmp) / "electricity-anomalies.csv"
        inject_anomalies(pd.read_csv(clean), ["demand_mw"], seed=0).to_csv(path, index=False)
        for arch in DETECTORS:
            start = time.perf_counter()
            result = sampan.train(
                data=str(path),
                name=arch.replace("_", "-"),
                task="ts-anomaly",
                arch=arch,
                window=336,
                device="cpu",
                quiet=True,
                store=store,
                seed=0,
            )
            seconds[arch] = time.perf_counter() - start
            report = sampan.evaluate(result.package.ref, path, store=store, backend="torch")
            rows[arch] = {k: report.metrics[k] for k in KEYS}
            windows = report.num_samples
        # the baseline reads the same windows whichever detector's report holds it
        rows[ZSCORE] = {k: report.metrics[f"zscore_{k}"] for k in KEYS}
    print(f"electricity with 16 injected anomalies, window 336, test segment: {windows} windows")
    print(f"{'detector':24}" + "".join(f"{k:>13}" for k in KEYS) + f"{'train s':>10}")
    for name, values in rows.items():
        took = f"{seconds[name]:10.1f}" if name in seconds else f"{'-':>10}"
        print(f"{name:24}" + "".join(f"{values[k]:13.3f}" for k in KEYS) + took)


if __name__ == "__main__":
    main()
