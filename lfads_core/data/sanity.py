"""Data that would train silently but are probably not what the user meant: warnings, one line
each naming the file and key (``data.warn: false`` silences them)."""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from .h5 import Dataset

MAX_RATE_HZ = 500.0  # a neuron's mean rate above this: counts look like rates in Hz


def _lag1(x: np.ndarray, axis: int) -> float:
    """Mean correlation of neighbours along ``axis`` of a 2-D array (over the other axis)."""
    a = np.moveaxis(x, axis, 0)
    u, v = a[:-1], a[1:]
    u = u - u.mean(axis=0)
    v = v - v.mean(axis=0)
    den = np.sqrt((u ** 2).sum(axis=0) * (v ** 2).sum(axis=0))
    ok = den > 0
    return float(np.mean((u * v).sum(axis=0)[ok] / den[ok])) if ok.any() else 0.0


def swapped_axes(recon: np.ndarray) -> Optional[str]:
    """Time and channel axes probably swapped: more channels than bins, and the trial average
    varies smoothly across neighbouring "channels" but not across neighbouring "bins"."""
    n_trials, t, n = recon.shape
    if n <= t or t < 3:
        return None
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a bin NaN in every trial: "empty slice"
        psth = np.nanmean(recon, axis=0)  # [T, N]
    psth = np.nan_to_num(psth)
    along_time, along_channels = _lag1(psth, 0), _lag1(psth, 1)
    if along_channels > 0.5 and along_time < 0.2:
        return (f"has {n} channels and only {t} bins, and its trial average changes smoothly "
                f"across channels (neighbour correlation {along_channels:.2f}) but not across bins "
                f"({along_time:.2f}): are the time and channel axes swapped? (expected [trials, "
                f"time, channels])")
    return None


MIN_BIN_MS = 0.5  # a smaller bin size is most likely seconds written as milliseconds


def rates_too_high(recon: np.ndarray, bin_ms: Optional[float]) -> Optional[str]:
    """Counts per bin so high for the bin size that they look like rates in Hz."""
    if not bin_ms:
        return None
    mean = np.nanmean(recon.reshape(-1, recon.shape[-1]), axis=0)
    hz = mean / (bin_ms / 1000.0)
    top = int(np.nanargmax(hz)) if np.isfinite(hz).any() else None
    if top is None or hz[top] <= MAX_RATE_HZ:
        return None
    return (f"channel {top} averages {mean[top]:.3g} counts per {bin_ms:g} ms bin, {hz[top]:.0f} "
            f"spikes/s: are these rates in Hz stored as counts? (expected spike counts per bin)")


def data_warnings(ds: Dataset, counts: bool) -> list[str]:
    """The warnings of one session file (``counts``: the reconstruction models spike counts)."""
    out = []
    if ds.bin_size_ms is not None and ds.bin_size_ms < MIN_BIN_MS:
        out.append(f"{ds.path}: bin size {ds.bin_size_ms:g} ms (the file's attribute bin_size_ms or "
                   f"bin_size, or data.bin_size_ms): bins are usually 1 to 100 ms; was it given in seconds?")
    split = ds.train
    if split.recon is None:
        return out
    problem = swapped_axes(split.recon)
    if problem:
        out.append(f"{ds.path}: train_recon_data {problem}")
    if counts:
        problem = rates_too_high(split.recon, ds.bin_size_ms)
        if problem:
            out.append(f"{ds.path}: train_recon_data {problem}")
    return out
