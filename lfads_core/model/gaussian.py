"""Reconstruction ``gaussian``: per-element Gaussian with mean μ and log-variance (P = 2)."""

from __future__ import annotations

import math
from typing import Optional

import attrs
import numpy as np
import torch
from torch import Tensor, nn

_LOG_2PI = math.log(2.0 * math.pi)


@attrs.frozen
class GaussianConfig:
    pass


class Gaussian(nn.Module):
    """params [B, T, N, 2] = (μ, log σ²); NLL = ½(log 2π + log σ² + (x − μ)²/σ²); mean μ."""

    Config = GaussianConfig
    n_params = 2
    support = "real values"

    def __init__(self, config: GaussianConfig, n_channels: int):
        super().__init__()
        self.n_channels = n_channels

    def nll(self, params: Tensor, data: Tensor) -> Tensor:
        mu, logvar = params[..., 0], params[..., 1]
        return 0.5 * (_LOG_2PI + logvar + (data - mu).square() * torch.exp(-logvar))

    def mean(self, params: Tensor) -> Tensor:
        return params[..., 0]

    def penalty(self) -> Tensor:
        return torch.zeros(())

    def check_data(self, data: np.ndarray) -> Optional[str]:
        return None

    def init_params(self, mean: Tensor, var: Optional[Tensor] = None) -> Tensor:
        logvar = torch.log(var.clamp_min(1e-6)) if var is not None else torch.zeros_like(mean)
        return torch.stack([mean, logvar], dim=-1)
