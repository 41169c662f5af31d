"""Augmentation ``coordinated_dropout`` (Keshtkaran & Pandarinath 2019)."""

from __future__ import annotations

import attrs
import torch

from ..components import AugmentContext, Augmentation
from ..device import to_device
from ..protocols import Batch
from ..spec.validators import unit_interval


@attrs.frozen
class CoordinatedDropoutConfig:
    rate: float = attrs.field(default=0.3, validator=unit_interval())


class CoordinatedDropout(Augmentation):
    """During training, drops each input element with probability ``rate`` (kept ones are
    scaled by 1/(1 − rate)) and lets reconstruction gradients flow only from the elements the
    encoder did not see, through ``Batch.grad_mask``; the loss value is unchanged. The first
    T_e bins and N_in channels of the reconstruction are taken to be the encoder's input;
    extra recon channels/bins (held-out neurons, forward prediction) keep their gradients.
    Off at validation. ``rate`` is a hyperparameter (changeable between epochs)."""

    Config = CoordinatedDropoutConfig
    hyperparameters = ("rate",)

    def __call__(self, batch: Batch, ctx: AugmentContext) -> Batch:
        if not ctx.training or self.rate <= 0.0:
            return batch
        x = batch.encod
        # Drawn on the CPU (ctx.generator is a CPU generator: the same masks on any device).
        kept = to_device(torch.rand(x.shape, generator=ctx.generator) >= self.rate, x.device)
        encod = x * kept / (1.0 - self.rate)
        _, t_e, n_e = x.shape
        grad = batch.grad_mask.clone()
        grad[:, :t_e, :n_e] &= ~kept
        return batch.replace(encod=encod, grad_mask=grad)
