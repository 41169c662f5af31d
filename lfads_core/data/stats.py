"""Per-channel statistics of the training data, handed to a reconstruction's ``init_params``."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class DataStats:
    """Statistics of one session's training reconstruction data, per channel, over the observed
    (non-NaN) samples of every trial and bin. Each field is a float32 tensor [N].

    ``mean``, ``var`` (population variance), ``frac_zero`` (fraction of observed samples equal to
    0), ``min_positive`` (smallest value > 0; NaN for a channel without one), ``max``,
    ``frac_observed`` (observed samples / all samples). A channel with no observed sample has
    mean 0, var 0, frac_zero 0, max NaN.
    """

    mean: Tensor
    var: Tensor
    frac_zero: Tensor
    min_positive: Tensor
    max: Tensor
    frac_observed: Tensor

    @property
    def n_channels(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_array(cls, data: np.ndarray, chunk: int = 1 << 20) -> "DataStats":
        """From an array [trials, T, N] (or [..., N]), NaN where unobserved. Two passes over
        rows of ``chunk`` samples in float64, so a large dataset is never copied whole."""
        flat = np.asarray(data).reshape(-1, np.shape(data)[-1])
        n_rows, n = flat.shape
        step = max(1, chunk // max(n, 1))
        count, total, zeros = np.zeros(n), np.zeros(n), np.zeros(n)
        positive, top = np.full(n, np.inf), np.full(n, -np.inf)
        for start in range(0, n_rows, step):
            x = flat[start:start + step].astype(np.float64)
            seen = np.isfinite(x)
            count += seen.sum(axis=0)
            total += np.where(seen, x, 0.0).sum(axis=0)
            zeros += (seen & (x == 0)).sum(axis=0)
            positive = np.minimum(positive, np.where(seen & (x > 0), x, np.inf).min(axis=0))
            top = np.maximum(top, np.where(seen, x, -np.inf).max(axis=0))
        safe = np.maximum(count, 1)
        mean = total / safe
        squares = np.zeros(n)
        for start in range(0, n_rows, step):
            x = flat[start:start + step].astype(np.float64)
            squares += (np.where(np.isfinite(x), x - mean, 0.0) ** 2).sum(axis=0)
        var = squares / safe
        frac_zero = zeros / safe
        positive[~np.isfinite(positive)] = np.nan
        top[~np.isfinite(top)] = np.nan
        frac_obs = count / max(n_rows, 1)
        as_t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
        return cls(as_t(mean), as_t(var), as_t(frac_zero), as_t(positive), as_t(top), as_t(frac_obs))
