"""Tests for lfads_core.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lfads_core import metrics
from lfads_core.metrics import bits_per_spike, poisson_nll, r2_score

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
