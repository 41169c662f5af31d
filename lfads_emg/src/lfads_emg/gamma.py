"""Reconstruction ``gamma``: rectified, filtered, binned EMG as gamma-distributed per bin.

Parametrised by **mean and shape** (P = 2 per channel and bin, both from the readout): the
readout gives log μ and log k; the gamma has shape k and scale θ = μ / k, so ``mean`` = μ
directly (the expected EMG of the bin, in the data's units) and k sets the noise: the
coefficient of variation of a bin is 1/√k. Per element:

    NLL = lgamma(k) + k·log(μ/k) − (k − 1)·log x + k·x/μ

The gamma needs x > 0. Zeros or negative values (rectified EMG that was baseline-subtracted, or
filtering ringing) are an error unless ``floor`` is set: every value below ``floor`` is then
treated as ``floor`` in the likelihood (the data file is not changed), and ``lfads-run
validate`` and the start of a run say how many values that concerns. Alternatively, ``zig`` of
lfads-calcium models exact zeros.
"""

from __future__ import annotations

import warnings
from typing import Optional

import attrs
import numpy as np
import torch
from torch import Tensor

from lfads_core import DataStats, Reconstruction
from lfads_core.spec.validators import gt

SCALE_SPREAD = 100.0  # channels whose scales differ more than this were not normalised


@attrs.frozen
class GammaConfig:
    floor: Optional[float] = attrs.field(default=None, validator=gt(0.0))


class Gamma(Reconstruction):
    Config = GammaConfig
    n_params = 2
    support = "strictly positive values (rectified, filtered EMG)"
    units = "EMG (data units) per bin"

    def __init__(self, config: GammaConfig, n_channels: int):
        super().__init__()
        self.floor = config.floor

    def nll(self, params: Tensor, data: Tensor) -> Tensor:
        log_mu, log_k = params.unbind(-1)
        if self.floor is not None:
            x = data.clamp_min(self.floor)
        else:  # masked (unobserved) elements hold 0: keep their value and gradient finite
            x = torch.where(data > 0, data, torch.ones_like(data))
        k = log_k.exp()
        return torch.lgamma(k) + k * (log_mu - log_k) - (k - 1.0) * torch.log(x) + k * x * torch.exp(-log_mu)

    def mean(self, params: Tensor) -> Tensor:
        return params[..., 0].exp()

    def _below(self, data: np.ndarray, bound: float, strict: bool) -> tuple[int, str]:
        """How many observed values are below ``bound`` (or at it), and in which channels."""
        flat = np.asarray(data).reshape(-1, data.shape[-1])
        seen = np.isfinite(flat)
        bad = seen & ((flat < bound) if strict else (flat <= bound))
        idx = np.flatnonzero(bad.any(axis=0))
        shown = ", ".join(str(int(i)) for i in idx[:5]) + (" ..." if len(idx) > 5 else "")
        where = f"{len(idx)} channel{'s' if len(idx) > 1 else ''} ({shown})" if len(idx) else ""
        return int(bad.sum()), where

    def check_data(self, data: np.ndarray) -> Optional[str]:
        if self.floor is not None:
            return None
        values, where = self._below(data, 0.0, strict=False)
        if values:
            return (f"has {values} values <= 0 in {where}; gamma "
                    f"needs strictly positive EMG: set model.reconstruction.floor (e.g. 1.0e-4) to "
                    f"treat smaller values as the floor, or use zig (lfads-calcium) for exact zeros")
        return None

    def data_note(self, data: np.ndarray) -> Optional[str]:
        notes = []
        if self.floor is not None:
            values, where = self._below(data, self.floor, strict=True)
            if values:
                share = values / max(int(np.isfinite(data).sum()), 1)
                notes.append(f"has {values} values ({100 * share:.2g}%) below floor {self.floor:g} in "
                             f"{where}: the likelihood treats them as {self.floor:g}")
        flat = np.asarray(data, dtype=np.float64).reshape(-1, data.shape[-1])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels
            top = np.nanpercentile(flat, 95, axis=0)
        top = top[np.isfinite(top) & (top > 0)]
        if top.size > 1 and top.max() > SCALE_SPREAD * top.min():
            notes.append(f"has channels whose 95th percentiles differ {top.max() / top.min():.0f}-fold "
                         f"({top.min():.3g} to {top.max():.3g}): normalise each channel, e.g. by its 95th "
                         f"percentile (docs/user-guide.md, EMG); the encoder reads the values as they are")
        return "; ".join(notes) or None

    def init_params(self, stats: DataStats) -> Tensor:
        """Starts at each channel's mean, with the shape k = mean²/variance of the data (the
        gamma that matches the channel's first two moments; clamped to [0.5, 100])."""
        mean = stats.mean.clamp_min(self.floor or 1e-6)
        k = (mean.square() / stats.var.clamp_min(1e-12)).clamp(0.5, 100.0)
        return torch.stack([mean.log(), k.log()], dim=-1)
