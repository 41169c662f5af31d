"""Reconstruction ``gaussian``: per-element Gaussian with mean μ and log-variance (P = 2)."""

from __future__ import annotations

import math

import attrs
import torch
from torch import Tensor

from ..components import Reconstruction
from ..data.stats import DataStats

_LOG_2PI = math.log(2.0 * math.pi)


@attrs.frozen
class GaussianConfig:
    pass


class Gaussian(Reconstruction):
    """params [B, T, N, 2] = (μ, log σ²); NLL = ½(log 2π + log σ² + (x − μ)²/σ²); mean μ, in the
    data's own units. Starts at each channel's mean and variance."""

    Config = GaussianConfig
    n_params = 2
    support = "real values"
    units = "data units"

    def __init__(self, config: GaussianConfig, n_channels: int):
        super().__init__()
        self.n_channels = n_channels

    def nll(self, params: Tensor, data: Tensor) -> Tensor:
        mu, logvar = params[..., 0], params[..., 1]
        return 0.5 * (_LOG_2PI + logvar + (data - mu).square() * torch.exp(-logvar))

    def mean(self, params: Tensor) -> Tensor:
        return params[..., 0]

    def init_params(self, stats: DataStats) -> Tensor:
        return torch.stack([stats.mean, torch.log(stats.var.clamp_min(1e-6))], dim=-1)
