"""Readin ``multisession`` and readout ``multisession``: one linear map per session, started
from principal-component regression of the training data (:mod:`lfads_multisession.pcr`)."""

from __future__ import annotations

import math
from typing import Sequence

import attrs
import numpy as np
import torch
from torch import Tensor, nn

from lfads_core import InitContext, Readin, Readout
from lfads_core.spec.validators import finite, ge, gt, one_of

from . import pcr as _pcr

__all__ = ["MultisessionReadinConfig", "MultisessionReadin", "MultisessionReadoutConfig",
           "MultisessionReadout", "cached_pcr", "parameter_weights", "DEFAULT_RIDGE"]

DEFAULT_RIDGE = 0.01


@attrs.frozen
class MultisessionReadinConfig:
    """``dim``: the shared size D every session's channels are mapped to. ``init``: ``pcr``
    (principal-component regression of the training data) or ``random`` (weights ~ N(0, 1/N_in),
    bias 0). ``frozen``: the readin is not trained (its weights keep their start).
    ``ridge``: ridge strength of the PCR readin, relative to the average per-channel sum of
    squares of the centred inputs (λ = ridge · trace(XᵀX) / N_in). ``smooth_bins``: sd in bins
    of the Gaussian smoothing of each trial before PCR (0: none)."""

    dim: int = attrs.field(validator=ge(1))
    init: str = attrs.field(default="pcr", validator=one_of("pcr", "random"))
    frozen: bool = False
    ridge: float = attrs.field(default=DEFAULT_RIDGE, validator=[ge(0.0), finite])
    smooth_bins: float = attrs.field(default=2.0, validator=[ge(0.0), finite])


@attrs.frozen
class MultisessionReadoutConfig:
    """``init``: ``pcr`` or ``random`` (weights ~ N(0, 1/F), bias from the reconstruction's
    ``init_params`` either way). ``smooth_bins``: as for the readin. ``max_row_norm``: after PCR,
    a weight row (one parameter of one neuron) longer than this is scaled down to it; 1 is the
    typical row norm of the random init."""

    init: str = attrs.field(default="pcr", validator=one_of("pcr", "random"))
    smooth_bins: float = attrs.field(default=2.0, validator=[ge(0.0), finite])
    max_row_norm: float = attrs.field(default=1.0, validator=[gt(0.0), finite])


def cached_pcr(ctx: InitContext, k: int, smooth_bins: float, ridge: float) -> _pcr.PCRResult:
    """PCR of the context's sessions with ``k`` components, computed once per run and data
    (kept in the run's init cache under :func:`lfads_multisession.pcr.cache_key`)."""
    def compute() -> dict[str, np.ndarray]:
        s = ctx.sessions
        result = _pcr.pcr([d.encod for d in s], [d.recon for d in s], [d.cond for d in s],
                          k=k, smooth_bins=smooth_bins, ridge=ridge)
        out = _pcr.to_arrays(result)
        out["session_names"] = np.array([d.name for d in s])
        return out

    return _pcr.from_arrays(ctx.cache.get(_pcr.cache_key(k, smooth_bins, ridge), compute))


class MultisessionReadin(Readin):
    """One session's channels to the shared size: [B, T, N_in] -> [B, T, D], ``x W_sᵀ + b_s``.

    With ``init: pcr`` every session's readin is set by PCR before training; the PCR mode used
    (``"condition"`` or ``"single_trial"``) is kept in ``self.init_mode`` and in the run's init
    cache."""

    Config = MultisessionReadinConfig

    def __init__(self, config: MultisessionReadinConfig, in_dim: int):
        super().__init__()
        self.config = config
        self.out_dim = int(config.dim)
        self.linear = nn.Linear(in_dim, self.out_dim)
        self.init_mode = "random"
        with torch.no_grad():
            self.linear.weight.normal_(0.0, 1.0 / math.sqrt(in_dim))
            self.linear.bias.zero_()
        if config.frozen:
            self.linear.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    @classmethod
    def init_from_data(cls, readins: Sequence["MultisessionReadin"], ctx: InitContext) -> None:
        if not readins or readins[0].config.init != "pcr":
            return
        config = readins[0].config
        result = cached_pcr(ctx, config.dim, config.smooth_bins, config.ridge)
        for module, s in zip(readins, result.sessions, strict=True):
            with torch.no_grad():
                w = module.linear.weight
                module.linear.weight.copy_(torch.as_tensor(s.readin_weight, dtype=w.dtype))
                module.linear.bias.copy_(torch.as_tensor(s.readin_bias, dtype=w.dtype))
            module.init_mode = result.mode


def parameter_weights(recon, bias: Tensor, load: Tensor, max_row_norm: float) -> Tensor:
    """Readout weight [N*P, K] in the reconstruction's parameter space from data-unit loadings
    ``load`` [N, K], linearised at the bias ``bias`` [N, P].

    For neuron n, g_n = ∂ mean_n / ∂ params_n at the bias ([P], by autograd through
    ``recon.mean``, which must make channel n depend on its own parameters only). A data change dx
    needs the parameter change g_n dx / |g_n|² (the smallest one to first order; for a log-rate
    dx / rate), so row n*P + p is g_n[p] / |g_n|² · load[n]. A neuron with |g_n|² <= 1e-12 (or a
    non-finite g_n) gets zero rows. Then every row longer than ``max_row_norm`` is scaled down to
    that norm."""
    n, p = bias.shape
    b = bias.detach().clone().reshape(1, 1, n, p).requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(recon.mean(b).sum(), b)
    g = g.reshape(n, p).to(torch.float64)
    sq = (g ** 2).sum(dim=1)
    ok = torch.isfinite(sq) & (sq > 1e-12)
    inv = torch.where(ok, 1.0 / torch.where(ok, sq, torch.ones_like(sq)), torch.zeros_like(sq))
    g = torch.where(ok[:, None], g, torch.zeros_like(g))
    w = (g * inv[:, None])[:, :, None] * load.to(torch.float64)[:, None, :]   # [N, P, K]
    w = w.reshape(n * p, -1)
    norms = w.norm(dim=1, keepdim=True)
    w = w * torch.clamp(max_row_norm / torch.clamp(norms, min=1e-300), max=1.0)
    return w.to(bias.dtype)


class MultisessionReadout(Readout):
    """The shared factors to one session's distribution parameters: [B, T, F] -> [B, T, N*P].

    With ``init: pcr`` the weights start from PCR with F components: the session's data-unit
    loadings mapped into the reconstruction's parameters at the start bias
    (:func:`parameter_weights`)."""

    Config = MultisessionReadoutConfig

    def __init__(self, config: MultisessionReadoutConfig, in_dim: int, out_dim: int):
        super().__init__()
        self.config = config
        self.linear = nn.Linear(in_dim, out_dim)
        self.init_mode = "random"
        with torch.no_grad():
            self.linear.weight.normal_(0.0, 1.0 / math.sqrt(in_dim))
            self.linear.bias.zero_()

    def forward(self, factors: Tensor) -> Tensor:
        return self.linear(factors)

    def init_bias(self, bias: Tensor) -> None:
        with torch.no_grad():
            self.linear.bias.copy_(bias.reshape(-1))

    @classmethod
    def init_from_data(cls, readouts: Sequence["MultisessionReadout"], ctx: InitContext) -> None:
        if not readouts or readouts[0].config.init != "pcr":
            return
        config = readouts[0].config
        k = readouts[0].linear.in_features
        result = cached_pcr(ctx, k, config.smooth_bins, DEFAULT_RIDGE)
        for module, recon, s in zip(readouts, ctx.reconstructions, result.sessions, strict=True):
            n = s.loadings.shape[0]
            out = module.linear.out_features
            if out % n:
                raise ValueError(f"readout of {out} outputs for {n} neurons")
            bias = module.linear.bias.detach().reshape(n, out // n)
            w = parameter_weights(recon, bias, torch.as_tensor(s.loadings), config.max_row_norm)
            with torch.no_grad():
                module.linear.weight.copy_(w)
            module.init_mode = result.mode
