"""Seeded choices: the train/valid split (stratified by condition) and the held-out neurons.

The two use separate random streams of the seed, so that asking for held-out neurons does not
change the split, and the other way round.
"""

from __future__ import annotations

import numpy as np


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def n_valid_trials(n: int, fraction: float) -> int:
    """round(fraction * n), at least 1 and at most n - 1 (both splits need a trial)."""
    return int(min(max(1, round(fraction * n)), n - 1))


def split_trials(n: int, fraction: float, seed: int,
                 codes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions 0..n-1 split into (train, valid), each sorted; n >= 2.

    Without ``codes`` the valid trials are a random subset of ``n_valid_trials(n, fraction)``.
    With ``codes`` (an integer condition per trial) the split is stratified: each condition gives
    its share ``n_valid * n_c / n`` of valid trials, rounded down, and the trials left over go to
    the conditions with the largest remainders (ties broken at random). The same ``seed`` gives the
    same split.
    """
    rng = _rng(seed, 0)
    n_valid = n_valid_trials(n, fraction)
    if codes is None:
        valid = rng.permutation(n)[:n_valid]
    else:
        codes = np.asarray(codes)
        classes, sizes = np.unique(codes, return_counts=True)
        quota = n_valid * sizes / n
        take = np.floor(quota).astype(np.int64)
        left = n_valid - int(take.sum())
        # largest remainder first; a random number breaks ties
        order = np.lexsort((rng.random(len(classes)), -(quota - take)))
        take[order[:left]] += 1
        valid = np.concatenate([rng.permutation(np.flatnonzero(codes == c))[:k]
                                for c, k in zip(classes, take)])
    is_valid = np.zeros(n, dtype=bool)
    is_valid[valid] = True
    return np.flatnonzero(~is_valid), np.flatnonzero(is_valid)


def choose_heldout(n_units: int, n_heldout: int, seed: int) -> np.ndarray:
    """Positions of ``n_heldout`` of ``n_units`` units, chosen at random with the seed, sorted."""
    if n_heldout == 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(_rng(seed, 1).choice(n_units, size=n_heldout, replace=False)).astype(np.int64)
