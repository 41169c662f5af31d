"""The ``gamma`` reconstruction: likelihood against scipy, mean, the support check and the floor
option, initialisation by moments, conformance, and a short training whose loss falls."""

from __future__ import annotations

import csv
import math

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lfads_core import DataStats, cli
from lfads_core.conformance import assert_conforms
from lfads_emg.gamma import Gamma, GammaConfig

SETTINGS = settings(max_examples=60, deadline=None)


def gamma(n=1, **config) -> Gamma:
    return Gamma(GammaConfig(**config), n_channels=n).double()


def params(mu, k) -> torch.Tensor:
    return torch.tensor([[[[math.log(mu), math.log(k)]]]], dtype=torch.float64)


@SETTINGS
@given(mu=st.floats(1e-3, 50.0), k=st.floats(0.2, 200.0), x=st.floats(1e-4, 100.0))
def test_nll_matches_scipy(mu, k, x):
    nll = gamma().nll(params(mu, k), torch.tensor([[[x]]], dtype=torch.float64)).item()
    assert nll == pytest.approx(-stats.gamma.logpdf(x, a=k, scale=mu / k), rel=1e-6, abs=1e-6)


@SETTINGS
@given(mu=st.floats(1e-3, 50.0), k=st.floats(0.2, 200.0))
def test_mean_and_monte_carlo(mu, k):
    assert gamma().mean(params(mu, k)).item() == pytest.approx(mu, rel=1e-9)


def test_sampled_moments_match_the_parametrisation():
    mu, k = 2.0, 4.0
    x = np.random.default_rng(0).gamma(k, mu / k, size=200_000)
    assert x.mean() == pytest.approx(mu, rel=0.01)
    assert x.std() / x.mean() == pytest.approx(1 / math.sqrt(k), rel=0.02)  # CV = 1/sqrt(k)


def test_zeros_and_negatives_are_an_error_naming_channels_and_options():
    data = np.ones((3, 5, 4), np.float32)
    data[0, 1, 2] = 0.0
    data[2, 3, 0] = -0.1
    data[1, 1, 1] = np.nan  # unobserved: not counted
    msg = Gamma(GammaConfig(), 4).check_data(data)
    assert msg.startswith("has 2 values <= 0 in 2 channels (0, 2)") and "floor" in msg and "zig" in msg
    assert "\n" not in msg
    assert Gamma(GammaConfig(), 4).check_data(np.abs(np.nan_to_num(data, nan=1.0)) + 0.5) is None


def test_floor_clamps_in_the_likelihood_and_says_how_many():
    data = np.ones((2, 5, 3), np.float32)
    data[0, 0, 0] = 0.0
    data[1, 2, 1] = 5e-5
    recon = Gamma(GammaConfig(floor=1e-4), 3)
    assert recon.check_data(data) is None
    note = recon.data_note(data)
    assert note.startswith("has 2 values (6.7%) below floor 0.0001 in 2 channels (0, 1)")
    p = torch.zeros(2, 5, 3, 2)
    nll = recon.nll(p, torch.from_numpy(data))
    floor_value = recon.nll(p[:1, :1, :1], torch.full((1, 1, 1), 1e-4))
    torch.testing.assert_close(nll[0, 0, 0], floor_value[0, 0, 0])
    assert torch.isfinite(nll).all()
    assert Gamma(GammaConfig(), 3).data_note(data) is None


def test_channels_of_very_different_scales_get_a_note():
    rng = np.random.default_rng(0)
    data = rng.gamma(3.0, 1 / 3, size=(20, 10, 3)).astype(np.float32) * np.array([1.0, 30.0, 5000.0], np.float32)
    note = Gamma(GammaConfig(), 3).data_note(data)
    assert note.startswith("has channels whose 95th percentiles differ") and "normalise each channel" in note
    assert Gamma(GammaConfig(), 3).data_note(data / np.percentile(data, 95, axis=(0, 1))) is None


def test_masked_zeros_give_finite_values_and_gradients():
    recon = Gamma(GammaConfig(), 2)
    p = torch.zeros(1, 3, 2, 2, requires_grad=True)
    data = torch.tensor([[[1.0, 0.0], [2.0, 0.5], [0.0, 1.5]]])  # zeros: unobserved samples
    nll = recon.nll(p, data)
    mask = data > 0
    torch.where(mask, nll, torch.zeros(())).sum().backward()
    assert torch.isfinite(nll).all() and torch.isfinite(p.grad).all()


def test_init_params_match_channel_moments():
    rng = np.random.default_rng(1)
    x = np.stack([rng.gamma(2.0, 1.5, 100_000), rng.gamma(8.0, 0.25, 100_000)], -1).astype(np.float32)
    p = Gamma(GammaConfig(), 2).init_params(DataStats.from_array(x[None]))
    np.testing.assert_allclose(p[:, 0].exp().numpy(), [3.0, 2.0], rtol=0.02)
    np.testing.assert_allclose(p[:, 1].exp().numpy(), [2.0, 8.0], rtol=0.05)


def test_conforms():
    assert_conforms("reconstruction", Gamma)
    assert_conforms("reconstruction", Gamma, GammaConfig(floor=1e-3))


def test_short_training_improves(tmp_path, capsys):
    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, 20)
    with h5py.File(tmp_path / "emg.h5", "w") as f:
        f.attrs["bin_size_ms"] = 20.0
        for split, n in (("train", 48), ("valid", 16)):
            phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
            mean = np.log1p(np.exp(2 * np.sin(t[None, :, None] + phase + np.arange(6) / 3)))
            x = rng.gamma(5.0, mean / 5.0).astype(np.float32)
            f[f"{split}_encod_data"] = x
            f[f"{split}_recon_data"] = x
            f[f"{split}_truth"] = mean.astype(np.float32)
    (tmp_path / "spec.yaml").write_text(
        "data: {path: emg.h5, batch_size: 16}\n"
        "model:\n  reconstruction: {name: gamma}\n"
        "  augmentations: [{name: temporal_shift, std: 0.5, max_shift: 1}]\n"
        "  encoder: {name: bigru, ic_enc_dim: 8, ci_enc_dim: 4, ic_dim: 4}\n"
        "  generator: {name: gru, gen_dim: 16, con_dim: 4, co_dim: 2, fac_dim: 4}\n"
        "train: {max_epochs: 20, lr: 0.01, kl: {ramp_epochs: 0}, l2: {ramp_epochs: 0}}\n"
        "sampling: {num_samples: 4, plots: false}\n")
    code = cli.main([str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "run" / "metrics.csv") as f:
        valid = [float(r["valid_recon"]) for r in csv.DictReader(f)]
    assert np.mean(valid[-3:]) < valid[0] - 0.05, valid
