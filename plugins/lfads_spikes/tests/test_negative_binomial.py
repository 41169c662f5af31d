"""The reconstruction ``negative_binomial``: likelihood against scipy (and mpmath where scipy's own
log-gamma differences lose precision), its Poisson limit, the mean, the start by moments, the
support checks, the learnable size and its penalty, spec validation and conformance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lfads_core import DataStats, registry
from lfads_core.conformance import assert_conforms
from lfads_core.errors import SpecError
from lfads_core.spec.load import spec_from_dict
from lfads_core.spec.validators import FieldError

from lfads_spikes.negative_binomial import NegativeBinomial, NegativeBinomialConfig

SETTINGS = settings(max_examples=60, deadline=None)
WIDE = dict(min_size=1e-3, max_size=1e8)


def nb(n: int = 1, dtype=torch.float64, **config) -> NegativeBinomial:
    return NegativeBinomial(NegativeBinomialConfig(**{**WIDE, **config}), n_channels=n).to(dtype)


def nll_of(model: NegativeBinomial, mu, r, x, dtype=torch.float64) -> np.ndarray:
    """NLL of counts x [K] under means mu [K] and one size r per element (K channels)."""
    mu, r, x = (np.atleast_1d(np.asarray(v, np.float64)) for v in (mu, r, x))
    with torch.no_grad():
        model.log_size.copy_(torch.log(torch.as_tensor(r, dtype=model.log_size.dtype)))
    params = torch.log(torch.as_tensor(mu, dtype=dtype)).view(1, 1, -1, 1)
    return model.nll(params, torch.as_tensor(x, dtype=dtype).view(1, 1, -1))[0, 0].detach().numpy()


def scipy_nll(mu, r, x):
    return -stats.nbinom.logpmf(x, r, r / (r + mu))


# -- the likelihood -----------------------------------------------------------------------------
@SETTINGS
@given(mu=st.floats(1e-3, 1e3), r=st.floats(1e-2, 1e4), x=st.integers(0, 500))
def test_nll_matches_scipy_float64(mu, r, x):
    got = nll_of(nb(), mu, r, x)[0]
    assert got == pytest.approx(scipy_nll(mu, r, x), rel=1e-9, abs=1e-9)


@SETTINGS
@given(mu=st.floats(1e-3, 1e2), r=st.floats(1e-2, 1e4), x=st.integers(0, 100))
def test_nll_matches_scipy_float32(mu, r, x):
    """float32, as in training: a few ulps of the terms (no cancellation of large log-gammas)."""
    got = nll_of(nb(dtype=torch.float32), mu, r, x, dtype=torch.float32)[0]
    want = scipy_nll(float(np.float32(mu)), float(np.float32(r)), x)
    assert got == pytest.approx(want, rel=2e-5, abs=2e-5)


def test_nll_for_huge_sizes_against_mpmath():
    """For r ≫ 1 scipy's own log Γ(x + r) − log Γ(r) loses digits; compare with 40-digit maths."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40

    def exact(mu, r, x):
        mu, r, x = mp.mpf(mu), mp.mpf(r), mp.mpf(x)
        return float(-(mp.loggamma(x + r) - mp.loggamma(r) - mp.loggamma(x + 1)
                       + r * mp.log(r / (r + mu)) + x * mp.log(mu / (r + mu))))

    cases = [(mu, r, x) for mu in (1e-3, 0.3, 5.0, 200.0) for r in (9.99, 10.0, 1e3, 1e6, 1e8)
             for x in (0, 1, 4, 60)]
    mu, r, x = map(np.array, zip(*cases))
    got64 = nll_of(nb(n=len(cases)), mu, r, x)
    got32 = nll_of(nb(n=len(cases), dtype=torch.float32), mu, r, x, dtype=torch.float32)
    want = np.array([exact(*c) for c in cases])
    np.testing.assert_allclose(got64, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got32, want, rtol=2e-6, atol=2e-6)


@SETTINGS
@given(mu=st.floats(1e-3, 50.0), x=st.integers(0, 200))
def test_large_size_is_poisson(mu, x):
    got = nll_of(nb(), mu, 1e8, x)[0]
    assert got == pytest.approx(-stats.poisson.logpmf(x, mu), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("mu, r", [(0.2, 0.05), (3.0, 0.7), (40.0, 5.0), (1.5, 1e4)])
def test_probabilities_sum_to_one_and_the_mean_is_mu(mu, r):
    x = np.arange(0, 20000)
    p = np.exp(-nll_of(nb(n=len(x)), np.full(len(x), mu), np.full(len(x), r), x))
    assert p.sum() == pytest.approx(1.0, abs=1e-8)
    assert (p * x).sum() == pytest.approx(mu, rel=1e-6)
    assert (p * (x - mu) ** 2).sum() == pytest.approx(mu + mu * mu / r, rel=1e-5)


def test_mean_is_exp_of_the_parameter_in_counts_per_bin():
    model = nb(n=3)
    mu = torch.tensor([0.01, 1.0, 30.0], dtype=torch.float64)
    torch.testing.assert_close(model.mean(torch.log(mu).view(1, 1, 3, 1)), mu.view(1, 1, 3))
    r = stats.nbinom(5.0, 5.0 / (5.0 + mu.numpy()))
    np.testing.assert_allclose(r.mean(), mu.numpy())
    assert (model.units, model.support, model.metrics, model.n_params) == (
        "counts per bin", "non-negative integer counts", ("bits_per_spike",), 1)


def test_nll_and_gradients_finite_at_zero_and_at_the_size_bounds():
    model = nb(n=4, min_size=1e-2, max_size=1e4)
    with torch.no_grad():
        model.log_size.copy_(torch.log(torch.tensor([1e-5, 1e-2, 50.0, 1e9], dtype=torch.float64)))
    f64 = dict(dtype=torch.float64)
    params = torch.tensor([-30.0, -2.0, 3.0, 30.0], **f64).view(1, 1, 4, 1).requires_grad_()
    for x in (torch.zeros(1, 1, 4, **f64), torch.tensor([[[0.0, 1.0, 7.0, 3.0]]], **f64)):
        nll = model.nll(params, x)
        nll.sum().backward()
        assert torch.isfinite(nll).all() and torch.isfinite(params.grad).all()
        assert torch.isfinite(model.log_size.grad).all()
        params.grad = model.log_size.grad = None
    torch.testing.assert_close(model.size, torch.tensor([1e-2, 1e-2, 50.0, 1e4], dtype=torch.float64))


# -- the start ---------------------------------------------------------------------------------
def test_start_by_moments_on_negative_binomial_counts():
    rng = np.random.default_rng(0)
    mu = np.array([0.5, 2.0, 8.0, 1.0, 0.0, 3.0])
    r = np.array([0.5, 2.0, 10.0, 1e9, 1.0, 1.0])  # channel 3 ~ Poisson, channel 4 silent
    counts = rng.negative_binomial(r, r / (r + mu), size=(4000, 10, 6)).astype(np.float32)
    counts[:, :, 5] = 3.0  # constant: var 0 < mean
    model = nb(n=6, dtype=torch.float32, min_size=1e-2, max_size=1e4)
    bias = model.init_params(DataStats.from_array(counts))
    assert bias.shape == (6, 1)
    np.testing.assert_allclose(bias[:, 0].numpy(), np.log(np.maximum(counts.mean((0, 1)), 1e-3)), rtol=1e-6)
    size = model.size.detach().numpy()
    np.testing.assert_allclose(size[:3], r[:3], rtol=0.1)
    assert size[3] > 20 and size[4] == size[5] == pytest.approx(1e4)  # no over-dispersion seen


def test_a_configured_size_replaces_the_moments_and_can_be_fixed():
    counts = np.random.default_rng(1).negative_binomial(1.0, 0.5, size=(200, 10, 3)).astype(np.float32)
    model = NegativeBinomial(NegativeBinomialConfig(size=4.0, learn_size=False), n_channels=3)
    model.init_params(DataStats.from_array(counts))
    torch.testing.assert_close(model.size, torch.full((3,), 4.0))
    assert not model.log_size.requires_grad
    assert float(model.penalty()) == 0.0


def test_learnable_size_penalty_and_epoch_metric():
    model = NegativeBinomial(NegativeBinomialConfig(size=2.0, size_penalty=0.1), n_channels=3)
    assert model.log_size.requires_grad
    assert float(model.penalty().detach()) == pytest.approx(0.1 * 0.5)
    model.penalty().backward()
    assert (model.log_size.grad < 0).all()  # the penalty pulls r up, toward Poisson
    metric = model.epoch_metrics(torch.zeros(2, 4, 3, 1), torch.zeros(2, 4, 3), torch.ones(2, 4, 3))
    assert set(metric) == {"overdispersion"} and float(metric["overdispersion"]) == pytest.approx(0.5)
    assert float(NegativeBinomial(NegativeBinomialConfig(), n_channels=3).penalty()) == 0.0


def test_size_is_saved_with_the_model():
    a = NegativeBinomial(NegativeBinomialConfig(size=3.0), n_channels=2)
    b = NegativeBinomial(NegativeBinomialConfig(), n_channels=2)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.size, torch.full((2,), 3.0))


# -- support -----------------------------------------------------------------------------------
def test_check_data_names_the_channels():
    model = NegativeBinomial(NegativeBinomialConfig(), n_channels=4)
    ok = np.array([[[0, 1, np.nan, 7], [2, 0, 0, 0]]], np.float32)
    assert model.check_data(ok) is None
    negative = ok.copy()
    negative[0, 1, [1, 3]] = -2
    assert model.check_data(negative) == ("has negative values in channels 1, 3 (min -2); "
                                          "negative_binomial needs counts >= 0")
    fractional = ok.copy()
    fractional[0, 0, 2] = 0.5
    assert model.check_data(fractional) == ("has non-integer values in channel 2 (e.g. 0.5); "
                                            "negative_binomial needs spike counts")
    assert model.check_data(np.zeros((0, 3, 4), np.float32)) is None


# -- spec and registration ---------------------------------------------------------------------
def test_registered_and_conforms():
    assert registry.lookup("reconstruction", "negative_binomial").dist == "lfads-spikes"
    assert registry.load("reconstruction", "negative_binomial") is NegativeBinomial
    assert_conforms("reconstruction", NegativeBinomial)
    assert_conforms("reconstruction", NegativeBinomial,
                    NegativeBinomialConfig(size=0.5, learn_size=False, size_penalty=1.0))


def test_config_validation():
    with pytest.raises(SpecError) as info:
        spec_from_dict({"data": {"path": "x.h5"}, "model": {"reconstruction": {
            "name": "negative_binomial", "min_size": 5.0, "max_size": 2.0, "size": -1.0,
            "size_penalty": -0.5}}})
    lines = str(info.value).splitlines()
    assert lines == [
        "spec: model.reconstruction.max_size: must be > min_size (5.0), got 2.0",
        "spec: model.reconstruction.size: must be > 0.0, got -1.0",
        "spec: model.reconstruction.size_penalty: must be >= 0.0, got -0.5"], lines
    with pytest.raises(FieldError, match="size: must be in \\[min_size, max_size\\]"):
        NegativeBinomialConfig(size=1e5)
    with pytest.raises(FieldError, match="max_size: must be in"):
        NegativeBinomialConfig(max_size=1e9)


def test_evaluate_scores_the_whole_predictive_distribution():
    """On over-dispersed counts with known means, the NB likelihood at the true size beats the
    Poisson likelihood of the same means, over the same constant-rate null."""
    from lfads_spikes.negative_binomial import NegativeBinomial, NegativeBinomialConfig

    rng = np.random.default_rng(0)
    mu = np.exp(rng.normal(0.0, 0.7, size=(200, 30, 4)))
    counts = rng.poisson(mu * rng.gamma(2.0, 0.5, size=mu.shape)).astype(np.float32)
    counts[0, :5, 0] = np.nan  # unobserved samples are left out
    recon = NegativeBinomial(NegativeBinomialConfig(size=2.0, learn_size=False), n_channels=4)
    nb = recon.evaluate(mu, counts)["nb_bits_per_spike"]
    seen = np.isfinite(counts)
    c0 = np.where(seen, counts, 0)
    null = c0.sum((0, 1)) / seen.sum((0, 1))
    from scipy.special import gammaln

    def poisson(rate):
        return (rate - c0 * np.log(rate) + gammaln(c0 + 1))[seen].sum()

    poisson_bits = (poisson(np.broadcast_to(null, mu.shape)) - poisson(mu)) / (np.log(2) * c0.sum())
    assert nb > poisson_bits + 0.05 and nb > 0
