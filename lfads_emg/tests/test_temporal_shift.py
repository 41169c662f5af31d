"""The ``temporal_shift`` augmentation: shapes, the shift itself, edges masked, distribution and
clipping, determinism under the augmentation generator and resume, validation untouched,
hyperparameter, size check, conformance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lfads_core import AugmentContext, Batch, DataSizes
from lfads_core.conformance import assert_conforms
from lfads_emg.temporal_shift import TemporalShift, TemporalShiftConfig, shift_channels


def ctx(seed=0, training=True):
    return AugmentContext(training=training, epoch=1, generator=torch.Generator().manual_seed(seed))


def batch(b=6, t=12, n=5, n_out=None):
    n_out = n_out or n
    recon = torch.arange(b * t * n_out, dtype=torch.float32).view(b, t, n_out) + 1.0
    return Batch(encod=recon[:, :, :n].clone(), recon=recon, loss_mask=torch.ones_like(recon),
                 grad_mask=torch.ones_like(recon, dtype=torch.bool))


def test_shift_channels_moves_each_channel():
    x = torch.arange(1.0, 7.0).view(1, 6, 1).repeat(1, 1, 2)  # two channels 1..6
    out, valid = shift_channels(x, torch.tensor([[2, -1]]))
    assert out[0, :, 0].tolist() == [0, 0, 1, 2, 3, 4]
    assert out[0, :, 1].tolist() == [2, 3, 4, 5, 6, 0]
    assert valid[0, :, 0].tolist() == [False, False, True, True, True, True]


def test_input_and_target_shifted_alike_with_edges_masked():
    aug = TemporalShift(TemporalShiftConfig(std=2.0, max_shift=3))
    b = batch()
    out = aug(b, ctx())
    for name in ("encod", "recon", "loss_mask", "grad_mask"):
        assert getattr(out, name).shape == getattr(b, name).shape
    assert torch.equal(out.encod, out.recon)  # same shifts for the same channel
    # masked exactly where the shifted target has no source (the zeros at the edges)
    assert torch.equal(out.loss_mask == 0, out.recon == 0)
    assert (out.loss_mask == 0).any()
    # each row is a shifted copy of the original channel
    shifts = aug.draw(6, 5, torch.Generator().manual_seed(0))
    expected, _ = shift_channels(b.recon, shifts)
    assert torch.equal(out.recon, expected)


def test_shift_distribution_and_clipping():
    aug = TemporalShift(TemporalShiftConfig(std=2.0, max_shift=3))
    s = aug.draw(20_000, 4, torch.Generator().manual_seed(1)).float()
    assert s.abs().max() == 3 and s.mean().abs() < 0.05
    unclipped = TemporalShift(TemporalShiftConfig(std=2.0, max_shift=50)).draw(20_000, 4, torch.Generator().manual_seed(1))
    assert unclipped.float().std().item() == pytest.approx(2.0, rel=0.03)


def test_determinism_and_seeds():
    aug = TemporalShift(TemporalShiftConfig(std=1.5, max_shift=3))
    a, b = aug(batch(), ctx(3)), aug(batch(), ctx(3))
    c = aug(batch(), ctx(4))
    assert torch.equal(a.recon, b.recon) and not torch.equal(a.recon, c.recon)


def test_validation_and_zero_std_leave_the_batch():
    b = batch()
    assert TemporalShift(TemporalShiftConfig(std=2.0))(b, ctx(training=False)) is b
    aug = TemporalShift(TemporalShiftConfig(std=2.0))
    aug.std = 0.0  # as the training loop sets a hyperparameter
    assert aug(b, ctx()) is b
    assert TemporalShift.hyperparameters == ("std",)


def test_input_only_mode_keeps_targets():
    b = batch()
    out = TemporalShift(TemporalShiftConfig(std=2.0, shift_target=False))(b, ctx())
    assert torch.equal(out.recon, b.recon) and torch.equal(out.loss_mask, b.loss_mask)
    assert not torch.equal(out.encod, b.encod)


def test_extra_reconstruction_channels_get_their_own_shifts():
    b = batch(n=3, n_out=5)
    out = TemporalShift(TemporalShiftConfig(std=2.0))(b, ctx())
    assert torch.equal(out.encod, out.recon[:, :, :3])


def test_unobserved_samples_stay_masked_after_the_shift():
    b = batch()
    mask = torch.ones_like(b.loss_mask)
    mask[:, 5, :] = 0.0  # bin 5 unobserved everywhere
    b = b.replace(loss_mask=mask)
    out = TemporalShift(TemporalShiftConfig(std=2.0))(b, ctx())
    assert out.loss_mask.sum() < (out.recon != 0).sum()  # the unobserved bin moved, still masked


def test_size_check_and_conformance():
    aug = TemporalShift(TemporalShiftConfig(max_shift=12))
    msg = aug.check(DataSizes(t_in=12, n_in=4, t_out=12, n_out=4, ext_dim=0, n_train=10))
    assert msg.startswith("max_shift: 12 bins is not shorter than the trials' 12")
    assert aug.check(DataSizes(t_in=13, n_in=4, t_out=13, n_out=4, ext_dim=0, n_train=10)) is None
    assert_conforms("augmentation", TemporalShift)


def test_resume_reproduces_shifts():
    """The shifts come from the generator the training loop saves: a restored generator state
    reproduces them, whatever the global torch RNG does."""
    aug = TemporalShift(TemporalShiftConfig(std=1.5))
    g = torch.Generator().manual_seed(11)
    aug(batch(), AugmentContext(True, 1, g))
    saved = g.get_state()
    torch.manual_seed(0)
    first = aug(batch(), AugmentContext(True, 2, g)).recon
    g2 = torch.Generator()
    g2.set_state(saved)
    torch.manual_seed(99)
    assert torch.equal(aug(batch(), AugmentContext(True, 2, g2)).recon, first)
