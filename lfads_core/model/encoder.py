"""Encoder ``bigru``: bidirectional GRU encoders for the initial condition and controller inputs."""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..components import Encoder
from ..protocols import EncoderOutput
from ..spec.validators import ge
from .dropout import dropout as drop
from .gru import StackedGRU


@attrs.frozen
class BiGRUConfig:
    ic_enc_dim: int = attrs.field(default=64, validator=ge(1))
    ci_enc_dim: int = attrs.field(default=64, validator=ge(0))
    ic_dim: int = attrs.field(default=64, validator=ge(1))
    ci_lag: int = attrs.field(default=1, validator=ge(0))
    ic_enc_seq_len: int = attrs.field(default=0, validator=ge(0))
    ic_post_var_min: float = attrs.field(default=1e-4, validator=ge(0.0))
    cell_clip: float = attrs.field(default=5.0, validator=ge(0.0))


class BiGRUEncoder(Encoder):
    """IC encoder: a bidirectional GRU over the first ``ic_enc_seq_len`` bins (all when 0); its
    two final states -> dropout -> linear -> posterior mean and log-variance of z_ic [B, Z],
    std = sqrt(exp(logvar) + ic_post_var_min).

    Controller-input encoder (when ``want_ci`` and ``ci_enc_dim`` > 0): a second bidirectional
    GRU; step t sees the forward state at t - ci_lag and the backward state at t + ci_lag (zeros
    outside), giving ci [B, T_e, 2 * ci_enc_dim], zero-padded to the reconstruction length.

    All directions with equal hidden sizes run as one stacked GRU (one batched matmul a step).
    """

    Config = BiGRUConfig

    def __init__(self, config: BiGRUConfig, in_dim: int, want_ci: bool = True):
        super().__init__()
        self.config = config
        self.ic_dim = config.ic_dim
        self.use_ci = bool(want_ci and config.ci_enc_dim > 0)
        self.ci_dim = 2 * config.ci_enc_dim if self.use_ci else 0
        clip = config.cell_clip
        self.shared = self.use_ci and config.ci_enc_dim == config.ic_enc_dim
        if self.shared:
            self.rnn = StackedGRU(4, in_dim, config.ic_enc_dim, clip)  # ic fwd, ic bwd, ci fwd, ci bwd
        else:
            self.rnn = StackedGRU(2, in_dim, config.ic_enc_dim, clip)
            self.ci_rnn = StackedGRU(2, in_dim, config.ci_enc_dim, clip) if self.use_ci else None
        self.to_ic = nn.Linear(2 * config.ic_enc_dim, 2 * config.ic_dim)
        with torch.no_grad():
            self.to_ic.weight.normal_(0.0, 1.0 / math.sqrt(2 * config.ic_enc_dim))
            self.to_ic.bias.zero_()

    def forward(self, x: Tensor, recon_len: int, dropout: float | Tensor) -> EncoderOutput:
        """``x`` [B, T_e, D] -> :class:`EncoderOutput` (ci [B, recon_len, 2H_ci] or None)."""
        cfg = self.config
        bsz, steps, _ = x.shape
        x = drop(x, dropout, self.training).transpose(0, 1)  # time-major [T_e, B, D]
        t_ic = min(cfg.ic_enc_seq_len or steps, steps)
        rev = x.flip(0)
        ic_bwd_in = x[:t_ic].flip(0)
        if self.shared:  # one stack of 4: ic fwd, ic bwd, ci fwd, ci bwd (equal lengths)
            if t_ic < steps:
                ic_bwd_in = F.pad(ic_bwd_in, (0, 0, 0, 0, 0, steps - t_ic))
            states = self.rnn(torch.stack([x, ic_bwd_in, x, rev]))  # [4, T_e, B, H]
            ic_last = states[:2, t_ic - 1]
            ci_states = states[2:] if self.use_ci else None
        else:
            ic_last = self.rnn(torch.stack([x[:t_ic], ic_bwd_in]))[:, -1]
            ci_states = self.ci_rnn(torch.stack([x, rev])) if self.use_ci else None
        h_ic = torch.cat([ic_last[0], ic_last[1]], dim=-1)
        mean, logvar = self.to_ic(drop(h_ic, dropout, self.training)).chunk(2, dim=-1)
        std = torch.sqrt(torch.exp(logvar) + cfg.ic_post_var_min)
        ci = None
        if self.use_ci:
            both = ci_states.transpose(1, 2)  # [2, B, T_e, H]
            fwd, bwd = both[0], both[1].flip(1)  # both in time order
            lag = min(cfg.ci_lag, steps)
            if lag > 0:
                fwd = F.pad(fwd[:, : steps - lag], (0, 0, lag, 0))
                bwd = F.pad(bwd[:, lag:], (0, 0, 0, lag))
            ci = torch.cat([fwd, bwd], dim=-1)
            if recon_len > steps:
                ci = F.pad(ci, (0, 0, 0, recon_len - steps))
        return EncoderOutput(ic_mean=mean, ic_std=std, ci=ci)

    def l2_groups(self) -> dict[str, list[Tensor]]:
        groups = {"ic_enc": self.rnn.recurrent_kernels(0) + self.rnn.recurrent_kernels(1)}
        if self.use_ci:
            rnn, first = (self.rnn, 2) if self.shared else (self.ci_rnn, 0)
            groups["ci_enc"] = rnn.recurrent_kernels(first) + rnn.recurrent_kernels(first + 1)
        return groups
