"""The zero-inflated gamma reconstruction ``zig``: likelihood against scipy, the zero-inflation
mass, the mean, ``loc`` from the data, initialisation by moments, support checks, the learnable
``loc`` and its penalty, and conformance to the core's contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from lfads_core import DataStats
from lfads_core.conformance import assert_conforms
from lfads_calcium.zig import ZeroInflatedGamma, ZIGConfig

SETTINGS = settings(max_examples=40, deadline=None)


def zig(n=1, **config) -> ZeroInflatedGamma:
    return ZeroInflatedGamma(ZIGConfig(**config), n_channels=n).double()


def params(q, k, theta) -> torch.Tensor:
    return torch.tensor([[[[math.log(q / (1 - q)), math.log(k), math.log(theta)]]]], dtype=torch.float64)


@SETTINGS
@given(q=st.floats(0.02, 0.98), k=st.floats(0.2, 20.0), theta=st.floats(0.01, 5.0),
       loc=st.floats(0.01, 2.0), excess=st.floats(1e-3, 30.0))
def test_event_nll_matches_scipy_gamma(q, k, theta, loc, excess):
    loc = float(np.float32(loc))  # the buffer is created in float32
    model = zig(loc=loc)
    y = loc + excess
    nll = model.nll(params(q, k, theta), torch.tensor([[[y]]], dtype=torch.float64)).item()
    expected = -(math.log(q) + stats.gamma.logpdf(y, a=k, loc=loc, scale=theta))
    assert nll == pytest.approx(expected, rel=1e-6, abs=1e-6)


@SETTINGS
@given(q=st.floats(0.01, 0.99), loc=st.floats(0.01, 2.0), below=st.floats(0.0, 1.0))
def test_zero_and_sub_threshold_values_have_the_zero_mass(q, loc, below):
    loc = float(np.float32(loc))
    model = zig(loc=loc)
    for y in (0.0, below * loc):  # 0 and any value in (0, loc] are "no event"
        nll = model.nll(params(q, 2.0, 0.5), torch.tensor([[[y]]], dtype=torch.float64)).item()
        assert nll == pytest.approx(-math.log(1 - q), rel=1e-9, abs=1e-12)


def test_density_integrates_to_one():
    q, k, theta, loc = 0.3, 1.7, 0.4, 0.25
    model = zig(loc=loc)
    p = params(q, k, theta)

    def density(y):
        return math.exp(-model.nll(p, torch.tensor([[[y]]], dtype=torch.float64)).item())

    continuous, _ = integrate.quad(density, loc, loc + 60 * theta * k, limit=200)
    assert (1 - q) + continuous == pytest.approx(1.0, abs=1e-6)


@SETTINGS
@given(q=st.floats(0.05, 0.95), k=st.floats(0.3, 10.0), theta=st.floats(0.05, 3.0), loc=st.floats(0.05, 1.0))
def test_mean_is_the_expected_amplitude(q, k, theta, loc):
    loc = float(np.float32(loc))
    model = zig(loc=loc)
    assert model.mean(params(q, k, theta)).item() == pytest.approx(q * (loc + k * theta), rel=1e-6)


def test_monte_carlo_mean_and_nll_gradient_finite():
    rng = np.random.default_rng(0)
    q, k, theta, loc = 0.2, 2.5, 0.3, 0.1
    events = rng.random(200_000) < q
    y = np.where(events, loc + rng.gamma(k, theta, size=events.size), 0.0)
    model = zig(loc=loc)
    assert model.mean(params(q, k, theta)).item() == pytest.approx(y.mean(), rel=0.02)
    p = params(q, k, theta).expand(1, 1, 1000, 3).clone().requires_grad_(True)
    data = torch.from_numpy(y[:1000]).view(1, 1, 1000)
    model.nll(p, data).sum().backward()
    assert torch.isfinite(p.grad).all()


def test_loc_from_the_smallest_event_and_overridable():
    data = np.array([[[0.0, 0.0, 0.0], [0.5, 2.0, 0.0], [1.0, 0.8, 0.0]]], np.float32)  # channel 2 silent
    st_ = DataStats.from_array(data)
    model = ZeroInflatedGamma(ZIGConfig(), n_channels=3)
    model.init_params(st_)
    torch.testing.assert_close(model.loc, torch.tensor([0.45, 0.72, 0.45]))
    fixed = ZeroInflatedGamma(ZIGConfig(loc=0.1), n_channels=3)
    fixed.init_params(st_)
    torch.testing.assert_close(fixed.loc, torch.full((3,), 0.1))
    assert (data[..., 0][data[..., 0] > 0] > 0.45).all() and (data[..., 1][data[..., 1] > 0] > 0.72).all()


def test_init_params_match_the_moments_of_the_data():
    rng = np.random.default_rng(1)
    q, k, theta = np.array([0.1, 0.4]), np.array([3.0, 1.2]), np.array([0.2, 1.0])
    n = 400_000
    events = rng.random((n, 2)) < q
    amp = rng.gamma(k, theta, size=(n, 2)) + 0.05
    y = np.where(events, amp, 0.0).astype(np.float32).reshape(1, n, 2)
    model = ZeroInflatedGamma(ZIGConfig(loc_scale=0.999), n_channels=2)
    p = model.init_params(DataStats.from_array(y))
    got_q = torch.sigmoid(p[:, 0]).numpy()
    np.testing.assert_allclose(got_q, q, rtol=0.02)
    # mean of the model at the initial parameters = the data mean
    np.testing.assert_allclose(model.mean(p.view(1, 1, 2, 3)).view(2).numpy(), y.mean(axis=(0, 1)), rtol=1e-3)
    # the gamma part's mean and variance match the events' (shift by the fitted loc)
    excess_mean = (k * theta + 0.05) - model.loc.numpy()
    np.testing.assert_allclose(torch.exp(p[:, 1] + p[:, 2]).numpy(), excess_mean, rtol=0.03)
    np.testing.assert_allclose((torch.exp(p[:, 1] + 2 * p[:, 2])).numpy(), k * theta ** 2, rtol=0.05)


def test_negative_values_are_an_error_suggesting_deconvolve():
    data = np.zeros((2, 4, 6), np.float32)
    data[0, 1, 3] = -0.2
    data[1, 0, 5] = np.nan
    msg = zig(6).check_data(data)
    assert "negative values in 1 channel (3; min -0.2)" in msg and "lfads-run deconvolve" in msg
    assert "\n" not in msg
    assert zig(6).check_data(np.abs(data)) is None


def test_data_without_zeros_gets_a_note_suggesting_deconvolve():
    raw = 500 + np.random.default_rng(0).gamma(2.0, 10.0, size=(3, 10, 6)).astype(np.float32)  # fluorescence
    note = zig(6).data_note(raw)
    assert note.startswith("has only 0 % exact zeros") and "lfads-run deconvolve" in note
    events = np.where(np.arange(60).reshape(1, 10, 6) % 3 == 0, 0.2, 0.0) * np.ones((3, 1, 1))
    assert zig(6).data_note(events) is None  # two thirds zeros


def test_learnable_loc_and_its_penalty():
    model = ZeroInflatedGamma(ZIGConfig(learn_loc=True, loc_penalty=0.5), n_channels=2)
    data = np.array([[[0.0, 1.0], [2.0, 0.0], [3.0, 4.0]]], np.float32)
    model.init_params(DataStats.from_array(data))
    assert model.penalty().item() == 0.0
    with torch.no_grad():
        model.log_loc.copy_(torch.tensor([0.2, -0.4]))
    assert model.penalty().item() == pytest.approx(0.5 * (0.04 + 0.16) / 2)
    # loc never rises above the smallest training event
    assert model.loc[0].item() == pytest.approx(0.999 * 2.0)
    assert model.loc[1].item() == pytest.approx(0.9 * math.exp(-0.4))
    p = torch.zeros(1, 3, 2, 3, requires_grad=True)
    (model.nll(p, torch.from_numpy(data)).sum() + model.penalty()).backward()
    assert model.log_loc.grad is not None and torch.isfinite(model.log_loc.grad).all()
    frozen = ZeroInflatedGamma(ZIGConfig(), n_channels=2)
    assert not frozen.log_loc.requires_grad and frozen.penalty().item() == 0.0


def test_loc_is_saved_with_the_model():
    model = ZeroInflatedGamma(ZIGConfig(), n_channels=2)
    model.init_params(DataStats.from_array(np.array([[[0.5, 1.0]]], np.float32)))
    other = ZeroInflatedGamma(ZIGConfig(), n_channels=2)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other.loc, model.loc)


def test_conforms_to_the_reconstruction_contract():
    assert_conforms("reconstruction", ZeroInflatedGamma)
    assert_conforms("reconstruction", ZeroInflatedGamma, ZIGConfig(learn_loc=True))
