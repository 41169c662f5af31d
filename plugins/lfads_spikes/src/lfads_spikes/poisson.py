"""Reconstruction ``poisson``: spike counts with a log-rate parameter (P = 1)."""

from __future__ import annotations

from typing import Optional

import attrs
import numpy as np
import torch
from torch import Tensor, nn


@attrs.frozen
class PoissonConfig:
    pass


class Poisson(nn.Module):
    """params [B, T, N, 1] = log-rate ℓ; NLL = e^ℓ − x ℓ + log x!; mean e^ℓ (counts per bin)."""

    Config = PoissonConfig
    n_params = 1
    support = "non-negative integer counts"

    def __init__(self, config: PoissonConfig, n_channels: int):
        super().__init__()
        self.n_channels = n_channels

    def nll(self, params: Tensor, data: Tensor) -> Tensor:
        log_rate = params[..., 0]
        return torch.exp(log_rate) - data * log_rate + torch.lgamma(data + 1.0)

    def mean(self, params: Tensor) -> Tensor:
        return torch.exp(params[..., 0])

    def penalty(self) -> Tensor:
        return torch.zeros(())

    def check_data(self, data: np.ndarray) -> Optional[str]:
        if data.size == 0:
            return None
        if float(np.min(data)) < 0:
            return f"has negative values (min {float(np.min(data)):g}); Poisson needs counts >= 0"
        if not np.array_equal(data, np.round(data)):
            bad = data[data != np.round(data)].flat[0]
            return f"has non-integer values (e.g. {float(bad):g}); Poisson needs spike counts"
        return None

    def init_params(self, mean: Tensor) -> Tensor:
        return torch.log(mean.clamp_min(1e-3)).unsqueeze(-1)
