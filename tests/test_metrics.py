"""Tests for lfads_core.metrics.

The NLB metrics (co-bps, fp-bps) are checked against hand computations, scipy's Poisson log-pmf
and a transcription of nlb_tools.evaluation (which does not install here).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lfads_core import metrics
from lfads_core.metrics import (bits_per_spike, co_bps, fp_bps, nlb_bps, nlb_parts, poisson_nll, r2_score,
                                 rate_r2, rate_r2_neuron_mean)

scipy_stats = pytest.importorskip("scipy.stats")
scipy_special = pytest.importorskip("scipy.special")

# --------------------------------------------------------------------------- #
# Reference implementations (plain loops, straight from the definitions)
# --------------------------------------------------------------------------- #


def r2_reference(truth, pred) -> float:
    truth = np.asarray(truth, float).reshape(-1, np.shape(truth)[-1])
    pred = np.asarray(pred, float).reshape(truth.shape)
    scores = []
    for n in range(truth.shape[1]):
        pairs = [(t, p) for t, p in zip(truth[:, n], pred[:, n]) if not (math.isnan(t) or math.isnan(p))]
        if not pairs:
            continue
        mean = sum(t for t, _ in pairs) / len(pairs)
        ss_tot = sum((t - mean) ** 2 for t, _ in pairs)
        ss_res = sum((t - p) ** 2 for t, p in pairs)
        if ss_tot > 0 and len({t for t, _ in pairs}) > 1:
            scores.append(1 - ss_res / ss_tot)
    return float(np.mean(scores)) if scores else float("nan")


def nll_reference(rate: float, k: float) -> float:
    rate = max(rate, 1e-9)
    return rate - k * math.log(rate) + math.lgamma(k + 1)


def bps_reference(rates, spikes) -> float:
    rates = np.asarray(rates, float).reshape(-1, np.shape(rates)[-1])
    spikes = np.asarray(spikes, float).reshape(rates.shape)
    nll_model = nll_null = total = 0.0
    for n in range(rates.shape[1]):
        ok = ~np.isnan(rates[:, n]) & ~np.isnan(spikes[:, n])
        if not ok.any():
            continue
        null_rate = spikes[ok, n].mean()
        for r, k in zip(rates[ok, n], spikes[ok, n]):
            nll_model += nll_reference(r, k)
            nll_null += nll_reference(null_rate, k)
            total += k
    return (nll_null - nll_model) / (math.log(2) * total)


# --------------------------------------------------------------------------- #
# r2_score
# --------------------------------------------------------------------------- #


def test_r2_hand_computed():
    truth = np.array([[1.0, 0.0], [2.0, 2.0], [3.0, 4.0]])
    pred = np.array([[1.0, 1.0], [2.5, 2.0], [2.0, 3.0]])
    # channel 0: ss_tot = 2, ss_res = 0 + .25 + 1 = 1.25 -> 0.375
    # channel 1: ss_tot = 8, ss_res = 1 + 0 + 1 = 2     -> 0.75
    assert r2_score(truth, pred) == pytest.approx((0.375 + 0.75) / 2)


def test_r2_perfect_and_mean_prediction():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(4, 25, 6))
    assert r2_score(truth, truth) == pytest.approx(1.0)
    mean_pred = np.broadcast_to(truth.reshape(-1, 6).mean(0), truth.shape)
    assert r2_score(truth, mean_pred) == pytest.approx(0.0, abs=1e-12)
    assert r2_score(truth, -truth) < 0


def test_r2_flattens_leading_axes():
    rng = np.random.default_rng(1)
    truth, pred = rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(2, 3, 5, 4))
    assert r2_score(truth, pred) == pytest.approx(r2_score(truth.reshape(-1, 4), pred.reshape(-1, 4)))


def test_r2_skips_constant_channels_and_nans():
    truth = np.array([[1.0, 5.0, 1.0], [2.0, 5.0, np.nan], [3.0, 5.0, 3.0], [4.0, 5.0, 0.0]])
    pred = np.array([[1.0, 0.0, 1.0], [2.0, 9.0, 2.0], [np.nan, 1.0, 3.0], [4.0, 2.0, 1.0]])
    # channel 1 is constant (skipped); NaN rows dropped per channel.
    expected = r2_reference(truth, pred)
    assert r2_score(truth, pred) == pytest.approx(expected)
    # channel 0 alone without its NaN row is perfect.
    assert r2_score(truth[[0, 1, 3], :1], pred[[0, 1, 3], :1]) == pytest.approx(1.0)
    assert math.isnan(r2_score(np.ones((3, 2)), np.zeros((3, 2))))


def test_r2_shape_mismatch_raises():
    with pytest.raises(ValueError):
        r2_score(np.zeros((3, 2)), np.zeros((3, 3)))


finite = st.floats(-100, 100, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_r2_matches_reference(data):
    shape = data.draw(st.tuples(st.integers(2, 8), st.integers(1, 4)))
    truth = data.draw(arrays(np.float64, shape, elements=finite))
    pred = data.draw(arrays(np.float64, shape, elements=finite))
    expected = r2_reference(truth, pred)
    got = r2_score(truth, pred)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert got <= 1.0 + 1e-12


# --------------------------------------------------------------------------- #
# poisson_nll
# --------------------------------------------------------------------------- #


def test_poisson_nll_matches_lgamma_including_large_counts():
    rates = np.array([0.1, 1.0, 2.5, 50.0, 300.0, 0.0])
    spikes = np.array([0.0, 1.0, 3.0, 40.0, 350.0, 2.0])
    expected = [nll_reference(r, k) for r, k in zip(rates, spikes)]
    np.testing.assert_allclose(poisson_nll(rates, spikes), expected, rtol=1e-10)


def test_poisson_nll_non_integer_and_nan():
    out = poisson_nll(np.array([1.0, np.nan, 2.0]), np.array([0.5, 1.0, np.nan]))
    assert out[0] == pytest.approx(nll_reference(1.0, 0.5))
    assert np.isnan(out[1]) and np.isnan(out[2])


def test_poisson_nll_is_a_normalised_likelihood():
    """exp(-nll) summed over k is 1 (so log k! is included)."""
    k = np.arange(0, 60, dtype=float)
    for rate in (0.3, 4.0, 12.0):
        total = np.exp(-poisson_nll(np.full_like(k, rate), k)).sum()
        assert total == pytest.approx(1.0, rel=1e-9)


# --------------------------------------------------------------------------- #
# bits_per_spike
# --------------------------------------------------------------------------- #


def test_bits_per_spike_matches_reference_small():
    rates = np.array([[[0.5, 1.0], [0.2, 2.0]], [[1.5, 0.1], [0.9, 0.7]]])
    spikes = np.array([[[1.0, 0.0], [0.0, 3.0]], [[2.0, 0.0], [1.0, 1.0]]])
    assert bits_per_spike(rates, spikes) == pytest.approx(bps_reference(rates, spikes), rel=1e-10)


def test_bits_per_spike_zero_for_null_model():
    rng = np.random.default_rng(2)
    spikes = rng.poisson(0.4, size=(10, 20, 5)).astype(float)
    null = np.broadcast_to(spikes.reshape(-1, 5).mean(0), spikes.shape)
    assert bits_per_spike(null, spikes) == pytest.approx(0.0, abs=1e-12)


def test_bits_per_spike_positive_for_true_rates():
    rng = np.random.default_rng(3)
    log_rates = np.log(0.2) + np.sin(np.linspace(0, 6, 50))[None, :, None] * rng.uniform(0.5, 1.5, 8)
    rates = np.broadcast_to(np.exp(log_rates), (40, 50, 8))
    spikes = rng.poisson(rates).astype(float)
    true_bps = bits_per_spike(rates, spikes)
    assert true_bps > 0.1
    # a worse (flattened) model scores lower than the truth
    assert bits_per_spike(np.sqrt(rates * 0.2), spikes) < true_bps


def test_bits_per_spike_excludes_nans():
    rng = np.random.default_rng(4)
    rates = rng.uniform(0.1, 2.0, size=(6, 7, 3))
    spikes = rng.poisson(rates).astype(float)
    rates[0, 0, 0] = np.nan
    spikes[2, 3, 1] = np.nan
    got = bits_per_spike(rates, spikes)
    assert np.isfinite(got)
    assert got == pytest.approx(bps_reference(rates, spikes), rel=1e-10)


def test_bits_per_spike_without_spikes_is_nan():
    assert math.isnan(bits_per_spike(np.ones((3, 2)), np.zeros((3, 2))))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_bits_per_spike_matches_reference(data):
    shape = data.draw(st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 3)))
    rates = data.draw(arrays(np.float64, shape, elements=st.floats(0.0, 5.0)))
    spikes = data.draw(arrays(np.float64, shape, elements=st.integers(0, 8).map(float)))
    expected = float("nan") if spikes.sum() == 0 else bps_reference(rates, spikes)
    got = bits_per_spike(rates, spikes)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-8, abs=1e-8)


def test_latent_r2_of_a_linear_read_out():
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(30, 20, 3))
    mixing = rng.normal(size=(3, 6))
    factors = latents @ mixing + 0.5  # an affine, invertible image of the latents
    assert metrics.latent_r2(factors[:20], latents[:20], factors[20:], latents[20:]) == pytest.approx(1.0)
    noise = rng.normal(size=(30, 20, 6))
    r2 = metrics.latent_r2(noise[:20], latents[:20], noise[20:], latents[20:])
    assert r2 < 0.05  # unrelated factors explain nothing on other trials


# --------------------------------------------------------------------------- #
# rate_r2 (pooled, variance-weighted) vs rate_r2_neuron_mean
# --------------------------------------------------------------------------- #


def pooled_r2_reference(truth, pred) -> float:
    """1 - sum_n ss_res / sum_n ss_tot, plain loops, constant/empty channels skipped."""
    truth = np.asarray(truth, float).reshape(-1, np.shape(truth)[-1])
    pred = np.asarray(pred, float).reshape(truth.shape)
    res = tot = 0.0
    used = False
    for n in range(truth.shape[1]):
        pairs = [(t, p) for t, p in zip(truth[:, n], pred[:, n]) if not (math.isnan(t) or math.isnan(p))]
        if len({t for t, _ in pairs}) < 2:
            continue
        mean = sum(t for t, _ in pairs) / len(pairs)
        tot += sum((t - mean) ** 2 for t, _ in pairs)
        res += sum((t - p) ** 2 for t, p in pairs)
        used = True
    return 1 - res / tot if used else float("nan")


def weighted_r2_reference(truth, pred) -> float:
    """Average of per-neuron R², weighted by each neuron's total sum of squares."""
    truth = np.asarray(truth, float).reshape(-1, np.shape(truth)[-1])
    pred = np.asarray(pred, float).reshape(truth.shape)
    scores, weights = [], []
    for n in range(truth.shape[1]):
        ok = ~np.isnan(truth[:, n]) & ~np.isnan(pred[:, n])
        t, p = truth[ok, n], pred[ok, n]
        if len(np.unique(t)) < 2:
            continue
        ss_tot = ((t - t.mean()) ** 2).sum()
        scores.append(1 - ((t - p) ** 2).sum() / ss_tot)
        weights.append(ss_tot)
    return float(np.average(scores, weights=weights)) if scores else float("nan")


def test_rate_r2_hand_computed():
    truth = np.array([[1.0, 0.0], [2.0, 2.0], [3.0, 4.0]])
    pred = np.array([[1.0, 1.0], [2.5, 2.0], [2.0, 3.0]])
    # ss_res = 1.25 + 2, ss_tot = 2 + 8 -> 1 - 3.25 / 10; = (2 * 0.375 + 8 * 0.75) / 10
    assert rate_r2(truth, pred) == pytest.approx(0.675)
    assert rate_r2_neuron_mean(truth, pred) == pytest.approx((0.375 + 0.75) / 2)


def test_rate_r2_perfect_and_mean_prediction():
    rng = np.random.default_rng(10)
    truth = rng.normal(size=(4, 25, 6)) * rng.uniform(0.1, 5, 6)
    assert rate_r2(truth, truth) == pytest.approx(1.0)
    mean_pred = np.broadcast_to(truth.reshape(-1, 6).mean(0), truth.shape)
    assert rate_r2(truth, mean_pred) == pytest.approx(0.0, abs=1e-12)
    assert rate_r2(truth, -truth) < 0


def test_rate_r2_weights_by_variance_unlike_neuron_mean():
    """A badly fitted low-variance neuron barely moves the pooled R² but halves the mean."""
    rng = np.random.default_rng(11)
    big = rng.normal(size=200) * 10
    small = rng.normal(size=200) * 0.1
    small -= small.mean()
    truth = np.stack([big, small], -1)
    pred = np.stack([big, -small], -1)  # perfect, and R² = -3
    assert rate_r2_neuron_mean(truth, pred) == pytest.approx((1 - 3) / 2)
    assert rate_r2(truth, pred) > 0.999
    assert rate_r2(truth, pred) == pytest.approx(weighted_r2_reference(truth, pred), rel=1e-12)


def test_rate_r2_excludes_nans_and_constant_channels():
    truth = np.array([[1.0, 5.0, 1.0], [2.0, 5.0, np.nan], [3.0, 5.0, 3.0], [4.0, 5.0, 0.0]])
    pred = np.array([[1.0, 0.0, 1.0], [2.0, 9.0, 2.0], [np.nan, 1.0, 3.0], [4.0, 2.0, 1.0]])
    # channel 1 is constant (weight 0, its errors ignored); NaN pairs dropped per element.
    assert rate_r2(truth, pred) == pytest.approx(pooled_r2_reference(truth, pred))
    assert rate_r2(truth, pred) == pytest.approx(weighted_r2_reference(truth, pred))
    # by hand: ch0 valid t = 1, 2, 4 (mean 7/3), ss_tot = 42/9, ss_res = 0;
    #          ch2 valid t = 1, 3, 0 (mean 4/3), ss_tot = 42/9, ss_res = 0 + 0 + 1
    assert rate_r2(truth, pred) == pytest.approx(1 - 1 / (84 / 9))
    assert math.isnan(rate_r2(np.ones((3, 2)), np.zeros((3, 2))))
    assert math.isnan(rate_r2(np.full((3, 2), np.nan), np.zeros((3, 2))))


def test_rate_r2_shape_mismatch_raises():
    with pytest.raises(ValueError):
        rate_r2(np.zeros((3, 2)), np.zeros((3, 3)))


def test_r2_score_is_the_neuron_mean_alias():
    assert metrics.r2_score is metrics.rate_r2_neuron_mean
    assert "rate_r2" in metrics.__all__ and "rate_r2_neuron_mean" in metrics.__all__


def with_nans(data, a):
    """``a`` with about a fifth of its elements (drawn by hypothesis) set to NaN."""
    mask = data.draw(arrays(np.bool_, a.shape, elements=st.integers(0, 4).map(lambda i: i == 0)))
    return np.where(mask, np.nan, a)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_rate_r2_is_variance_weighted_mean_of_per_neuron_r2(data):
    shape = data.draw(st.tuples(st.integers(2, 5), st.integers(2, 6), st.integers(1, 4)))
    truth = with_nans(data, data.draw(arrays(np.float64, shape, elements=finite)))
    pred = with_nans(data, data.draw(arrays(np.float64, shape, elements=finite)))
    got = rate_r2(truth, pred)
    pooled, weighted = pooled_r2_reference(truth, pred), weighted_r2_reference(truth, pred)
    if math.isnan(pooled):
        assert math.isnan(got) and math.isnan(weighted)
        return
    assert got == pytest.approx(pooled, rel=1e-9, abs=1e-9)
    assert got == pytest.approx(weighted, rel=1e-9, abs=1e-9)
    assert got <= 1.0 + 1e-12
    if truth.shape[-1] == 1:
        assert got == pytest.approx(rate_r2_neuron_mean(truth, pred), rel=1e-9, abs=1e-9)
    # pooled over leading axes: reshaping them changes nothing
    assert rate_r2(truth.reshape(-1, shape[-1]), pred.reshape(-1, shape[-1])) == pytest.approx(got)


# --------------------------------------------------------------------------- #
# NLB: co-bps, fp-bps (Pei et al. 2021)
# --------------------------------------------------------------------------- #


def nlb_neg_log_likelihood(rates, spikes):
    """nlb_tools.evaluation.neg_log_likelihood, transcribed."""
    assert spikes.shape == rates.shape
    nan_mask = np.isnan(spikes)
    spikes = spikes[~nan_mask]
    rates = rates[~nan_mask].copy()
    assert not np.any(np.isnan(rates)) and np.all(rates >= 0)
    rates[rates == 0] = 1e-9
    return np.sum(rates - spikes * np.log(rates) + scipy_special.gammaln(spikes + 1.0))


def nlb_bits_per_spike(rates, spikes):
    """nlb_tools.evaluation.bits_per_spike, transcribed."""
    nll_model = nlb_neg_log_likelihood(rates, spikes)
    with warnings.catch_warnings():  # a neuron with only NaN spikes: its null is never used
        warnings.simplefilter("ignore", RuntimeWarning)
        null_rates = np.tile(np.nanmean(spikes, axis=tuple(range(spikes.ndim - 1)), keepdims=True),
                             spikes.shape[:-1] + (1,))
    nll_null = nlb_neg_log_likelihood(null_rates, spikes)
    return (nll_null - nll_model) / np.nansum(spikes) / np.log(2)


def scipy_bps(rates, spikes) -> float:
    """(LL_model - LL_null) / (n_spikes ln 2) with scipy's Poisson log-pmf; no NaNs."""
    rates = np.maximum(np.asarray(rates, float), 1e-9)
    spikes = np.asarray(spikes, float)
    null = np.broadcast_to(spikes.reshape(-1, spikes.shape[-1]).mean(0), spikes.shape)
    ll_model = scipy_stats.poisson.logpmf(spikes, rates).sum()
    ll_null = scipy_stats.poisson.logpmf(spikes, null).sum()
    return (ll_model - ll_null) / (spikes.sum() * math.log(2))


def lorenz_like(seed, trials=30, bins=40, neurons=6, base=0.3):
    """True rates with structure in time and across trials, and their Poisson spikes."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, (trials, 1, 1))
    gain = rng.uniform(0.5, 1.5, neurons)
    t = np.linspace(0, 4 * np.pi, bins)[None, :, None]
    rates = base * np.exp(np.sin(t * gain + phase))
    return rates, rng.poisson(rates).astype(float)


def test_poisson_log_likelihood_includes_log_factorial():
    """-poisson_nll is exactly scipy's Poisson log-pmf, log k! included."""
    rates = np.array([0.05, 0.7, 1.0, 3.3, 12.0, 80.0])
    spikes = np.array([0.0, 2.0, 1.0, 7.0, 9.0, 95.0])
    np.testing.assert_allclose(-poisson_nll(rates, spikes), scipy_stats.poisson.logpmf(spikes, rates),
                               rtol=1e-12)


def test_co_bps_hand_computed():
    # one neuron, spikes (0, 2), rates (0.5, 2); null rate = mean = 1
    # LL_model = (-0.5 - log 0!) + (2 log 2 - 2 - log 2!) = -2.5 + log 2
    # LL_null  = (-1 - log 0!)   + (2 log 1 - 1 - log 2!) = -2 - log 2
    # co-bps = (2 log 2 - 0.5) / (2 log 2) = 1 - 0.25 / log 2
    rates = np.array([[[0.5], [2.0]]])
    spikes = np.array([[[0.0], [2.0]]])
    assert co_bps(rates, spikes) == pytest.approx(1 - 0.25 / math.log(2), rel=1e-12)
    assert fp_bps(rates, spikes) == pytest.approx(1 - 0.25 / math.log(2), rel=1e-12)


def test_co_bps_two_neurons_by_hand_with_lgamma():
    rates = np.array([[[1.0, 0.2], [3.0, 0.1]], [[0.5, 0.4], [2.0, 0.3]]])  # [trials, bins, neurons]
    spikes = np.array([[[1.0, 0.0], [4.0, 0.0]], [[0.0, 1.0], [3.0, 0.0]]])
    null = {0: 2.0, 1: 0.25}  # each neuron's mean over 2 trials x 2 bins
    ll_model = ll_null = 0.0
    for idx in np.ndindex(spikes.shape):
        k, r, r0 = spikes[idx], rates[idx], null[idx[-1]]
        ll_model += k * math.log(r) - r - math.lgamma(k + 1)
        ll_null += k * math.log(r0) - r0 - math.lgamma(k + 1)
    expected = (ll_model - ll_null) / (9 * math.log(2))
    assert co_bps(rates, spikes) == pytest.approx(expected, rel=1e-12)
    assert co_bps(rates, spikes) == pytest.approx(scipy_bps(rates, spikes), rel=1e-12)


@pytest.mark.parametrize("metric", [co_bps, fp_bps])
def test_nlb_bps_signs_true_null_and_worse(metric):
    rates, spikes = lorenz_like(0)
    null = np.broadcast_to(spikes.reshape(-1, spikes.shape[-1]).mean(0), spikes.shape)
    assert metric(rates, spikes) > 0.1  # the true rates gain information
    assert metric(null, spikes) == 0.0 or abs(metric(null, spikes)) < 1e-13  # the null itself: 0
    assert metric(null * 1.5, spikes) < 0  # a constant that is not the mean: worse than the null
    shuffled = rates[:, ::-1][::-1]  # right marginals, wrong timing
    assert metric(shuffled, spikes) < 0
    assert metric(rates, spikes) == pytest.approx(nlb_bits_per_spike(rates, spikes), rel=1e-12)
    assert metric(rates, spikes) == pytest.approx(scipy_bps(rates, spikes), rel=1e-12)


def test_co_bps_matches_nlb_tools_with_nan_spikes():
    """NLB marks missing data with NaN spikes; both exclude them from the null mean and totals."""
    rates, spikes = lorenz_like(1, trials=12, bins=15, neurons=4)
    rng = np.random.default_rng(1)
    spikes[rng.random(spikes.shape) < 0.1] = np.nan
    got = co_bps(rates, spikes)
    assert np.isfinite(got)
    assert got == pytest.approx(nlb_bits_per_spike(rates, spikes), rel=1e-12)
    assert got == pytest.approx(bps_reference(rates, spikes), rel=1e-12)


def test_co_bps_nan_rates_excluded_like_missing_spikes():
    rates, spikes = lorenz_like(2, trials=8, bins=10, neurons=3)
    rates_nan = rates.copy()
    rates_nan[0, :4, 1] = np.nan
    spikes_nan = spikes.copy()
    spikes_nan[0, :4, 1] = np.nan
    assert co_bps(rates_nan, spikes) == pytest.approx(co_bps(rates, spikes_nan), rel=1e-12)
    assert co_bps(rates_nan, spikes) == pytest.approx(nlb_bits_per_spike(rates, spikes_nan), rel=1e-12)


def test_co_bps_floors_zero_rates():
    spikes = np.array([[[0.0], [1.0], [0.0], [2.0]]])
    rates = np.array([[[0.0], [1.0], [0.0], [2.0]]])
    got = co_bps(rates, spikes)
    assert np.isfinite(got) and got > 0
    assert got == pytest.approx(nlb_bits_per_spike(rates, spikes), rel=1e-12)
    # a zero rate where a spike fell costs log(1e-9), finite
    assert np.isfinite(co_bps(np.array([[[0.0], [0.0]]]), np.array([[[1.0], [0.0]]])))
    assert math.isnan(co_bps(np.ones((2, 3, 1)), np.zeros((2, 3, 1))))


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_no_constant_rate_beats_the_null(data):
    """The per-neuron mean is the Poisson MLE among constant rates: any other constant has bps <= 0."""
    shape = data.draw(st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 3)))
    spikes = data.draw(arrays(np.float64, shape, elements=st.integers(0, 6).map(float)))
    const = data.draw(arrays(np.float64, shape[-1:], elements=st.floats(0.01, 8.0)))
    rates = np.broadcast_to(const, shape)
    got = co_bps(rates, spikes)
    if spikes.sum() == 0:
        assert math.isnan(got)
        return
    assert got <= 1e-9
    null = np.broadcast_to(spikes.reshape(-1, shape[-1]).mean(0), shape)
    assert abs(fp_bps(null, spikes)) < 1e-9


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_co_bps_matches_nlb_tools(data):
    shape = data.draw(st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 3)))
    # NLB floors only exact zeros (to 1e-9); we floor everything below 1e-9: same above it
    rates = data.draw(arrays(np.float64, shape, elements=st.one_of(st.just(0.0), st.floats(1e-6, 5.0))))
    spikes = data.draw(arrays(np.float64, shape, elements=st.integers(0, 8).map(float)))
    spikes = with_nans(data, spikes)
    got = co_bps(rates, spikes)
    if np.nansum(spikes) == 0:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(nlb_bits_per_spike(rates, spikes), rel=1e-8, abs=1e-8)


# --------------------------------------------------------------------------- #
# nlb_parts / nlb_bps: splitting one output into held-in, held-out, forward
# --------------------------------------------------------------------------- #


def test_nlb_parts_slices():
    x = np.arange(2 * 5 * 4).reshape(2, 5, 4)
    parts = nlb_parts(x, n_heldout=1, t_in=3)
    np.testing.assert_array_equal(parts["heldin"], x[:, :3, :3])
    np.testing.assert_array_equal(parts["heldout"], x[:, :3, 3:])
    np.testing.assert_array_equal(parts["forward"], x[:, 3:, :])
    assert all(np.shares_memory(p, x) for p in parts.values())
    assert set(nlb_parts(x)) == {"heldin"}
    assert set(nlb_parts(x, n_heldout=4)) == {"heldout"}
    assert set(nlb_parts(x, n_heldout=0, t_in=2)) == {"heldin", "forward"}


@pytest.mark.parametrize("kwargs", [{"n_heldout": -1}, {"n_heldout": 5}, {"t_in": 0}, {"t_in": 6}])
def test_nlb_parts_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError):
        nlb_parts(np.zeros((2, 5, 4)), **kwargs)
    with pytest.raises(ValueError):
        nlb_parts(np.zeros(4))


def test_nlb_bps_splits_and_scores_each_part():
    rates, spikes = lorenz_like(3, trials=25, bins=40, neurons=7)
    out = nlb_bps(rates, spikes, n_heldout=2, t_in=30)
    assert set(out) == {"heldin_bps", "co_bps", "fp_bps"}
    assert out["heldin_bps"] == pytest.approx(bits_per_spike(rates[:, :30, :5], spikes[:, :30, :5]))
    assert out["co_bps"] == pytest.approx(co_bps(rates[:, :30, 5:], spikes[:, :30, 5:]))
    assert out["fp_bps"] == pytest.approx(fp_bps(rates[:, 30:], spikes[:, 30:]))
    # NLB fp-bps: held-in and held-out forward rates concatenated along neurons
    fp = nlb_bits_per_spike(np.concatenate([rates[:, 30:, :5], rates[:, 30:, 5:]], -1),
                            np.concatenate([spikes[:, 30:, :5], spikes[:, 30:, 5:]], -1))
    assert out["fp_bps"] == pytest.approx(fp, rel=1e-12)
    assert all(v > 0 for v in out.values())


def test_nlb_bps_only_what_applies():
    rates, spikes = lorenz_like(4, trials=5, bins=12, neurons=3)
    assert set(nlb_bps(rates, spikes)) == {"heldin_bps"}
    assert set(nlb_bps(rates, spikes, n_heldout=1)) == {"heldin_bps", "co_bps"}
    assert set(nlb_bps(rates, spikes, t_in=8)) == {"heldin_bps", "fp_bps"}
    assert set(nlb_bps(rates, spikes, n_heldout=3, t_in=12)) == {"co_bps"}
    assert nlb_bps(rates, spikes)["heldin_bps"] == pytest.approx(bits_per_spike(rates, spikes))
    with pytest.raises(ValueError):
        nlb_bps(rates, spikes[:, :-1])


def test_nlb_bps_part_without_spikes_is_nan():
    rates = np.full((2, 6, 3), 0.5)
    spikes = np.zeros((2, 6, 3))
    spikes[:, :4, :2] = 1.0
    spikes[0, 0, :2] = 3.0
    out = nlb_bps(rates, spikes, n_heldout=1, t_in=4)
    assert np.isfinite(out["heldin_bps"])
    assert math.isnan(out["co_bps"]) and math.isnan(out["fp_bps"])


def test_nlb_null_is_per_part():
    """Each part's null is its own mean: a model predicting each part's means scores 0 in each part."""
    rates, spikes = lorenz_like(5, trials=10, bins=20, neurons=4)
    pred = np.empty_like(spikes)
    for (sl_t, sl_n) in [(slice(0, 15), slice(0, 3)), (slice(0, 15), slice(3, 4)), (slice(15, 20), slice(0, 4))]:
        pred[:, sl_t, sl_n] = spikes[:, sl_t, sl_n].reshape(-1, sl_n.stop - sl_n.start).mean(0)
    out = nlb_bps(pred, spikes, n_heldout=1, t_in=15)
    assert all(abs(v) < 1e-12 for v in out.values()), out
