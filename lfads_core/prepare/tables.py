"""Plain inputs: spike times in an .npz or a CSV file, trials in a CSV file."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .source import Source, Table, checked_series, parse_column, spikes_by_unit


def _read_csv(path: Path, what: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header and columns of a CSV file (comma-separated, one header row)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise DataError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{what} {path}: not a CSV text file ({exc})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError(f"{what} {path}: empty (expected a header row, then one row per line)")
    header = [h.strip() for h in rows[0]]
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{what} {path}: line {i} has {len(row)} cells, the header {len(header)}")
    return header, {h: [row[j] for row in rows[1:]] for j, h in enumerate(header)}


def read_trials_csv(path: Path) -> Table:
    """A trials table: one row per trial, columns such as start_time, stop_time (seconds)."""
    header, cols = _read_csv(path, "--trials")
    if not next(iter(cols.values()), []):
        raise DataError(f"--trials {path}: no trials (only a header row)")
    return Table(str(path), {h: parse_column(cols[h]) for h in header})


def read_spikes_csv(path: Path) -> Source:
    """Spikes as rows ``unit,time`` (time in seconds; other columns are ignored)."""
    header, cols = _read_csv(path, "IN")
    missing = [c for c in ("unit", "time") if c not in cols]
    if missing:
        raise DataError(f"{path}: no column {' or '.join(repr(m) for m in missing)} (expected "
                        f"columns unit,time; found: {', '.join(header)})")
    units, times = parse_column(cols["unit"]), parse_column(cols["time"])
    if times.dtype.kind not in "iuf":
        raise DataError(f"{path}: column 'time' must hold numbers (seconds)")
    ids, spikes = spikes_by_unit(path, times, units)
    return Source(path, "csv", ids, spikes)


def read_npz(path: Path, series: list[str]) -> Source:
    """Spikes from arrays ``spike_times`` (seconds) and ``unit_ids`` (one per spike); ``units``
    (optional) lists every unit, silent ones too; a signal NAME is the arrays ``NAME`` ([S] or
    [S, K]) and ``NAME_times`` ([S], seconds)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc})") from None
    missing = [k for k in ("spike_times", "unit_ids") if k not in arrays]
    if missing:
        raise DataError(f"{path}: no array {' or '.join(repr(m) for m in missing)} (expected "
                        f"spike_times and unit_ids; found: {', '.join(arrays) or 'none'})")
    ids, spikes = spikes_by_unit(path, arrays["spike_times"], arrays["unit_ids"], arrays.get("units"))
    source = Source(path, "npz", ids, spikes)
    for name in series:
        if name not in arrays or f"{name}_times" not in arrays:
            raise DataError(f"--behavior-series {name}: needs the arrays '{name}' and '{name}_times' "
                            f"in {path} (found: {', '.join(arrays)})")
        source.series[name] = checked_series(f"--behavior-series {name}", arrays[f"{name}_times"],
                                             arrays[name])
    return source

