"""Sample validation: a fixed subset of the training data's elements is never trained on and
scores the model (train_sample_valid); a documented choice of AutoLFADS fitness."""

from __future__ import annotations

import torch

from lfads_core.components import AugmentContext
from lfads_core.conformance import assert_conforms
from lfads_core.model.sample_validation import SampleValidation, SampleValidationConfig
from lfads_core.protocols import Batch


def _batch(index, t=10, n=6, n_in=6):
    recon = torch.arange(len(index) * t * n, dtype=torch.float32).reshape(len(index), t, n) % 5
    mask = torch.ones_like(recon)
    return Batch(encod=recon[:, :, :n_in].clone(), recon=recon, loss_mask=mask,
                 grad_mask=torch.ones_like(mask, dtype=torch.bool), index=torch.tensor(index))


def test_the_held_elements_are_fixed_per_trial_and_left_out_of_training():
    sv = SampleValidation(SampleValidationConfig(fraction=0.2, seed=3))
    ctx = AugmentContext(True, 1, torch.Generator().manual_seed(0))
    a = sv(_batch([4, 7, 9]), ctx)
    b = sv(_batch([9, 4]), AugmentContext(True, 5, torch.Generator().manual_seed(1)))
    assert torch.equal(a.score_mask[0], b.score_mask[1]) and torch.equal(a.score_mask[2], b.score_mask[0])
    held = a.score_mask > 0
    assert 0.1 < held.float().mean() < 0.3
    assert not (a.grad_mask & held).any() and float((a.loss_mask * held).sum()) == 0.0
    assert float(a.encod[held].abs().sum()) == 0.0
    assert torch.equal(a.loss_mask + a.score_mask, torch.ones_like(a.loss_mask))
    other = SampleValidation(SampleValidationConfig(fraction=0.2, seed=4))(_batch([4, 7, 9]), ctx)
    assert not torch.equal(other.score_mask, a.score_mask)
    valid = sv(_batch([4]), AugmentContext(False, 1, torch.Generator()))
    assert valid.score_mask is None and float(valid.loss_mask.min()) == 1.0


def test_held_out_neurons_columns_and_conformance():
    sv = SampleValidation(SampleValidationConfig(fraction=0.5))
    out = sv(_batch([1, 2], n=6, n_in=4), AugmentContext(True, 1, torch.Generator()))
    assert out.encod.shape == (2, 10, 4) and out.score_mask.shape == (2, 10, 6)
    assert_conforms("augmentation", SampleValidation, SampleValidationConfig())


def test_sample_valid_is_reported_and_training_never_sees_the_held_values(tmp_path):
    from lfads_core.assembly import load_data, make_model
    from lfads_core.data.synth import make_lorenz, write_h5
    from lfads_core.assembly import training_batches
    from lfads_core.spec.load import load_spec
    from lfads_core.train.loop import Trainer
    from pathlib import Path

    data = tmp_path / "d.h5"
    write_h5(make_lorenz(seed=0, n_conditions=4, trials_per_condition=6, n_bins=12, n_neurons=5), data)
    repo = Path(__file__).resolve().parents[1]
    spec = load_spec(repo / "examples" / "lorenz.yaml", [
        f"data.path={data}", "data.batch_size=8", "model.encoder.ic_enc_dim=4", "model.encoder.ci_enc_dim=4",
        "model.encoder.ic_dim=2", "model.generator.gen_dim=4", "model.generator.con_dim=2",
        "model.generator.co_dim=1", "model.generator.fac_dim=2", "model.dropout_rate=0.0",
        "model.augmentations=[{name: sample_validation, fraction: 0.25}]"], out=str(tmp_path / "r"))
    sessions = load_data(spec)
    model, augs = make_model(spec, sessions)
    train, valid = training_batches(spec, sessions, torch.device("cpu"))
    tr = Trainer(model, augs, train, valid, spec.train, log=lambda s: None)
    batch = next(iter(train(None)))
    out = augs[0](batch, AugmentContext(True, 1, torch.Generator()))
    forward = lambda b: model.losses(model(b.encod, sample=False), b)  # noqa: E731
    base = forward(out)
    changed = out.replace(recon=torch.where(out.score_mask > 0, out.recon + 3.0, out.recon))
    again = forward(changed)
    assert float(again["recon"].detach()) == float(base["recon"].detach())  # the training loss ignores them
    assert float(again["metric_sample_valid"]) != float(base["metric_sample_valid"])
    row = tr.run_epoch()
    assert "train_sample_valid" in row and row["train_sample_valid"] > 0


def test_sessions_hold_out_their_own_elements():
    sv = SampleValidation(SampleValidationConfig(fraction=0.3))
    ctx = AugmentContext(True, 1, torch.Generator())
    a = sv(_batch([2]), ctx)
    b = sv(_batch([2]).replace(session=1), ctx)
    assert not torch.equal(a.score_mask, b.score_mask)
    assert torch.equal(sv(_batch([2]), ctx).score_mask, a.score_mask)
