"""The LFADS model assembled from components, and its loss terms."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import Tensor, nn

from ..protocols import Batch


@dataclasses.dataclass
class ModelOutput:
    params: Tensor  # [B, T_r, N, P] distribution parameters
    factors: Tensor  # [B, T_r, F]
    gen_states: Tensor  # [B, T_r, G]
    gen_inputs: Optional[Tensor]  # [B, T_r, U]
    ic_mean: Tensor  # [B, Z]
    ic_std: Tensor  # [B, Z]
    co_means: Optional[Tensor]  # [B, T_r, U]
    co_stds: Optional[Tensor]  # [B, T_r, U]


@dataclasses.dataclass
class SessionShape:
    """What the model needs to know of one session's data."""

    n_in: int  # encoder input channels
    n_out: int  # reconstructed channels
    t_in: int  # encoder bins T_e
    t_out: int  # reconstruction bins T_r
    ext_dim: int = 0


class LFADS(nn.Module):
    """Readin (per session) -> encoder -> generator -> readout (per session) -> reconstruction.

    ``dropout_rate`` is a plain attribute so the training loop can change it between epochs.
    """

    def __init__(self, readins: list[nn.Module], encoder: nn.Module, generator: nn.Module,
                 readouts: list[nn.Module], reconstructions: list[nn.Module], ic_prior: nn.Module,
                 co_prior: Optional[nn.Module], sessions: list[SessionShape], dropout_rate: float):
        super().__init__()
        self.readins = nn.ModuleList(readins)
        self.encoder = encoder
        self.generator = generator
        self.readouts = nn.ModuleList(readouts)
        self.reconstructions = nn.ModuleList(reconstructions)
        self.ic_prior = ic_prior
        self.co_prior = co_prior
        self.sessions = list(sessions)
        self.dropout_rate = float(dropout_rate)

    def forward(self, encod: Tensor, session: int = 0, ext: Optional[Tensor] = None,
                sample: bool = True, n_samples: int = 1) -> ModelOutput:
        """``encod`` [B, T_e, N_in] -> :class:`ModelOutput` for [B * n_samples] rows (each trial
        repeated ``n_samples`` times consecutively; the encoder runs once per trial)."""
        shape = self.sessions[session]
        p = self.dropout_rate
        enc = self.encoder(self.readins[session](encod), recon_len=shape.t_out, dropout=p)
        ic_mean, ic_std = enc.ic_mean, enc.ic_std
        if n_samples > 1:
            ic_mean = ic_mean.repeat_interleave(n_samples, dim=0)
            ic_std = ic_std.repeat_interleave(n_samples, dim=0)
        ic = ic_mean + ic_std * torch.randn_like(ic_std) if sample else ic_mean
        gen = self.generator(ic, enc.ci, ext, recon_len=shape.t_out, sample=sample, dropout=p,
                             repeats=n_samples)
        recon = self.reconstructions[session]
        out = self.readouts[session](gen.factors)
        params = out.view(*out.shape[:-1], shape.n_out, recon.n_params)
        return ModelOutput(params, gen.factors, gen.gen_states, gen.gen_inputs, ic_mean, ic_std,
                           gen.co_means, gen.co_stds)

    def losses(self, out: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        """Unscaled loss terms: ``recon`` (mean NLL per observed element, gradients only through
        ``batch.grad_mask``), ``kl_ic`` and ``kl_co`` (summed over dims and time, mean over trials),
        ``penalty`` (the reconstruction's own), ``l2_<group>`` (½‖W‖² of the group's kernels) and
        ``metric_<name>`` (the reconstruction's ``epoch_metrics``, no gradients; ``metric_sample_valid``:
        the mean NLL on ``batch.score_mask``, the sample-validation elements)."""
        recon = self.reconstructions[batch.session]
        weight = batch.loss_mask
        nll = recon.nll(out.params, batch.recon)
        raw = nll.detach()
        nll = torch.where(batch.grad_mask, nll, raw)
        nll = torch.where(weight > 0, nll, torch.zeros((), device=nll.device))  # unobserved: no value
        terms = {"recon": (nll * weight).sum() / weight.sum().clamp_min(1e-6)}
        terms["kl_ic"] = self.ic_prior.kl(out.ic_mean, out.ic_std).mean()
        if self.co_prior is not None and out.co_means is not None:
            terms["kl_co"] = self.co_prior.kl(out.co_means, out.co_stds).mean()
        else:
            terms["kl_co"] = torch.zeros((), device=nll.device)
        penalty = recon.penalty()
        if penalty.device != nll.device:  # a constant (e.g. the default zero) made on the CPU
            penalty = torch.full((), float(penalty), device=nll.device)
        terms["penalty"] = penalty
        if batch.score_mask is not None:  # sample validation: scored, never trained on
            held = batch.score_mask
            scored = torch.where(held > 0, raw, torch.zeros((), device=raw.device))
            terms["metric_sample_valid"] = ((scored * held).sum() / held.sum().clamp_min(1e-6)).reshape(())
        with torch.no_grad():
            for name, value in recon.epoch_metrics(out.params, batch.recon, weight).items():
                terms[f"metric_{name}"] = value.reshape(())
        for group, kernels in self.l2_groups().items():
            terms[f"l2_{group}"] = 0.5 * sum(k.square().sum() for k in kernels)
        return terms

    def l2_sizes(self) -> dict[str, int]:
        """Penalisable recurrent weights per L2 group."""
        return {g: sum(k.numel() for k in ks) for g, ks in self.l2_groups().items()}

    def l2_groups(self) -> dict[str, list[Tensor]]:
        groups = dict(self.encoder.l2_groups())
        groups.update(self.generator.l2_groups())
        return groups

    def means(self, out: ModelOutput, session: int = 0) -> Tensor:
        """Inferred signal [B, T_r, N] (counts per bin for Poisson)."""
        return self.reconstructions[session].mean(out.params)
