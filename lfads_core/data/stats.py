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
    def from_array(cls, data: np.ndarray) -> "DataStats":
        """From an array [trials, T, N] (or [..., N]), NaN where unobserved."""
        x = np.asarray(data, dtype=np.float64).reshape(-1, np.shape(data)[-1])
        seen = np.isfinite(x)
        count = seen.sum(axis=0)
        safe = np.maximum(count, 1)
        x0 = np.where(seen, x, 0.0)
        mean = x0.sum(axis=0) / safe
        var = (np.where(seen, x - mean, 0.0) ** 2).sum(axis=0) / safe
        frac_zero = (seen & (x == 0)).sum(axis=0) / safe
        positive = np.where(seen & (x > 0), x, np.inf).min(axis=0)
        positive[~np.isfinite(positive)] = np.nan
        top = np.where(seen, x, -np.inf).max(axis=0)
        top[~np.isfinite(top)] = np.nan
        frac_obs = count / max(x.shape[0], 1)
        as_t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
        return cls(as_t(mean), as_t(var), as_t(frac_zero), as_t(positive), as_t(top), as_t(frac_obs))
