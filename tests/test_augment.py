"""Coordinated dropout (REFERENCE.md §4): drop input elements with probability ``rate`` (kept ones
scaled by 1/(1−rate)); reconstruction gradients flow only from elements the encoder did not see
(the loss value is unchanged); off at validation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lfads_core.model.augment import CoordinatedDropout, CoordinatedDropoutConfig
from lfads_core.model.build import build_augmentations, build_model
from lfads_core.model.lfads import SessionShape
from lfads_core.components import AugmentContext
from lfads_core.protocols import Augmentation, Batch
from lfads_core.spec.load import spec_from_dict

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


def ctx(training: bool, seed: int = 0) -> AugmentContext:
    """What the training loop passes: mode, epoch and the augmentation's own generator."""
    return AugmentContext(training=training, epoch=1, generator=torch.Generator().manual_seed(seed))


def cd(rate=0.3) -> CoordinatedDropout:
    return CoordinatedDropout(CoordinatedDropoutConfig(rate=rate))


def make_batch(bsz=4, t_e=6, n_in=5, t_r=None, n_out=None, seed=0) -> Batch:
    t_r, n_out = t_r or t_e, n_out or n_in
    gen = torch.Generator().manual_seed(seed)
    recon = torch.poisson(torch.full((bsz, t_r, n_out), 2.0), generator=gen)
    encod = recon[:, :t_e, :n_in].clone() + 1.0  # strictly positive: a zero means dropped
    return Batch(encod=encod, recon=recon, loss_mask=torch.ones_like(recon),
                 grad_mask=torch.ones_like(recon, dtype=torch.bool))


def test_protocol_and_hyperparameters():
    aug = cd()
    assert isinstance(aug, Augmentation)
    assert aug.hyperparameters == ("rate",) and aug.handles_nan is False
    assert aug.rate == 0.3
    assert CoordinatedDropoutConfig().rate == 0.3


@SETTINGS
@given(st.floats(0.05, 0.9), st.integers(0, 1000))
def test_training_scales_kept_and_zeroes_dropped(rate, seed):
    torch.manual_seed(seed)
    batch = make_batch(seed=seed)
    out = cd(rate)(batch, ctx(True, seed))
    kept = out.encod != 0
    torch.testing.assert_close(out.encod[kept], batch.encod[kept] / (1.0 - rate))
    assert torch.equal(out.encod[~kept], torch.zeros_like(out.encod[~kept]))
    # grad_mask is True exactly where the encoder input was dropped
    assert torch.equal(out.grad_mask, ~kept)
    # the targets and loss weights are untouched, the input batch is not mutated
    assert torch.equal(out.recon, batch.recon) and torch.equal(out.loss_mask, batch.loss_mask)
    assert batch.grad_mask.all()
    assert (batch.encod > 0).all()


@pytest.mark.parametrize("t_r,n_out", [(6, 8), (9, 5), (10, 9)])
def test_extra_recon_channels_and_bins_keep_gradients(t_r, n_out):
    torch.manual_seed(0)
    batch = make_batch(t_e=6, n_in=5, t_r=t_r, n_out=n_out)
    out = cd(0.4)(batch, ctx(True))
    kept = out.encod != 0
    assert out.grad_mask.shape == (4, t_r, n_out)
    assert torch.equal(out.grad_mask[:, :6, :5], ~kept)
    assert out.grad_mask[:, 6:, :].all()  # forward-prediction bins
    assert out.grad_mask[:, :, 5:].all()  # held-out neurons
    assert out.encod.shape == batch.encod.shape


def test_existing_grad_mask_is_respected():
    # An earlier augmentation may already have turned gradients off; CD only removes more.
    torch.manual_seed(0)
    batch = make_batch()
    gm = batch.grad_mask.clone()
    gm[:, 0] = False
    out = cd(0.5)(batch.replace(grad_mask=gm), ctx(True))
    assert not out.grad_mask[:, 0].any()
    assert torch.equal(out.grad_mask[:, 1:], (out.encod == 0)[:, 1:])


def test_validation_unchanged():
    batch = make_batch()
    out = cd(0.5)(batch, ctx(False))
    assert torch.equal(out.encod, batch.encod)
    assert torch.equal(out.grad_mask, batch.grad_mask)
    assert torch.equal(out.recon, batch.recon)


def test_rate_zero_is_identity():
    batch = make_batch()
    out = cd(0.0)(batch, ctx(True))
    assert torch.equal(out.encod, batch.encod) and torch.equal(out.grad_mask, batch.grad_mask)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_empirical_drop_fraction(rate):
    torch.manual_seed(1)
    batch = make_batch(bsz=200, t_e=20, n_in=25)  # 100k elements: std of the fraction ~1.5e-3
    out = cd(rate)(batch, ctx(True, 1))
    frac = float((out.encod == 0).float().mean())
    assert frac == pytest.approx(rate, abs=0.01)
    # the expected input is preserved by the scaling
    assert float(out.encod.mean()) == pytest.approx(float(batch.encod.mean()), rel=0.02)


def test_rate_is_changeable_attribute():
    aug = cd(0.3)
    aug.rate = 0.7  # the training loop changes it between epochs (PBT)
    torch.manual_seed(2)
    out = aug(make_batch(bsz=100, t_e=20, n_in=20), ctx(True))
    assert float((out.encod == 0).float().mean()) == pytest.approx(0.7, abs=0.02)


def test_built_from_spec():
    spec = spec_from_dict({"data": {"path": "x"}, "model": {
        "reconstruction": {"name": "poisson"},
        "augmentations": [{"name": "coordinated_dropout", "rate": 0.25}]}})
    (aug,) = build_augmentations(spec.model)
    assert isinstance(aug, CoordinatedDropout) and aug.rate == 0.25


# --------------------------------------------------------------------------- #
# Through a real model: value unchanged, gradients only from the unseen elements
# --------------------------------------------------------------------------- #


def small_model(n_in=5, n_out=7, t_in=6, t_out=8, recon="poisson"):
    spec = spec_from_dict({"data": {"path": "x"}, "model": {
        "encoder": {"name": "bigru", "ic_enc_dim": 6, "ci_enc_dim": 6, "ic_dim": 4},
        "generator": {"name": "gru", "gen_dim": 8, "con_dim": 5, "co_dim": 2, "fac_dim": 3},
        "reconstruction": {"name": recon}, "dropout_rate": 0.0}})
    torch.manual_seed(0)
    return build_model(spec.model, [SessionShape(n_in=n_in, n_out=n_out, t_in=t_in, t_out=t_out)])


@pytest.mark.parametrize("recon", ["poisson", "gaussian"])
def test_model_loss_value_unchanged_and_gradient_masked(recon):
    model = small_model(recon=recon)
    model.train()
    torch.manual_seed(3)
    batch = make_batch(bsz=4, t_e=6, n_in=5, t_r=8, n_out=7, seed=3)
    aug_batch = cd(0.4)(batch, ctx(True))
    assert (~aug_batch.grad_mask).any() and aug_batch.grad_mask.any()
    out = model(aug_batch.encod, sample=True)

    terms = model.losses(out, aug_batch)
    plain = model.losses(out, aug_batch.replace(grad_mask=torch.ones_like(aug_batch.grad_mask)))
    # the value is the plain mean NLL over all elements
    assert torch.equal(terms["recon"], plain["recon"])
    nll = model.reconstructions[0].nll(out.params, aug_batch.recon)
    torch.testing.assert_close(terms["recon"], nll.mean())

    (grad,) = torch.autograd.grad(terms["recon"], out.params, retain_graph=True)
    nonzero = grad.abs().amax(-1) > 0  # [B, T_r, N]
    assert torch.equal(nonzero, aug_batch.grad_mask)
    # where it flows, it equals the unmasked gradient
    (full,) = torch.autograd.grad(plain["recon"], out.params, retain_graph=True)
    torch.testing.assert_close(grad[aug_batch.grad_mask], full[aug_batch.grad_mask])

    # and the parameter gradients come only from those elements
    model.zero_grad()
    terms["recon"].backward(retain_graph=True)
    g_masked = model.readouts[0].linear.bias.grad.clone()
    model.zero_grad()
    masked_nll = torch.where(aug_batch.grad_mask, nll, torch.zeros_like(nll)).sum() / nll.numel()
    masked_nll.backward()
    torch.testing.assert_close(g_masked, model.readouts[0].linear.bias.grad)


def test_model_loss_with_loss_mask_and_grad_mask():
    # loss_mask weights the value; grad_mask only gates gradients.
    model = small_model()
    torch.manual_seed(4)
    batch = make_batch(bsz=3, t_e=6, n_in=5, t_r=8, n_out=7, seed=4)
    lm = torch.ones_like(batch.loss_mask)
    lm[:, -1] = 0.0
    batch = cd(0.3)(batch.replace(loss_mask=lm), ctx(True))
    out = model(batch.encod, sample=False)
    terms = model.losses(out, batch)
    nll = model.reconstructions[0].nll(out.params, batch.recon)
    torch.testing.assert_close(terms["recon"], (nll * lm).sum() / lm.sum())
    (grad,) = torch.autograd.grad(terms["recon"], out.params)
    nonzero = grad[..., 0] != 0
    assert torch.equal(nonzero, batch.grad_mask & (lm > 0))


def test_validation_batch_gives_full_gradients():
    model = small_model()
    batch = make_batch(bsz=3, t_e=6, n_in=5, t_r=8, n_out=7, seed=5)
    vb = cd(0.3)(batch, ctx(False))
    out = model(vb.encod, sample=False)
    (grad,) = torch.autograd.grad(model.losses(out, vb)["recon"], out.params)
    assert (grad != 0).all()
