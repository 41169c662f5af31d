"""Synthetic sessions with known shared latent trajectories, for the tests of lfads-multisession."""

import dataclasses

import numpy as np
import pytest


@dataclasses.dataclass
class Synth:
    data: list          # per session [n, T, N] float32 (encod = recon)
    cond: list          # per session [n] int labels
    loadings: list      # per session L_s [K, N]
    means: list         # per session mu_s [N]
    latents: np.ndarray  # Z_true [C, T, K]


def make_sessions(seed=0, neurons=(30, 20, 12), n_cond=6, bins=30, k=3, reps=5, noise=0.05,
                  extra_conds=0):
    """Trials = Z_true[cond] L_s + mu_s + noise, with slow latents (0.5, 1, 1.5 cycles per trial); session s has the shared conditions 0..C-1 (and
    ``extra_conds`` of its own, labels 100*s + j, when asked)."""
    rng = np.random.default_rng(seed)
    t = np.arange(bins) / bins
    latents = np.stack([np.stack([np.sin(np.pi * (j + 1) * t + 0.9 * c) * (1.0 + 0.3 * j)
                                  for j in range(k)], axis=-1) for c in range(n_cond)])
    data, conds, loads, means = [], [], [], []
    for s, n in enumerate(neurons):
        load = rng.normal(size=(k, n))
        mu = rng.normal(size=n) * 3
        own = np.concatenate([np.arange(n_cond), 100 * (s + 1) + np.arange(extra_conds)])
        cond = np.repeat(own, reps).astype(np.int64)
        z = np.concatenate([latents, rng.normal(size=(extra_conds, bins, k))])
        index = np.concatenate([np.arange(n_cond), n_cond + np.arange(extra_conds)])
        lat = z[np.repeat(index, reps)]
        x = lat @ load + mu + rng.normal(scale=noise, size=(len(cond), bins, n))
        data.append(x.astype(np.float32))
        conds.append(cond)
        loads.append(load)
        means.append(mu)
    return Synth(data, conds, loads, means, latents)


@pytest.fixture
def synth():
    return make_sessions()


@pytest.fixture
def make_synth():
    return make_sessions
