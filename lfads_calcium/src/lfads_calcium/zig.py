"""Reconstruction ``zig``: zero-inflated gamma of deconvolved calcium event amplitudes.

Per channel n and bin (Wei et al. 2020; RADICaL, Zhu et al. 2022), with ``loc`` the channel's
event threshold:

    y = 0                      with probability 1 − q      (no event; also any 0 < y ≤ loc)
    y − loc ~ Gamma(k, θ)      with probability q          (an event of amplitude y > loc)

so ``mean`` = q·(loc + k·θ), the expected event amplitude per bin (in the units of the events,
i.e. of dF/F after ``lfads-run deconvolve``). The readout gives three parameters per channel and
bin: the logit of q, log k and log θ.

``loc`` rule: ``loc_scale`` × the channel's smallest positive training value (the smallest event
the deconvolution reported), so every training event lies above it; a value ``loc`` in the
config replaces the rule for every channel. A channel without any positive training value gets
the smallest ``loc`` of the others. Values in (0, loc] (small events of the validation data below
the training minimum) count as "no event". With ``learn_loc``, each channel learns a factor
exp(ρ_n) on its ``loc`` (never above its smallest training event), with the penalty
``loc_penalty`` · mean_n ρ_n² added to the loss (reported as ``train_penalty``).
"""

from __future__ import annotations

from typing import Optional

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lfads_core import DataStats, Reconstruction
from lfads_core.spec.validators import ge, gt, within

_MIN_LOG = -7.0  # floor of log k and log θ at the start (k, θ ≥ ~1e-3)


@attrs.frozen
class ZIGConfig:
    loc: Optional[float] = attrs.field(default=None, validator=gt(0.0))
    loc_scale: float = attrs.field(default=0.9, validator=within(0.0, 1.0, low_inclusive=False))
    learn_loc: bool = False
    loc_penalty: float = attrs.field(default=0.01, validator=ge(0.0))


class ZeroInflatedGamma(Reconstruction):
    Config = ZIGConfig
    n_params = 3
    support = "event amplitudes >= 0 (deconvolved calcium; 0 = no event)"
    units = "event amplitude per bin"

    def __init__(self, config: ZIGConfig, n_channels: int):
        super().__init__()
        self.config = config
        start = config.loc if config.loc is not None else 1e-3
        self.register_buffer("loc0", torch.full((n_channels,), float(start)))
        self.register_buffer("loc_max", torch.full((n_channels,), float("inf")))
        self.log_loc = nn.Parameter(torch.zeros(n_channels), requires_grad=config.learn_loc)

    # -- the distribution ---------------------------------------------------------------------
    @property
    def loc(self) -> Tensor:
        """Per-channel event threshold [N]."""
        if not self.config.learn_loc:
            return self.loc0
        return torch.minimum(self.loc0 * self.log_loc.exp(), self.loc_max)

    def nll(self, params: Tensor, data: Tensor) -> Tensor:
        logit, log_k, log_theta = params.unbind(-1)
        loc = self.loc
        event = data > loc
        # log q = −softplus(−logit), log(1 − q) = −softplus(logit)
        nll_zero = F.softplus(logit)
        x = torch.where(event, data - loc, torch.ones_like(data))  # a dummy 1 off the event branch
        k = log_k.exp()
        log_gamma = (k - 1.0) * torch.log(x) - x * torch.exp(-log_theta) - k * log_theta - torch.lgamma(k)
        nll_event = F.softplus(-logit) - log_gamma
        return torch.where(event, nll_event, nll_zero)

    def mean(self, params: Tensor) -> Tensor:
        logit, log_k, log_theta = params.unbind(-1)
        return torch.sigmoid(logit) * (self.loc + torch.exp(log_k + log_theta))

    def penalty(self) -> Tensor:
        if not self.config.learn_loc:
            return torch.zeros((), device=self.log_loc.device)
        return self.config.loc_penalty * self.log_loc.square().mean()

    # -- data ---------------------------------------------------------------------------------
    def check_data(self, data: np.ndarray) -> Optional[str]:
        flat = np.asarray(data).reshape(-1, data.shape[-1])
        seen = np.isfinite(flat)
        negative = (seen & (flat < 0)).any(axis=0)
        if negative.any():
            idx = np.flatnonzero(negative)
            low = float(np.min(np.where(seen, flat, np.inf)))
            shown = ", ".join(str(int(i)) for i in idx[:5]) + (" ..." if len(idx) > 5 else "")
            return (f"has negative values in {len(idx)} channel{'s' if len(idx) > 1 else ''} "
                    f"({shown}; min {low:g}): zig models deconvolved event amplitudes >= 0; for dF/F "
                    f"traces run `lfads-run deconvolve IN.h5 --out EVENTS.h5` first")
        return None

    def data_note(self, data: np.ndarray) -> Optional[str]:
        """Deconvolved events are mostly exactly 0; data with few zeros are likely fluorescence
        or dF/F that skipped the deconvolution."""
        values = np.asarray(data)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return None
        zeros = float(np.mean(values == 0))
        if zeros >= 0.1:
            return None
        return (f"has only {100 * zeros:.3g} % exact zeros: zig expects deconvolved events, mostly 0 "
                f"(no event); for fluorescence or dF/F run `lfads-run deconvolve IN.h5 --out "
                f"EVENTS.h5` first")

    def init_params(self, stats: DataStats) -> Tensor:
        """Sets ``loc`` from the data (see the module docstring) and starts the readout at the
        moments of each channel: q = fraction of events, and k, θ matching the mean and variance
        of the event amplitudes above ``loc``."""
        smallest = stats.min_positive.clone()
        if self.config.loc is not None:
            loc = torch.full_like(smallest, float(self.config.loc))
        else:
            loc = self.config.loc_scale * smallest
            known = torch.isfinite(loc)
            fill = loc[known].min() if bool(known.any()) else torch.tensor(1e-3)
            loc = torch.where(known, loc, fill)
        with torch.no_grad():
            self.loc0.copy_(loc)
            self.loc_max.copy_(torch.where(torch.isfinite(smallest), 0.999 * smallest,
                                           torch.full_like(smallest, float("inf"))))
            self.log_loc.zero_()
        q = (1.0 - stats.frac_zero).clamp(1e-3, 1 - 1e-3)
        m2 = stats.var + stats.mean.square()  # E[y²]
        event_mean = stats.mean / q
        event_var = (m2 / q - event_mean.square()).clamp_min(1e-8)
        excess = (event_mean - loc).clamp_min(1e-3)  # k θ
        theta = (event_var / excess).clamp(1e-3, 1e3)
        k = (excess / theta).clamp(1e-3, 1e3)
        logit = torch.log(q / (1.0 - q))
        return torch.stack([logit, torch.log(k).clamp_min(_MIN_LOG), torch.log(theta).clamp_min(_MIN_LOG)], dim=-1)
