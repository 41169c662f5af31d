"""Augmentation ``sample_validation`` (Keshtkaran & Pandarinath 2019): a fixed random subset of
the training data's elements is held out of training and scores the model instead.

Validation trials measure how well a model generalises to new trials; they cannot tell a model
that learned the dynamics from one that learned to pass its input through, and population-based
training can tune the hyperparameters towards the latter. Sample validation holds out a fixed
fraction of the (trial, bin, channel) elements of the *training* data: they are zero in the
model's input, out of the loss and of the gradients, and the mean negative log-likelihood on them
is reported as ``train_sample_valid`` in metrics.csv (and can be the fitness of AutoLFADS:
``pbt.fitness: sample_valid``).
"""

from __future__ import annotations

import attrs
import torch

from ..components import AugmentContext, Augmentation
from ..device import to_device
from ..protocols import Batch
from ..spec.validators import ge, within


@attrs.frozen
class SampleValidationConfig:
    fraction: float = attrs.field(default=0.1, validator=within(0, 1, low_inclusive=False,
                                                                  high_inclusive=False))
    seed: int = attrs.field(default=0, validator=ge(0))


class SampleValidation(Augmentation):
    """Training batches: each trial's held-out elements (``fraction`` of its bins x channels,
    the same ones every epoch: drawn from the trial's index and ``seed``) are set to 0 in the
    encoder input, removed from the loss mask and the gradient mask, and marked in
    ``batch.score_mask``. Validation batches pass unchanged. Put it first in the list."""

    Config = SampleValidationConfig

    def __init__(self, config: SampleValidationConfig):
        super().__init__(config)
        self._rows: dict[tuple[int, int], torch.Tensor] = {}  # (session, trial) -> [t, n], drawn once

    def held(self, index: torch.Tensor, t: int, n: int, session: int = 0) -> torch.Tensor:
        """[B, t, n] bool: the held-out elements of the training trials ``index`` of ``session``
        (drawn from the trial, the session and ``seed`` the first time, then kept)."""
        rows = []
        for i in index.tolist():
            row = self._rows.get((session, i))
            if row is None or row.shape != (t, n):
                g = torch.Generator().manual_seed(
                    (self.config.seed * 1_000_003 + session * 7_919 + int(i) + 1) % (2**63 - 1))
                row = self._rows[(session, i)] = torch.rand(t, n, generator=g) < self.config.fraction
            rows.append(row)
        return torch.stack(rows)

    def __call__(self, batch: Batch, ctx: AugmentContext) -> Batch:
        if not ctx.training or batch.index is None:
            return batch
        b, t_r, n = batch.recon.shape
        held = to_device(self.held(batch.index.cpu(), t_r, n, batch.session), batch.recon.device)
        _, t_e, n_e = batch.encod.shape
        encod = batch.encod.masked_fill(held[:, :t_e, :n_e], 0.0)
        observed = batch.loss_mask
        keep = (~held).to(observed.dtype)
        return batch.replace(encod=encod, loss_mask=observed * keep, grad_mask=batch.grad_mask & ~held,
                             score_mask=observed * (1.0 - keep))
