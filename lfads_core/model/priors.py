"""Priors ``normal`` and ``ar_normal`` with analytic KL divergences from a diagonal Gaussian."""

from __future__ import annotations

import math

import attrs
import torch
from torch import Tensor, nn

from ..components import Prior
from ..spec.validators import gt

_LOG_2PI = math.log(2.0 * math.pi)


def _sum_but_batch(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).sum(dim=1)


@attrs.frozen
class NormalConfig:
    mean: float = 0.0
    variance: float = attrs.field(default=0.1, validator=gt(0.0))
    learn_mean: bool = True


class NormalPrior(Prior):
    """N(m, v I) over the last dimension; m learnable (starting at ``mean``), v fixed.

    ``kl(mean, std)``: posterior [B, Z] or [B, T, U] -> KL summed over non-batch dims [B]:
    ½ Σ [log(v/σ²) + (σ² + (μ − m)²)/v − 1].
    """

    Config = NormalConfig

    def __init__(self, config: NormalConfig, shape: tuple[int, ...]):
        super().__init__()
        self.mean = nn.Parameter(torch.full(shape, float(config.mean)), requires_grad=config.learn_mean)
        self.register_buffer("logvar", torch.full(shape, math.log(config.variance)))

    def kl(self, mean: Tensor, std: Tensor) -> Tensor:
        var = std.square()
        kl = 0.5 * (self.logvar - torch.log(var) + (var + (mean - self.mean).square()) / self.logvar.exp() - 1.0)
        return _sum_but_batch(kl)


@attrs.frozen
class ARNormalConfig:
    tau: float = attrs.field(default=10.0, validator=gt(0.0))
    nvar: float = attrs.field(default=0.1, validator=gt(0.0))
    learnable: bool = True


class ARNormalPrior(Prior):
    """Per-dimension AR(1) prior over a sequence: α = exp(−1/τ) (τ in bins),
    u_1 ~ N(0, nvar/(1 − α²)), u_t | u_{t−1} ~ N(α u_{t−1}, nvar). τ and nvar are learnable
    in log space.

    ``kl(mean, std)`` with a posterior [B, T, U] independent over time is analytic:
    E_q[(u_t − α u_{t−1})²] = (μ_t − α μ_{t−1})² + σ_t² + α² σ_{t−1}². Returns [B].
    """

    Config = ARNormalConfig

    def __init__(self, config: ARNormalConfig, shape: tuple[int, ...]):
        super().__init__()
        dim = shape[-1]
        self.log_tau = nn.Parameter(torch.full((dim,), math.log(config.tau)), requires_grad=config.learnable)
        self.log_nvar = nn.Parameter(torch.full((dim,), math.log(config.nvar)), requires_grad=config.learnable)

    def kl(self, mean: Tensor, std: Tensor) -> Tensor:
        if mean.dim() == 2:
            mean, std = mean.unsqueeze(1), std.unsqueeze(1)
        alpha = torch.exp(-torch.exp(-self.log_tau))
        nvar = self.log_nvar.exp()
        log_nvar = self.log_nvar
        var = std.square()
        neg_entropy = -0.5 * (_LOG_2PI + 1.0 + torch.log(var))  # [B, T, U]
        v1 = nvar / (1.0 - alpha.square())
        first = 0.5 * (_LOG_2PI + torch.log(v1) + (mean[:, 0].square() + var[:, 0]) / v1)  # [B, U]
        resid = (mean[:, 1:] - alpha * mean[:, :-1]).square() + var[:, 1:] + alpha.square() * var[:, :-1]
        rest = 0.5 * (_LOG_2PI + log_nvar + resid / nvar)  # [B, T-1, U]
        return _sum_but_batch(neg_entropy) + _sum_but_batch(first) + _sum_but_batch(rest)
