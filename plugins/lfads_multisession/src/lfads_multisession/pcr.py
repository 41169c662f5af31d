"""Principal-component regression (PCR) of several sessions: the starting weights of the
``multisession`` readin and readout. Pure numpy; no torch.

For K components and sessions s = 1..S with encoder data ``encod`` [n_s, T_e, N_in_s] and
reconstruction data ``recon`` [n_s, T_r, N_s] (NaN where unobserved):

1. each trial is smoothed in time with a Gaussian of sd ``smooth_bins`` bins, NaN-aware
   (:func:`smooth`);
2. **condition mode** (every session has condition labels and they share at least 2 labels):
   each session is averaged over its trials per shared condition, giving rows (condition, bin)
   in the same order in every session; the sessions' centred recon averages are concatenated
   along neurons and their top K principal components give the shared scores Z. **Single-trial
   mode** (otherwise): each session gets its own PCA of its smoothed single trials (rows trial x
   bin);
3. Z is scaled by one number so that its first column has unit variance;
4. readin of session s: ridge regression of Z on the session's centred encod data;
   readout of session s (data units): least-squares regression of its centred recon data on Z.

Components beyond the rank of the data are zero columns of Z, hence zero readin rows and zero
readout columns. See docs/multisession.md for the formulas.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

__all__ = ["CONDITION", "SINGLE_TRIAL", "SessionPCR", "PCRResult", "smooth", "condition_average",
           "shared_conditions", "principal_scores", "ridge_regression", "loadings", "pcr",
           "cache_key", "to_arrays", "from_arrays"]

CONDITION = "condition"
SINGLE_TRIAL = "single_trial"
# Singular values below S_1 · max(rows, columns) · _EPS count as zero: the data come as float32,
# so directions below float32 rounding are not data.
_EPS = float(np.finfo(np.float32).eps)


@dataclasses.dataclass
class SessionPCR:
    """PCR of one session.

    ``readin_weight`` [K, N_in] and ``readin_bias`` [K]: the readin maps a bin x [N_in] to
    ``readin_weight @ x + readin_bias`` (the layout of ``torch.nn.Linear``). ``loadings`` [N, K]:
    the readout in data units: a change dz of the scores changes the data by ``loadings @ dz``.
    ``mean`` [N]: the session's recon mean over the rows PCR used. ``r2_readin``: fraction of
    the variance of the session's centred recon rows (bins of the encoder's span) reproduced
    through readin then readout. ``r2_pcs``: fraction of the variance of its centred recon rows
    in the K components (shared ones in condition mode, its own in single-trial mode). NaN when
    the session's data have no variance. ``trials``: trials used.
    """

    readin_weight: np.ndarray
    readin_bias: np.ndarray
    loadings: np.ndarray
    mean: np.ndarray
    r2_readin: float
    r2_pcs: float
    trials: int


@dataclasses.dataclass
class PCRResult:
    """PCR of every session. ``mode``: :data:`CONDITION` or :data:`SINGLE_TRIAL`; ``reason``:
    why (one phrase); ``conditions``: the shared condition labels used (empty in single-trial
    mode); ``explained``: fraction of the stacked condition averages' variance in the K shared
    components (NaN in single-trial mode); ``rank``: the rank of the stacked condition averages
    (condition mode) or the smallest per-session rank (single-trial mode)."""

    mode: str
    reason: str
    k: int
    conditions: np.ndarray
    explained: float
    rank: int
    sessions: list[SessionPCR]


# -- building blocks -------------------------------------------------------------------------
def _kernel(n_bins: int, sd: float) -> np.ndarray:
    """[T, T] Gaussian weights of bin s for bin t, cut at 4 sd."""
    d = np.arange(n_bins)[:, None] - np.arange(n_bins)[None, :]
    k = np.exp(-0.5 * (d / sd) ** 2)
    k[np.abs(d) > 4.0 * sd] = 0.0
    return k


def smooth(x: np.ndarray, sd: float) -> np.ndarray:
    """Gaussian smoothing along time of ``x`` [n, T, N] (float64 result), NaN-aware: each bin is
    the kernel-weighted mean of the *observed* samples near it (the smoothed data divided by the
    smoothed observation mask), so unobserved samples neither count as zeros nor spread; a bin
    with no observed sample within 4 sd stays NaN. ``sd`` 0: no smoothing."""
    x = np.asarray(x, dtype=np.float64)
    if sd <= 0 or x.shape[1] < 2:
        return x.copy()
    k = _kernel(x.shape[1], float(sd))
    seen = np.isfinite(x)
    num = k @ np.where(seen, x, 0.0)          # [T, T] @ [n, T, N] -> [n, T, N]
    den = k @ seen.astype(np.float64)
    out = np.full_like(num, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def condition_average(x: np.ndarray, cond: np.ndarray, labels: Sequence) -> np.ndarray:
    """Mean over the trials of each label, ignoring NaN: ``x`` [n, T, N], ``cond`` [n] ->
    [len(labels), T, N] (NaN where no trial of the label observed a sample)."""
    x = np.asarray(x, dtype=np.float64)
    cond = np.asarray(cond)
    out = np.full((len(labels), *x.shape[1:]), np.nan)
    for i, label in enumerate(labels):
        sel = x[cond == label]
        seen = np.isfinite(sel)
        count = seen.sum(axis=0)
        total = np.where(seen, sel, 0.0).sum(axis=0)
        np.divide(total, count, out=out[i], where=count > 0)
    return out


def _fill_columns(x: np.ndarray) -> np.ndarray:
    """NaN in a 2-D array -> its column's mean over the observed rows (0 for a column with none)."""
    seen = np.isfinite(x)
    count = seen.sum(axis=0)
    mean = np.where(seen, x, 0.0).sum(axis=0) / np.maximum(count, 1)
    return np.where(seen, x, mean)


def shared_conditions(conds: Sequence[Optional[np.ndarray]]) -> tuple[Optional[np.ndarray], str]:
    """The condition labels every session has (sorted), or None when PCR must use single trials,
    and the reason in words."""
    if not conds:
        return None, "no sessions"
    missing = [i for i, c in enumerate(conds) if c is None]
    if missing:
        return None, (f"{len(missing)} of {len(conds)} session(s) have no condition labels "
                      f"(train_cond)")
    shared = set(np.unique(np.asarray(conds[0])).tolist())
    for c in conds[1:]:
        shared &= set(np.unique(np.asarray(c)).tolist())
    if len(shared) < 2:
        return None, (f"the sessions share {len(shared)} condition label(s); condition averages "
                      f"need at least 2")
    labels = np.array(sorted(shared))
    return labels, f"{len(labels)} condition label(s) shared by all {len(conds)} session(s)"


def principal_scores(xc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Top ``k`` principal-component scores of centred rows ``xc`` [R, N], scaled by one number
    so the first has unit variance (over the R rows): Z = U_k S_k sqrt(R) / S_1 [R, k]. Columns
    beyond the rank of ``xc`` are zero. Returns Z, the squared singular values (all of them) and
    the rank (singular values below S_1 · max(R, N) · 1.2e-7, float32 precision, count as 0)."""
    rows = xc.shape[0]
    z = np.zeros((rows, k))
    if xc.size == 0:
        return z, np.zeros(0), 0
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    rank = int((s > s[0] * max(xc.shape) * _EPS).sum()) if s[0] > 0 else 0
    m = min(k, rank)
    if m:
        z[:, :m] = u[:, :m] * s[:m] * (np.sqrt(rows) / s[0])
    return z, s ** 2, rank


def ridge_regression(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Readin by ridge regression with an unpenalised intercept: ``x`` [R, N_in], ``y`` [R, K] ->
    (W [N_in, K], b [K]) minimising ||(x - m) W + c - y||² + λ ||W||² with m, c the column means
    of x and y, λ = ``ridge`` · trace(x_cᵀ x_c) / N_in (x_c = x - m); then ``x W + b`` with
    b = c - m W predicts y. ``ridge`` 0 is least squares (minimum-norm where x_c is singular)."""
    n_in = x.shape[1]
    m, c = x.mean(axis=0), y.mean(axis=0)
    xc = x - m
    w = np.zeros((n_in, y.shape[1]))
    if xc.size:
        u, s, vt = np.linalg.svd(xc, full_matrices=False)
        if s.size and s[0] > 0:
            lam = ridge * float((s ** 2).sum()) / n_in
            keep = s > s[0] * max(xc.shape) * _EPS
            f = np.where(keep, s / (s ** 2 + lam), 0.0)
            w = vt.T @ (f[:, None] * (u.T @ (y - c)))
    return w, c - m @ w


def loadings(xc: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Readout in data units: the least-squares B [N, K] of xc [R, N] ≈ z Bᵀ for scores z with
    orthogonal columns (a zero column of z gives a zero column of B)."""
    norms = (z ** 2).sum(axis=0)
    b = xc.T @ z
    np.divide(b, norms, out=b, where=norms > 0)
    b[:, norms <= 0] = 0.0
    return b


def _r2(target: np.ndarray, pred: np.ndarray) -> float:
    total = float((target ** 2).sum())
    return 1.0 - float(((target - pred) ** 2).sum()) / total if total > 0 else float("nan")


# -- the whole PCR -----------------------------------------------------------------------------
def pcr(encods: Sequence[np.ndarray], recons: Sequence[np.ndarray],
        conds: Sequence[Optional[np.ndarray]], k: int, smooth_bins: float = 2.0,
        ridge: float = 0.01) -> PCRResult:
    """PCR with ``k`` components of sessions given as encoder data [n, T_e, N_in], recon data
    [n, T_r, N] (NaN where unobserved) and condition labels [n] (or None). Bin t of ``encod``
    is bin t of ``recon``; only the first min(T_e, T_r) bins enter the readin's regression."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not (len(encods) == len(recons) == len(conds)) or not encods:
        raise ValueError("pcr needs as many encod, recon and cond entries, at least one")
    labels, reason = shared_conditions(conds)
    if labels is not None:
        return _pcr_conditions(encods, recons, conds, labels, reason, k, smooth_bins, ridge)
    return _pcr_single_trials(encods, recons, reason, k, smooth_bins, ridge)


def _session(enc_rows: np.ndarray, rec_c: np.ndarray, mean: np.ndarray, z: np.ndarray,
             t_enc: int, t_rec: int, ridge: float, trials: int) -> SessionPCR:
    """One session's readin and readout from its encod rows [G*t_enc, N_in] (raw, NaN filled)
    and centred recon rows [G*t_rec, N] aligned with the scores z [G*t_rec, K]; G groups of
    bins (conditions or trials), the first ``t_enc`` bins of each used by the readin."""
    groups = rec_c.shape[0] // t_rec
    first = (np.arange(groups)[:, None] * t_rec + np.arange(t_enc)[None, :]).reshape(-1)
    w, b = ridge_regression(enc_rows, z[first], ridge)
    load = loadings(rec_c, z)
    pred = (enc_rows @ w + b) @ load.T
    return SessionPCR(readin_weight=w.T.copy(), readin_bias=b, loadings=load, mean=mean,
                      r2_readin=_r2(rec_c[first], pred), r2_pcs=_r2(rec_c, z @ load.T),
                      trials=trials)


def _pcr_conditions(encods, recons, conds, labels, reason, k, smooth_bins, ridge) -> PCRResult:
    centred, means, enc_rows, trials = [], [], [], []
    for enc, rec, cond in zip(encods, recons, conds):
        t_enc = min(enc.shape[1], rec.shape[1])
        cond = np.asarray(cond)
        trials.append(int(np.isin(cond, labels).sum()))
        avg = _fill_columns(condition_average(smooth(rec, smooth_bins), cond, labels)
                            .reshape(-1, rec.shape[2]))
        mean = avg.mean(axis=0)
        centred.append(avg - mean)
        means.append(mean)
        enc_avg = condition_average(smooth(enc[:, :t_enc], smooth_bins), cond, labels)
        enc_rows.append(_fill_columns(enc_avg.reshape(-1, enc.shape[2])))
    stacked = np.concatenate(centred, axis=1)
    z, s2, rank = principal_scores(stacked, k)
    explained = float(s2[:min(k, rank)].sum() / s2.sum()) if s2.size and s2.sum() > 0 else float("nan")
    t_rec = recons[0].shape[1]
    sessions = [_session(er, rc, mu, z, min(enc.shape[1], t_rec), t_rec, ridge, n)
                for er, rc, mu, enc, n in zip(enc_rows, centred, means, encods, trials)]
    return PCRResult(mode=CONDITION, reason=reason, k=k, conditions=labels, explained=explained,
                     rank=rank, sessions=sessions)


def _pcr_single_trials(encods, recons, reason, k, smooth_bins, ridge) -> PCRResult:
    sessions, ranks = [], []
    for enc, rec in zip(encods, recons):
        t_rec = rec.shape[1]
        t_enc = min(enc.shape[1], t_rec)
        rows = _fill_columns(smooth(rec, smooth_bins).reshape(-1, rec.shape[2]))
        mean = rows.mean(axis=0) if rows.shape[0] else np.zeros(rec.shape[2])
        rec_c = rows - mean
        z, _, rank = principal_scores(rec_c, k)
        ranks.append(rank)
        enc_rows = _fill_columns(smooth(enc[:, :t_enc], smooth_bins).reshape(-1, enc.shape[2]))
        sessions.append(_session(enc_rows, rec_c, mean, z, t_enc, t_rec, ridge, rec.shape[0]))
    return PCRResult(mode=SINGLE_TRIAL, reason=reason, k=k, conditions=np.zeros(0, dtype=np.int64),
                     explained=float("nan"), rank=min(ranks), sessions=sessions)


# -- the run's cache ---------------------------------------------------------------------------
def cache_key(k: int, smooth_bins: float, ridge: float) -> str:
    """``pcr-k40-s2-r0.01``: everything besides the data that the result depends on."""
    return f"pcr-k{k}-s{smooth_bins:g}-r{ridge:g}"


_FIELDS = ("readin_weight", "readin_bias", "loadings", "mean", "r2_readin", "r2_pcs", "trials")


def to_arrays(result: PCRResult) -> dict[str, np.ndarray]:
    """The result as a flat dict of numpy arrays (for :class:`lfads_core.InitCache`); session i's
    arrays are ``s<i>.<field>``."""
    out = {"mode": np.array(result.mode), "reason": np.array(result.reason),
           "k": np.array(result.k), "conditions": np.asarray(result.conditions),
           "explained": np.array(result.explained), "rank": np.array(result.rank),
           "n_sessions": np.array(len(result.sessions))}
    for i, s in enumerate(result.sessions):
        for name in _FIELDS:
            out[f"s{i}.{name}"] = np.asarray(getattr(s, name))
    return out


def from_arrays(arrays: dict[str, np.ndarray]) -> PCRResult:
    """Inverse of :func:`to_arrays`."""
    sessions = []
    for i in range(int(arrays["n_sessions"])):
        values = {name: arrays[f"s{i}.{name}"] for name in _FIELDS}
        for name in ("r2_readin", "r2_pcs"):
            values[name] = float(values[name])
        values["trials"] = int(values["trials"])
        sessions.append(SessionPCR(**values))
    return PCRResult(mode=str(arrays["mode"]), reason=str(arrays["reason"]), k=int(arrays["k"]),
                     conditions=np.asarray(arrays["conditions"]),
                     explained=float(arrays["explained"]), rank=int(arrays["rank"]),
                     sessions=sessions)
