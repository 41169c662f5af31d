"""Evaluation metrics for inferred firing rates (numpy only).

All functions take arrays shaped [..., N] whose last axis indexes channels
(neurons); the leading axes (trials, time, ...) are pooled. Rates are in
counts per bin. NaNs are excluded elementwise. docs/metrics.md gives every
formula, what it measures and what a good value looks like.

- :func:`rate_r2`: pooled (variance-weighted) R² of rates against the truth.
- :func:`rate_r2_neuron_mean` (alias :func:`r2_score`): unweighted mean of the
  per-neuron R².
- :func:`bits_per_spike`: Poisson information gain over each neuron's mean rate.
- :func:`co_bps`, :func:`fp_bps`: the Neural Latents Benchmark's co-smoothing
  and forward-prediction bits/spike; :func:`nlb_bps` splits one output into
  held-in / held-out / forward parts and scores each.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["rate_r2", "rate_r2_neuron_mean", "r2_score", "poisson_nll", "bits_per_spike", "co_bps",
           "fp_bps", "nlb_parts", "nlb_bps", "latent_r2", "APPLICABLE"]

RATE_FLOOR = 1e-9  # smallest rate used inside log()
_LOG_FACTORIAL_TABLE_MAX = 100_000  # largest count served from the table


def _flatten_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cast to float64 and reshape two same-shaped arrays to [M, N]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if a.ndim == 0:
        raise ValueError("expected arrays shaped [..., N], got scalars")
    n = a.shape[-1]
    return a.reshape(-1, n), b.reshape(-1, n)


def _r2_parts(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel residual and total sums of squares, and which channels count.

    Over the leading positions where both inputs are finite, for each channel n::

        ss_res[n] = sum((truth - pred)**2)
        ss_tot[n] = sum((truth - mean_n(truth))**2)

    with ``mean_n`` the channel's own mean over those positions. ``keep`` is False
    for channels without variance (constant, or no valid data).
    """
    t, p = _flatten_pair(truth, pred)
    valid = np.isfinite(t) & np.isfinite(p)
    count = valid.sum(axis=0)
    t0 = np.where(valid, t, 0.0)
    p0 = np.where(valid, p, 0.0)
    mean = t0.sum(axis=0) / np.maximum(count, 1)
    ss_tot = (np.where(valid, t0 - mean, 0.0) ** 2).sum(axis=0)
    ss_res = ((t0 - p0) ** 2).sum(axis=0)
    # A constant channel can get ss_tot ~ 1e-30 from rounding in its mean;
    # skip it exactly by also requiring a non-zero range.
    t_max = np.where(valid, t, -np.inf).max(axis=0)
    t_min = np.where(valid, t, np.inf).min(axis=0)
    keep = (ss_tot > 0) & (t_max > t_min)
    return ss_res, ss_tot, keep


def rate_r2(truth: np.ndarray, pred: np.ndarray) -> float:
    """Pooled (variance-weighted) coefficient of determination over channels.

    With the sums of squares of :func:`_r2_parts` (NaN excluded elementwise, each
    channel centred on its own mean)::

        R2 = 1 - sum_n ss_res[n] / sum_n ss_tot[n]

    which equals the average of the per-channel R² weighted by ``ss_tot[n]``: a
    channel counts in proportion to its variation, so near-constant channels
    cannot dominate. Channels without variance are skipped (weight 0, as in
    scikit-learn's ``multioutput="variance_weighted"``). NaN when no channel
    remains. At most 1; 0 for predicting each channel's mean.
    """
    ss_res, ss_tot, keep = _r2_parts(truth, pred)
    if not keep.any():
        return float("nan")
    return float(1.0 - ss_res[keep].sum() / ss_tot[keep].sum())


def rate_r2_neuron_mean(truth: np.ndarray, pred: np.ndarray) -> float:
    """Unweighted mean over channels of the per-channel coefficient of determination.

    For each channel (last axis), over all leading positions where both
    ``truth`` and ``pred`` are finite::

        R2[n] = 1 - sum((truth - pred)**2) / sum((truth - mean(truth))**2)

    Channels whose total sum of squares is 0 (constant or no valid data) are
    skipped. Returns NaN when no channel remains. Every channel counts equally,
    so a low-variance channel fitted badly can pull this far below
    :func:`rate_r2`.
    """
    ss_res, ss_tot, keep = _r2_parts(truth, pred)
    if not keep.any():
        return float("nan")
    return float(np.mean(1.0 - ss_res[keep] / ss_tot[keep]))


r2_score = rate_r2_neuron_mean  # the historical name, still used by lfads_core/output/results.py


def _log_factorial(counts: np.ndarray) -> np.ndarray:
    """Elementwise log(k!) = lgamma(k + 1); NaN stays NaN.

    Non-negative integer counts up to the table size use a cumulative sum of
    logs; anything else falls back to ``math.lgamma``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    out = np.full(counts.shape, np.nan)
    finite = np.isfinite(counts)
    is_table = finite & (counts >= 0) & (counts == np.round(counts))
    is_table &= counts <= _LOG_FACTORIAL_TABLE_MAX
    if is_table.any():
        k = counts[is_table].astype(np.int64)
        table = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, k.max() + 1)))])
        out[is_table] = table[k]
    other = finite & ~is_table
    if other.any():
        lgamma = np.frompyfunc(lambda x: math.lgamma(x + 1.0), 1, 1)
        out[other] = lgamma(counts[other]).astype(np.float64)
    return out


def poisson_nll(rates: np.ndarray, spikes: np.ndarray) -> np.ndarray:
    """Elementwise Poisson negative log-likelihood (nats).

    ``nll = r - k log(r) + log(k!)`` with ``r = max(rates, 1e-9)`` and
    ``k = spikes``; same shape as the inputs, NaN where either input is NaN.
    """
    rates = np.asarray(rates, dtype=np.float64)
    spikes = np.asarray(spikes, dtype=np.float64)
    if rates.shape != spikes.shape:
        raise ValueError(f"shape mismatch: {rates.shape} vs {spikes.shape}")
    r = np.maximum(rates, RATE_FLOOR)  # NaN propagates through np.maximum
    return r - spikes * np.log(r) + _log_factorial(spikes)


def bits_per_spike(rates: np.ndarray, spikes: np.ndarray) -> float:
    """Information gain of ``rates`` over a per-neuron constant rate model, in bits per spike.

    ::

        bps = (LL_model - LL_null) / (n_spikes * ln 2)
        LL(r) = sum over valid elements of  k log(max(r, 1e-9)) - max(r, 1e-9) - log(k!)

    where ``k`` are the spike counts, ``n_spikes`` is their total, and the null
    model predicts, for every element of neuron n, that neuron's mean count over
    all its valid elements (all leading positions: trials and bins). An element is
    valid where both inputs are finite; invalid elements are excluded everywhere
    (null means, both log-likelihoods and the spike total). The ``log(k!)`` terms
    are included in both log-likelihoods and cancel. Rates are floored at
    ``RATE_FLOOR`` (1e-9; a negative rate counts as the floor). Returns NaN when
    there are no spikes.

    0 for the null model itself; negative for a model worse than it; positive
    for a model that predicts variation within a neuron. This is the NLB
    ``bits_per_spike`` (nlb_tools.evaluation) when ``rates`` has no NaN.
    """
    r, k = _flatten_pair(rates, spikes)
    valid = np.isfinite(r) & np.isfinite(k)
    total_spikes = k[valid].sum()
    if total_spikes <= 0:
        return float("nan")
    k0 = np.where(valid, k, 0.0)
    null_mean = k0.sum(axis=0) / np.maximum(valid.sum(axis=0), 1)
    null = np.broadcast_to(null_mean, k.shape)
    nll_model = poisson_nll(r[valid], k[valid]).sum()
    nll_null = poisson_nll(null[valid], k[valid]).sum()
    return float((nll_null - nll_model) / (math.log(2.0) * total_spikes))


def co_bps(rates_heldout: np.ndarray, spikes_heldout: np.ndarray) -> float:
    """Co-smoothing bits/spike (NLB ``co-bps``, Pei et al. 2021).

    :func:`bits_per_spike` of the held-out neurons' predicted rates against their
    spikes on the evaluation trials, over the bins the encoder saw: arrays
    [trials, T_in, N_heldout] (any leading shape). The null model predicts each
    held-out neuron's mean count over these evaluation data. The held-out
    neurons are never seen by the encoder, so a positive value means the latent
    state inferred from the held-in neurons predicts them.
    """
    return bits_per_spike(rates_heldout, spikes_heldout)


def fp_bps(rates_fp: np.ndarray, spikes_fp: np.ndarray) -> float:
    """Forward-prediction bits/spike (NLB ``fp-bps``, Pei et al. 2021).

    :func:`bits_per_spike` over the forward-prediction bins (those past the
    encoder window): arrays [trials, T_fp, N] of all neurons, held-in and
    held-out (NLB concatenates both along the neuron axis). The null model
    predicts each neuron's mean count over these forward bins of the evaluation
    trials. Positive when the dynamics extrapolate past the observed window.
    """
    return bits_per_spike(rates_fp, spikes_fp)


def nlb_parts(x: np.ndarray, n_heldout: int = 0, t_in: int | None = None) -> dict[str, np.ndarray]:
    """Split an output [..., T, N] into its NLB parts (views, not copies).

    The last ``n_heldout`` channels are the held-out neurons (the encoder sees
    the first ``N - n_heldout``); bins ``t < t_in`` were seen by the encoder and
    bins ``t >= t_in`` are forward prediction (``t_in=None``: all ``T`` bins)::

        heldin  = x[..., :t_in, :N - n_heldout]
        heldout = x[..., :t_in, N - n_heldout:]
        forward = x[..., t_in:, :]            # all neurons

    Only non-empty parts are returned. Raises ValueError for ``n_heldout``
    outside [0, N] or ``t_in`` outside [1, T].
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"expected an array shaped [..., T, N], got shape {x.shape}")
    t, n = x.shape[-2:]
    t_in = t if t_in is None else int(t_in)
    n_heldout = int(n_heldout)
    if not 0 <= n_heldout <= n:
        raise ValueError(f"n_heldout must be in [0, {n}], got {n_heldout}")
    if not 1 <= t_in <= t:
        raise ValueError(f"t_in must be in [1, {t}], got {t_in}")
    n_in = n - n_heldout
    parts = {}
    if n_in > 0:
        parts["heldin"] = x[..., :t_in, :n_in]
    if n_heldout > 0:
        parts["heldout"] = x[..., :t_in, n_in:]
    if t_in < t:
        parts["forward"] = x[..., t_in:, :]
    return parts


def nlb_bps(rates: np.ndarray, spikes: np.ndarray, n_heldout: int = 0,
            t_in: int | None = None) -> dict[str, float]:
    """Bits/spike of each NLB part of an output: ``{heldin_bps, co_bps, fp_bps}``.

    ``rates`` and ``spikes`` are [..., T, N] (trials, reconstruction bins, all
    channels), split by :func:`nlb_parts`:

    - ``heldin_bps``: :func:`bits_per_spike` of the held-in neurons over the
      encoder bins (present when ``n_heldout < N``);
    - ``co_bps``: :func:`co_bps` of the held-out neurons over the encoder bins
      (present when ``n_heldout > 0``);
    - ``fp_bps``: :func:`fp_bps` of all neurons over bins ``t >= t_in`` (present
      when ``t_in < T``).

    Each part has its own null model (each neuron's mean count over that part).
    A present part without spikes scores NaN. Pass the evaluation trials only.
    """
    r = np.asarray(rates, dtype=np.float64)
    k = np.asarray(spikes, dtype=np.float64)
    if r.shape != k.shape:
        raise ValueError(f"shape mismatch: {r.shape} vs {k.shape}")
    rp, kp = nlb_parts(r, n_heldout, t_in), nlb_parts(k, n_heldout, t_in)
    out = {}
    if "heldin" in rp:
        out["heldin_bps"] = bits_per_spike(rp["heldin"], kp["heldin"])
    if "heldout" in rp:
        out["co_bps"] = co_bps(rp["heldout"], kp["heldout"])
    if "forward" in rp:
        out["fp_bps"] = fp_bps(rp["forward"], kp["forward"])
    return out


def latent_r2(fit_x: np.ndarray, fit_y: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """R² of a linear read-out (with intercept) of true latents from inferred factors.

    The least-squares map is fitted on ``fit_x`` [..., F] -> ``fit_y`` [..., L] (the training
    split) and scored with :func:`rate_r2_neuron_mean` on ``x`` -> ``y`` (any split): the mean over latent
    dimensions of the R² of the predicted latents.
    """
    fx = np.asarray(fit_x, np.float64).reshape(-1, np.shape(fit_x)[-1])
    fy = np.asarray(fit_y, np.float64).reshape(-1, np.shape(fit_y)[-1])
    design = np.hstack([fx, np.ones((fx.shape[0], 1))])
    weights, *_ = np.linalg.lstsq(design, fy, rcond=None)
    px = np.asarray(x, np.float64).reshape(-1, fx.shape[1])
    pred = np.hstack([px, np.ones((px.shape[0], 1))]) @ weights
    return rate_r2_neuron_mean(np.asarray(y, np.float64).reshape(-1, fy.shape[1]), pred)


# Core metrics a reconstruction can declare in ``Reconstruction.metrics``: name -> f(mean, data),
# computed on the posterior-averaged mean and written to summary.json as ``<split>_<name>``.
APPLICABLE = {"bits_per_spike": bits_per_spike}
