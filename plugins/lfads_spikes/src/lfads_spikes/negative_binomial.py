"""Reconstruction ``negative_binomial``: over-dispersed spike counts (P = 1).

Per channel n and bin, with μ > 0 the mean count and r_n > 0 the channel's *size* (the NB
"number of successes"; p = r/(r + μ) in scipy's ``nbinom(n=r, p)``):

    P(x) = Γ(x + r) / (Γ(r) x!) · (r/(r + μ))^r · (μ/(r + μ))^x,     x = 0, 1, 2, ...
    E[x] = μ,   Var[x] = μ + μ²/r

a gamma-Poisson mixture: Poisson counts whose rate is μ times a gamma gain of shape r and scale
1/r (mean 1). Large r is Poisson; small r is strongly over-dispersed.

Parametrisation (the choice, and why). The readout gives one parameter per channel and bin, the
log-mean ℓ = log μ, exactly like ``poisson``; the dispersion is a learnable parameter per
channel, log r_n (an ``nn.Parameter`` [N], trained with the model, saved in its checkpoints).
Over-dispersion is a property of a neuron (bursting, unobserved gain fluctuations), usually
modelled per neuron; a per-bin dispersion from the readout (P = 2) would let the generator trade
rate for dispersion bin by bin, is poorly constrained by one count per bin and tends to be
unstable (r → 0 explains any large count). With ``learn_size: false`` r stays at its start.

Start (``init_params``): ℓ at the log of each channel's mean count (as ``poisson``), and r by the
method of moments of the channel's training counts, r = mean²/(var − mean) where var > mean,
else ``max_size`` (no over-dispersion seen); clamped to [``min_size``, ``max_size``]. The marginal
variance also holds the variance of the rate over trials and bins, so this start is a lower
bound of r (more dispersed than the truth); training raises r where the dynamics explain that
variance. ``size`` in the config replaces the estimate for every channel.

Numerics. With ρ = log r and s = softplus(ℓ − ρ) = log(1 + μ/r),

    NLL = (x + r)·s − x·ℓ − H(x, r) + log x!,     H(x, r) = log Γ(x + r) − log Γ(r) − x·ρ

H → 0 as r → ∞, where NLL becomes the Poisson NLL μ − xℓ + log x!. For r < 10, H uses log Γ
directly; for r ≥ 10 the Stirling series (H = (x + r − ½)·log1p(x/r) − x + δ(x + r) − δ(r),
δ(z) = 1/(12z) − 1/(360z³) + 1/(1260z⁵) − 1/(1680z⁷)), which avoids the cancellation of two
large log Γ in float32 (log Γ(10⁴) ≈ 8·10⁴). Finite, with finite gradients, at x = 0 (the value
of unobserved elements). log r is clamped to [log ``min_size``, log ``max_size``] in the
likelihood (no gradient beyond a bound: at ``max_size`` the model is Poisson for any count rate
below ~``max_size``/100 and the gradient of r is ~0 anyway).

Penalty: ``size_penalty`` · mean_n 1/r_n (the over-dispersion α = 1/r, Var = μ + αμ²), a pull
toward Poisson; 0 by default. ``epoch_metrics`` reports ``overdispersion`` = mean_n 1/r_n
(metrics.csv ``train_overdispersion``, ``valid_overdispersion``).
"""

from __future__ import annotations

import math
from typing import Optional

import attrs
import numpy as np
import torch
from torch import Tensor, nn

from lfads_core import DataStats, Reconstruction
from lfads_core.spec.validators import FieldError, ge, gt, within

from .poisson import counts_problem

_STIRLING_FROM = 10.0  # r at and above which H uses the Stirling series
_DEFAULT_START = 10.0  # r before init_params (or without training statistics)
_MAX_SIZE_LIMIT = 1e8  # largest allowed max_size (exp(log r) stays far from float32 overflow)


def _above_min_size(instance, attribute, value) -> None:
    if value is not None and value <= instance.min_size:
        raise FieldError(attribute.name, f"must be > min_size ({instance.min_size!r}), got {value!r}")


def _size_in_range(instance, attribute, value) -> None:
    if value is not None and not instance.min_size <= value <= instance.max_size:
        raise FieldError(attribute.name, f"must be in [min_size, max_size] = [{instance.min_size!r}, "
                                         f"{instance.max_size!r}], got {value!r}")


@attrs.frozen
class NegativeBinomialConfig:
    """``learn_size``: learn each channel's size r (else it keeps its start). ``size``: the start
    of r for every channel; None: each channel's method-of-moments estimate from the training
    counts. ``min_size``, ``max_size``: bounds of r (``max_size`` ≈ Poisson). ``size_penalty``:
    weight of mean_n 1/r_n added to the loss (a pull toward Poisson; 0: none)."""

    min_size: float = attrs.field(default=1e-2, validator=gt(0.0))
    max_size: float = attrs.field(default=1e4, validator=[within(0.0, _MAX_SIZE_LIMIT, low_inclusive=False),
                                                          _above_min_size])
    size: Optional[float] = attrs.field(default=None, validator=[gt(0.0), _size_in_range])
    learn_size: bool = True
    size_penalty: float = attrs.field(default=0.0, validator=ge(0.0))


def _stirling_tail(z: Tensor) -> Tensor:
    """δ(z) = log Γ(z) − [(z − ½) log z − z + ½ log 2π], for z ≥ 10 (error < 1e-12)."""
    inv = 1.0 / z
    inv2 = inv * inv
    return inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 / 1680.0)))


def log_rising_ratio(x: Tensor, log_r: Tensor) -> Tensor:
    """H(x, r) = log Γ(x + r) − log Γ(r) − x log r, elementwise and stable for large r."""
    r = log_r.exp()
    direct = torch.lgamma(x + r) - torch.lgamma(r) - x * log_r
    big = r.clamp_min(_STIRLING_FROM)  # the Stirling branch, finite even where it is not used
    series = ((x + big - 0.5) * torch.log1p(x / big) - x
              + _stirling_tail(x + big) - _stirling_tail(big))
    return torch.where(r < _STIRLING_FROM, direct, series)


def negative_binomial_nll(log_mean: Tensor, log_size: Tensor, x: Tensor) -> Tensor:
    """−log NB(x; mean e^log_mean, size e^log_size), elementwise (broadcasting), in nats."""
    s = torch.logaddexp(log_mean - log_size, torch.zeros((), dtype=log_mean.dtype,
                                                         device=log_mean.device))  # log(1 + μ/r)
    return ((x + log_size.exp()) * s - x * log_mean - log_rising_ratio(x, log_size)
            + torch.lgamma(x + 1.0))


class NegativeBinomial(Reconstruction):
    """params [B, T, N, 1] = log-mean ℓ; a learnable size r_n per channel; mean e^ℓ (counts per
    bin). See the module docstring for the parametrisation, the start and the numerics."""

    Config = NegativeBinomialConfig
    n_params = 1
    support = "non-negative integer counts"
    units = "counts per bin"
    metrics = ("bits_per_spike",)

    def __init__(self, config: NegativeBinomialConfig, n_channels: int):
        super().__init__()
        self.config = config
        self.n_channels = n_channels
        start = config.size if config.size is not None else min(max(_DEFAULT_START, config.min_size),
                                                               config.max_size)
        self.log_size = nn.Parameter(torch.full((n_channels,), math.log(start)),
                                     requires_grad=config.learn_size)

    @property
    def size(self) -> Tensor:
        """Each channel's size r [N] (clamped to [min_size, max_size])."""
        return self._log_size().exp()

    def _log_size(self) -> Tensor:
        return self.log_size.clamp(math.log(self.config.min_size), math.log(self.config.max_size))

    def nll(self, params: Tensor, data: Tensor) -> Tensor:
        return negative_binomial_nll(params[..., 0], self._log_size().to(params.dtype), data)

    def mean(self, params: Tensor) -> Tensor:
        return torch.exp(params[..., 0])

    def penalty(self) -> Tensor:
        if not self.config.learn_size or self.config.size_penalty == 0.0:
            return torch.zeros((), device=self.log_size.device)
        return self.config.size_penalty * torch.exp(-self._log_size()).mean()

    def epoch_metrics(self, params: Tensor, data: Tensor, mask: Tensor) -> dict[str, Tensor]:
        return {"overdispersion": torch.exp(-self._log_size()).mean().detach()}

    def evaluate(self, mean: np.ndarray, data: np.ndarray) -> dict[str, float]:
        """``nb_bits_per_spike``: the information gain, per spike in bits, of this model's own
        likelihood (negative binomial with the posterior-averaged mean and the learned sizes) over
        the null of ``bits_per_spike`` (each channel's constant mean count, Poisson). The core's
        ``bits_per_spike`` scores the rates with a Poisson likelihood; this one scores the whole
        predictive distribution, which is what over-dispersion changes: compare it with the
        ``bits_per_spike`` of a ``poisson`` model of the same data (same null)."""
        x = torch.from_numpy(np.asarray(data, np.float64))
        mu = torch.from_numpy(np.asarray(mean, np.float64)).clamp_min(1e-9)
        seen = torch.isfinite(x)
        x0 = torch.where(seen, x, torch.zeros(()))
        counts = seen.sum(dim=tuple(range(x.dim() - 1))).clamp_min(1)
        null = x0.sum(dim=tuple(range(x.dim() - 1))) / counts  # [N]
        spikes = float(x0.sum())
        if spikes <= 0:
            return {}
        with torch.no_grad():
            model = negative_binomial_nll(mu.log(), self._log_size().double().cpu(), x0)
        log_null = null.clamp_min(1e-9).log()
        poisson_null = null - x0 * log_null + torch.lgamma(x0 + 1.0)
        gain = float((poisson_null - model)[seen].sum())
        return {"nb_bits_per_spike": gain / (math.log(2.0) * spikes)}

    def check_data(self, data: np.ndarray) -> Optional[str]:
        return counts_problem(data, "negative_binomial")

    def moment_sizes(self, stats: DataStats) -> Tensor:
        """Method-of-moments size per channel [N]: mean²/(var − mean) where var > mean, else
        ``max_size``; clamped to [``min_size``, ``max_size``]."""
        mean, var = stats.mean.double(), stats.var.double()
        excess = var - mean
        over = (mean > 0) & (excess > 1e-9 * mean.clamp_min(1e-12))
        r = torch.where(over, mean.square() / torch.where(over, excess, torch.ones_like(excess)),
                        torch.full_like(mean, self.config.max_size))
        return r.clamp(self.config.min_size, self.config.max_size).float()

    def init_params(self, stats: DataStats) -> Tensor:
        if self.config.size is not None:
            r = torch.full((stats.n_channels,), float(self.config.size))
        else:
            r = self.moment_sizes(stats)
        with torch.no_grad():
            self.log_size.copy_(torch.log(r).to(self.log_size))
        return torch.log(stats.mean.clamp_min(1e-3)).unsqueeze(-1)


__all__ = ["NegativeBinomial", "NegativeBinomialConfig", "negative_binomial_nll", "log_rising_ratio"]
