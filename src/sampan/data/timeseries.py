"""Sensor time series from CSV or Parquet: one timestamp column, one or more value columns,
optionally a series id column (several machines or sensors in one file).

What happens to imperfect data (the README says the same):

- timestamps must increase strictly: a duplicated or out-of-order timestamp is an error that
  names the row, never silently sorted or averaged;
- the sampling interval is the median step; the series is put on that regular grid, and a gap
  (missing rows, or empty/NaN readings) of at most `max_gap` steps is filled by linear
  interpolation between its neighbours; longer gaps stay missing, and any window that would
  touch one is left out (counted), never filled with invented readings;
- the split is chronological: the first 70% of the time axis trains, the next 15% validates,
  the last 15% is the test segment; a window belongs to the segment its forecast falls in;
- with a series id column, each series is all of the above on its own: its own grid, its own
  windows (none crosses from one series into another) and its own 70/15/15 cut, so every
  series is in every segment; every series must be sampled at the same interval (within 1%:
  loggers jitter). Series ids are kept as the file writes them ("007" is not "7").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sampan.errors import DataError

SPLITS = (0.70, 0.15)  # train, validation; the rest is the test segment
# A season per sampling interval, for seasonal-naive baselines when none is given.
SEASONS = {1800: 48, 3600: 24, 900: 96, 600: 144, 300: 288, 60: 1440, 86400: 7, 604800: 52}
# Column names taken as the series id when none is named (and only one such column holds text).
SERIES_COLUMNS = ("series", "series_id", "entity", "entity_id", "machine", "sensor", "unit")
STEP_TOLERANCE = 0.01  # series whose median steps differ by this (relative) share one interval


@dataclass
class Series:
    """A regular series: values (T, C) float32 with NaN where a long gap stays missing."""

    values: np.ndarray
    start: Any  # the first timestamp (pandas Timestamp) or None for a plain index
    step_seconds: float | None
    columns: list[str]
    filled: int  # readings filled by interpolation
    missing: int  # readings left missing (long gaps)
    source: str


def read_table(path: Path) -> Any:
    """A pandas DataFrame from a .csv or .parquet file, with a clear error for anything else."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path} does not exist; give a .csv or .parquet file.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"{path}: time series must be .csv (with a header) or .parquet.")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} could not be read: {str(exc).splitlines()[0]}") from None
    if len(frame) == 0:
        raise DataError(f"{path} holds no readings: a header and no rows.")
    return frame


def ids_as_written(frame: Any, column: str | None, path: str | Path) -> Any:
    """The frame with its series id column as the CSV file writes it: parsing reads "007" as
    7 (merging it with "7"), so the column is read again as text. Parquet keeps its types;
    a frame without that column, or without a CSV file behind it, is returned as it is."""
    import pandas as pd

    path = Path(path)
    if column is None or column not in frame.columns or path.suffix.lower() != ".csv":
        return frame
    if not path.is_file():
        return frame
    try:
        text = pd.read_csv(path, usecols=[column], dtype=str)[column]
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} could not be read: {str(exc).splitlines()[0]}") from None
    if len(text) != len(frame):  # never seen: the same file read twice
        raise DataError(f"{path} changed while it was read; read it again.")
    frame = frame.copy()
    frame[column] = text.to_numpy(dtype=object)
    return frame


def time_column(frame: Any, wanted: str | None) -> str | None:
    """The timestamp column: the one named, else one called timestamp/time/date/datetime."""
    if wanted is not None:
        if wanted not in frame.columns:
            raise DataError(
                f"No column {wanted!r} (the file has: {', '.join(map(str, frame.columns))})."
            )
        return wanted
    for name in frame.columns:
        if str(name).lower() in ("timestamp", "time", "date", "datetime", "ds"):
            return str(name)
    for name in frame.columns:  # "Time (UTC)", "reading_date", ...
        lowered = str(name).lower()
        if ("time" in lowered or "date" in lowered) and not _numeric(frame[name]):
            return str(name)
    return None


def _numeric(column: Any) -> bool:
    """A column of numbers, a stray unreadable cell or two aside ("ERR" from a logger)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column):
        return True
    present = column.dropna()
    parsed = pd.to_numeric(present, errors="coerce")
    return len(present) > 0 and parsed.notna().mean() >= 0.9


def value_columns(frame: Any, time: str | None, exclude: tuple[str, ...] = ()) -> list[str]:
    """Every numeric column but the timestamp and the excluded ones (ids, labels)."""

    names = [str(c) for c in frame.columns if c != time and c not in exclude and _numeric(frame[c])]
    if not names:
        raise DataError(
            f"The file has no numeric value column (columns: {', '.join(map(str, frame.columns))})."
        )
    return names


class SeriesWindow(NamedTuple):
    """One decoded window of a model trained per series: readings (W, C) float32 in their own
    units, and the id of the series they come from (its statistics are looked up in collate)."""

    values: np.ndarray
    series: str


def series_column(frame: Any, wanted: str | None, exclude: tuple[str, ...] = ()) -> str | None:
    """The series id column: the one named, else the one column called series, series_id,
    entity, entity_id, machine, sensor or unit that holds text (numbers may be readings) with
    at least two ids; None when there is none."""
    if wanted is not None:
        if wanted not in frame.columns:
            raise DataError(
                f"No column {wanted!r} (the file has: {', '.join(map(str, frame.columns))})."
            )
        return wanted
    found = [
        str(c)
        for c in frame.columns
        if str(c).lower() in SERIES_COLUMNS
        and c not in exclude
        and not _numeric(frame[c])
        and frame[c].nunique() > 1
    ]
    if len(found) > 1:
        raise DataError(
            f"Columns {', '.join(found)} could each be the series id; name one with "
            "--series-column."
        )
    return found[0] if found else None


def split_series(frame: Any, column: str | None, source: str) -> list[tuple[Any, Any, Any]]:
    """(series id, its rows, their lines in the file) per series, in order of first appearance;
    without a series column, (None, the frame, None). Ids are text ("3" for a numeric 3; read a
    CSV's ids with ids_as_written to keep "007")."""
    import pandas as pd

    if len(frame) == 0:
        raise DataError(f"{source} holds no readings: a header and no rows.")
    if column is None:
        return [(None, frame, None)]
    if column not in frame.columns:
        raise DataError(
            f"{source} lacks the series column {column!r} that the model reads "
            f"(the file has: {', '.join(map(str, frame.columns))}); rename it back."
        )
    ids = frame[column]
    if ids.dtype.kind == "f" and bool((ids.dropna() == ids.dropna().round()).all()):
        ids = ids.astype("Int64")  # 3.0 is series "3"
    ids = ids.astype(object).where(ids.notna(), "").astype(str).str.strip()
    blank = np.flatnonzero((ids == "").to_numpy())
    if len(blank):
        raise DataError(f"{source} row {blank[0] + 2}: no series id in column {column!r}.")
    lines = np.arange(len(frame)) + 2
    groups = ids.groupby(ids.to_numpy(), sort=False).indices
    return [(key, frame.iloc[groups[key]], lines[groups[key]]) for key in pd.unique(ids)]


def named(source: str, series: str | None) -> str:
    """How errors name one series of a file."""
    return source if series is None else f"{source} series {series!r}"


def sampling_step(frame: Any, time: str | None, column: str | None, source: str) -> float | None:
    """Seconds between readings (the median step), one for every series (their median, when
    they differ by less than STEP_TOLERANCE); None without a time column."""
    if time is None:
        return None
    hint = several_series_hint(frame, (time, column or ""))
    steps: dict[Any, float] = {}
    for key, part, rows in split_series(frame, column, source):
        steps[key] = timestamps(part, time, named(source, key), rows, hint)[1] / 1e9
    (first, a), *others = steps.items()
    for second, b in others:
        if not same_step(b, a):
            raise DataError(
                f"{source}: series {first!r} is sampled every {a:g} s and {second!r} every "
                f"{b:g} s; one model reads one interval. Resample them alike, or train them "
                "apart."
            )
    return float(np.median(list(steps.values())))


def same_step(step: float, expected: float) -> bool:
    """Whether a series sampled every `step` seconds is on the model's interval (1% apart at
    most: a logger's clock jitters)."""
    return abs(step - expected) <= STEP_TOLERANCE * expected


def several_series_hint(frame: Any, exclude: tuple[str, ...]) -> str:
    """For a repeated timestamp: the advice to name a series id column, when the file has one
    called series, machine, ... that is not in use (numeric ids are never guessed)."""
    found = [
        str(c)
        for c in frame.columns
        if str(c).lower() in SERIES_COLUMNS and c not in exclude and frame[c].nunique() > 1
    ]
    if not found:
        return ""
    named_column = found[0] if len(found) == 1 else f"one of {', '.join(found)}"
    return f"; it looks like several series in one file: pass --series-column {named_column}"


def readings(value: Any, columns: list[str], where: str) -> np.ndarray:
    """Readings as a request carries them, (N, columns) float32: numbers for one column, lists
    per reading for several, null for a missing one (NaN). `where` says where they came from
    in errors ("the window", "the request")."""
    try:
        array = np.array(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"The readings in {where} must be numbers (null for missing).") from None
    if array.ndim == 1 and len(columns) == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] != len(columns):
        raise DataError(
            f"Expected readings of {len(columns)} column(s) ({', '.join(columns)}) in {where}, "
            f"{len(columns)} value(s) each; got shape {list(array.shape)}."
        )
    return array


def check_series(contract: dict[str, Any], series: Any) -> str:
    """The id of a series the model was trained on, as text; a one-line DataError naming it
    and a few known ids when the model never saw it (or when none is given)."""
    known = contract.get("series") or {}
    listed = ", ".join(list(known)[:5]) + (", ..." if len(known) > 5 else "")
    if series is None or isinstance(series, bool) or not isinstance(series, (str, int, np.integer)):
        raise DataError(
            f"This model was trained per series (column {contract.get('series_column')!r}): "
            f'name each window\'s series, {{"series": ID, "window": [...]}}; it knows '
            f"{len(known)}: {listed}."
        )
    key = str(series).strip()  # 7 and numpy's 7 are series "7"
    if key not in known:
        raise DataError(
            f"Series {key!r} was not seen in training; this model knows {len(known)}: {listed}."
        )
    return key


def timestamps(
    frame: Any, time: str, source: str, rows: Any = None, hint: str = ""
) -> tuple[Any, int]:
    """(the time column parsed, the median step in ns); a clear error for a value that is not
    a time and for a repeated or backward timestamp (`hint` added to a repeat's). rows: each
    row's line in the file (for one series of several); default: the frame is the file."""
    import pandas as pd

    lines = np.arange(len(frame)) + 2 if rows is None else rows  # 1-based, after the header
    # utc=True: local times with a daylight-saving offset that changes are one timeline
    stamps = pd.to_datetime(frame[time], errors="coerce", utc=True)
    bad = np.flatnonzero(stamps.isna().to_numpy())
    if len(bad):
        raise DataError(
            f"{source} row {lines[bad[0]]}: {frame[time].iloc[bad[0]]!r} is not a time."
        )
    steps = np.diff(stamps.to_numpy()).astype("timedelta64[ns]").astype(np.int64)
    back = np.flatnonzero(steps <= 0)
    if len(back):
        row = lines[back[0] + 1]  # the row that repeats or goes back
        repeats = steps[back[0]] == 0
        raise DataError(
            f"{source} row {row}: timestamp {stamps.iloc[back[0] + 1]} "
            f"{'repeats' if repeats else 'goes back in time'} ({len(back)} such row(s)); "
            f"timestamps must increase strictly{hint if repeats else ''}."
        )
    if len(steps) == 0:
        raise DataError(f"{source} holds a single reading.")
    return stamps, int(np.median(steps))


def regular_series(
    frame: Any, time: str | None, columns: list[str], max_gap: int, source: str, rows: Any = None
) -> Series:
    """The frame's columns on a regular time grid, short gaps interpolated (see the module)."""
    import pandas as pd

    needed = ([time] if time is not None else []) + list(columns)
    missing_columns = [c for c in needed if c not in frame.columns]
    if missing_columns:
        raise DataError(
            f"{source} lacks column(s) {', '.join(missing_columns)} that the model reads "
            f"(the file has: {', '.join(map(str, frame.columns))}); rename them back."
        )
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    start, step = None, None
    if time is not None:
        stamps, step_ns = timestamps(frame, time, source, rows)
        # Each reading goes to its nearest grid point (a clock a few seconds off stays on its
        # own step); readings that meet on one point are averaged.
        offsets = (stamps - stamps.iloc[0]).to_numpy().astype("timedelta64[ns]").astype(np.int64)
        slot = np.rint(offsets / step_ns).astype(np.int64)
        values.index = slot
        values = values.groupby(level=0).mean().reindex(np.arange(slot[-1] + 1))
        start, step = stamps.iloc[0], step_ns / 1e9
    before = int(values.isna().to_numpy().sum())
    filled_frame = values.interpolate(method="linear", limit_area="inside")
    # Every inside gap was filled; a gap longer than max_gap goes back to missing (a gap is
    # filled whole or not at all).
    array = values.to_numpy(dtype=np.float64)
    filled = filled_frame.to_numpy(dtype=np.float64, copy=True)
    for channel in range(array.shape[1]):
        isnan = np.isnan(array[:, channel])
        if not isnan.any():
            continue
        edges = np.diff(np.concatenate([[0], isnan.astype(np.int8), [0]]))
        for begin, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            if end - begin > max_gap:
                filled[begin:end, channel] = np.nan
    after = int(np.isnan(filled).sum())
    return Series(
        filled.astype(np.float32), start, step, list(columns), before - after, after, source
    )


def default_period(step_seconds: float | None) -> int:
    """A season for the sampling interval (a day of half-hours is 48; within 1%, as a jittery
    logger's median step), else 1 (last value)."""
    if step_seconds is None:
        return 1
    return next((n for step, n in SEASONS.items() if same_step(step_seconds, step)), 1)


def segment_bounds(length: int) -> tuple[int, int]:
    """Indices where validation and test begin on a series of `length` steps."""
    train_end = int(length * SPLITS[0])
    return train_end, int(length * (SPLITS[0] + SPLITS[1]))


def windows(
    values: np.ndarray, window: int, horizon: int, stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(inputs (N, window, C), futures (N, horizon, C), the index where each future starts,
    windows left out for a missing reading) over a series (T, C)."""
    total = len(values)
    if total < window + horizon:
        raise DataError(
            f"The series has {total} steps; a window of {window} plus a horizon of {horizon} "
            "needs at least that many. Use a shorter --window or more data."
        )
    starts = np.arange(0, total - window - horizon + 1, stride)
    view = np.lib.stride_tricks.sliding_window_view(values, window + horizon, axis=0)
    spans = view[starts].transpose(0, 2, 1)  # (N, window + horizon, C)
    usable = ~np.isnan(spans).any(axis=(1, 2))
    spans = spans[usable]
    return (
        np.ascontiguousarray(spans[:, :window]),
        np.ascontiguousarray(spans[:, window:]),
        starts[usable] + window,
        int((~usable).sum()),
    )
