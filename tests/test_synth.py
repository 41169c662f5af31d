"""Tests for lfads_core.data.synth (synthetic datasets with ground truth)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from lfads_core.data.synth import (
    RNN_PULSE_BINS,
    SYNTH_GENERATORS,
    SynthData,
    make_lorenz,
    make_rnn,
    write_h5,
)

COMMON_KEYS = {
    f"{split}_{name}"
    for split in ("train", "valid")
    for name in ("encod_data", "recon_data", "truth", "inds", "cond")
}
SMALL = dict(n_conditions=6, trials_per_condition=5, n_bins=30, n_neurons=8)


@pytest.fixture(scope="module")
def lorenz() -> SynthData:
    return make_lorenz(seed=0)


@pytest.fixture(scope="module")
def rnn() -> SynthData:
    return make_rnn(seed=0)


def _all(data: dict, name: str) -> np.ndarray:
    """Concatenate train and valid arrays of ``name``."""
    return np.concatenate([data[f"train_{name}"], data[f"valid_{name}"]])


def _psth_correlation(data: dict, n_conditions: int) -> float:
    """Correlation of trial-averaged spikes and truth, per condition pooled."""
    spikes, truth, cond = _all(data, "encod_data"), _all(data, "truth"), _all(data, "cond")
    psth = np.stack([spikes[cond == c].mean(0) for c in range(n_conditions)])
    mean_truth = np.stack([truth[cond == c].mean(0) for c in range(n_conditions)])
    return float(np.corrcoef(psth.ravel(), mean_truth.ravel())[0, 1])


# --------------------------------------------------------------------------- #
# Structure, shared by both generators
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["lorenz", "rnn"])
def test_keys_shapes_dtypes(name, lorenz, rnn):
    data = {"lorenz": lorenz, "rnn": rnn}[name]
    extra = {"lorenz": "latents", "rnn": "inputs"}[name]
    assert set(data) == COMMON_KEYS | {f"train_{extra}", f"valid_{extra}"}
    for split, n in (("train", 960), ("valid", 240)):
        for key in ("encod_data", "recon_data", "truth"):
            arr = data[f"{split}_{key}"]
            assert arr.shape == (n, 100, 40) and arr.dtype == np.float32
        for key in ("inds", "cond"):
            assert data[f"{split}_{key}"].shape == (n,)
            assert data[f"{split}_{key}"].dtype == np.int64
        extra_shape = (n, 100, 3) if name == "lorenz" else (n, 100)
        assert data[f"{split}_{extra}"].shape == extra_shape
        assert data[f"{split}_{extra}"].dtype == np.float32
    assert data.attrs["generator"] == name
    assert data.attrs["seed"] == 0 and data.attrs["bin_size_ms"] == 10.0


@pytest.mark.parametrize("name", ["lorenz", "rnn"])
def test_split_indices_and_conditions(name, lorenz, rnn):
    data = {"lorenz": lorenz, "rnn": rnn}[name]
    inds = _all(data, "inds")
    assert np.array_equal(np.sort(inds), np.arange(1200))
    assert not np.array_equal(data["train_inds"], np.sort(data["train_inds"]))  # shuffled
    assert np.array_equal(_all(data, "cond"), inds // 20)


@pytest.mark.parametrize("name", ["lorenz", "rnn"])
def test_spikes_are_counts_and_rates_valid(name, lorenz, rnn):
    data = {"lorenz": lorenz, "rnn": rnn}[name]
    spikes, truth = _all(data, "encod_data"), _all(data, "truth")
    assert np.array_equal(data["train_encod_data"], data["train_recon_data"])
    assert data["train_encod_data"] is not data["train_recon_data"]
    assert np.all(spikes >= 0) and np.array_equal(spikes, np.round(spikes))
    assert np.all(np.isfinite(truth)) and np.all(truth >= 0)
    assert 0.1 <= spikes.mean() <= 0.3
    # Poisson: the empirical mean count matches the mean rate.
    assert spikes.mean() == pytest.approx(truth.mean(), rel=0.03)


@pytest.mark.parametrize("name,min_corr", [("lorenz", 0.75), ("rnn", 0.5)])
def test_psth_tracks_truth(name, min_corr, lorenz, rnn):
    data = {"lorenz": lorenz, "rnn": rnn}[name]
    assert _psth_correlation(data, 60) > min_corr


@pytest.mark.parametrize("make", [make_lorenz, make_rnn])
def test_deterministic_given_seed(make):
    a, b, c = make(seed=3, **SMALL), make(seed=3, **SMALL), make(seed=4, **SMALL)
    assert set(a) == set(b) == set(c)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.allclose(a["train_truth"][:1], c["train_truth"][:1])
    assert not np.array_equal(a["train_inds"], c["train_inds"])


@pytest.mark.parametrize("make", [make_lorenz, make_rnn])
def test_custom_sizes_and_valid_fraction(make):
    data = make(seed=1, valid_fraction=0.5, **SMALL)
    assert data["train_truth"].shape == (15, 30, 8)
    assert data["valid_truth"].shape == (15, 30, 8)


def test_registry():
    assert SYNTH_GENERATORS == {"lorenz": make_lorenz, "rnn": make_rnn}


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_lorenz(valid_fraction=1.0, **SMALL)
    with pytest.raises(ValueError):
        make_rnn(bin_ms=0.0, **SMALL)


# --------------------------------------------------------------------------- #
# Lorenz specifics
# --------------------------------------------------------------------------- #


def test_lorenz_trials_of_a_condition_share_rates(lorenz):
    truth, latents, cond = _all(lorenz, "truth"), _all(lorenz, "latents"), _all(lorenz, "cond")
    for c in (0, 17, 59):
        members = cond == c
        assert members.sum() == 20
        assert np.all(truth[members] == truth[members][0])
        assert np.all(latents[members] == latents[members][0])
    spikes = _all(lorenz, "encod_data")
    first_two = np.flatnonzero(cond == 0)[:2]
    assert not np.array_equal(spikes[first_two[0]], spikes[first_two[1]])


def test_lorenz_latents_standardised_and_drive_log_rates(lorenz):
    latents = _all(lorenz, "latents").reshape(-1, 3)  # every condition equally often
    np.testing.assert_allclose(latents.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(latents.std(0), 1.0, atol=1e-4)
    # log-rates are an affine function of the latents (exactly, up to float32).
    log_rates = np.log(_all(lorenz, "truth").reshape(-1, 40).astype(np.float64))
    design = np.column_stack([latents, np.ones(len(latents))])
    coef, *_ = np.linalg.lstsq(design, log_rates, rcond=None)
    np.testing.assert_allclose(design @ coef, log_rates, atol=1e-4)
    # ... and vary by roughly +-1 to 1.5 around each neuron's mean.
    centred = log_rates - log_rates.mean(0)
    lo, hi = np.percentile(centred, [2.5, 97.5], axis=0)
    assert 0.8 < np.median(hi) < 2.2 and -2.2 < np.median(lo) < -0.8


def test_lorenz_trial_covers_about_one_loop(lorenz):
    """x changes sign (wing switch) or rotates within a trial for most conditions."""
    latents = _all(lorenz, "latents")[:, :, :2]
    centred = latents - latents.mean(axis=1, keepdims=True)
    angle = np.unwrap(np.arctan2(centred[..., 1], centred[..., 0]), axis=1)
    turns = np.abs(angle[:, -1] - angle[:, 0]) / (2 * np.pi)
    x = _all(lorenz, "latents")[:, :, 0]
    moves = (np.ptp(x, axis=1) > 1.0) | (turns > 0.5)
    assert moves.mean() > 0.8


# --------------------------------------------------------------------------- #
# RNN specifics
# --------------------------------------------------------------------------- #


def test_rnn_rates_bounded_by_max_rate(rnn):
    truth = _all(rnn, "truth")
    assert truth.max() <= 30.0 * 10.0 / 1000.0
    small = make_rnn(seed=2, max_rate_hz=50.0, bin_ms=5.0, **SMALL)
    assert _all(small, "truth").max() <= 50.0 * 5.0 / 1000.0


def test_rnn_one_pulse_per_trial_in_middle_half(rnn):
    inputs = _all(rnn, "inputs")
    assert np.all(inputs.sum(axis=1) == RNN_PULSE_BINS)
    onsets = np.argmax(inputs > 0, axis=1)
    assert onsets.min() >= 25 and onsets.max() < 75
    assert len(np.unique(onsets)) > 10


def test_rnn_trials_diverge_only_after_pulse(rnn):
    truth, inputs, cond = _all(rnn, "truth"), _all(rnn, "inputs"), _all(rnn, "cond")
    onsets = np.argmax(inputs > 0, axis=1)
    a, b = np.flatnonzero(cond == 5)[:2]
    first = min(onsets[a], onsets[b])
    np.testing.assert_array_equal(truth[a, :first], truth[b, :first])
    if onsets[a] != onsets[b]:
        assert not np.allclose(truth[a, first + 1 :], truth[b, first + 1 :])


def test_rnn_without_inputs_shares_rates_within_condition():
    data = make_rnn(seed=0, with_inputs=False, **SMALL)
    assert not _all(data, "inputs").any()
    truth, cond = _all(data, "truth"), _all(data, "cond")
    for c in range(SMALL["n_conditions"]):
        assert np.all(truth[cond == c] == truth[cond == c][0])
    # chaotic, not decaying to a fixed point: rates still move late in the trial
    assert truth[:, -10:].std(axis=1).mean() > 0.01


# --------------------------------------------------------------------------- #
# write_h5
# --------------------------------------------------------------------------- #


def test_write_h5_round_trip(tmp_path):
    data = make_lorenz(seed=5, **SMALL)
    path = tmp_path / "new" / "dir" / "lorenz.h5"
    assert write_h5(data, path, attrs={"note": "hello"}) == path
    with h5py.File(path, "r") as f:
        assert set(f.keys()) == set(data)
        for key, value in data.items():
            np.testing.assert_array_equal(f[key][()], value)
            assert f[key].dtype == value.dtype
            assert f[key].compression == "gzip" and f[key].compression_opts == 4
        assert f.attrs["bin_size_ms"] == 10.0
        assert f.attrs["conversion_factor"] == 1.0
        assert f.attrs["generator"] == "lorenz"
        assert f.attrs["seed"] == 5
        assert f.attrs["note"] == "hello"
        for split in ("train", "valid"):
            assert f[f"{split}_truth"].attrs["conversion_factor"] == 1.0
            assert f[f"{split}_truth"].attrs["units"] == "counts per bin"
    assert sorted(p.name for p in path.parent.iterdir()) == ["lorenz.h5"]  # no temp left


def test_write_h5_overwrites_and_accepts_plain_dict(tmp_path):
    path = tmp_path / "x.h5"
    write_h5(make_rnn(seed=1, **SMALL), path)
    plain = {"train_truth": np.ones((2, 3, 4), np.float32), "n": np.int64(7)}
    write_h5(plain, path, attrs={"bin_size_ms": 20.0, "generator": "mine", "seed": 9})
    with h5py.File(path, "r") as f:
        assert set(f.keys()) == {"train_truth", "n"}
        assert f["n"][()] == 7
        assert f.attrs["bin_size_ms"] == 20.0 and f.attrs["generator"] == "mine"
        assert f.attrs["seed"] == 9 and f.attrs["conversion_factor"] == 1.0


def test_write_h5_requires_bin_size_and_leaves_no_file(tmp_path):
    path = tmp_path / "y.h5"
    with pytest.raises(ValueError, match="bin_size_ms"):
        write_h5({"a": np.zeros(3)}, path)
    assert list(tmp_path.iterdir()) == []


def test_truth_conversion_factor_either_convention():
    """Truth stored in other units with a conversion_factor is brought to counts per bin,
    whichever way the file means the factor."""
    from lfads_core.data.h5 import truth_in_data_units

    rng = np.random.default_rng(0)
    rates = rng.uniform(0.05, 0.5, size=(50, 20, 6)).astype(np.float32)
    spikes = rng.poisson(rates).astype(np.float32)
    hz = rates * 100.0  # 10 ms bins
    assert np.allclose(truth_in_data_units(hz, spikes, 0.01), rates, rtol=1e-5)   # multiply
    assert np.allclose(truth_in_data_units(hz, spikes, 100.0), rates, rtol=1e-5)  # divide
    assert np.array_equal(truth_in_data_units(rates, spikes, 1.0), rates)


# --------------------------------------------------------------------------- #
# Sessions sharing one Lorenz system (multisession / stitching data)
# --------------------------------------------------------------------------- #


def test_lorenz_sessions_share_latents_with_their_own_neurons_and_conditions():
    from lfads_core.data.synth import make_lorenz_sessions

    sessions = make_lorenz_sessions(seed=2, n_sessions=3, n_conditions=12, trials_per_condition=4,
                                    n_bins=30, neurons=(9, 6, 4), condition_fraction=0.5)
    assert [s["train_encod_data"].shape[2] for s in sessions] == [9, 6, 4]
    used = [set(s.attrs["session_conditions"].tolist()) for s in sessions]
    assert all(len(u) == 6 for u in used) and len(set(map(frozenset, used))) > 1
    # the same condition has the same latent trajectory in every session that recorded it
    latent_of = {}
    for s in sessions:
        for split in ("train", "valid"):
            for cond, lat in zip(s[f"{split}_cond"], s[f"{split}_latents"]):
                if cond in latent_of:
                    np.testing.assert_array_equal(latent_of[cond], lat)
                latent_of[cond] = lat
    for s in sessions:
        n = s["train_encod_data"].shape[0] + s["valid_encod_data"].shape[0]
        assert n == 6 * 4 and set(s["train_cond"]) <= set(s.attrs["session_conditions"])
        # each session reads the latents out with neurons of its own: log-rates are affine in them
        lat, rates = s["train_latents"].reshape(-1, 3), s["train_truth"].reshape(-1, s["train_truth"].shape[2])
        design = np.hstack([lat, np.ones((lat.shape[0], 1))])
        coef, res, *_ = np.linalg.lstsq(design, np.log(rates), rcond=None)
        np.testing.assert_allclose(design @ coef, np.log(rates), atol=1e-4)
    again = make_lorenz_sessions(seed=2, n_sessions=3, n_conditions=12, trials_per_condition=4,
                                 n_bins=30, neurons=(9, 6, 4), condition_fraction=0.5)
    np.testing.assert_array_equal(again[1]["valid_encod_data"], sessions[1]["valid_encod_data"])


def test_synth_lorenz_sessions_cli_writes_one_file_per_session(tmp_path, capsys):
    from lfads_core import cli

    assert cli.main(["synth", "lorenz", "--sessions", "2", "--out", str(tmp_path / "sessions")]) == 0
    assert sorted(p.name for p in (tmp_path / "sessions").iterdir()) == ["session0.h5", "session1.h5"]
    import h5py

    with h5py.File(tmp_path / "sessions" / "session1.h5") as f:
        assert f["train_encod_data"].shape[2] == 30 and f.attrs["session"] == 1
    (tmp_path / "file").write_text("x")
    capsys.readouterr()
    assert cli.main(["synth", "lorenz", "--sessions", "2", "--out", str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert cli.main(["synth", "lorenz", "--out", str(tmp_path / "one.h5")]) == 0  # one session: a file
    assert (tmp_path / "one.h5").is_file()
