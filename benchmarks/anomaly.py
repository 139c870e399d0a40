"""Anomaly detection on a real series with documented injected anomalies, beside a rolling
z-score baseline: same file, same chronological split, same seed.

The series is England and Wales half-hourly electricity demand (pmdarima); 16 anomalies
(4 each of spike, level shift, drift, frozen sensor; sampan/data/anomalies.py) go into the
last 30% of it, so training sees normal readings only. Both detectors (the autoencoder and
the forecasting residual) are scored on the test segment per window (its newest reading)
and per event; the z-score flags at 3 standard deviations of the same window.

    pip install -e '.[bench]'
    python benchmarks/anomaly.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

KEYS = ("precision", "recall", "f1", "event_recall", "roc_auc", "pr_auc")


def main() -> None:
    import pandas as pd

    import sampan
    from sampan.data.anomalies import inject_anomalies
    from sampan.data.series import export_series
    from sampan.store import Store

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "home")
        clean = export_series("electricity", Path(tmp))
        path = Path(tmp) / "electricity-anomalies.csv"
        inject_anomalies(pd.read_csv(clean), ["demand_mw"], seed=0).to_csv(path, index=False)
        for arch in ("mlp_autoencoder", "mlp_residual"):
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
            report = sampan.evaluate(result.package.ref, path, store=store, backend="torch")
            rows[arch] = {k: report.metrics[k] for k in KEYS}
            rows["rolling z-score (3 sd)"] = {k: report.metrics[f"zscore_{k}"] for k in KEYS}
            windows = report.num_samples
    print(f"electricity with 16 injected anomalies, window 336, test segment: {windows} windows")
    print(f"{'detector':24}" + "".join(f"{k:>13}" for k in KEYS))
    for name, values in rows.items():
        print(f"{name:24}" + "".join(f"{values[k]:13.3f}" for k in KEYS))


if __name__ == "__main__":
    main()
