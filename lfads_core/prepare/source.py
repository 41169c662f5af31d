"""What ``prepare`` reads from any input: units with spike times, a trials table, signals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError


@dataclass
class Table:
    """Columns of one value per trial, in the order of the rows (trials).

    ``columns`` maps a name to a 1-d array (numbers as float64 or int64, text as str); ``unusable``
    names columns that exist but hold no single value per trial (ragged or references).
    """

    origin: str  # how errors name it: "file.nwb (trials table)" or "trials.csv"
    columns: dict[str, np.ndarray]
    unusable: dict[str, str] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def names(self) -> str:
        return ", ".join(list(self.columns) + list(self.unusable)) or "none"

    def column(self, name: str, option: str, numeric: bool = False, hint: str = "") -> np.ndarray:
        """A column by name, or a one-line error naming the option and the columns there are
        (then ``hint``)."""
        if name in self.unusable:
            raise DataError(f"{option} {name}: column of {self.origin} {self.unusable[name]}, not "
                            f"one value per trial")
        if name not in self.columns:
            raise DataError(f"{option} {name}: no such column in {self.origin} (columns: "
                            f"{self.names()}){hint}")
        values = self.columns[name]
        if numeric and values.dtype.kind not in "biuf":
            raise DataError(f"{option} {name}: column of {self.origin} holds text, not numbers")
        return values


@dataclass
class Source:
    """Spike times of the units of a recording, and its trials table (None when it has none).

    ``spikes[i]`` holds the sorted spike times (seconds) of unit ``unit_ids[i]``; ``series`` maps a
    name to (times [S], values [S, K]) for the signals asked for with ``--behavior-series``.
    """

    path: Path
    fmt: str  # "nwb", "npz" or "csv"
    unit_ids: np.ndarray
    spikes: list[np.ndarray]
    trials: Optional[Table] = None
    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def parse_column(values: list[str]) -> np.ndarray:
    """Text cells to int64 when all are integers, else float64 (empty cells NaN) when all are
    numbers, else str."""
    cells = [v.strip() for v in values]
    try:
        return np.array([int(v) for v in cells], dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.array([float(v) if v else np.nan for v in cells], dtype=np.float64)
    except ValueError:
        return np.array(cells, dtype=str)


def as_column(data) -> Optional[np.ndarray]:
    """An array read from a file as a column: numbers as they are, bytes decoded to str; None when
    it is not one value per row (more dimensions, compound or object values)."""
    arr = np.asarray(data)
    if arr.ndim != 1:
        return None
    if arr.dtype.kind in "biuf":
        return arr.astype(np.int64) if arr.dtype.kind in "biu" else arr.astype(np.float64)
    if arr.dtype.kind in "SU" or (arr.dtype.kind == "O" and all(isinstance(v, (str, bytes)) for v in arr)):
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in arr], dtype=str)
    return None


def spikes_by_unit(path: Path, times: np.ndarray, units: np.ndarray,
                   all_units: Optional[np.ndarray] = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Group (time, unit) pairs by unit: (sorted unit ids, sorted times of each)."""
    times = np.asarray(times, dtype=np.float64).ravel()
    units = np.asarray(units).ravel()
    if times.shape != units.shape:
        raise DataError(f"{path}: {times.size} spike times but {units.size} unit ids (one per spike)")
    if units.dtype.kind not in "iuf" or (units.dtype.kind == "f" and not np.all(np.mod(units, 1) == 0)):
        raise DataError(f"{path}: unit ids must be integers, got {units.dtype} values")
    units = units.astype(np.int64)
    if not np.all(np.isfinite(times)):
        raise DataError(f"{path}: {int((~np.isfinite(times)).sum())} spike times are NaN or infinite")
    ids = np.unique(units)
    if all_units is not None:
        all_units = np.asarray(all_units).astype(np.int64).ravel()
        extra = np.setdiff1d(ids, all_units)
        if extra.size:
            raise DataError(f"{path}: unit ids {extra[:5].tolist()} have spikes but are not in 'units'")
        ids = np.unique(all_units)
    order = np.lexsort((times, units))
    times, units = times[order], units[order]
    bounds = np.searchsorted(units, ids, side="left"), np.searchsorted(units, ids, side="right")
    return ids, [times[a:b] for a, b in zip(*bounds)]


def checked_series(what: str, times, values) -> tuple[np.ndarray, np.ndarray]:
    """(times [S] sorted, values [S, K] float64) of a sampled signal."""
    times = np.asarray(times, dtype=np.float64).ravel()
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise DataError(f"{what}: its values are not numbers")
    values = values.reshape(len(values), -1).astype(np.float64) if values.ndim else values.reshape(1, 1)
    if len(values) != len(times):
        raise DataError(f"{what}: {len(values)} samples but {len(times)} times")
    order = np.argsort(times, kind="stable")
    return times[order], values[order]
