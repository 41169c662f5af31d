"""dF/F traces -> calcium event amplitudes with OASIS (``lfads-run deconvolve``).

The deconvolution is OASIS (Friedrich, Zhou & Paninski 2017) from the maintained
``oasis-deconv`` package, with the AR(1) model of each neuron's calcium::

    y_t = b + c_t + noise (s.d. sn),    c_t = g c_{t-1} + s_t,    s_t >= 0

solved under the noise constraint ``|y - b - c|^2 = sn^2 * len(y)`` with the L1 penalty on s.
``s_t`` is the jump of the calcium at sample t, so the events are in the units of the input
(dF/F): a spike adding 0.2 dF/F to the calcium gives an event of about 0.2.

Design (measured on ``lfads-run synth calcium``, 60 x 20 trials of 100 bins of 10 ms, 40
neurons at a few Hz, tau 0.3 s, amplitude 0.2 dF/F, noise 0.05 dF/F per sample):

- **Per neuron, its observed samples only.** NaN marks a sample that was not observed (a neuron
  scanned once per frame of K bins: SBTT's input). A neuron's observed samples form a trace
  sampled every K bins, so ``g = exp(-K * bin_s / tau_s)``, and the event at an observed sample
  is the calcium jump since the previous observed sample. K is read off the NaN pattern: the
  median gap between consecutive observed samples of a trial.
- **Each trial deconvolved alone, with the neuron's parameters fitted on all its trials.** The
  trials of every split are pooled to estimate, per neuron: the noise ``sn`` (OASIS's spectral
  estimator, the power over the upper half of the frequencies, averaged over trials), the decay
  ``g`` (``--tau-s auto``: :func:`estimate_tau` per neuron, the median over neurons used for
  all) and the baseline ``b`` (one OASIS fit of the concatenated trials). Each trial is then
  deconvolved with these fixed, its initial calcium a free level. Deconvolving the concatenated
  trials as one recording instead treats each trial boundary as continuous: where the next trial starts lower than the previous one ended,
  the AR(1) calcium cannot drop and the fit is distorted for about tau on both sides; with
  1-s trials and tau 0.3 s that corrupts much of the data. Correlation of the events with the
  true spike amplitudes (summed over the K bins of a frame, decayed), per neuron, averaged over
  the 40 neurons of the default synthetic data, ``--tau-s auto``: concatenated 0.72 (K = 1) and
  0.73 (K = 3), per trial 0.91 and 0.91 (worst neuron 0.54 vs 0.83); with the true tau given,
  0.71/0.72 vs 0.91/0.91. Trials cut from one continuous recording lose only the events at their
  first sample this way. (Those ``auto`` figures are from OASIS's autocovariance estimate of g,
  which is biased on short trials: 0.66 s for tau 1 s on this data; :func:`estimate_tau` gives
  1.00 s there, see its docstring.)
- **The decay fitted to the decays after events.** OASIS's autocovariance estimator (without its
  0.98 shrinkage, which at 10-ms frames shortened tau from 0.30 to 0.19 s) sees every slow
  correlation: on 1.2-s trials at 30 Hz of the synthetic data it gave 0.69 s for tau 1 s, and on
  6-s trials 1.31 s for tau 0.5 s (the Lorenz rates vary slowly). :func:`estimate_tau` starts
  there and refits g to the decays that follow the deconvolved events, with the baseline fitted
  jointly (calcium that never decays to baseline within a trial otherwise biases tau down:
  0.36 s for tau 1 s with OASIS's baseline on steady 3 Hz firing). Median over neurons on those
  data: 1.03 and 0.53 s; on 1.2-s trials of steady firing, tau 0.3 / 0.5 / 1 s: 0.30 / 0.49 /
  0.98 s; with a burst of spikes at each trial's start and 0.5 Hz otherwise, tau 1 s: 0.99 s
  (0.39 s when events on falling stretches were onsets too). Event correlations with the true
  spike amplitudes were within 0.003 of those with the true tau given in 10 of 11 synthetic
  settings; at 10 Hz firing, tau 0.5 s was estimated 0.59 s (0.905 vs 0.918).
- **The first observed sample of a trial is NaN.** Its jump cannot be told from the calcium the
  trial starts with (the free initial level), so it is "not observed" (SBTT's NaN), not "no
  event": as 0 the model learned a drop at every trial's start. On a user-level test (2-s
  trials at 15 Hz) the valid rate R² rose from 0.469 to 0.658 with this alone.
- **Amplitudes refitted** (:func:`refit_events`): non-negative least squares on OASIS's support
  removes the L1 shrinkage, which is largest near a trial's end (0.805 on that test with both;
  ``benchmarks/calcium_quality.py`` zig R² 0.867 -> 0.905 at K = 1, 0.801 -> 0.918 at K = 3). It
  replaced one least-squares gain per neuron, which could not undo the end-of-trial shrinkage.
- **Zero inflation.** An event below ``MIN_EVENT_SN`` times the neuron's ``sn`` is set to
  exactly 0 (OASIS's L1 solution is already sparse; this removes the small values fitted to
  noise; 92 % of the events are then 0 on the synthetic data at K = 1, 82 % at K = 3). Events
  sum to about 0.96 x the expected amplitudes there (0.94 at K = 3: the zeroed small events and
  the missed ones).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

#: Events below ``MIN_EVENT_SN`` x the neuron's noise standard deviation per sample become 0.
MIN_EVENT_SN = 0.5
#: ``--tau-s`` above this is refused (milliseconds given as seconds); also the estimate's range.
MAX_TAU_S = 20.0
#: At most this many rounds of deconvolution and refit in :func:`estimate_tau`.
TAU_FIT_ITERATIONS = 5
#: :func:`estimate_tau` and :func:`fit_baseline` use evenly spaced trials with about this many
#: samples in all.
TAU_FIT_SAMPLES = 30_000
#: At most this many re-cuts of the segments in :func:`fit_baseline`.
BASELINE_ROUNDS = 3

DECONVOLUTION = "OASIS AR(1)"
#: ``tau_s_source`` where ``auto`` fitted no decay (noise alone): OASIS's per-neuron estimates.
TAU_SOURCE_FALLBACK = "OASIS autocovariance per neuron (no decay fitted)"
DATA_UNITS = "event amplitude (dF/F units)"
_SPLIT_ORDER = ("train", "valid", "test")


# --------------------------------------------------------------------------------------------- #
# Traces
# --------------------------------------------------------------------------------------------- #


def frame_interval_bins(observed) -> int:
    """The sampling interval K (bins) of one neuron from its observation mask [trials, T]: the
    median gap between consecutive observed samples of a trial (1 when there is none)."""
    import numpy as np

    trial, t = np.nonzero(np.asarray(observed))
    if t.size < 2:
        return 1
    gaps = (t[1:] - t[:-1])[trial[1:] == trial[:-1]]
    return max(1, int(round(float(np.median(gaps))))) if gaps.size else 1


def _noise_sd(rows) -> float:
    """OASIS's noise estimator (``oasis.functions.GetSn``: sqrt of half the mean power spectral
    density over 0.25-0.5 cycles per sample, Welch) with the spectrum averaged over trials
    instead of computed on their concatenation (whose joins add high-frequency power)."""
    import numpy as np
    import scipy.signal

    total, weight = 0.0, 0
    for length in sorted({len(r) for r in rows}):
        if length < 8:  # too short for a spectrum
            continue
        block = np.stack([r for r in rows if len(r) == length])
        freq, power = scipy.signal.welch(block, nperseg=min(256, length), axis=-1)
        band = (freq > 0.25) & (freq < 0.5)
        if not band.any():
            continue
        total += float(np.mean(power[:, band] / 2)) * block.size
        weight += block.size
    if weight == 0:  # only very short trials: the concatenation
        from oasis.functions import GetSn

        return float(GetSn(np.concatenate(rows)))
    return float(np.sqrt(total / weight))


def _oasis_g(y, sn: float) -> float:
    """OASIS's AR(1) autocovariance estimate of g from the samples ``y`` (without its 0.98
    shrinkage), clipped into (0, 1)."""
    import numpy as np
    from oasis.functions import estimate_time_constant

    g = float(np.ravel(estimate_time_constant(y, 1, sn, fudge_factor=1.0))[0])
    return min(max(g, 1e-6), 1 - 1e-9)


def refit_events(y, g: float, support):
    """Event amplitudes [L] of one trial's observed samples ``y`` [L] (baseline removed) by
    non-negative least squares of the AR(1) calcium with jumps only where ``support`` [L] (bool;
    OASIS's events) and a free initial level: OASIS's L1 penalty shrinks every event, most near
    the trial's end, where few samples follow it (on 2-s trials at 15 Hz, the mean event at the
    last 3 samples was 0.40 / 0.24 / 0.06 of the truth in tests/test_deconvolve.py's simulation;
    refitted, with the fitted baseline, 0.93 / 0.70 / 0.22). The first
    sample's amplitude (the initial level) is returned as 0."""
    import numpy as np
    from scipy.optimize import nnls

    y = np.asarray(y, dtype=np.float64)
    idx = np.union1d([0], np.flatnonzero(support))
    lag = np.arange(y.size)[:, None] - idx[None, :]
    basis = np.where(lag >= 0, g ** np.maximum(lag, 0), 0.0)
    amp = np.zeros(y.size)
    amp[idx] = nnls(basis, y)[0]
    amp[0] = 0.0
    return amp


def estimate_tau(rows, y, frame_s: float, sn: float, max_iter: int = TAU_FIT_ITERATIONS) -> float:
    """One neuron's decay time (s) from its trials ``rows`` (observed samples of each trial, one
    every ``frame_s`` seconds; ``y`` their concatenation; ``sn`` the noise s.d.).

    Starts from OASIS's autocovariance estimate of g and its baseline, then alternates (at most
    ``max_iter`` times, until tau changes by under 1 %): deconvolve each trial with the current
    g and baseline; cut every trial into segments at its first sample and at each event of at
    least ``MIN_EVENT_SN`` x ``sn`` where the trace rises (events on a falling stretch are what a
    too-short tau puts along a slow decay: taking them as onsets would keep tau short); fit
    ``b + v_k g^j`` to the samples (j = 0, 1, ... within segment k), with one baseline b and a
    free amplitude v_k >= 0 per segment, over all trials at once: the g with the least squared
    error (a grid over tau, then a bounded search) and its b. The decay shapes after events carry the estimate, so slow changes of the firing rate
    (which lengthen the autocovariance), trial joins (which shorten it) and calcium that never
    returns to baseline within a trial matter little. NaN when no decay of one sample to
    ``MAX_TAU_S`` fits (a trace of noise alone gives the shortest tau of the search).
    """
    import numpy as np
    from oasis.functions import deconvolve
    from scipy.optimize import minimize_scalar

    g = _oasis_g(y, sn)
    tau = -frame_s / np.log(g)
    baseline = float(deconvolve(y, tau_d=tau, framerate=1.0 / frame_s, sn=sn).b)
    rows = _evenly_spaced([r for r in rows if r.size])
    ys, first = np.concatenate(rows), np.concatenate([[0], np.cumsum([r.size for r in rows])[:-1]])
    samples = np.geomspace(0.3, max(300.0, 2 * MAX_TAU_S / frame_s), 100)  # tau in samples
    for round_ in range(max_iter):
        starts, j = _segments(rows, first, tau, frame_s, sn, baseline)

        def fit(gv: float):
            return _segment_fit(ys, starts, j, gv)

        near = samples[(samples > 0.25 * tau / frame_s) & (samples < 4 * tau / frame_s)]
        grid = np.exp(-1.0 / (samples if round_ == 0 or near.size < 3 else near))
        i = int(np.argmin([fit(v)[0] for v in grid]))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
        g = float(minimize_scalar(lambda v: fit(v)[0], bounds=(lo, hi), method="bounded",
                                  options=dict(xatol=1e-7)).x)
        tau_new, baseline = -frame_s / np.log(g), fit(g)[1]
        converged = abs(tau_new - tau) < 0.01 * tau
        tau = tau_new
        if converged or not np.isfinite(tau):
            break
    # Under one sample: no decay resolved (a trace of noise fits best as unrelated samples).
    return float(tau) if np.isfinite(tau) and frame_s <= tau <= MAX_TAU_S else float("nan")


def _segments(rows, first, tau: float, frame_s: float, sn: float, baseline: float,
              every_event: bool = False):
    """The segments of :func:`estimate_tau`: each trial (``rows``, starting at ``first`` in
    their concatenation), deconvolved with ``tau`` and ``baseline``, cut at its first sample
    and at each event of at least ``MIN_EVENT_SN`` x ``sn`` where the trace rises (or, with
    ``every_event``, at each event). Returns the segments' starts and each sample's index j
    within its segment."""
    import numpy as np
    from oasis.functions import deconvolve

    n = int(sum(r.size for r in rows))
    onset = np.zeros(n, dtype=bool)
    onset[first] = True
    for start, r in zip(first, rows):
        s = np.asarray(deconvolve(r, tau_d=tau, framerate=1.0 / frame_s, sn=sn, b=baseline).s)
        if every_event:
            onset[start + np.flatnonzero(s > 0)] = True
        else:
            rises = np.diff(r, prepend=np.inf) > 0
            onset[start + np.flatnonzero((s >= MIN_EVENT_SN * sn) & rises)] = True
    starts = np.flatnonzero(onset)
    return starts, np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))


def _segment_fit(ys, starts, j, g: float):
    """(squared error, baseline b) of the best ``b + v_k g^j`` (one b, a v_k >= 0 per segment)
    to the samples ``ys``."""
    import numpy as np

    w = g ** j
    a, ww, yw = (np.add.reduceat(v, starts) for v in (w, w * w, ys * w))
    total, n = float(ys.sum()), ys.size
    b = (total - float(np.sum(a * yw / ww))) / max(n - float(np.sum(a * a / ww)), 1e-12)
    num = np.maximum(yw - b * a, 0.0)
    d = ys - b
    return float(d @ d) - float(np.sum(num * num / ww)), b


def fit_baseline(rows, tau: float, frame_s: float, sn: float, baseline: float,
                 rounds: int = BASELINE_ROUNDS) -> float:
    """One neuron's baseline for a known ``tau``: the level its decays head to, the b of
    ``b + v_k g^j`` fitted over all trials with g fixed and a segment at every event (no
    decay shape to protect here, unlike :func:`estimate_tau`), starting from ``baseline``
    (OASIS's) and re-cutting the segments up to ``rounds`` times. OASIS's own baseline lies above
    the true one where the calcium seldom returns to it (a slow indicator, steady firing): on a
    simulation with tau 1.5 s, 7.5 Hz frames and 1-6 Hz firing, 0.35 dF/F for a true 0, and the
    events summed to 0.61 of the truth (0.98 with this baseline)."""
    import numpy as np

    rows = _evenly_spaced([r for r in rows if r.size])
    if not rows:
        return baseline
    ys, first = np.concatenate(rows), np.concatenate([[0], np.cumsum([r.size for r in rows])[:-1]])
    g = float(np.exp(-frame_s / tau))
    for _ in range(rounds):
        starts, j = _segments(rows, first, tau, frame_s, sn, baseline, every_event=True)
        new = _segment_fit(ys, starts, j, g)[1]
        if not np.isfinite(new):
            break  # keep the last finite one
        done = abs(new - baseline) < 0.01 * sn
        baseline = new
        if done:
            break
    return float(baseline)


def _evenly_spaced(rows: list) -> list:
    """Evenly spaced trials of ``rows`` with about ``TAU_FIT_SAMPLES`` samples in all (all of
    them when there are fewer): the fits of tau and of the baseline need no more."""
    import numpy as np

    total = sum(r.size for r in rows)
    if total <= TAU_FIT_SAMPLES:
        return rows
    keep = np.linspace(0, len(rows) - 1, max(1, round(len(rows) * TAU_FIT_SAMPLES / total)))
    return [rows[i] for i in np.unique(keep.round().astype(int))]


def deconvolve_traces(traces, bin_s: float, tau_s: Optional[float] = None,
                      return_info: bool = False):
    """Deconvolve dF/F ``traces`` [trials, T, N] (NaN = not observed) into events [trials, T, N].

    Per neuron (see the module docstring): K from its NaN pattern, noise and baseline from all
    its trials, then OASIS AR(1) on each trial's observed samples with ``g = exp(-K * bin_s /
    tau)``; events below ``MIN_EVENT_SN * sn`` become 0. Unobserved samples stay NaN. ``tau_s``
    is the decay in seconds; None estimates it per neuron (:func:`estimate_tau`) and uses the
    median of the estimates for every neuron.

    Returns float32 events, or ``(events, info)`` with ``return_info``: per-neuron arrays
    ``tau_s`` (decay used), ``tau_s_estimate`` (the neuron's own estimate; NaN when ``tau_s``
    is given), ``g``, ``frame_bins`` (K), ``sn``, ``baseline``, ``threshold``.
    """
    import warnings

    import numpy as np
    from oasis.functions import deconvolve

    x = np.asarray(traces)
    if x.ndim != 3:
        raise ValueError(f"traces must be [trials, T, N], got shape {x.shape}")
    if not bin_s > 0:
        raise ValueError(f"bin_s must be positive, got {bin_s}")
    if tau_s is not None and not tau_s > 0:
        raise ValueError(f"tau_s must be positive, got {tau_s}")
    n_trials, n_bins, n_neurons = x.shape
    events = np.full(x.shape, np.nan, dtype=np.float32)
    info = {k: np.full(n_neurons, np.nan)
            for k in ("tau_s", "tau_s_estimate", "g", "sn", "baseline", "threshold")}
    info["frame_bins"] = np.ones(n_neurons, dtype=np.int64)

    def samples(n):
        """Neuron n's observation mask [trials, T], observed samples per trial, all of them."""
        trace = x[:, :, n].astype(np.float64)
        observed = np.isfinite(trace)
        return observed, [trace[i][observed[i]] for i in range(n_trials)], trace[observed]

    neurons = []  # (n, frame_s, sn) of the neurons with a signal; their samples made again
    for n in range(n_neurons):  # when needed, one neuron at a time (memory)
        observed, rows, y = samples(n)
        k = frame_interval_bins(observed)
        info["frame_bins"][n] = k
        events[:, :, n][observed] = 0.0
        if y.size >= 4 and np.ptp(y) > 0:
            sn = _noise_sd(rows)
            neurons.append((n, k * bin_s, sn if sn > 0 else 1e-6 * float(np.ptp(y))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if tau_s is None:
            for n, frame_s, sn in neurons:
                _, rows, y = samples(n)
                info["tau_s_estimate"][n] = estimate_tau(rows, y, frame_s, sn)
            estimates = info["tau_s_estimate"][np.isfinite(info["tau_s_estimate"])]
            tau_s = float(np.median(estimates)) if estimates.size else None
        for n, frame_s, sn in neurons:
            observed, rows, y = samples(n)
            tau_n = float(tau_s) if tau_s is not None else -frame_s / np.log(_oasis_g(y, sn))
            g = float(np.exp(-frame_s / tau_n))
            opts = dict(tau_d=tau_n, framerate=1.0 / frame_s, sn=sn)
            baseline = fit_baseline(rows, tau_n, frame_s, sn, float(deconvolve(y, **opts).b))
            threshold = MIN_EVENT_SN * sn
            for i, row in enumerate(rows):
                if row.size:
                    support = np.asarray(deconvolve(row, b=baseline, **opts).s) > 0
                    amp = refit_events(row - baseline, g, support)
                    events[i, observed[i], n] = np.where(amp >= threshold, amp, 0.0)
            info["tau_s"][n], info["g"][n], info["sn"][n] = tau_n, g, sn
            info["baseline"][n], info["threshold"][n] = baseline, threshold
    # The jump at a trial's first observed sample cannot be told from the calcium the trial
    # starts with: not observed (NaN), not "no event".
    for n in range(n_neurons):
        trial, t = np.nonzero(np.isfinite(x[:, :, n]))
        first = np.unique(trial, return_index=True)[1]
        events[trial[first], t[first], n] = np.nan
    return (events, info) if return_info else events


# --------------------------------------------------------------------------------------------- #
# Input mappings and files
# --------------------------------------------------------------------------------------------- #


def _splits(keys) -> list[str]:
    names = [k[: -len("_encod_data")] for k in keys if k.endswith("_encod_data")]
    return sorted(names, key=lambda s: (_SPLIT_ORDER.index(s) if s in _SPLIT_ORDER else 3, s))


def deconvolve_arrays(arrays: dict, bin_s: float, tau_s: Optional[float] = None):
    """Deconvolve the ``{split}_encod_data`` and ``{split}_recon_data`` arrays of an input mapping.

    The encod arrays of all splits are stacked along trials and deconvolved together, so that a
    neuron has the same parameters (and event threshold) in every split; likewise the recon
    arrays, except that a recon array equal to its split's encod array (the usual case) reuses
    its events. Splits whose per-trial shapes differ are deconvolved separately.

    Returns ``(events, attrs, summary)``: ``{key: float32 events}``; the file attributes
    ``deconvolution``, ``tau_s`` (the decay used: ``tau_s``, or the median of the per-neuron
    estimates), ``tau_s_source``, ``data_units``, ``event_threshold``; and a summary dict
    (splits, trials, neurons, tau range, frame bins, zero fraction).
    """
    import numpy as np

    splits = _splits(arrays)
    jobs: dict[str, list[str]] = {"encod": [], "recon": []}
    for s in splits:
        jobs["encod"].append(s)
        encod, recon = arrays[f"{s}_encod_data"], arrays.get(f"{s}_recon_data")
        if recon is not None and not (np.shape(recon) == np.shape(encod)
                                      and np.array_equal(recon, encod, equal_nan=True)):
            jobs["recon"].append(s)
    out, infos = {}, []
    for kind, names in jobs.items():
        if not names:
            continue
        shapes = {np.shape(arrays[f"{s}_{kind}_data"])[1:] for s in names}
        for group in ([names] if len(shapes) == 1 else [[s] for s in names]):
            stacked = np.concatenate([np.asarray(arrays[f"{s}_{kind}_data"]) for s in group])
            ev, info = deconvolve_traces(stacked, bin_s, tau_s, return_info=True)
            infos.append(info)
            start = 0
            for s in group:
                n = np.shape(arrays[f"{s}_{kind}_data"])[0]
                out[f"{s}_{kind}_data"] = ev[start:start + n]
                start += n
    for s in splits:
        if f"{s}_recon_data" in arrays and f"{s}_recon_data" not in out:
            out[f"{s}_recon_data"] = out[f"{s}_encod_data"].copy()
    def values_of(key):
        v = np.concatenate([i[key] for i in infos]) if infos else np.zeros(0)
        return v[np.isfinite(v)]

    finite, source = values_of("tau_s_estimate"), "estimated (median over neurons)"
    if tau_s is not None:
        finite, source = values_of("tau_s"), "given"
    elif finite.size == 0 and values_of("tau_s").size:  # no decay fitted: OASIS's, per neuron
        finite, source = values_of("tau_s"), TAU_SOURCE_FALLBACK
    used = float(tau_s) if tau_s is not None else float(np.median(finite)) if finite.size else float("nan")
    values = np.concatenate([v[np.isfinite(v)] for k, v in out.items() if k.endswith("_encod_data")])
    attrs = {"deconvolution": DECONVOLUTION, "tau_s": used,
             "tau_s_source": source,
             "data_units": DATA_UNITS,
             "event_threshold": f"events below {MIN_EVENT_SN} x the neuron's noise s.d. set to 0"}
    summary = {"splits": {s: int(np.shape(arrays[f"{s}_encod_data"])[0]) for s in splits},
               "neurons": int(np.shape(arrays[f"{splits[0]}_encod_data"])[2]) if splits else 0,
               "tau_s": used, "tau_s_source": attrs["tau_s_source"],
               "tau_s_range": (float(finite.min()), float(finite.max())) if finite.size else None,
               "frame_bins": sorted({int(k) for i in infos for k in i["frame_bins"]}),
               "zero_fraction": float(np.mean(values == 0)) if values.size else float("nan")}
    return out, attrs, summary


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _error(message: str):
    from lfads_core.errors import DataError

    return DataError(message)


MIN_BIN_MS = 0.5  # below any imaging frame: seconds given as milliseconds


def _check_output(in_path: Path, out_path: Path, force: bool = False) -> None:
    from lfads_core.errors import LfadsError

    if out_path.exists() and out_path.is_dir():
        raise LfadsError(f"--out {out_path}: is a directory, expected a file name")
    same = out_path.resolve() == in_path.resolve()
    if not same and out_path.exists():
        try:
            same = os.path.samefile(out_path, in_path)
        except OSError:
            pass
    if same:
        raise LfadsError(f"--out {out_path}: is the input file; write the events to another file")
    if out_path.exists() and not force:
        raise LfadsError(f"--out {out_path}: exists (add --force to replace it)")
    folder = out_path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise LfadsError(f"--out {out_path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LfadsError(f"--out {out_path}: folder {folder} is not writable")


def deconvolve_file(in_path, out_path, tau_s: Optional[float] = None,
                    bin_ms: Optional[float] = None, force: bool = False) -> dict[str, Any]:
    """``lfads-run deconvolve``: the dF/F of an input file -> events, in a new file.

    Reads ``in_path``; deconvolves ``{split}_encod_data`` and ``{split}_recon_data`` of every
    split (:func:`deconvolve_arrays`); copies every other dataset or group and every file and
    dataset attribute unchanged; adds the file attributes ``deconvolution``, ``tau_s``,
    ``tau_s_source``, ``data_units`` and ``event_threshold``. The bin size comes from the file's
    ``bin_size_ms`` (or ``bin_size``) attribute; ``bin_ms``, when given, replaces it (and is
    written as the output's ``bin_size_ms``). An existing ``out_path`` is replaced only with
    ``force``.
    ``tau_s`` None estimates the decay per neuron. Written atomically (a temporary file in the
    target folder, then ``os.replace``); nothing is written on error. Every problem is a one-line
    :class:`lfads_core.errors.LfadsError` (``DataError`` for the input) naming the file.

    Returns a summary dict (:func:`deconvolve_arrays`, plus ``in``, ``out``, ``bin_ms``,
    ``seconds``).
    """
    from lfads_core.errors import LfadsError

    in_path, out_path = Path(in_path), Path(out_path)
    if tau_s is not None and not (isinstance(tau_s, (int, float)) and tau_s > 0
                                  and tau_s != float("inf")):
        raise LfadsError(f"--tau-s must be a positive number of seconds or 'auto', got {tau_s}")
    if bin_ms is not None and not (bin_ms > 0 and bin_ms != float("inf")):
        raise LfadsError(f"--bin-ms must be a positive number of milliseconds, got {bin_ms}")
    if tau_s is not None and tau_s > MAX_TAU_S:
        raise LfadsError(f"--tau-s {tau_s:g}: calcium indicators decay in 0.05 to a few seconds; "
                         f"give it in seconds (e.g. 0.4, not 400)")
    if bin_ms is not None and bin_ms < MIN_BIN_MS:
        raise LfadsError(f"--bin-ms {bin_ms:g}: imaging bins are milliseconds long (e.g. 33 for "
                         f"30 Hz); give it in milliseconds, not seconds")
    if not in_path.exists():
        raise _error(f"{in_path}: file not found")
    if in_path.is_dir():
        raise _error(f"{in_path}: is a directory, expected an HDF5 file")
    _check_output(in_path, out_path, force)

    import h5py
    import numpy as np

    start = time.perf_counter()
    try:
        f = h5py.File(in_path, "r")
    except OSError:
        raise _error(f"{in_path}: not a readable HDF5 file") from None
    with f:
        if "deconvolution" in f.attrs:
            raise _error(f"{in_path}: holds events already (file attribute deconvolution = "
                         f"'{_text(f.attrs['deconvolution'])}'); deconvolve the dF/F file")
        keys = list(f.keys())
        splits = _splits([k for k in keys if isinstance(f[k], h5py.Dataset)])
        if not splits:
            raise _error(f"{in_path}: no '{{split}}_encod_data' dataset (such as train_encod_data) "
                         "to deconvolve")
        for k in keys:
            if k.endswith(("_encod_data", "_recon_data")) and not isinstance(f[k], h5py.Dataset):
                raise _error(f"{in_path}: '{k}' is a group, expected an array [trials, time, neurons]")
        arrays = {}
        for s in splits:
            for kind in ("encod", "recon"):
                key = f"{s}_{kind}_data"
                if key not in f:
                    continue
                dset = f[key]
                if dset.ndim != 3 or 0 in dset.shape:
                    raise _error(f"{in_path}: '{key}' must be a non-empty 3-d array [trials, time, "
                                 f"neurons], got shape {tuple(dset.shape)}")
                if not (np.issubdtype(dset.dtype, np.floating) or np.issubdtype(dset.dtype, np.integer)):
                    raise _error(f"{in_path}: '{key}' must hold numbers (dF/F), got {dset.dtype}")
                arr = np.asarray(dset[()], dtype=np.float64)
                if np.isinf(arr).any():
                    raise _error(f"{in_path}: '{key}' contains infinite values")
                if not np.isfinite(arr).any():
                    raise _error(f"{in_path}: '{key}' has no observed (non-NaN) sample")
                arrays[key] = arr
            recon = arrays.get(f"{s}_recon_data")
            if recon is not None and recon.shape[0] != arrays[f"{s}_encod_data"].shape[0]:
                raise _error(f"{in_path}: {s}_encod_data has {arrays[f'{s}_encod_data'].shape[0]} "
                             f"trials but {s}_recon_data has {recon.shape[0]}")
        if bin_ms is None:
            value = f.attrs.get("bin_size_ms", f.attrs.get("bin_size", None))
            try:
                bin_ms = float(np.asarray(value).reshape(-1)[0]) if value is not None else None
            except (TypeError, ValueError):
                bin_ms = None
            if bin_ms is None or not (bin_ms > 0 and np.isfinite(bin_ms)):
                raise _error(f"{in_path}: no valid bin size (file attribute 'bin_size_ms' or "
                             "'bin_size'); pass --bin-ms")
            if bin_ms < MIN_BIN_MS:
                raise _error(f"{in_path}: bin size {bin_ms:g} ms (file attribute): imaging bins are "
                             f"milliseconds long; seconds? pass --bin-ms in milliseconds")

    events, attrs, summary = deconvolve_arrays(arrays, bin_ms / 1000.0, tau_s)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)  # the mode the user's umask gives new files, not mkstemp's 0600
    os.close(fd)
    try:
        with h5py.File(in_path, "r") as src, h5py.File(tmp, "w") as dst:
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            for key, value in attrs.items():
                dst.attrs[key] = value
            dst.attrs["bin_size_ms"] = float(bin_ms)  # the bin size the deconvolution used
            for key in src.keys():
                if key in events:
                    old = src[key]
                    dset = dst.create_dataset(key, data=events[key], compression="gzip",
                                              compression_opts=4)
                    for name, value in old.attrs.items():
                        dset.attrs[name] = value
                    dset.attrs["units"] = DATA_UNITS
                else:
                    src.copy(src[key], dst, name=key)
        os.replace(tmp, out_path)
    except OSError as exc:
        raise _error(f"--out {out_path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    summary.update({"in": str(in_path), "out": str(out_path), "bin_ms": float(bin_ms),
                    "seconds": time.perf_counter() - start})
    return summary
