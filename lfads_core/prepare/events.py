"""Binning event times (spikes) and sampled signals (behaviour) into trials.

A trial is a start time (seconds) and a number of bins of ``bin_s`` seconds. Bin ``k`` of a trial
holds the times ``t`` with ``start + k * bin_s <= t < start + (k + 1) * bin_s``: a time exactly on
a bin edge counts in the later bin, a time exactly at the end of the last bin in no bin. "Exactly"
is to within 1e-9 of a bin, so that edges written as decimals (1.01 s) are not lost to floating
point. Bins past a trial's own number of bins are NaN (a shorter trial, padded at its end).
"""

from __future__ import annotations

import numpy as np

# Relative positions (in bins) are rounded to this many decimals before taking the bin: a time
# within 1e-9 of a bin of an edge is on the edge.
_EDGE_DECIMALS = 9


def bins_in(length_s: np.ndarray, bin_s: float) -> np.ndarray:
    """Whole bins of ``bin_s`` in each length (seconds; a partial last bin is dropped; NaN -> 0)."""
    n = np.floor(np.round(np.asarray(length_s, dtype=np.float64) / bin_s, _EDGE_DECIMALS))
    return np.where(np.isfinite(n), np.maximum(n, 0), 0).astype(np.int64)


def _locate(times: np.ndarray, starts: np.ndarray, n_bins: np.ndarray, bin_s: float):
    """(trial, bin, position in ``times``) of every time that falls into a bin of a trial.

    ``times`` is sorted. Trials may overlap: a time in two trials is returned for each.
    """
    # A bin of slack on each side: the exact test below decides.
    lo = np.searchsorted(times, starts - bin_s, side="left")
    hi = np.searchsorted(times, starts + (n_bins + 1) * bin_s, side="right")
    counts = np.maximum(hi - lo, 0)
    trial = np.repeat(np.arange(len(starts)), counts)
    offsets = np.cumsum(counts) - counts
    pos = np.arange(int(counts.sum())) - np.repeat(offsets - lo, counts)
    rel = np.floor(np.round((times[pos] - starts[trial]) / bin_s, _EDGE_DECIMALS)).astype(np.int64)
    keep = (rel >= 0) & (rel < n_bins[trial])
    return trial[keep], rel[keep], pos[keep]


def bin_spikes(spikes: list[np.ndarray], starts: np.ndarray, n_bins: np.ndarray,
               bin_s: float) -> np.ndarray:
    """Spike counts [trials, max(n_bins), units] (float32), NaN past each trial's ``n_bins``.

    Args:
        spikes: per unit, its spike times in seconds, sorted.
        starts: per trial, the time of its first bin's left edge (seconds).
        n_bins: per trial, its number of bins (>= 1).
        bin_s: the bin width in seconds.
    """
    starts = np.asarray(starts, dtype=np.float64)
    n_bins = np.asarray(n_bins, dtype=np.int64)
    n, t_max = len(starts), int(n_bins.max()) if len(n_bins) else 0
    counts = np.zeros((n, t_max, len(spikes)), dtype=np.float32)
    for u, times in enumerate(spikes):
        trial, rel, _ = _locate(times, starts, n_bins, bin_s)
        counts[:, :, u] = np.bincount(trial * t_max + rel, minlength=n * t_max).reshape(n, t_max)
    counts[np.arange(t_max)[None, :] >= n_bins[:, None]] = np.nan
    return counts


def bin_series(times: np.ndarray, values: np.ndarray, starts: np.ndarray, n_bins: np.ndarray,
               bin_s: float) -> np.ndarray:
    """A sampled signal averaged in each bin: [trials, max(n_bins), channels] (float32).

    ``values`` is [samples, channels] at the sorted ``times``. A bin without a (finite) sample,
    and every bin past a trial's ``n_bins``, is NaN.
    """
    starts = np.asarray(starts, dtype=np.float64)
    n_bins = np.asarray(n_bins, dtype=np.int64)
    n, t_max, k = len(starts), int(n_bins.max()) if len(n_bins) else 0, values.shape[1]
    trial, rel, pos = _locate(times, starts, n_bins, bin_s)
    flat = trial * t_max + rel
    out = np.full((n, t_max, k), np.nan, dtype=np.float32)
    for c in range(k):
        v = values[pos, c].astype(np.float64)
        ok = np.isfinite(v)
        total = np.bincount(flat[ok], weights=v[ok], minlength=n * t_max)
        number = np.bincount(flat[ok], minlength=n * t_max)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(number > 0, total / np.maximum(number, 1), np.nan)
        out[:, :, c] = mean.reshape(n, t_max)
    out[np.arange(t_max)[None, :] >= n_bins[:, None]] = np.nan
    return out
