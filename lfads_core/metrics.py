"""Evaluation metrics for inferred firing rates (numpy only).

All functions take arrays shaped [..., N] whose last axis indexes channels
(neurons); the leading axes (trials, time, ...) are pooled. Rates are in
counts per bin. NaNs are excluded elementwise.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["r2_score", "poisson_nll", "bits_per_spike", "latent_r2", "APPLICABLE"]

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


def r2_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean over channels of the coefficient of determination.

    For each channel (last axis), over all leading positions where both
    ``truth`` and ``pred`` are finite::

        R2 = 1 - sum((truth - pred)**2) / sum((truth - mean(truth))**2)

    Channels whose total sum of squares is 0 (constant or no valid data) are
    skipped. Returns NaN when no channel remains.
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
    if not keep.any():
        return float("nan")
    return float(np.mean(1.0 - ss_res[keep] / ss_tot[keep]))


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
    """Information gain of ``rates`` over a per-neuron constant rate model.

    ``(NLL_null - NLL_model) / (ln 2 * total spikes)``, where the null model
    predicts each neuron's mean count over all leading positions. Elements
    where either input is NaN are excluded everywhere (null means, NLLs and
    the spike total). Returns NaN when there are no spikes.
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


def latent_r2(fit_x: np.ndarray, fit_y: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """R² of a linear read-out (with intercept) of true latents from inferred factors.

    The least-squares map is fitted on ``fit_x`` [..., F] -> ``fit_y`` [..., L] (the training
    split) and scored with :func:`r2_score` on ``x`` -> ``y`` (any split): the mean over latent
    dimensions of the R² of the predicted latents.
    """
    fx = np.asarray(fit_x, np.float64).reshape(-1, np.shape(fit_x)[-1])
    fy = np.asarray(fit_y, np.float64).reshape(-1, np.shape(fit_y)[-1])
    design = np.hstack([fx, np.ones((fx.shape[0], 1))])
    weights, *_ = np.linalg.lstsq(design, fy, rcond=None)
    px = np.asarray(x, np.float64).reshape(-1, fx.shape[1])
    pred = np.hstack([px, np.ones((px.shape[0], 1))]) @ weights
    return r2_score(np.asarray(y, np.float64).reshape(-1, fy.shape[1]), pred)


# Core metrics a reconstruction can declare in ``Reconstruction.metrics``: name -> f(mean, data),
# computed on the posterior-averaged mean and written to summary.json as ``<split>_<name>``.
APPLICABLE = {"bits_per_spike": bits_per_spike}
