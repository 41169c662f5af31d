"""Augmentation ``spike_jitter``: move each spike of the encoder input by a few bins.

In training, every spike of the encoder input (each unit of an integer count, in every trial and
channel) is moved independently by a uniform random integer number of bins in
[−``max_shift``, ``max_shift``], so the model cannot rely on the exact timing of single spikes.
Counts are preserved exactly: each trial and channel keeps its number of spikes.

Edge rule: a spike that would leave the trial is reflected back inside, about the trial's outer
edge (a spike moved to bin −1 lands in bin 0, −2 in bin 1; past the last bin T − 1, T lands in
T − 1, T + 1 in T − 2). Reflection keeps a uniform spike train uniform: the edge bins neither
gain spikes (as clamping would pile them there) nor lose them (as dropping would). A moved spike
never ends more than ``max_shift`` bins from where it was.

Only the encoder input changes (``encod``); the targets (``recon``), ``loss_mask`` and
``grad_mask`` are the data's. Off at validation. Random numbers come only from
``ctx.generator`` (reproduced on resume).

Input: spike counts. An element whose value is not a non-negative integer (e.g. an input
already rescaled by ``coordinated_dropout``) stays where it is, untouched: put ``spike_jitter``
before ``coordinated_dropout`` in ``model.augmentations``. Bins whose data were NaN (0 in the
input, loss mask 0) are not treated apart: a spike may be moved into them.

``check(sizes)``: ``max_shift`` must be less than the trials' encoder bins T_e.
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch
from torch import Tensor

from lfads_core import AugmentContext, Augmentation, Batch, DataSizes
from lfads_core.spec.validators import ge


@attrs.frozen
class SpikeJitterConfig:
    """``max_shift``: the largest move of a spike, in bins (k: moves are uniform in [−k, k])."""

    max_shift: int = attrs.field(default=1, validator=ge(1))


def reflect(pos: Tensor, t: int) -> Tensor:
    """Fold integer bin positions into [0, t) by reflection about the outer edges of the trial
    (−1 → 0, −2 → 1, t → t − 1, t + 1 → t − 2; repeated for moves longer than the trial)."""
    q = torch.remainder(pos, 2 * t)
    return torch.where(q < t, q, 2 * t - 1 - q)


def jitter_counts(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """``x`` [B, T, N] counts -> the same counts with each spike moved along T by a uniform
    integer in [−max_shift, max_shift] (reflected at the edges). Elements that are not
    non-negative integers stay in place. One draw per spike, from ``generator`` (CPU)."""
    b, t, n = x.shape
    movable = (x > 0) & (x == torch.floor(x)) & torch.isfinite(x)
    counts = torch.where(movable, x, torch.zeros_like(x)).to(torch.long).reshape(-1)
    element = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device), counts)
    shift = torch.randint(-max_shift, max_shift + 1, (element.numel(),), generator=generator)
    shift = shift.to(x.device)
    bin_ = (element // n) % t
    new_element = element + (reflect(bin_ + shift, t) - bin_) * n
    moved = torch.bincount(new_element, minlength=counts.numel()).reshape(b, t, n).to(x.dtype)
    return torch.where(movable, torch.zeros_like(x), x) + moved


class SpikeJitter(Augmentation):
    """See the module docstring."""

    Config = SpikeJitterConfig
    hyperparameters = ()

    def check(self, sizes: DataSizes) -> Optional[str]:
        if self.config.max_shift >= sizes.t_in:
            return (f"max_shift: {self.config.max_shift} bins is not less than the trials' "
                    f"{sizes.t_in} encoder bins")
        return None

    def __call__(self, batch: Batch, ctx: AugmentContext) -> Batch:
        if not ctx.training:
            return batch
        return batch.replace(encod=jitter_counts(batch.encod, self.config.max_shift, ctx.generator))


__all__ = ["SpikeJitter", "SpikeJitterConfig", "jitter_counts", "reflect"]
