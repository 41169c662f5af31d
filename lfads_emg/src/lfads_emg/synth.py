"""Synthetic multi-muscle EMG with ground truth (``lfads-run synth emg``).

Model (defaults in brackets; every trial has ``n_bins`` [80] bins of ``bin_ms`` [20 ms], i.e.
1.6 s; ``n_cond`` [50] x ``trials_per_condition`` [20] = 1000 trials):

1. Latent dynamics: the Lorenz system (sigma 10, rho 28, beta 8/3), integrated with RK4 (steps of
   at most 0.0025 Lorenz time units). Each condition has its own start state, a random point of
   the attractor. A trial covers :data:`TRIAL_TIME` (1.0) Lorenz time units, about one loop.
2. Single-trial variability, which a condition average cannot capture but which a latent
   dynamics model can infer from the trial itself (it is all in the trial's initial state and
   tempo):

   - start jitter: each trial starts at its condition's start state plus an isotropic Gaussian
     offset of ``start_sd`` [1.0] Lorenz units (the attractor's coordinates have standard
     deviations of ~8); the chaotic flow makes trials of one condition drift apart over the
     trial, some a little, some (near the switch between the two lobes) a lot;
   - tempo: each trial runs at its own speed, ``exp(tempo_sd * z)`` [0.1] times the nominal one
     (a faster or slower repetition of the same movement: a time warp).

   The latents of every trial are z-scored together (per coordinate, over all trials and bins)
   and stored as ``{split}_latents``.
3. Muscles (``n_muscles`` [16]): muscle m has a unit loading vector ``u_m`` (uniform on the
   sphere), a gain ``G`` (:data:`DRIVE_GAIN`, 2.0) and a threshold ``b_m`` drawn uniformly in
   :data:`BIAS_RANGE` ([-2, 0]), so that it is silent part of the time and bursts elsewhere:
   ``a_m(t) = softplus(G u_m . z(t) + b_m)``. Its true mean, in normalised EMG units, is
   ``mu_m(t) = BASELINE + (1 - BASELINE) a_m(t) / mean(a_m)`` (mean over every trial and bin):
   each muscle averages 1.0, never drops below the noise floor / tonic level :data:`BASELINE`
   (0.05) and peaks at a few units, like EMG normalised by its mean.
4. Observation: rectified, low-pass filtered EMG binned at 20 ms is positive and right-skewed,
   with a standard deviation roughly proportional to its mean. Each bin is drawn independently
   from a mean-preserving gamma distribution, ``x ~ Gamma(shape=k, scale=mu / k)``: mean ``mu``,
   coefficient of variation ``1/sqrt(k)``. ``gamma_shape`` k [4: CV 0.5; 3-10 gives the CV
   0.3-0.6 typical of such envelopes]. Values are float32 and strictly positive (a draw that
   would round to 0 in float32, only possible for k << 1, is set to the smallest positive
   float32).

Keys, for split in (train, valid) (a random ``valid_fraction`` [0.2] of the trials is valid):

- ``{split}_encod_data`` = ``{split}_recon_data``: the noisy EMG, float32 [trials, n_bins, M];
- ``{split}_truth``: the true means ``mu`` (no noise), in the same normalised EMG units;
- ``{split}_latents``: float32 [trials, n_bins, 3], the z-scored Lorenz state of each trial;
- ``{split}_inds``: int64, the index in the unshuffled trial order (trial i has condition
  ``i // trials_per_condition``); ``{split}_cond``: int64, the condition.

Reference numbers with the defaults (seeds 0-2): data / truth has mean 1.000 and CV 0.500; on the
valid trials, R² against the truth (per muscle, averaged) is 0.47-0.52 for the raw data,
0.56-0.61 for the condition average of the train trials' data (:func:`condition_average_r2`;
0.59-0.64 averaging even the noise-free truth) and 0.93-0.94 for the best Gaussian smoothing of
each trial (s.d. 3 bins).

File attributes: ``bin_size_ms``, ``generator = "emg"``, ``seed``, ``gamma_shape``,
``truth_units``, ``n_cond``, ``trials_per_condition``, ``n_muscles``, ``start_sd``,
``tempo_sd``, ``baseline``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["EmgData", "make_emg", "condition_average_r2", "r2"]

SPLITS = ("train", "valid")
TRUTH_UNITS = "normalised EMG (mean per bin)"

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0  # Lorenz parameters
MAX_STEP = 0.0025  # longest RK4 step, Lorenz time units
TRIAL_TIME = 1.0  # Lorenz time units covered by one trial at the nominal tempo
BURN_IN = 5.0  # Lorenz time units run before start states are drawn
POOL_TIME = 20.0  # Lorenz time units start states are drawn from
N_CHAINS = 8  # independent trajectories the start states come from
DRIVE_GAIN = 2.0  # gain G of the muscles' drive
BIAS_RANGE = (-2.0, 0.0)  # range of the muscles' thresholds b_m
BASELINE = 0.05  # floor of every muscle's true mean, normalised units


class EmgData(dict):
    """``dict[str, np.ndarray]`` with an ``attrs`` dict of file attributes."""

    def __init__(self, arrays: dict, attrs: dict[str, Any]):
        super().__init__(arrays)
        self.attrs: dict[str, Any] = dict(attrs)


def _lorenz_flow(state):
    x, y, z = state[..., 0], state[..., 1], state[..., 2]
    return np.stack([SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z], axis=-1)


def _integrate(start, n_samples: int, dt):
    """RK4 from ``start`` [B, 3]; sample j at time ``j * dt`` (``dt`` scalar or [B]).
    Returns [B, n_samples, 3]."""
    dt = np.broadcast_to(np.asarray(dt, dtype=np.float64), (start.shape[0],))
    n_sub = max(1, int(math.ceil(float(dt.max()) / MAX_STEP)))
    h = (dt / n_sub)[:, None]
    out = np.empty((start.shape[0], n_samples, 3))
    s = np.array(start, dtype=np.float64)
    out[:, 0] = s
    for j in range(1, n_samples):
        for _ in range(n_sub):
            k1 = _lorenz_flow(s)
            k2 = _lorenz_flow(s + 0.5 * h * k1)
            k3 = _lorenz_flow(s + 0.5 * h * k2)
            k4 = _lorenz_flow(s + h * k3)
            s = s + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        out[:, j] = s
    return out


def _attractor_points(rng, n: int):
    """``n`` distinct states [n, 3] on the Lorenz attractor."""
    dt = 0.01
    n_burn, n_pool = int(round(BURN_IN / dt)), int(round(POOL_TIME / dt))
    x0 = rng.normal(size=(N_CHAINS, 3)) + np.array([0.0, 0.0, RHO - 1.0])
    pool = _integrate(x0, n_burn + n_pool, dt)[:, n_burn:].reshape(-1, 3)
    if n > len(pool):
        raise ValueError(f"n_conditions must be at most {len(pool)}, got {n}")
    return pool[rng.choice(len(pool), size=n, replace=False)]


def make_emg(seed: int = 0, gamma_shape: float = 4.0, n_muscles: int = 16, *,
             n_conditions: int = 50, trials_per_condition: int = 20, n_bins: int = 80,
             bin_ms: float = 20.0, start_sd: float = 1.0, tempo_sd: float = 0.1,
             valid_fraction: float = 0.2) -> EmgData:
    """Synthetic EMG with true means and latents (model and keys: module docstring)."""
    for name, value in dict(gamma_shape=gamma_shape, bin_ms=bin_ms).items():
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive number, got {value}")
    for name, value in dict(n_muscles=n_muscles, n_conditions=n_conditions,
                            trials_per_condition=trials_per_condition).items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value}")
    if int(n_bins) != n_bins or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins}")
    for name, value in dict(start_sd=start_sd, tempo_sd=tempo_sd).items():
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a number >= 0, got {value}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed}")
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    n_muscles, n_conditions, n_bins = int(n_muscles), int(n_conditions), int(n_bins)
    trials_per_condition = int(trials_per_condition)
    n_trials = n_conditions * trials_per_condition

    rng = np.random.default_rng([int(seed), 0xE36])
    # 1-2. latents: condition start states, per-trial start jitter and tempo
    cond_start = _attractor_points(rng, n_conditions)
    conditions = np.repeat(np.arange(n_conditions, dtype=np.int64), trials_per_condition)
    starts = cond_start[conditions] + start_sd * rng.normal(size=(n_trials, 3))
    tempo = np.exp(tempo_sd * rng.normal(size=n_trials))
    raw = _integrate(starts, n_bins, tempo * TRIAL_TIME / n_bins)
    latents = (raw - raw.mean(axis=(0, 1))) / raw.std(axis=(0, 1))

    # 3. muscles: thresholded (softplus) projections, normalised to a mean of 1
    loadings = rng.normal(size=(3, n_muscles))
    loadings /= np.linalg.norm(loadings, axis=0)
    bias = rng.uniform(*BIAS_RANGE, size=n_muscles)
    drive = DRIVE_GAIN * (latents @ loadings) + bias
    act = np.logaddexp(0.0, drive)  # softplus
    truth = BASELINE + (1.0 - BASELINE) * act / act.mean(axis=(0, 1))

    # 4. gamma noise, mean-preserving
    data = rng.gamma(shape=float(gamma_shape), scale=truth / float(gamma_shape)).astype(np.float32)
    data = np.maximum(data, np.finfo(np.float32).tiny)

    perm = rng.permutation(n_trials).astype(np.int64)
    n_valid = int(round(valid_fraction * n_trials))
    arrays: dict[str, np.ndarray] = {}
    for split, inds in zip(SPLITS, (perm[n_valid:], perm[:n_valid])):
        arrays[f"{split}_encod_data"] = data[inds]
        arrays[f"{split}_recon_data"] = data[inds].copy()
        arrays[f"{split}_truth"] = truth[inds].astype(np.float32)
        arrays[f"{split}_latents"] = latents[inds].astype(np.float32)
        arrays[f"{split}_inds"] = inds
        arrays[f"{split}_cond"] = conditions[inds]
    attrs = dict(bin_size_ms=float(bin_ms), generator="emg", seed=int(seed),
                 gamma_shape=float(gamma_shape), truth_units=TRUTH_UNITS,
                 n_conditions=n_conditions, trials_per_condition=trials_per_condition,
                 n_muscles=n_muscles, start_sd=float(start_sd), tempo_sd=float(tempo_sd),
                 baseline=BASELINE)
    return EmgData(arrays, attrs)


def r2(estimate, truth) -> float:
    """R² of ``estimate`` against ``truth`` [trials, T, N], per channel (variance of the truth over
    trials and bins), averaged over channels."""
    truth = np.asarray(truth, dtype=np.float64)
    err = ((np.asarray(estimate, dtype=np.float64) - truth) ** 2).sum(axis=(0, 1))
    tot = ((truth - truth.mean(axis=(0, 1))) ** 2).sum(axis=(0, 1))
    return float(np.mean(1.0 - err / tot))


def condition_average_r2(data: dict, source: str = "encod_data") -> float:
    """R² against the truth of the valid trials of the condition average of ``{split}_<source>``
    over the train trials of the same condition (the ``condition average`` baseline)."""
    avg = {c: data[f"train_{source}"][data["train_cond"] == c].astype(np.float64).mean(axis=0)
           for c in np.unique(data["train_cond"])}
    est = np.stack([avg[c] for c in data["valid_cond"]])
    return r2(est, data["valid_truth"])
