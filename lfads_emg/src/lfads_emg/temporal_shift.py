"""Augmentation ``temporal_shift``: each channel of each training trial shifted in time.

Per trial and channel, a shift s (bins) is drawn from a normal distribution with standard
deviation ``std``, rounded and clipped to ±``max_shift``; the channel's samples move by s bins
(x'_t = x_{t−s}). It keeps the model from relying on the exact relative timing of the channels,
which for EMG varies with electrode placement and filtering (Wimalasena et al. 2022).

- Encoder input: shifted; bins that come from outside the trial are 0.
- Target (``shift_target: true``, the default): shifted the same way, channel by channel, and
  those edge bins get ``loss_mask`` 0, so the loss never compares the model with a value that
  does not exist. With ``shift_target: false`` the targets and masks stay as they were: the model
  reconstructs the original data from a shifted input (a denoising view).
- Channels are matched by index (encoder channel n and reconstruction channel n get the same
  shift, as for coordinated dropout); extra reconstruction channels get shifts of their own.
- Training batches only; validation batches are unchanged. ``std`` is a hyperparameter
  (``model.augmentations.<i>.std``) that the training loop and PBT may change between epochs;
  shifts come from the augmentation's generator, so a resumed run draws the same ones.
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch
from torch import Tensor

from lfads_core import AugmentContext, Augmentation, Batch, DataSizes, to_device
from lfads_core.spec.validators import ge


@attrs.frozen
class TemporalShiftConfig:
    std: float = attrs.field(default=1.0, validator=ge(0.0))
    max_shift: int = attrs.field(default=3, validator=ge(0))
    shift_target: bool = True


def shift_channels(x: Tensor, shifts: Tensor) -> tuple[Tensor, Tensor]:
    """``x`` [B, T, N] with channel n of trial b moved by ``shifts[b, n]`` bins (later when > 0).
    Returns the shifted tensor (0 where the source lies outside the trial) and a bool mask
    [B, T, N] of the bins that have a source."""
    b, t, n = x.shape
    source = torch.arange(t, device=x.device).view(1, t, 1) - shifts[:, None, :n].to(x.device)
    valid = (source >= 0) & (source < t)
    moved = torch.gather(x, 1, source.clamp(0, t - 1))
    return torch.where(valid, moved, torch.zeros((), dtype=x.dtype, device=x.device)), valid


class TemporalShift(Augmentation):
    Config = TemporalShiftConfig
    hyperparameters = ("std",)

    def check(self, sizes: DataSizes) -> Optional[str]:
        if self.config.max_shift >= sizes.t_in:
            return (f"max_shift: {self.config.max_shift} bins is not shorter than the trials' "
                    f"{sizes.t_in} encoder bins")
        return None

    def draw(self, n_trials: int, n_channels: int, generator: torch.Generator) -> Tensor:
        """Integer shifts [n_trials, n_channels]: round(N(0, std²)) clipped to ±max_shift."""
        normal = torch.randn(n_trials, n_channels, generator=generator)
        m = self.config.max_shift
        return (normal * self.std).round().clamp(-m, m).long()

    def __call__(self, batch: Batch, ctx: AugmentContext) -> Batch:
        if not ctx.training:
            return batch
        b, _, n_in = batch.encod.shape
        n_out = batch.recon.shape[2]
        shifts = self.draw(b, max(n_in, n_out), ctx.generator)  # drawn even at std 0: same stream
        if self.std <= 0 or self.config.max_shift == 0:
            return batch
        shifts = to_device(shifts, batch.encod.device)  # once, without waiting for a GPU
        encod, _ = shift_channels(batch.encod, shifts)
        if not self.config.shift_target:
            return batch.replace(encod=encod)
        recon, valid = shift_channels(batch.recon, shifts)
        mask, _ = shift_channels(batch.loss_mask, shifts)  # NaN-masked samples move with the data
        loss_mask = torch.where(valid, mask, torch.zeros((), dtype=mask.dtype, device=mask.device))
        grad_mask, _ = shift_channels(batch.grad_mask, shifts)
        return batch.replace(encod=encod, recon=recon, loss_mask=loss_mask, grad_mask=grad_mask | ~valid)
