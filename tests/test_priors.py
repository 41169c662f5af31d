"""Priors and their KL divergences (REFERENCE.md §3).

* ``NormalPrior``: N(m, v I), KL against a diagonal Gaussian posterior is analytic.
* ``ARNormalPrior``: per-dimension AR(1), α = exp(−1/τ), u_1 ~ N(0, nvar/(1−α²)),
  u_t | u_{t−1} ~ N(α u_{t−1}, nvar); checked against a Monte Carlo estimate whose log-prior is
  written out here from the formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lfads_core.model.priors import ARNormalConfig, ARNormalPrior, NormalConfig, NormalPrior
from lfads_core.protocols import Prior

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
means = st.floats(-3.0, 3.0, allow_nan=False)
stds = st.floats(0.05, 3.0, allow_nan=False)


def normal_prior(shape, mean=0.0, variance=0.1, learn_mean=True) -> NormalPrior:
    return NormalPrior(NormalConfig(mean=mean, variance=variance, learn_mean=learn_mean), shape=shape)


def ar_prior(dim, tau=10.0, nvar=0.1, learnable=True) -> ARNormalPrior:
    return ARNormalPrior(ARNormalConfig(tau=tau, nvar=nvar, learnable=learnable), shape=(dim,))


def test_priors_satisfy_protocol():
    assert isinstance(normal_prior((3,)), Prior)
    assert isinstance(ar_prior(3), Prior)


# --------------------------------------------------------------------------- #
# NormalPrior
# --------------------------------------------------------------------------- #


def _torch_normal_kl(mean, std, prior_mean, prior_var):
    q = torch.distributions.Normal(mean, std)
    p = torch.distributions.Normal(prior_mean.expand_as(mean), math.sqrt(prior_var))
    kl = torch.distributions.kl_divergence(q, p)
    return kl.reshape(kl.shape[0], -1).sum(1)


@SETTINGS
@given(arrays(np.float64, (3, 4), elements=means), arrays(np.float64, (3, 4), elements=stds),
       st.floats(0.01, 5.0), st.floats(-1.0, 1.0))
def test_normal_kl_matches_torch_bz(mu, sd, var, pmean):
    prior = normal_prior((4,), mean=pmean, variance=var).double()
    mu, sd = torch.from_numpy(mu), torch.from_numpy(sd)
    got = prior.kl(mu, sd)
    assert got.shape == (3,)
    want = _torch_normal_kl(mu, sd, prior.mean.detach(), var)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)  # prior logvar buffer is made in float32


@SETTINGS
@given(arrays(np.float64, (2, 5, 3), elements=means), arrays(np.float64, (2, 5, 3), elements=stds),
       st.floats(0.01, 5.0))
def test_normal_kl_matches_torch_btu(mu, sd, var):
    prior = normal_prior((3,), variance=var).double()
    with torch.no_grad():
        prior.mean.copy_(torch.tensor([0.5, -0.2, 0.0]))
    mu, sd = torch.from_numpy(mu), torch.from_numpy(sd)
    got = prior.kl(mu, sd)
    assert got.shape == (2,)
    want = _torch_normal_kl(mu, sd, prior.mean.detach(), var)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)  # prior logvar buffer is made in float32


@SETTINGS
@given(arrays(np.float64, (4, 3), elements=means), arrays(np.float64, (4, 3), elements=stds))
def test_normal_kl_nonnegative(mu, sd):
    kl = normal_prior((3,)).double().kl(torch.from_numpy(mu), torch.from_numpy(sd))
    assert (kl >= -1e-12).all()


def test_normal_kl_zero_when_posterior_is_prior():
    prior = normal_prior((5,), mean=0.3, variance=0.2).double()
    mu = torch.full((2, 5), 0.3, dtype=torch.float64)
    sd = torch.full((2, 5), math.sqrt(0.2), dtype=torch.float64)
    torch.testing.assert_close(prior.kl(mu, sd), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    # and positive as soon as it differs
    assert (prior.kl(mu + 0.1, sd) > 0).all()
    assert (prior.kl(mu, sd * 1.1) > 0).all()


def test_normal_prior_defaults_and_gradient():
    prior = normal_prior((4,))
    assert torch.equal(prior.mean.detach(), torch.zeros(4))
    assert prior.mean.requires_grad
    torch.testing.assert_close(prior.logvar.exp(), torch.full((4,), 0.1))
    mu = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    prior.kl(mu, torch.ones(3, 4)).sum().backward()
    assert prior.mean.grad is not None and prior.mean.grad.abs().sum() > 0
    # d KL / d m = −Σ_b (μ − m)/v
    torch.testing.assert_close(prior.mean.grad, -(mu.sum(0)) / 0.1)


def test_normal_prior_mean_fixed_when_not_learned():
    prior = normal_prior((4,), learn_mean=False)
    assert not prior.mean.requires_grad
    assert all(not p.requires_grad for p in prior.parameters())


# --------------------------------------------------------------------------- #
# ARNormalPrior
# --------------------------------------------------------------------------- #


def ar1_log_prob(u: torch.Tensor, tau: torch.Tensor, nvar: torch.Tensor) -> torch.Tensor:
    """log p(u) of the AR(1) prior written out from REFERENCE.md §3; u [..., T, U] -> [...]."""
    alpha = torch.exp(-1.0 / tau)
    v1 = nvar / (1.0 - alpha ** 2)
    first = -0.5 * (math.log(2 * math.pi) + torch.log(v1) + u[..., 0, :] ** 2 / v1)
    resid = u[..., 1:, :] - alpha * u[..., :-1, :]
    rest = -0.5 * (math.log(2 * math.pi) + torch.log(nvar) + resid ** 2 / nvar)
    return first.sum(-1) + rest.sum((-2, -1))


def mc_kl(mean, std, tau, nvar, n_samples, gen):
    """KL(q || p) by Monte Carlo: mean and standard error of log q(u) − log p(u), u ~ q."""
    eps = torch.randn((n_samples, *mean.shape), generator=gen, dtype=mean.dtype)
    u = mean + std * eps  # [S, B, T, U]
    log_q = torch.distributions.Normal(mean, std).log_prob(u).sum((-2, -1))  # [S, B]
    log_p = ar1_log_prob(u, tau, nvar)
    diff = log_q - log_p
    return diff.mean(0), diff.std(0) / math.sqrt(n_samples)


@pytest.mark.parametrize("tau,nvar", [(10.0, 0.1), (2.0, 0.5), (0.7, 1.5)])
def test_ar_kl_matches_monte_carlo(tau, nvar):
    gen = torch.Generator().manual_seed(1)
    b, t, u = 3, 6, 2
    mean = 0.4 * torch.randn(b, t, u, generator=gen, dtype=torch.float64)
    std = 0.2 + 0.4 * torch.rand(b, t, u, generator=gen, dtype=torch.float64)
    prior = ar_prior(u, tau=tau, nvar=nvar).double()
    got = prior.kl(mean, std)
    assert got.shape == (b,)
    est, se = mc_kl(mean, std, torch.full((u,), tau, dtype=torch.float64),
                    torch.full((u,), nvar, dtype=torch.float64), 20000, gen)
    assert ((got - est).abs() <= 4 * se + 1e-3).all(), (got, est, se)


def test_ar_kl_matches_monte_carlo_per_dimension_params():
    # Different τ and nvar per dimension (after learning they are no longer shared).
    gen = torch.Generator().manual_seed(2)
    prior = ar_prior(3).double()
    tau = torch.tensor([1.5, 5.0, 30.0], dtype=torch.float64)
    nvar = torch.tensor([0.05, 0.3, 1.0], dtype=torch.float64)
    with torch.no_grad():
        prior.log_tau.copy_(tau.log())
        prior.log_nvar.copy_(nvar.log())
    mean = 0.3 * torch.randn(2, 8, 3, generator=gen, dtype=torch.float64)
    std = 0.1 + 0.3 * torch.rand(2, 8, 3, generator=gen, dtype=torch.float64)
    got = prior.kl(mean, std)
    est, se = mc_kl(mean, std, tau, nvar, 20000, gen)
    assert ((got - est).abs() <= 4 * se + 1e-3).all(), (got, est, se)


def test_ar_kl_exact_closed_form_single_step():
    # T = 1: the prior is N(0, nvar/(1−α²)) and the KL is the plain Gaussian KL.
    prior = ar_prior(2, tau=4.0, nvar=0.3).double()
    v1 = 0.3 / (1 - math.exp(-2 / 4.0))
    mean = torch.tensor([[[0.5, -1.0]]], dtype=torch.float64)
    std = torch.tensor([[[0.7, 0.2]]], dtype=torch.float64)
    want = _torch_normal_kl(mean, std, torch.zeros(2, dtype=torch.float64), v1)
    torch.testing.assert_close(prior.kl(mean, std), want)
    # a [B, U] posterior is treated as one step
    torch.testing.assert_close(prior.kl(mean[:, 0], std[:, 0]), want)


def test_ar_kl_zero_when_posterior_is_stationary_marginal_single_step():
    prior = ar_prior(3, tau=6.0, nvar=0.2).double()
    v1 = 0.2 / (1 - math.exp(-2 / 6.0))
    mean = torch.zeros(4, 1, 3, dtype=torch.float64)
    std = torch.full((4, 1, 3), math.sqrt(v1), dtype=torch.float64)
    torch.testing.assert_close(prior.kl(mean, std), torch.zeros(4, dtype=torch.float64),
                               atol=1e-12, rtol=0)


@SETTINGS
@given(arrays(np.float64, (2, 5, 2), elements=means), arrays(np.float64, (2, 5, 2), elements=stds),
       st.floats(0.3, 50.0), st.floats(0.01, 3.0))
def test_ar_kl_nonnegative(mu, sd, tau, nvar):
    kl = ar_prior(2, tau=tau, nvar=nvar).double().kl(torch.from_numpy(mu), torch.from_numpy(sd))
    assert kl.shape == (2,)
    assert (kl >= -1e-9).all()


def test_ar_kl_independent_over_batch():
    gen = torch.Generator().manual_seed(3)
    prior = ar_prior(2).double()
    mean = torch.randn(4, 5, 2, generator=gen, dtype=torch.float64)
    std = 0.1 + torch.rand(4, 5, 2, generator=gen, dtype=torch.float64)
    full = prior.kl(mean, std)
    for i in range(4):
        torch.testing.assert_close(prior.kl(mean[i:i + 1], std[i:i + 1]), full[i:i + 1])


def test_ar_prior_init_and_gradients():
    prior = ar_prior(3, tau=10.0, nvar=0.1)
    torch.testing.assert_close(prior.log_tau.detach().exp(), torch.full((3,), 10.0))
    torch.testing.assert_close(prior.log_nvar.detach().exp(), torch.full((3,), 0.1))
    gen = torch.Generator().manual_seed(4)
    mean = torch.randn(2, 7, 3, generator=gen)
    std = 0.2 + torch.rand(2, 7, 3, generator=gen)
    prior.kl(mean, std).sum().backward()
    for p in (prior.log_tau, prior.log_nvar):
        assert p.grad is not None and torch.isfinite(p.grad).all() and (p.grad != 0).all()
    # gradient agrees with the autograd of the hand formula (exact, for the expectation)
    log_tau = prior.log_tau.detach().clone().requires_grad_(True)
    log_nvar = prior.log_nvar.detach().clone().requires_grad_(True)
    ref = _ar_kl_reference(mean, std, log_tau.exp(), log_nvar.exp())
    ref.sum().backward()
    torch.testing.assert_close(prior.log_tau.grad, log_tau.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(prior.log_nvar.grad, log_nvar.grad, rtol=1e-4, atol=1e-5)


def _ar_kl_reference(mean, std, tau, nvar):
    """Closed-form KL written independently: −H[q] − E_q[log p(u)], loop over time."""
    alpha = torch.exp(-1.0 / tau)
    var = std ** 2
    ent = 0.5 * (math.log(2 * math.pi) + 1 + torch.log(var)).sum((1, 2))
    v1 = nvar / (1 - alpha ** 2)
    cross = 0.5 * (math.log(2 * math.pi) + torch.log(v1) + (mean[:, 0] ** 2 + var[:, 0]) / v1).sum(-1)
    for t in range(1, mean.shape[1]):
        e2 = (mean[:, t] - alpha * mean[:, t - 1]) ** 2 + var[:, t] + alpha ** 2 * var[:, t - 1]
        cross = cross + 0.5 * (math.log(2 * math.pi) + torch.log(nvar) + e2 / nvar).sum(-1)
    return cross - ent


def test_ar_prior_not_learnable():
    prior = ar_prior(2, learnable=False)
    assert all(not p.requires_grad for p in prior.parameters())
