"""Documented synthetic anomalies injected into real series, for when no labelled anomaly set
ships with an installable package (none did: see the README).

Four kinds, as sensors fail on production lines, each scaled by the channel's spread:
- spike: one reading 6 spreads off;
- level shift: 24 readings moved by 3 spreads (a recalibrated or knocked sensor);
- drift: 48 readings ramping away to 4 spreads (a fouling or ageing sensor);
- frozen: 24 readings stuck at the first one's value (a hung transmitter).

They go into the last 30% of the time axis only (validation and test segments), so the
training segment stays normal, as unsupervised detectors assume. Labels mark every step an
anomaly touches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sampan.errors import ConfigError

KINDS = ("spike", "level_shift", "drift", "frozen")
LENGTHS = {"spike": 1, "level_shift": 24, "drift": 48, "frozen": 24}


def inject_anomalies(
    frame: Any, columns: list[str], seed: int = 0, per_kind: int = 4, start: float = 0.7
) -> Any:
    """A copy of frame with anomalies in its value columns and a 0/1 `label` column."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    total = len(out)
    labels = np.zeros(total, dtype=np.int64)
    first = int(total * start) + 50
    slots = [(kind, n) for kind in KINDS for n in range(per_kind)]
    rng.shuffle(slots)
    gap = (total - first) // (len(slots) + 1)
    if gap < max(LENGTHS.values()) + 4:
        raise ConfigError(
            f"{len(slots)} anomalies do not fit apart in the last {total - first} readings; "
            "inject fewer (per_kind) or use a longer series."
        )
    for index, (kind, _) in enumerate(slots):
        length = LENGTHS[kind]
        # apart: each one ends at least 2 readings before the next slot begins
        begin = first + index * gap + int(rng.integers(0, gap - length - 1))
        end = min(begin + length, total)
        column = columns[int(rng.integers(0, len(columns)))]
        values = out[column].to_numpy(dtype=np.float64, copy=True)
        spread = float(np.nanstd(values[: int(total * start)])) or 1.0
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if kind == "spike":
            values[begin] += sign * 6 * spread
        elif kind == "level_shift":
            values[begin:end] += sign * 3 * spread
        elif kind == "drift":
            values[begin:end] += sign * np.linspace(0, 4 * spread, end - begin)
        else:
            values[begin:end] = values[begin]
        out[column] = values
        labels[begin:end] = 1
    out["label"] = labels
    return out
