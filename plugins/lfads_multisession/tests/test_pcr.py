"""The PCR maths (pure numpy): recovery of known loadings, the two modes, padding, NaN."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lfads_multisession import pcr as P


def cond_avg(x, cond, labels):
    return P.condition_average(x, cond, labels).reshape(-1, x.shape[2])


def r2(target, pred):
    target, pred = np.asarray(target, float), np.asarray(pred, float)
    return 1 - ((target - pred) ** 2).sum() / ((target - target.mean(0)) ** 2).sum()


def readin(s, x):
    return x @ s.readin_weight.T + s.readin_bias


def in_span(basis, vectors):
    """Fraction of the squared norm of ``vectors`` [N, m] in the column span of ``basis``."""
    q, _ = np.linalg.qr(basis)
    proj = q @ (q.T @ vectors)
    return (proj ** 2).sum() / (vectors ** 2).sum()


# -- condition mode: recovery of the known structure ------------------------------------------
def test_condition_mode_recovers_shared_trajectories_and_loadings(synth):
    res = P.pcr(synth.data, synth.data, synth.cond, k=3)
    assert res.mode == P.CONDITION and res.conditions.tolist() == list(range(6))
    assert res.explained > 0.99 and res.rank >= 3
    labels = res.conditions
    outputs = []
    for x, cond, load, s in zip(synth.data, synth.cond, synth.loadings, res.sessions):
        avg = cond_avg(x, cond, labels)                      # raw (unsmoothed) condition averages
        z = readin(s, avg)
        outputs.append(z)
        # readout(readin(x)) ≈ x in data units, around the session mean
        assert r2(avg, z @ s.loadings.T + s.mean) > 0.98
        # the readout's loadings span the true loadings' subspace (and vice versa)
        assert in_span(s.loadings, load.T) > 0.99
        assert in_span(load.T, s.loadings) > 0.99
        assert s.r2_readin > 0.99 and s.r2_pcs > 0.99
        assert s.readin_weight.shape == (3, x.shape[2]) and s.loadings.shape == (x.shape[2], 3)
    for z in outputs[1:]:  # every session's readin gives the same shared trajectories
        assert r2(outputs[0], z) > 0.95


def test_scores_are_scaled_to_unit_first_component_and_nested(synth):
    small = P.pcr(synth.data, synth.data, synth.cond, k=2)
    big = P.pcr(synth.data, synth.data, synth.cond, k=5)
    x, cond = synth.data[0], synth.cond[0]
    z_small = readin(small.sessions[0], P.smooth(x, 2.0).reshape(-1, x.shape[2]))
    # readin on smoothed single trials ≈ scores; the first column has about unit variance
    z1 = readin(small.sessions[0], cond_avg(P.smooth(x, 2.0), cond, small.conditions))
    assert abs(z1[:, 0].var() - 1.0) < 0.02
    # PCs are nested: the first 2 columns of K=5 are those of K=2 (loadings too)
    np.testing.assert_allclose(big.sessions[1].loadings[:, :2], small.sessions[1].loadings,
                               rtol=1e-6, atol=1e-8)
    assert z_small.shape[1] == 2


def test_loadings_and_ridge_follow_their_formulas():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 7)) + 2.0
    y = rng.normal(size=(50, 3))
    ridge = 0.3
    w, b = P.ridge_regression(x, y, ridge)
    xc = x - x.mean(0)
    lam = ridge * np.trace(xc.T @ xc) / 7
    want = np.linalg.solve(xc.T @ xc + lam * np.eye(7), xc.T @ (y - y.mean(0)))
    np.testing.assert_allclose(w, want, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(b, y.mean(0) - x.mean(0) @ want, rtol=1e-8, atol=1e-10)
    w0, _ = P.ridge_regression(x, y, 0.0)  # ridge 0: least squares
    np.testing.assert_allclose(w0, np.linalg.lstsq(xc, y - y.mean(0), rcond=None)[0], rtol=1e-8)
    z = np.linalg.qr(rng.normal(size=(50, 3)))[0] * [3.0, 2.0, 0.0]  # orthogonal, one zero column
    load = P.loadings(xc, z)
    np.testing.assert_allclose(load[:, :2], np.linalg.lstsq(z[:, :2], xc, rcond=None)[0].T, atol=1e-10)
    assert np.all(load[:, 2] == 0)


def test_stronger_ridge_shrinks_the_readin(synth):
    weak = P.pcr(synth.data, synth.data, synth.cond, k=3, ridge=0.0)
    strong = P.pcr(synth.data, synth.data, synth.cond, k=3, ridge=10.0)
    assert np.linalg.norm(strong.sessions[0].readin_weight) < 0.5 * np.linalg.norm(weak.sessions[0].readin_weight)
    assert strong.sessions[0].r2_readin < weak.sessions[0].r2_readin


def test_encod_channels_differ_from_recon_channels(synth):
    """The readin regresses from encod (its own channels, fewer bins) to the recon PCs."""
    rng = np.random.default_rng(1)
    encods = [np.concatenate([x, rng.normal(size=x.shape[:2] + (2,))], axis=2)[:, :15]
              .astype(np.float32) for x in synth.data]  # 2 extra noise channels, 15 of 20 bins
    res = P.pcr(encods, synth.data, synth.cond, k=3)
    for enc, s in zip(encods, res.sessions):
        assert s.readin_weight.shape == (3, enc.shape[2])
        assert s.r2_readin > 0.95
    outs = [readin(s, cond_avg(e, c, res.conditions)) for e, c, s in zip(encods, synth.cond, res.sessions)]
    assert r2(outs[0], outs[2]) > 0.95


def test_only_shared_conditions_are_used(make_synth):
    synth = make_synth(extra_conds=2)  # each session also has 2 conditions of its own
    res = P.pcr(synth.data, synth.data, synth.cond, k=3)
    assert res.mode == P.CONDITION and res.conditions.tolist() == list(range(6))
    assert [s.trials for s in res.sessions] == [30, 30, 30]  # 6 shared conditions x 5 trials
    outs = [readin(s, cond_avg(x, c, res.conditions)) for x, c, s in zip(synth.data, synth.cond, res.sessions)]
    assert min(r2(outs[0], o) for o in outs[1:]) > 0.95


# -- single-trial mode ---------------------------------------------------------------------------
@pytest.mark.parametrize("conds", ["none", "one missing", "one shared"])
def test_single_trial_mode(synth, conds):
    labels = {"none": [None] * 3,
              "one missing": [synth.cond[0], None, synth.cond[2]],
              "one shared": [np.where(c == 0, 0, 10 * (i + 1) + c) for i, c in enumerate(synth.cond)]}[conds]
    res = P.pcr(synth.data, synth.data, labels, k=3)
    assert res.mode == P.SINGLE_TRIAL and res.conditions.size == 0 and np.isnan(res.explained)
    assert ("no condition labels" in res.reason) if conds != "one shared" else ("share 1" in res.reason)
    for x, load, s in zip(synth.data, synth.loadings, res.sessions):
        rows = P.smooth(x, 2.0).reshape(-1, x.shape[2])
        z = readin(s, rows)
        assert abs(z[:, 0].var() - 1.0) < 0.02          # its own PC1 at unit variance
        assert r2(rows, z @ s.loadings.T + s.mean) > 0.98
        assert in_span(s.loadings, load.T) > 0.99        # its own principal subspace = its loadings'
        assert s.r2_readin > 0.98 and s.trials == x.shape[0]


def test_single_session_with_labels_uses_condition_averages(synth):
    res = P.pcr(synth.data[:1], synth.data[:1], synth.cond[:1], k=2)
    assert res.mode == P.CONDITION and len(res.sessions) == 1


# -- more components than the data allow ---------------------------------------------------------
def test_components_beyond_the_rank_are_zero(synth):
    # noise-free data: the stacked condition averages have rank 3 (the latents)
    clean = make_clean(synth)
    res = P.pcr(clean, clean, synth.cond, k=10, smooth_bins=0.0)
    assert res.rank == 3
    for s in res.sessions:
        assert s.readin_weight.shape[0] == 10 and s.loadings.shape[1] == 10
        assert np.all(s.readin_weight[3:] == 0) and np.all(s.readin_bias[3:] == 0)
        assert np.all(s.loadings[:, 3:] == 0)
        assert s.r2_readin > 0.999
    assert res.explained == pytest.approx(1.0)
    # more components than rows and neurons together: still no crash
    res = P.pcr([x[:2, :3] for x in clean], [x[:2, :3] for x in clean],
                [np.array([0, 1])] * 3, k=200)
    assert res.sessions[0].loadings.shape == (30, 200)


def make_clean(synth):
    return [(synth.latents[c] @ load + mu).astype(np.float32)
            for c, load, mu in zip(synth.cond, synth.loadings, synth.means)]


def test_constant_data_do_not_crash(synth):
    flat = [np.ones_like(x) for x in synth.data]
    for conds in (synth.cond, [None] * 3):
        res = P.pcr(flat, flat, conds, k=4)
        assert res.rank == 0
        for s in res.sessions:
            assert np.all(s.readin_weight == 0) and np.all(s.loadings == 0)
            assert np.isnan(s.r2_readin) and np.isnan(s.r2_pcs)
            np.testing.assert_allclose(s.mean, 1.0)


# -- NaN (unobserved samples) ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["condition", "single_trial"])
def test_nan_samples_are_ignored(synth, mode):
    rng = np.random.default_rng(5)
    holey = []
    for x in synth.data:
        x = x.copy()
        x[rng.random(x.shape) < 0.2] = np.nan            # 20% of the samples unobserved
        x[:, :, 0] = np.where(rng.random(x.shape[:2]) < 0.5, np.nan, x[:, :, 0])
        holey.append(x)
    holey[1][:, :, 3] = np.nan                           # one neuron never observed
    conds = synth.cond if mode == "condition" else [None] * 3
    res = P.pcr(holey, holey, conds, k=3)
    assert res.mode == mode
    for s, load in zip(res.sessions, synth.loadings):
        for arr in (s.readin_weight, s.readin_bias, s.loadings, s.mean):
            assert np.all(np.isfinite(arr))
        assert s.r2_readin > 0.9
        observed = np.any(s.loadings != 0, axis=1)
        assert in_span(s.loadings[observed], load.T[observed]) > 0.98
    # the neuron never observed: zero loadings, (numerically) zero readin weights
    assert np.all(res.sessions[1].loadings[3] == 0)
    assert np.abs(res.sessions[1].readin_weight[:, 3]).max() < 1e-12


def test_smoothing_is_nan_aware():
    x = np.zeros((1, 9, 2))
    x[0, :, 0] = 5.0
    x[0, 4, 0] = np.nan                                # a hole in a constant channel
    x[0, :, 1] = np.nan
    x[0, 0, 1] = 1.0                                   # one sample, far from the last bins
    y = P.smooth(x, 1.0)
    np.testing.assert_allclose(y[0, :, 0], 5.0)        # the hole is filled, no zeros leak in
    np.testing.assert_allclose(y[0, :5, 1], 1.0)
    assert np.all(np.isnan(y[0, 5:, 1]))               # nothing observed within 4 sd
    np.testing.assert_array_equal(P.smooth(x, 0.0), x)  # sd 0: no smoothing


@settings(max_examples=25, deadline=None)
@given(sd=st.floats(0.3, 6.0), level=st.floats(-50, 50), bins=st.integers(2, 30),
       seed=st.integers(0, 2 ** 16))
def test_smoothing_keeps_constants_and_linear_combinations(sd, level, bins, seed):
    rng = np.random.default_rng(seed)
    x = np.full((2, bins, 3), level)
    x[rng.random(x.shape) < 0.3] = np.nan
    y = P.smooth(x, sd)
    seen = np.isfinite(x).astype(float)
    near = np.abs(np.arange(bins)[:, None] - np.arange(bins)[None, :]) <= 4 * sd
    covered = np.einsum("ts,nsc->ntc", near.astype(float), seen) > 0
    np.testing.assert_array_equal(np.isfinite(y), covered)  # NaN only with nothing within 4 sd
    np.testing.assert_allclose(y[covered], level, atol=1e-9 * (1 + abs(level)))
    a, b = rng.normal(size=(2, 2, bins, 3))
    np.testing.assert_allclose(P.smooth(2 * a - b, sd), 2 * P.smooth(a, sd) - P.smooth(b, sd),
                               atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 40), trials=st.integers(1, 6), bins=st.integers(1, 8),
       neurons=st.lists(st.integers(1, 6), min_size=1, max_size=3), labelled=st.booleans(),
       smooth_bins=st.sampled_from([0.0, 1.0, 2.5]), seed=st.integers(0, 2 ** 16))
def test_pcr_never_crashes_and_has_the_documented_shapes(k, trials, bins, neurons, labelled,
                                                         smooth_bins, seed):
    rng = np.random.default_rng(seed)
    data = [rng.poisson(2.0, size=(trials, bins, n)).astype(np.float32) for n in neurons]
    for x in data:
        x[rng.random(x.shape) < 0.1] = np.nan
    conds = [rng.integers(0, 3, size=trials) if labelled else None for _ in neurons]
    res = P.pcr(data, data, conds, k=k, smooth_bins=smooth_bins)
    for x, s in zip(data, res.sessions):
        n = x.shape[2]
        assert s.readin_weight.shape == (k, n) and s.readin_bias.shape == (k,)
        assert s.loadings.shape == (n, k) and s.mean.shape == (n,)
        for arr in (s.readin_weight, s.readin_bias, s.loadings, s.mean):
            assert np.all(np.isfinite(arr))
    again = P.from_arrays(P.to_arrays(res))            # the cache round trip
    assert again.mode == res.mode and again.k == k and again.rank == res.rank
    for a, b in zip(again.sessions, res.sessions):
        np.testing.assert_array_equal(a.loadings, b.loadings)
        np.testing.assert_array_equal(a.readin_weight, b.readin_weight)


def test_cache_key_names_the_options():
    assert P.cache_key(40, 2.0, 0.01) == "pcr-k40-s2-r0.01"
    assert P.cache_key(8, 0.5, 1e-5) == "pcr-k8-s0.5-r1e-05"


def test_arguments_are_checked(synth):
    with pytest.raises(ValueError):
        P.pcr(synth.data, synth.data, synth.cond, k=0)
    with pytest.raises(ValueError):
        P.pcr(synth.data, synth.data[:2], synth.cond, k=2)


def test_cache_arrays_survive_an_npz_file_without_pickle(synth, tmp_path):
    """The core stores cache entries with np.savez and reads them with allow_pickle=False."""
    res = P.pcr(synth.data, synth.data, synth.cond, k=4)
    np.savez(tmp_path / "entry.npz", **P.to_arrays(res))
    with np.load(tmp_path / "entry.npz", allow_pickle=False) as f:
        again = P.from_arrays({k: f[k] for k in f.files})
    assert again.mode == P.CONDITION and again.reason == res.reason
    np.testing.assert_array_equal(again.conditions, res.conditions)
    for a, b in zip(again.sessions, res.sessions):
        np.testing.assert_array_equal(a.readin_bias, b.readin_bias)
        assert a.r2_readin == b.r2_readin and a.trials == b.trials
