"""NWB input (pynwb, the optional extra ``lfads-core[nwb]``): the units table's spike times, the
trials table, and sampled signals (TimeSeries) for ``--behavior-series``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError
from .source import Source, Table, as_column, checked_series


def _pynwb():
    try:
        import pynwb
    except ImportError:
        raise DataError('reading NWB files needs pynwb, which is not installed: pip install '
                        '"lfads-core[nwb]"') from None
    return pynwb


def read_nwb(path: Path, series: list[str]) -> Source:
    """Units (ids and spike times), the trials table (None when the file has none) and the
    signals named in ``series``."""
    pynwb = _pynwb()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pynwb warns about namespaces and file versions
            io = pynwb.NWBHDF5IO(str(path), "r")
            nwb = io.read()
    except Exception as exc:  # noqa: BLE001 - h5py, hdmf and pynwb raise many kinds
        raise DataError(f"{path}: cannot read as an NWB file ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    try:
        return _read(pynwb, nwb, path, series)
    finally:
        io.close()


def _read(pynwb, nwb, path: Path, series: list[str]) -> Source:
    units = nwb.units
    if units is None or "spike_times" not in units.colnames:
        raise DataError(f"{path}: the NWB file has no units table with spike_times (sorted "
                        f"spikes); prepare needs one")
    ids = np.asarray(units.id[:], dtype=np.int64)
    ends = np.asarray(units.spike_times_index.data[:], dtype=np.int64)
    times = np.asarray(units.spike_times.data[:], dtype=np.float64)
    if not np.all(np.isfinite(times)):
        raise DataError(f"{path}: the units table's spike_times hold NaN or infinite values")
    starts = np.concatenate([[0], ends[:-1]])
    spikes = [np.sort(times[a:b]) for a, b in zip(starts, ends)]
    source = Source(path, "nwb", ids, spikes, _trials(nwb, path))
    if series:
        found = _timeseries(pynwb, nwb)
        for name in series:
            hits = [p for p in found if p == name or p.endswith("/" + name)]
            if not hits:
                raise DataError(f"--behavior-series {name}: no such TimeSeries in {path} (there are: "
                                f"{', '.join(found) or 'none'})")
            if len(hits) > 1:
                raise DataError(f"--behavior-series {name}: several TimeSeries in {path} match "
                                f"({', '.join(hits)}); give the longer path")
            ts = found[hits[0]]
            values = np.asarray(ts.data[:])
            if ts.timestamps is not None:
                t = np.asarray(ts.timestamps[:], dtype=np.float64)
            else:
                t = float(ts.starting_time or 0.0) + np.arange(len(values)) / float(ts.rate)
            source.series[name] = checked_series(f"--behavior-series {name} ({hits[0]})", t, values)
    return source


def _trials(nwb, path: Path) -> Table | None:
    table = nwb.trials
    if table is None:
        return None
    columns, unusable = {}, {}
    for name in table.colnames:
        col = table[name]
        values = None if type(col).__name__ == "VectorIndex" else as_column(col.data[:])
        if values is None:
            unusable[name] = "has several values per trial (ragged) or references"
        else:
            columns[name] = values
    return Table(f"{path} (trials table)", columns, unusable)


def _timeseries(pynwb, nwb) -> dict:
    """Every TimeSeries of the file by path: acquisition/NAME, stimulus/NAME,
    processing/MODULE/.../NAME."""
    found = {}
    for obj in nwb.objects.values():
        if not isinstance(obj, pynwb.TimeSeries):
            continue
        parts, node = [], obj
        while node is not None and node is not nwb:
            parts.append(node.name)
            if isinstance(node, pynwb.ProcessingModule):
                parts.append("processing")
                break
            node = node.parent
        else:
            if parts[-1] in nwb.acquisition:
                parts.append("acquisition")
            elif parts[-1] in nwb.stimulus:
                parts.append("stimulus")
        found["/".join(reversed(parts))] = obj
    return dict(sorted(found.items()))
