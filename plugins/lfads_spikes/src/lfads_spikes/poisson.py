"""Reconstruction ``poisson``: spike counts with a log-rate parameter (P = 1)."""

from __future__ import annotations

from typing import Optional

import attrs
import numpy as np
import torch
from torch import Tensor

from lfads_core import DataStats, Reconstruction


@attrs.frozen
class PoissonConfig:
    pass


def _channels(idx: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return f"channel{'s' if len(idx) > 1 else ''} {shown}{more}"


def counts_problem(data: np.ndarray, model: str) -> Optional[str]:
    """The problem of ``data`` [..., N] (NaN = unobserved) as spike counts, naming the channels,
    or None: negative or non-integer values."""
    data = np.asarray(data)
    if data.size == 0:
        return None
    flat = data.reshape(-1, data.shape[-1]) if data.ndim > 1 else data.reshape(-1, 1)
    seen = np.isfinite(flat)
    negative = (seen & (flat < 0)).any(axis=0)
    if negative.any():
        low = float(np.nanmin(np.where(seen, flat, np.nan)))
        where = f" in {_channels(np.flatnonzero(negative))}" if data.ndim > 1 else ""
        return f"has negative values{where} (min {low:g}); {model} needs counts >= 0"
    fractional = seen & (flat != np.round(flat))
    if fractional.any():
        bad = flat[fractional].flat[0]
        where = f" in {_channels(np.flatnonzero(fractional.any(axis=0)))}" if data.ndim > 1 else ""
        return f"has non-integer values{where} (e.g. {float(bad):.9g}); {model} needs spike counts"
    return None


class Poisson(Reconstruction):
    """params [B, T, N, 1] = log-rate ℓ; NLL = e^ℓ − x ℓ + log x!; mean e^ℓ (counts per bin).
    Starts at each channel's mean count (log of max(mean, 1e-3))."""

    Config = PoissonConfig
    n_params = 1
    support = "non-negative integer counts"
    units = "counts per bin"
    metrics = ("bits_per_spike",)

    def __init__(self, config: PoissonConfig, n_channels: int):
        super().__init__()
        self.n_channels = n_channels

    def nll(self, params: Tensor, data: Tensor) -> Tensor:
        log_rate = params[..., 0]
        return torch.exp(log_rate) - data * log_rate + torch.lgamma(data + 1.0)

    def mean(self, params: Tensor) -> Tensor:
        return torch.exp(params[..., 0])

    def check_data(self, data: np.ndarray) -> Optional[str]:
        return counts_problem(data, "Poisson")

    def init_params(self, stats: DataStats) -> Tensor:
        return torch.log(stats.mean.clamp_min(1e-3)).unsqueeze(-1)
