"""Augmentation ``sbtt``: selective backpropagation through time (Zhu et al. 2021).

NaN in the data marks an unobserved sample: a bin in which a neuron was not scanned (sub-frame
sampling) or a bin past the end of a short trial. With ``sbtt`` in ``model.augmentations``:

- such data pass the data check (``handles_nan``);
- the encoder sees 0 at every unobserved sample (the core zeroes NaN inputs; ``sbtt`` also zeroes
  an input element whose reconstruction target is unobserved, for files whose encoder data were
  filled in);
- the reconstruction loss ignores them: their ``loss_mask`` is 0, and the loss is the mean over
  the observed samples only (sum(loss_mask · nll) / sum(loss_mask)), so no gradient flows from an
  unobserved sample.

It composes with ``coordinated_dropout`` in either order (zeroing inputs commutes with that
augmentation's scaling of the kept inputs; ``grad_mask`` is its own). It has no
parameters and draws no random numbers; it acts on training and validation batches alike.
"""

from __future__ import annotations

import attrs
import torch

from lfads_core import AugmentContext, Augmentation, Batch


@attrs.frozen
class SBTTConfig:
    pass


class SBTT(Augmentation):
    Config = SBTTConfig
    handles_nan = True

    def __call__(self, batch: Batch, ctx: AugmentContext) -> Batch:
        _, t_e, n_e = batch.encod.shape
        seen = batch.loss_mask[:, :t_e, :n_e] > 0  # the targets that are the encoder's inputs
        t, n = seen.shape[1], seen.shape[2]
        encod = batch.encod.clone()
        encod[:, :t, :n] = torch.where(seen, encod[:, :t, :n], torch.zeros((), dtype=encod.dtype))
        return batch.replace(encod=encod)
