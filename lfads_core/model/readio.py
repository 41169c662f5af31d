"""Readin ``identity`` and readout ``linear``."""

from __future__ import annotations

import math

import attrs
import torch
from torch import Tensor, nn

from ..components import Readin, Readout


@attrs.frozen
class IdentityConfig:
    pass


class IdentityReadin(Readin):
    """Passes the data through: [B, T, N_in] -> [B, T, N_in] (``out_dim`` = N_in)."""

    Config = IdentityConfig

    def __init__(self, config: IdentityConfig, in_dim: int):
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:
        return x


@attrs.frozen
class LinearReadoutConfig:
    pass


class LinearReadout(Readout):
    """Factors to distribution parameters: [B, T, F] -> [B, T, N*P]; weights ~ N(0, 1/F)."""

    Config = LinearReadoutConfig

    def __init__(self, config: LinearReadoutConfig, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        with torch.no_grad():
            self.linear.weight.normal_(0.0, 1.0 / math.sqrt(in_dim))
            self.linear.bias.zero_()

    def forward(self, factors: Tensor) -> Tensor:
        return self.linear(factors)

    def init_bias(self, bias: Tensor) -> None:
        with torch.no_grad():
            self.linear.bias.copy_(bias.reshape(-1))
