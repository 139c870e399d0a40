"""Real time series that installed packages ship, written as sampan-ready CSVs (timestamp +
value columns). Sampan does not redistribute them: they are read from your installed copy.

- electricity: half-hourly electricity demand (MW) of England and Wales, 5 June - 27 August
  2000 (Taylor 2003), 4,032 readings, daily (48) and weekly (336) seasons; shipped by pmdarima
  (MIT) without timestamps, which are rebuilt from the documented start.
- co2: weekly atmospheric CO2 at Mauna Loa (ppm) from March 1958, 2,284 weeks of which 59 are
  missing (gap handling at work); NOAA, public domain; shipped by statsmodels (BSD-3).
"""

from __future__ import annotations

from pathlib import Path

from sampan.errors import ConfigError

SOURCES = {
    "electricity": "Taylor (2003) England and Wales half-hourly demand, via pmdarima (MIT)",
    "co2": "NOAA Mauna Loa weekly CO2 (public domain), via statsmodels (BSD-3)",
}


def export_series(name: str, target: Path) -> Path:
    """Write target/<name>.csv from the installed package that ships it."""
    import pandas as pd

    if name not in SOURCES:
        raise ConfigError(f"Unknown series {name!r}; choose from {', '.join(SOURCES)}.")
    try:
        if name == "electricity":
            from pmdarima.datasets import load_taylor

            values = load_taylor(as_series=False)
            stamps = pd.date_range("2000-06-05", periods=len(values), freq="30min")
            frame = pd.DataFrame({"timestamp": stamps, "demand_mw": values})
        else:
            import statsmodels.api as sm

            data = sm.datasets.co2.load_pandas().data
            frame = pd.DataFrame({"timestamp": data.index, "co2_ppm": data["co2"].to_numpy()})
            frame = frame.dropna()  # missing weeks become missing rows: the grid restores them
    except ImportError as exc:
        package = "pmdarima" if name == "electricity" else "statsmodels"
        raise ConfigError(f"{name} ships with {package}: pip install {package}.") from exc
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path
