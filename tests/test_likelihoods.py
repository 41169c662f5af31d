"""Reconstruction likelihoods: Poisson (lfads_spikes) and Gaussian (core) against closed forms.

REFERENCE.md §2: Poisson has P = 1 (log-rate ℓ, mean e^ℓ, counts >= 0); Gaussian has P = 2
(μ, log σ², mean μ). ``nll`` is the per-element negative log-likelihood [B, T, N].
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lfads_core.data.stats import DataStats
from lfads_core.model.build import build_model
from lfads_core.model.gaussian import Gaussian, GaussianConfig
from lfads_core.model.lfads import SessionShape
from lfads_core.protocols import Reconstruction
from lfads_core.spec.load import spec_from_dict
from lfads_spikes.poisson import Poisson, PoissonConfig

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)

log_rates = st.floats(-8.0, 5.0, allow_nan=False, allow_infinity=False)
counts = st.integers(0, 60)
reals = st.floats(-50.0, 50.0, allow_nan=False, allow_infinity=False)
logvars = st.floats(-6.0, 6.0, allow_nan=False, allow_infinity=False)


def poisson() -> Poisson:
    return Poisson(PoissonConfig(), n_channels=3)


def gaussian() -> Gaussian:
    return Gaussian(GaussianConfig(), n_channels=3)


def test_components_satisfy_protocol():
    for recon, p in ((poisson(), 1), (gaussian(), 2)):
        assert isinstance(recon, Reconstruction)
        assert recon.n_params == p
        assert isinstance(type(recon).support, str) and type(recon).support
        assert float(recon.penalty()) == 0.0


# --------------------------------------------------------------------------- #
# Poisson
# --------------------------------------------------------------------------- #


@SETTINGS
@given(st.lists(st.tuples(log_rates, counts), min_size=1, max_size=24))
def test_poisson_nll_matches_torch_distribution(pairs):
    ell = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    x = torch.tensor([float(p[1]) for p in pairs], dtype=torch.float64)
    params = ell.view(1, -1, 1, 1)  # [B=1, T, N=1, P=1]
    got = poisson().nll(params, x.view(1, -1, 1))
    assert got.shape == (1, len(pairs), 1)
    want = -torch.distributions.Poisson(torch.exp(ell)).log_prob(x)
    torch.testing.assert_close(got.view(-1), want, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(log_rates, counts)
def test_poisson_nll_hand_formula(ell, x):
    # −log p(x) = λ − x log λ + log x!, log x! written as a sum of logs
    lam = math.exp(ell)
    want = lam - x * ell + sum(math.log(k) for k in range(1, x + 1))
    got = poisson().nll(torch.tensor([[[[ell]]]], dtype=torch.float64),
                        torch.tensor([[[float(x)]]], dtype=torch.float64))
    assert float(got) == pytest.approx(want, rel=1e-9, abs=1e-9)


@SETTINGS
@given(arrays(np.float64, (2, 3, 4), elements=log_rates))
def test_poisson_mean_is_exp_log_rate(ell):
    params = torch.from_numpy(ell).unsqueeze(-1)
    got = poisson().mean(params)
    assert got.shape == (2, 3, 4)
    torch.testing.assert_close(got, torch.exp(torch.from_numpy(ell)))


def test_poisson_nll_minimised_at_the_data():
    # For a fixed count x > 0 the NLL over ℓ is minimal at ℓ = log x (the MLE).
    x = torch.tensor([[[3.0]]], dtype=torch.float64)
    grid = torch.linspace(-2, 4, 6001, dtype=torch.float64)
    nll = poisson().nll(grid.view(1, -1, 1, 1), x.expand(1, grid.numel(), 1))
    assert float(grid[nll.argmin()]) == pytest.approx(math.log(3.0), abs=2e-3)


def test_poisson_nll_shape_and_gradient():
    torch.manual_seed(0)
    params = torch.randn(2, 5, 4, 1, requires_grad=True)
    x = torch.poisson(torch.full((2, 5, 4), 2.0))
    nll = poisson().nll(params, x)
    assert nll.shape == (2, 5, 4)
    nll.sum().backward()
    torch.testing.assert_close(params.grad[..., 0], torch.exp(params.detach()[..., 0]) - x)


def test_poisson_check_data_rejects_negative():
    msg = poisson().check_data(np.array([[0.0, 1.0], [-1.0, 2.0]], dtype=np.float32))
    assert isinstance(msg, str) and msg
    assert "negative" in msg and "-1" in msg


def test_poisson_check_data_rejects_non_integer():
    msg = poisson().check_data(np.array([[0.0, 1.5], [3.0, 2.0]], dtype=np.float32))
    assert isinstance(msg, str) and msg
    assert "integer" in msg and "1.5" in msg


@SETTINGS
@given(arrays(np.float32, (3, 4, 2), elements=st.integers(0, 1000).map(float)))
def test_poisson_check_data_accepts_counts(data):
    assert poisson().check_data(data) is None


def test_poisson_check_data_empty_ok():
    assert poisson().check_data(np.zeros((0, 4, 3), np.float32)) is None


@SETTINGS
@given(arrays(np.float64, (5,), elements=st.floats(1e-3, 100.0)))
def test_poisson_init_params_reproduces_mean(mean):
    recon = Poisson(PoissonConfig(), n_channels=5)
    m = torch.from_numpy(mean).float()
    bias = recon.init_params(stats_with(mean=m))
    assert bias.shape == (5, 1)
    torch.testing.assert_close(recon.mean(bias.view(1, 1, 5, 1))[0, 0], m)


def test_poisson_init_params_finite_for_silent_channel():
    bias = poisson().init_params(stats_with(mean=torch.tensor([0.0, 0.5, 2.0])))
    assert torch.isfinite(bias).all()


def stats_with(mean, var=None) -> DataStats:
    """DataStats with the given mean (and variance); other fields neutral."""
    mean = torch.as_tensor(mean, dtype=torch.float32)
    ones = torch.ones_like(mean)
    var = ones if var is None else torch.as_tensor(var, dtype=torch.float32)
    return DataStats(mean=mean, var=var, frac_zero=0 * ones, min_positive=ones, max=ones,
                     frac_observed=ones)


def test_data_stats_from_array_with_nan():
    x = np.array([[[0.0, np.nan], [2.0, 3.0]], [[4.0, np.nan], [0.5, np.nan]]], np.float32)  # [2, 2, 2]
    s = DataStats.from_array(x)
    torch.testing.assert_close(s.mean, torch.tensor([6.5 / 4, 3.0]))
    torch.testing.assert_close(s.var, torch.tensor([np.var([0, 2, 4, 0.5]), 0.0], dtype=torch.float32))
    torch.testing.assert_close(s.frac_zero, torch.tensor([0.25, 0.0]))
    torch.testing.assert_close(s.min_positive, torch.tensor([0.5, 3.0]))
    torch.testing.assert_close(s.max, torch.tensor([4.0, 3.0]))
    torch.testing.assert_close(s.frac_observed, torch.tensor([1.0, 0.25]))
    empty = DataStats.from_array(np.full((1, 2, 1), np.nan, np.float32))
    assert empty.mean.item() == 0 and torch.isnan(empty.min_positive).all() and empty.frac_observed.item() == 0


# --------------------------------------------------------------------------- #
# Gaussian
# --------------------------------------------------------------------------- #


@SETTINGS
@given(st.lists(st.tuples(reals, logvars, reals), min_size=1, max_size=24))
def test_gaussian_nll_matches_torch_distribution(triples):
    mu = torch.tensor([t[0] for t in triples], dtype=torch.float64)
    logvar = torch.tensor([t[1] for t in triples], dtype=torch.float64)
    x = torch.tensor([t[2] for t in triples], dtype=torch.float64)
    params = torch.stack([mu, logvar], -1).view(1, -1, 1, 2)
    got = gaussian().nll(params, x.view(1, -1, 1))
    assert got.shape == (1, len(triples), 1)
    want = -torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(x)
    torch.testing.assert_close(got.view(-1), want, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(reals, logvars, reals)
def test_gaussian_nll_hand_formula(mu, logvar, x):
    var = math.exp(logvar)
    want = 0.5 * math.log(2 * math.pi * var) + (x - mu) ** 2 / (2 * var)
    got = gaussian().nll(torch.tensor([[[[mu, logvar]]]], dtype=torch.float64),
                         torch.tensor([[[x]]], dtype=torch.float64))
    assert float(got) == pytest.approx(want, rel=1e-9, abs=1e-9)


@SETTINGS
@given(arrays(np.float64, (2, 3, 4, 2), elements=reals))
def test_gaussian_mean_is_mu(params):
    p = torch.from_numpy(params)
    got = gaussian().mean(p)
    assert got.shape == (2, 3, 4)
    torch.testing.assert_close(got, p[..., 0])


def test_gaussian_accepts_any_real_data():
    assert gaussian().check_data(np.array([[-3.5, 0.0, 2.25]], dtype=np.float32)) is None


@SETTINGS
@given(arrays(np.float64, (4,), elements=reals), arrays(np.float64, (4,), elements=st.floats(1e-3, 50.0)))
def test_gaussian_init_params_reproduces_mean(mean, var):
    recon = Gaussian(GaussianConfig(), n_channels=4)
    m = torch.from_numpy(mean).float()
    pv = recon.init_params(stats_with(m, torch.from_numpy(var)))
    assert pv.shape == (4, 2)
    torch.testing.assert_close(recon.mean(pv.view(1, 1, 4, 2))[0, 0], m)
    torch.testing.assert_close(pv[:, 1].exp(), torch.from_numpy(var).float())


# --------------------------------------------------------------------------- #
# Through a built model: readout bias from init_params reproduces the data mean
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("recon_name", ["poisson", "gaussian"])
def test_readout_bias_from_init_params_gives_data_mean(recon_name):
    torch.manual_seed(0)
    spec = spec_from_dict({"data": {"path": "x"}, "model": {
        "encoder": {"name": "bigru", "ic_enc_dim": 4, "ci_enc_dim": 4, "ic_dim": 3},
        "generator": {"name": "gru", "gen_dim": 6, "con_dim": 4, "co_dim": 2, "fac_dim": 3},
        "reconstruction": {"name": recon_name}}})
    n = 5
    mean = torch.tensor([0.05, 0.3, 1.0, 2.5, 7.0])
    model = build_model(spec.model, [SessionShape(n_in=n, n_out=n, t_in=6, t_out=6)], [stats_with(mean)])
    with torch.no_grad():
        model.readouts[0].linear.weight.zero_()  # the output is then the bias alone
    model.eval()
    out = model(torch.zeros(2, 6, n), sample=False)
    got = model.means(out)
    assert got.shape == (2, 6, n)
    torch.testing.assert_close(got, mean.expand(2, 6, n), rtol=1e-5, atol=1e-6)


def test_data_stats_in_chunks_equal_the_whole():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, size=(50, 20, 7)).astype(np.float32)
    x[x < 0.5] = 0.0
    x[0, :, 3] = np.nan
    whole, chunked = DataStats.from_array(x), DataStats.from_array(x, chunk=13)
    for field in ("mean", "var", "frac_zero", "min_positive", "max", "frac_observed"):
        torch.testing.assert_close(getattr(chunked, field), getattr(whole, field), equal_nan=True)
