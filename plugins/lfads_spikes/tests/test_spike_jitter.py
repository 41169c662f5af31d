"""The augmentation ``spike_jitter``: shapes, exact counts per trial and channel, displacement at
most ``max_shift``, the reflection at the trial edges, input only, training only, draws from
``ctx.generator`` only (determinism and resume), the size check, spec validation, conformance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lfads_core import AugmentContext, Batch, DataSizes, registry
from lfads_core.conformance import assert_conforms
from lfads_core.errors import SpecError
from lfads_core.spec.load import spec_from_dict

from lfads_spikes.spike_jitter import SpikeJitter, SpikeJitterConfig, jitter_counts, reflect


def make_batch(x: torch.Tensor) -> Batch:
    return Batch(encod=x, recon=x.clone(), loss_mask=torch.ones_like(x),
                 grad_mask=torch.ones_like(x, dtype=torch.bool), index=torch.arange(x.shape[0]))


def ctx(seed: int = 0, training: bool = True) -> AugmentContext:
    return AugmentContext(training, 1, torch.Generator().manual_seed(seed))


def counts(shape=(6, 30, 5), rate=0.8, seed=0) -> torch.Tensor:
    return torch.poisson(torch.full(shape, rate), generator=torch.Generator().manual_seed(seed))


def test_shape_dtype_and_counts_per_trial_and_channel():
    x = counts()
    out = SpikeJitter(SpikeJitterConfig(max_shift=3))(make_batch(x), ctx())
    assert out.encod.shape == x.shape and out.encod.dtype == x.dtype
    assert torch.equal(out.encod.sum(1), x.sum(1))  # every trial and channel keeps its spikes
    assert torch.equal(out.encod, out.encod.round()) and out.encod.min() >= 0
    assert not torch.equal(out.encod, x)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 6), t=st.integers(7, 25), seed=st.integers(0, 2**31 - 1),
       rate=st.floats(0.05, 3.0))
def test_counts_are_preserved_and_no_spike_moves_more_than_k(k, t, seed, rate):
    """Each spike moves at most k bins: the spikes up to bin i land at or before bin i + k, and
    those landing up to bin i came from bins up to i + k; a lone spike lands within k bins."""
    g = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.full((4, t, 3), rate), generator=g)
    y = jitter_counts(x, k, g)
    assert torch.equal(y.sum(1), x.sum(1))
    cx, cy = x.cumsum(1), y.cumsum(1)
    assert (cy[:, k:] >= cx[:, :-k]).all() and (cx[:, k:] >= cy[:, :-k]).all()
    one = torch.zeros(4, t, 3)
    src = torch.randint(0, t, (4, 3), generator=g)
    one.scatter_(1, src.unsqueeze(1), 1.0)
    dst = jitter_counts(one, k, g).argmax(1)
    assert ((dst - src).abs() <= k).all()


def test_reflection_at_the_edges():
    t = 10
    pos = torch.arange(-4, t + 4)
    assert reflect(pos, t).tolist() == [3, 2, 1, 0] + list(range(t)) + [9, 8, 7, 6]
    # all spikes in the first bin, k = 2: moves −2, −1, 0, 1, 2 land in 1, 0, 0, 1, 2
    x = torch.zeros(1, t, 1)
    x[0, 0, 0] = 50_000.0
    y = jitter_counts(x, 2, torch.Generator().manual_seed(0))[0, :, 0]
    assert y.sum() == 50_000 and (y[3:] == 0).all()
    np.testing.assert_allclose((y[:3] / 50_000).numpy(), [0.4, 0.4, 0.2], atol=0.01)
    # a uniform spike train stays uniform in expectation: the edges neither gain nor lose spikes
    x = torch.full((1, t, 1), 20_000.0)
    y = jitter_counts(x, 3, torch.Generator().manual_seed(1))[0, :, 0]
    np.testing.assert_allclose((y / 20_000).numpy(), np.ones(t), atol=0.03)


def test_only_whole_non_negative_counts_move():
    x = torch.tensor([3.0, 1.5, -1.0, 0.0, 2.0, 0.0]).view(1, 6, 1)
    fixed = torch.tensor([0.0, 1.5, -1.0, 0.0, 0.0, 0.0]).view(1, 6, 1)  # left in place
    for seed in range(20):
        moved = jitter_counts(x, 1, torch.Generator().manual_seed(seed)) - fixed
        assert torch.equal(moved, moved.round()) and moved.min() >= 0 and moved.sum() == 5
        assert moved[0, :2].sum() == 3 and moved[0, 3:].sum() == 2 and moved[0, 2] == 0


def test_input_only_and_training_only():
    x = counts()
    batch = make_batch(x)
    aug = SpikeJitter(SpikeJitterConfig(max_shift=2))
    out = aug(batch, ctx())
    assert out.recon is batch.recon and out.loss_mask is batch.loss_mask
    assert out.grad_mask is batch.grad_mask and out.index is batch.index
    assert torch.equal(batch.encod, x)  # the input batch is not changed in place
    assert aug(batch, ctx(training=False)) is batch


def test_edge_masks_and_unobserved_bins_are_left_to_the_loss():
    """Masks pass through unchanged, also for trials whose edge bins are unobserved; the spikes of
    a trial stay inside it."""
    x = counts(rate=2.0)
    batch = make_batch(x)
    loss_mask = batch.loss_mask.clone()
    loss_mask[:, :2] = 0.0
    loss_mask[:, -2:] = 0.0
    batch = batch.replace(loss_mask=loss_mask)
    out = SpikeJitter(SpikeJitterConfig(max_shift=4))(batch, ctx())
    assert torch.equal(out.loss_mask, loss_mask) and torch.equal(out.grad_mask, batch.grad_mask)
    assert torch.equal(out.encod.sum(1), x.sum(1))


def test_same_generator_seed_same_jitter_and_resume():
    x = counts()
    aug = SpikeJitter(SpikeJitterConfig(max_shift=2))
    torch.manual_seed(1)
    a = aug(make_batch(x), ctx(5)).encod
    torch.manual_seed(2)
    b = aug(make_batch(x), ctx(5)).encod
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(make_batch(x), ctx(6)).encod)
    # resume: restoring the generator's state reproduces the next draws
    gen = torch.Generator().manual_seed(3)
    c = AugmentContext(True, 1, gen)
    aug(make_batch(x), c)
    saved = gen.get_state()
    second = aug(make_batch(x), c).encod
    third = aug(make_batch(x), c).encod
    resumed = torch.Generator()
    resumed.set_state(saved)
    r = AugmentContext(True, 2, resumed)
    assert torch.equal(aug(make_batch(x), r).encod, second)
    assert torch.equal(aug(make_batch(x), r).encod, third)


def test_check_refuses_a_shift_as_long_as_the_trial():
    aug = SpikeJitter(SpikeJitterConfig(max_shift=40))
    sizes = DataSizes(t_in=40, n_in=5, t_out=40, n_out=5, ext_dim=0, n_train=10)
    assert aug.check(sizes) == "max_shift: 40 bins is not less than the trials' 40 encoder bins"
    assert SpikeJitter(SpikeJitterConfig(max_shift=39)).check(sizes) is None


def test_registered_conforms_and_config_is_validated():
    assert registry.lookup("augmentation", "spike_jitter").dist == "lfads-spikes"
    assert registry.load("augmentation", "spike_jitter") is SpikeJitter
    assert_conforms("augmentation", SpikeJitter)
    assert_conforms("augmentation", SpikeJitter, SpikeJitterConfig(max_shift=5))
    with pytest.raises(SpecError) as info:
        spec_from_dict({"data": {"path": "x.h5"}, "model": {
            "reconstruction": {"name": "poisson"}, "augmentations": [{"name": "spike_jitter", "max_shift": 0}]}})
    assert str(info.value).splitlines() == ["spec: model.augmentations.0.max_shift: must be >= 1, got 0"]
    with pytest.raises(SpecError, match="max_shift"):
        spec_from_dict({"data": {"path": "x.h5"}, "model": {
            "reconstruction": {"name": "poisson"}, "augmentations": [{"name": "spike_jitter", "max_shift": 1.5}]}})
