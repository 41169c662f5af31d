"""``lfads-run prepare``: spike times and a trials table (NWB, .npz or CSV) to the LFADS input
HDF5 file: binned spike counts per trial, a seeded train/valid split, optional held-out neurons,
conditions and behaviour. docs/prepare.md describes the command and the file it writes.

Modules: :mod:`.events` (binning times into trials), :mod:`.nwb` (NWB reading), :mod:`.tables`
(.npz and CSV reading), :mod:`.source` (what every reader gives), :mod:`.split` (the split and
the held-out neurons), :mod:`.write` (the atomic write).
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError
from .events import bin_series, bin_spikes, bins_in
from .source import Source
from .split import choose_heldout, split_trials
from .write import write_prepared

FORMATS = {".nwb": "nwb", ".npz": "npz", ".csv": "csv"}


def _bin_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds > 0, got '{text}'") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds > 0, got '{text}'")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got '{text}'") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (exclusive), got '{text}'")
    return value


def _count(text: str) -> int:
    from ..hooks import nonnegative_int

    return nonnegative_int(text)


def _ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds, got '{text}'") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number of milliseconds, got '{text}'")
    return value


def configure(p: argparse.ArgumentParser) -> None:
    """The options of ``lfads-run prepare``."""
    p.description = ("Bin the spike times of a recording into trials and write the LFADS input "
                     "HDF5 file (docs/prepare.md). IN is an NWB file (units and trials tables; needs "
                     "pip install \"lfads-core[nwb]\"), an .npz with spike_times and unit_ids, or a "
                     "CSV with columns unit,time; the last two need --trials.")
    p.add_argument("input", metavar="IN", help="the recording: FILE.nwb, FILE.npz or FILE.csv")
    p.add_argument("--out", required=True, metavar="OUT.h5", help="the HDF5 file to write")
    p.add_argument("--bin-ms", required=True, type=_bin_ms, metavar="B", help="bin width in ms")
    p.add_argument("--align", default="start_time", metavar="COLUMN",
                   help="trials column (seconds) each trial is aligned to (default start_time)")
    p.add_argument("--window", nargs=2, type=_ms, metavar=("START_MS", "STOP_MS"),
                   help="bins from START_MS to STOP_MS relative to the alignment, the same for every "
                        "trial (e.g. --window -250 450); STOP_MS - START_MS must be a multiple of "
                        "--bin-ms. Without it, each trial runs from its alignment to its --stop column "
                        "(trials of different lengths, NaN past their end)")
    p.add_argument("--stop", metavar="COLUMN",
                   help="without --window: the trials column (seconds) where each trial ends "
                        "(default stop_time); a last partial bin is dropped")
    p.add_argument("--trials", metavar="TRIALS.csv",
                   help="trials table as CSV, one row per trial (columns start_time, stop_time in "
                        "seconds, or the --align/--stop columns; others for --cond and --behavior); "
                        "required for .npz and CSV input, replaces an NWB file's trials table")
    p.add_argument("--valid-fraction", type=_fraction, default=0.2, metavar="F",
                   help="share of the trials in the validation split (default 0.2; at least one "
                        "trial in each split)")
    p.add_argument("--cond", metavar="COLUMN",
                   help="trials column of condition labels: written as integer codes {split}_cond "
                        "(labels in cond_labels) and the split is stratified by it")
    p.add_argument("--heldout-neurons", type=_count, default=0, metavar="N",
                   help="hold out N units chosen at random with --seed: the last N channels of "
                        "*_recon_data, absent from *_encod_data (default 0)")
    p.add_argument("--seed", type=_count, default=0, metavar="S",
                   help="seed of the split and of the held-out choice, >= 0 (default 0)")
    p.add_argument("--behavior", nargs="+", metavar="COLUMN",
                   help="numeric trials columns written as {split}_behavior [trials, columns]")
    p.add_argument("--behavior-series", nargs="+", metavar="NAME",
                   help="sampled signals averaged in each bin, written as {split}_behavior_series "
                        "[trials, bins, channels]: an NWB TimeSeries (by name or path, e.g. "
                        "processing/behavior/Position/hand), or for .npz input the arrays NAME "
                        "([samples] or [samples, channels]) and NAME_times (seconds)")
    p.add_argument("--force", action="store_true", help="replace OUT.h5 if it exists")


@dataclass
class Prepared:
    """What was written, for the summary."""

    out: Path
    source: Source
    trials_origin: str
    n_train: int
    n_valid: int
    n_bins: int
    window: str
    n_ragged: int
    unit_ids: np.ndarray
    n_heldout: int
    mean_in: float
    mean_out: Optional[float]
    dropped: dict[str, int]
    cond_labels: Optional[np.ndarray] = None
    cond_column: Optional[str] = None
    behavior: list[str] = field(default_factory=list)
    series: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        n = self.n_train + self.n_valid
        lines = [f"wrote {self.out} from {self.source.path} ({self.source.fmt}; trials from "
                 f"{self.trials_origin})"]
        strat = (f"; stratified by {self.cond_column}: {len(self.cond_labels)} conditions"
                 if self.cond_labels is not None else "")
        lines.append(f"trials: {n} (train {self.n_train}, valid {self.n_valid}{strat})")
        if self.dropped:
            lines.append(f"dropped trials: {sum(self.dropped.values())} ("
                         + "; ".join(f"{k}: {v}" for k, v in self.dropped.items()) + ")")
        lines.append(f"bins: {self.n_bins} ({self.window})")
        lines.append(f"ragged trials: {self.n_ragged}" + (" (shorter than the longest: NaN in every "
                                                         "channel past their end)" if self.n_ragged else ""))
        n_units = len(self.unit_ids)
        lines.append(f"neurons: {n_units - self.n_heldout} held in, {self.n_heldout} held out")
        spikes = f"spikes per bin and neuron: mean {self.mean_in:.4g}"
        if self.mean_out is not None:
            spikes += f" held in, {self.mean_out:.4g} held out"
        lines.append(spikes)
        if self.behavior:
            lines.append(f"behavior: {', '.join(self.behavior)} (per trial)")
        if self.series:
            lines.append("behavior series: " + ", ".join(f"{k} ({v} ch)" for k, v in self.series.items()))
        return lines + [f"warning: {w}" for w in self.warnings]


def check_extent(spikes: list[np.ndarray], starts: np.ndarray, n_bins: np.ndarray, bin_ms: float,
                 src_path: Path, trials_origin: str) -> list[str]:
    """Before binning: trial and spike times must plausibly share units and clock. An array too
    big for the free memory (trial times in ms read as seconds) and no spike in any trial are
    errors; most trials without a spike, or few spikes in the trials' time range, are warnings."""
    bin_s = bin_ms / 1000.0
    times = np.sort(np.concatenate([np.asarray(s, dtype=np.float64) for s in spikes]))
    if times.size == 0:
        raise DataError(f"{src_path}: its {len(spikes)} units have no spikes at all")
    ends = starts + n_bins * bin_s
    span = (f"spike times {times[0]:g} to {times[-1]:g} s, trials {starts.min():g} to {ends.max():g} s "
            f"in {trials_origin}")
    n, t_max = len(starts), int(n_bins.max())
    size = n * t_max * len(spikes) * 4
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this system: no check
        free = None
    if free and size > free // 2:
        raise DataError(f"{trials_origin}: the longest trial is {t_max * bin_s:g} s, {t_max} bins of "
                        f"{bin_ms:g} ms: [{n} trials, {t_max} bins, {len(spikes)} units] of counts take "
                        f"{size / 2**30:.1f} GiB, more than half the free memory; are the trial times "
                        f"in seconds? ({span})")
    per_trial = np.searchsorted(times, ends, side="left") - np.searchsorted(times, starts, side="left")
    if per_trial.sum() == 0:
        raise DataError(f"{src_path}: no spike falls in any trial ({span}); spike and trial times "
                        f"must both be in seconds, on the same clock")
    warnings = []
    outside = int(((ends <= times[0]) | (starts >= times[-1])).sum())
    if outside:
        warnings.append(f"{outside} of {n} trials lie wholly outside the recorded spikes ({span}); "
                        f"they are written without any spike")
    empty = int((per_trial == 0).sum())
    if empty > n / 2:
        warnings.append(f"{empty} of {n} trials hold no spike of any unit ({span}); are spike and "
                        f"trial times both in seconds, on the same clock?")
    inside = np.searchsorted(times, ends.max(), side="left") - np.searchsorted(times, starts.min(), side="left")
    if inside < 0.01 * len(times):
        warnings.append(f"only {100 * inside / len(times):.2g} % of the spikes lie in the trials' time "
                        f"range ({span}); are both in seconds?")
    return warnings


def command(args: argparse.Namespace) -> None:
    """The ``lfads-run prepare`` handler: prepare, then print the summary."""
    for line in prepare(args).summary():
        print(line)


def _read(path: Path, series: list[str]) -> Source:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown kind of file '{path.suffix}' (expected .nwb, .npz or .csv)")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if fmt == "nwb":
        from .nwb import read_nwb

        return read_nwb(path, series)
    from .tables import read_npz, read_spikes_csv

    if fmt == "csv" and series:
        raise DataError("--behavior-series: CSV spike input has no signals (use .npz or NWB input)")
    return read_npz(path, series) if fmt == "npz" else read_spikes_csv(path)


def _command_line(args: argparse.Namespace) -> str:
    """The command that gives this file again, every option spelt out."""
    words = ["lfads-run", "prepare", str(args.input), "--out", str(args.out), "--bin-ms", f"{args.bin_ms:g}",
             "--align", args.align]
    if args.window:
        words += ["--window", *(f"{w:g}" for w in args.window)]
    else:
        words += ["--stop", args.stop or "stop_time"]
    if args.trials:
        words += ["--trials", str(args.trials)]
    words += ["--valid-fraction", f"{args.valid_fraction:g}", "--seed", str(args.seed),
              "--heldout-neurons", str(args.heldout_neurons)]
    if args.cond:
        words += ["--cond", args.cond]
    if args.behavior:
        words += ["--behavior", *args.behavior]
    if args.behavior_series:
        words += ["--behavior-series", *args.behavior_series]
    return shlex.join(words)


def _empty(values: np.ndarray) -> np.ndarray:
    """Cells without a value: NaN numbers, empty text."""
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind == "U":
        return values == ""
    return np.zeros(len(values), dtype=bool)


def _codes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes 0..K-1 of labels (sorted), and the labels by code."""
    names, codes = np.unique(labels, return_inverse=True)
    return codes.astype(np.int64), names


def prepare(args: argparse.Namespace) -> Prepared:
    """Read, bin, split and write; the options are those of :func:`configure`."""
    src_path, out = Path(args.input), Path(args.out)
    bin_ms = float(args.bin_ms)
    bin_s = bin_ms / 1000.0
    if args.window:
        w0, w1 = args.window
        if w1 <= w0:
            raise DataError(f"--window {w0:g} {w1:g}: empty (STOP_MS must be greater than START_MS)")
        n_win = (w1 - w0) / bin_ms
        if abs(n_win - round(n_win)) > 1e-6:
            raise DataError(f"--window {w0:g} {w1:g}: {w1 - w0:g} ms is not a whole number of "
                            f"--bin-ms {bin_ms:g} bins ({n_win:.3g}); make STOP_MS - START_MS a "
                            f"multiple of the bin")
        if args.stop:
            raise DataError("--stop: only without --window (the window sets where trials end)")
    if out.exists() and not args.force:
        raise DataError(f"--out {out}: exists (add --force to replace it)")
    if out.exists() and src_path.exists() and out.resolve() == src_path.resolve():
        raise DataError(f"--out {out}: is the input file")
    if out.exists() and args.trials and Path(args.trials).exists() and out.resolve() == Path(args.trials).resolve():
        raise DataError(f"--out {out}: is the --trials file")

    series_names = list(args.behavior_series or [])
    source = _read(src_path, series_names)
    if len(source.unit_ids) == 0:
        raise DataError(f"{src_path}: no units (no spikes)")
    if args.trials:
        from .tables import read_trials_csv

        table, trials_origin = read_trials_csv(Path(args.trials)), str(args.trials)
    elif source.trials is not None:
        table, trials_origin = source.trials, "its trials table"
    elif source.fmt == "nwb":
        raise DataError(f"{src_path}: the NWB file has no trials table (give one with --trials "
                        f"TRIALS.csv)")
    else:
        raise DataError(f"--trials: required for .{source.fmt} input (a CSV file with columns "
                        f"start_time, stop_time in seconds, one row per trial)")
    if table.n_rows == 0:
        raise DataError(f"{table.origin}: no trials")

    # Trials: alignment, extent, labels; trials that cannot be used are dropped.
    align = table.column(args.align, "--align", numeric=True).astype(np.float64)
    keep = np.ones(table.n_rows, dtype=bool)
    dropped: dict[str, int] = {}

    def drop(mask: np.ndarray, reason: str) -> None:
        new = mask & keep
        if new.any():
            dropped[reason] = dropped.get(reason, 0) + int(new.sum())
            keep[new] = False

    drop(~np.isfinite(align), f"no {args.align} (NaN)")
    if args.window:
        starts = align + w0 / 1000.0
        n_bins = np.full(table.n_rows, int(round(n_win)), dtype=np.int64)
        window = f"{w0:g} to {w1:g} ms around {args.align}, {bin_ms:g} ms each"
    else:
        stop_col = args.stop or "stop_time"
        hint = "" if args.stop else "; without --window each trial ends at its --stop column"
        stop = table.column(stop_col, "--stop", numeric=True, hint=hint).astype(np.float64)
        drop(~np.isfinite(stop), f"no {stop_col} (NaN)")
        starts = align
        n_bins = bins_in(stop - align, bin_s)
        drop(n_bins < 1, f"shorter than one bin from {args.align} to {stop_col}")
        window = f"from {args.align} to {stop_col}, {bin_ms:g} ms each; a last partial bin dropped"
    codes = cond_labels = None
    if args.cond:
        labels = table.column(args.cond, "--cond")
        drop(_empty(labels), f"no {args.cond} (empty)")
    behavior = None
    if args.behavior:
        behavior = np.stack([table.column(c, "--behavior", numeric=True).astype(np.float64)
                             for c in args.behavior], axis=1)
    if not keep.any():
        raise DataError(f"no trials left of {table.n_rows} in {table.origin}: "
                        + "; ".join(f"{k}: {v}" for k, v in dropped.items()))
    rows = np.flatnonzero(keep)
    if len(rows) < 2:
        raise DataError(f"only one trial left of {table.n_rows} in {table.origin} (a train and a valid "
                        f"split need two or more)" + (": dropped " + "; ".join(
                            f"{k}: {v}" for k, v in dropped.items()) if dropped else ""))
    starts, n_bins = starts[rows], n_bins[rows]
    if args.cond:
        codes, cond_labels = _codes(labels[rows])

    # Channels: held-in units in file order, then the held-out ones.
    n_units = len(source.unit_ids)
    if args.heldout_neurons >= n_units:
        raise DataError(f"--heldout-neurons {args.heldout_neurons}: must be fewer than the {n_units} "
                        f"units of {src_path} (at least one held in)")
    out_pos = choose_heldout(n_units, args.heldout_neurons, args.seed)
    order = np.concatenate([np.setdiff1d(np.arange(n_units), out_pos), out_pos])
    unit_ids = source.unit_ids[order]
    n_in = n_units - len(out_pos)

    warnings = check_extent(source.spikes, starts, n_bins, bin_ms, src_path, trials_origin)
    counts = bin_spikes([source.spikes[i] for i in order], starts, n_bins, bin_s)
    series = {}
    for name in series_names:
        t, v = source.series[name]
        series[name] = bin_series(t, v, starts, n_bins, bin_s)

    train, valid = split_trials(len(rows), args.valid_fraction, args.seed, codes)
    arrays: dict[str, np.ndarray] = {}
    for split, pos in (("train", train), ("valid", valid)):
        recon = counts[pos]
        arrays[f"{split}_encod_data"] = recon[:, :, :n_in]
        arrays[f"{split}_recon_data"] = recon
        arrays[f"{split}_inds"] = rows[pos].astype(np.int64)
        if codes is not None:
            arrays[f"{split}_cond"] = codes[pos]
        if behavior is not None:
            arrays[f"{split}_behavior"] = behavior[rows[pos]]
        if series:
            arrays[f"{split}_behavior_series"] = np.concatenate([s[pos] for s in series.values()], axis=2)
    arrays["unit_ids"] = unit_ids.astype(np.int64)
    arrays["heldout_units"] = unit_ids[n_in:].astype(np.int64)
    if cond_labels is not None:
        arrays["cond_labels"] = cond_labels

    from .. import __version__

    attrs = {
        "bin_size_ms": bin_ms,
        "source": str(src_path.resolve()),
        "source_format": source.fmt,
        "trials_source": str(Path(args.trials).resolve()) if args.trials else f"{source.fmt} trials table",
        "align": args.align,
        "window_ms": np.array([w0, w1], dtype=np.float64) if args.window else None,
        "stop_column": None if args.window else (args.stop or "stop_time"),
        "window": window,
        "seed": int(args.seed),
        "valid_fraction": float(args.valid_fraction),
        "n_heldout": int(len(out_pos)),
        "cond_column": args.cond,
        "behavior_columns": list(args.behavior) if args.behavior else None,
        "behavior_series": series_names or None,
        "behavior_series_channels": (np.array([s.shape[2] for s in series.values()], dtype=np.int64)
                                     if series else None),
        "n_trials_dropped": int(sum(dropped.values())),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lfads_core_version": __version__,
        "command": _command_line(args),
    }
    write_prepared(out, arrays, attrs)

    with np.errstate(invalid="ignore"):
        mean_in = float(np.nanmean(counts[:, :, :n_in]))
        mean_out = float(np.nanmean(counts[:, :, n_in:])) if len(out_pos) else None
    return Prepared(out=out, source=source, trials_origin=trials_origin, n_train=len(train),
                    n_valid=len(valid), n_bins=counts.shape[1], window=window,
                    n_ragged=int((n_bins < counts.shape[1]).sum()), unit_ids=unit_ids,
                    n_heldout=len(out_pos), mean_in=mean_in, mean_out=mean_out, dropped=dropped,
                    cond_labels=cond_labels, cond_column=args.cond, behavior=list(args.behavior or []),
                    series={k: v.shape[2] for k, v in series.items()}, warnings=warnings)
