"""The augmentation ``sbtt`` and NaN-marked unobserved samples: the encoder sees zeros there, the
loss ignores them and is normalised by the observed count, no gradient flows from them, it
composes with coordinated dropout, the data check needs it; and a short zig + sbtt training run
whose validation loss falls."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
import torch

from lfads_core import AugmentContext, Batch, DataStats, cli
from lfads_core.conformance import assert_conforms
from lfads_core.model.build import build_augmentations, build_model
from lfads_core.model.lfads import SessionShape
from lfads_core.spec.load import spec_from_dict
from lfads_calcium.sbtt import SBTT, SBTTConfig

TINY = {"encoder": {"name": "bigru", "ic_enc_dim": 8, "ci_enc_dim": 4, "ic_dim": 4},
        "generator": {"name": "gru", "gen_dim": 12, "con_dim": 4, "co_dim": 2, "fac_dim": 4},
        "reconstruction": {"name": "zig"}}


def ctx(training=True):
    return AugmentContext(training=training, epoch=1, generator=torch.Generator().manual_seed(0))


def events(shape, seed=0, frame_bins=1):
    """Zero-inflated gamma events [trials, T, N], each channel observed every ``frame_bins`` bins
    at its own offset (NaN elsewhere)."""
    rng = np.random.default_rng(seed)
    n_trials, t, n = shape
    time = np.linspace(0, 2 * np.pi, t)
    phase = rng.uniform(0, 2 * np.pi, size=(n_trials, 1, 1))
    load = rng.normal(0, 1, size=(1, 1, n))
    q = 1 / (1 + np.exp(-(1.5 * np.sin(time[None, :, None] + phase) * load - 1.0)))
    x = np.where(rng.random(shape) < q, 0.2 + rng.gamma(2.0, 0.3, size=shape), 0.0)
    if frame_bins > 1:
        offset = rng.integers(0, frame_bins, size=n)
        seen = (np.arange(t)[:, None] - offset[None, :]) % frame_bins == 0  # [T, N]
        x = np.where(seen[None], x, np.nan)
    return x.astype(np.float32)


def batch_from(x: np.ndarray) -> Batch:
    """What the core's data stage makes of an array with NaN: zeros and a loss mask."""
    seen = np.isfinite(x)
    data = torch.from_numpy(np.where(seen, x, 0.0).astype(np.float32))
    mask = torch.from_numpy(seen.astype(np.float32))
    return Batch(encod=data.clone(), recon=data, loss_mask=mask, grad_mask=torch.ones_like(mask, dtype=torch.bool))


def test_conforms_and_declares_nan_handling():
    assert_conforms("augmentation", SBTT)
    assert SBTT.handles_nan and SBTT.hyperparameters == ()


def test_encoder_input_is_zero_where_the_target_is_unobserved():
    x = events((4, 12, 5), frame_bins=3)
    b = batch_from(x)
    filled = b.replace(encod=torch.from_numpy(np.nan_to_num(x, nan=7.0)))  # a file with filled inputs
    for mode in (True, False):
        out = SBTT(SBTTConfig())(filled, ctx(mode))
        assert torch.equal(out.encod[b.loss_mask == 0], torch.zeros(int((b.loss_mask == 0).sum())))
        assert torch.equal(out.encod[b.loss_mask > 0], filled.encod[b.loss_mask > 0])
        assert torch.equal(out.loss_mask, b.loss_mask) and torch.equal(out.recon, b.recon)
    assert filled.encod.max() == 7.0  # the input batch is not changed in place


def model_and_batch(frame_bins=3, augment=("sbtt",)):
    spec = spec_from_dict({"data": {"path": "x"},
                           "model": {**TINY, "augmentations": [{"name": a} for a in augment]}})
    x = events((6, 12, 5), frame_bins=frame_bins)
    torch.manual_seed(0)
    model = build_model(spec.model, [SessionShape(5, 5, 12, 12)], [DataStats.from_array(x)])
    return model, build_augmentations(spec.model), x


def test_no_gradient_from_unobserved_samples_and_loss_normalised_by_observed():
    model, augs, x = model_and_batch()
    batch = batch_from(x)
    for aug in augs:
        batch = aug(batch, ctx())
    model.eval()
    torch.manual_seed(1)
    out = model(batch.encod, sample=False)
    out.params.retain_grad()
    terms = model.losses(out, batch)
    terms["recon"].backward()
    unobserved = batch.loss_mask == 0
    assert unobserved.float().mean() > 0.6
    assert torch.equal(out.params.grad[unobserved], torch.zeros_like(out.params.grad[unobserved]))
    assert out.params.grad[~unobserved].abs().sum() > 0
    nll = model.reconstructions[0].nll(out.params, batch.recon)
    torch.testing.assert_close(terms["recon"], nll[~unobserved].mean())
    # whatever the (ignored) targets hold at unobserved samples, the loss is the same
    noisy = batch.replace(recon=torch.where(unobserved, torch.full_like(batch.recon, 9.0), batch.recon))
    torch.testing.assert_close(model.losses(out, noisy)["recon"], terms["recon"])


def test_composes_with_coordinated_dropout():
    model, augs, x = model_and_batch(augment=("sbtt", "coordinated_dropout"))
    batch = batch_from(x)
    b = batch
    for aug in augs:
        b = aug(b, ctx())
    unobserved = batch.loss_mask == 0
    assert torch.equal(b.encod[unobserved], torch.zeros(int(unobserved.sum())))
    # coordinated dropout: gradients only where the encoder did not see the (observed) sample
    dropped = (b.encod == 0) & ~unobserved & (batch.encod != 0)
    assert torch.equal(b.grad_mask[dropped], torch.ones(int(dropped.sum()), dtype=torch.bool))
    kept = (b.encod != 0)
    assert not b.grad_mask[kept].any()
    assert torch.equal(b.loss_mask, batch.loss_mask)  # one loss mask for both


def _write(path, frame_bins, seed=0):
    with h5py.File(path, "w") as f:
        f.attrs["bin_size_ms"] = 20.0
        for split, n in (("train", 48), ("valid", 16)):
            x = events((n, 16, 6), seed=seed + (split == "valid"), frame_bins=frame_bins)
            f[f"{split}_encod_data"] = x
            f[f"{split}_recon_data"] = x
    return path


def _validate(spec, capsys, *sets):
    args = ["validate", str(spec)]
    for s in sets:
        args += ["--set", s]
    code = cli.main(args)
    return code, *capsys.readouterr()


@pytest.fixture
def spec(tmp_path):
    _write(tmp_path / "events.h5", frame_bins=3)
    (tmp_path / "spec.yaml").write_text(
        "data: {path: events.h5, batch_size: 16}\n"
        "model:\n"
        "  reconstruction: {name: zig}\n"
        "  augmentations: [{name: sbtt}, {name: coordinated_dropout, rate: 0.2}]\n"
        "  encoder: {name: bigru, ic_enc_dim: 8, ci_enc_dim: 4, ic_dim: 4}\n"
        "  generator: {name: gru, gen_dim: 16, con_dim: 4, co_dim: 2, fac_dim: 4}\n"
        "train: {max_epochs: 25, kl: {ramp_epochs: 0}, l2: {ramp_epochs: 0}, lr: 0.01}\n"
        "sampling: {num_samples: 4, plots: false}\n")
    return tmp_path / "spec.yaml"


def test_nan_needs_sbtt(spec, capsys):
    code, out, err = _validate(spec, capsys, "model.augmentations=[]")
    assert code == 2
    [line] = err.splitlines()
    assert "NaN values" in line and "sbtt" in line.lower()
    code, out, err = _validate(spec, capsys)
    assert code == 0, err
    assert "reconstruction zig" in out and "event amplitude per bin" in out


def test_negative_events_are_a_one_line_error(spec, capsys, tmp_path):
    with h5py.File(tmp_path / "events.h5", "r+") as f:
        x = f["valid_recon_data"][()]
        x[0, 0, 0] = -0.5
        del f["valid_recon_data"]
        f["valid_recon_data"] = x
    code, out, err = _validate(spec, capsys)
    assert code == 2
    [line] = err.splitlines()
    assert "events.h5: valid_recon_data has negative values" in line and "lfads-run deconvolve" in line


def test_short_zig_sbtt_training_improves(spec, capsys, tmp_path):
    out_dir = tmp_path / "run"
    code = cli.main([str(spec), "--out", str(out_dir)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    with open(out_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    valid = [float(r["valid_recon"]) for r in rows]
    assert len(rows) == 25 and np.mean(valid[-3:]) < valid[0] - 0.02, valid
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["units"] == "event amplitude per bin"
    with h5py.File(out_dir / "lfads_output.h5") as f:
        mean = f["valid_output_params"][()]
    assert np.isfinite(mean).all() and mean.min() >= 0  # at every bin, observed or not
