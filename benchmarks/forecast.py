"""Forecasting real series: sampan's patch-mixer against the seasonal-naive baseline.

One command, fixed seed, the same chronological split for both (first 70% of the time axis
trains, next 15% validates, last 15% tests): the table reports the test segment, which
training never saw. Data (read from installed packages, not redistributed):

- electricity: England and Wales half-hourly demand, 2000 (pmdarima), window one week (336),
  horizon one day (48), season 48;
- co2: Mauna Loa weekly CO2 (statsmodels), window two years (104), horizon a quarter (13),
  season 52; 59 missing weeks exercise the gap handling.

    pip install -e '.[bench]'
    python benchmarks/forecast.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

RUNS = {
    "electricity": {"window": 336, "horizon": 48},
    "co2": {"window": 104, "horizon": 13},
}


def main() -> None:
    import sampan
    from sampan.data.series import export_series
    from sampan.store import Store

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "home")
        for name, options in RUNS.items():
            path = export_series(name, Path(tmp) / "data")
            started = time.perf_counter()
            result = sampan.train(
                data=str(path),
                name=name,
                task="ts-forecast",
                device="cpu",
                quiet=True,
                store=store,
                seed=0,
                **options,
            )
            seconds = time.perf_counter() - started
            report = sampan.evaluate(result.package.ref, path, store=store, backend="torch")
            m = report.metrics
            rows.append((name, m, report.num_samples, result.best_epoch, seconds))
    print(
        f"{'series':12} {'windows':>7} {'MASE':>7} {'naive':>7} {'ratio':>6} "
        f"{'MAE':>9} {'naive MAE':>9} {'sMAPE %':>8} {'naive':>7} {'epochs':>6} {'s':>5}"
    )
    for name, m, count, epoch, seconds in rows:
        print(
            f"{name:12} {count:7d} {m['mase']:7.3f} {m['seasonal_naive_mase']:7.3f} "
            f"{m['mase'] / m['seasonal_naive_mase']:6.3f} {m['mae']:9.3f} "
            f"{m['seasonal_naive_mae']:9.3f} {m['smape']:8.3f} {m['seasonal_naive_smape']:7.3f} "
            f"{epoch:6d} {seconds:5.0f}"
        )


if __name__ == "__main__":
    main()
