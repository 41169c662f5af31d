"""``lfads-run synth emg`` and :func:`lfads_emg.synth.make_emg`."""

import h5py
import numpy as np
import pytest

from lfads_emg.synth import TRUTH_UNITS, condition_average_r2, make_emg, r2

SPLITS = ("train", "valid")
PER_SPLIT = ("encod_data", "recon_data", "truth", "latents", "inds", "cond")
SMALL = dict(n_conditions=6, trials_per_condition=10, n_bins=40)


@pytest.fixture(scope="module")
def full():
    """The default dataset (1000 trials x 80 bins x 16 muscles, gamma shape 4)."""
    return make_emg(seed=0)


@pytest.fixture
def cli():
    from lfads_core import cli, hooks

    hooks.clear_cache()
    yield cli
    hooks.clear_cache()


def both(d, key):
    return np.concatenate([d[f"{s}_{key}"] for s in SPLITS]).astype(np.float64)


def test_keys_shapes_and_attrs(full):
    for split, n in (("train", 800), ("valid", 200)):
        for key in PER_SPLIT:
            assert f"{split}_{key}" in full, key
        for key in ("encod_data", "recon_data", "truth"):
            arr = full[f"{split}_{key}"]
            assert arr.shape == (n, 80, 16) and arr.dtype == np.float32
        assert full[f"{split}_latents"].shape == (n, 80, 3)
        assert full[f"{split}_inds"].dtype == full[f"{split}_cond"].dtype == np.int64
        assert np.array_equal(full[f"{split}_encod_data"], full[f"{split}_recon_data"])
        assert np.array_equal(full[f"{split}_cond"], full[f"{split}_inds"] // 20)
    assert np.array_equal(np.sort(both(full, "inds")), np.arange(1000))
    assert set(full["valid_cond"]) <= set(full["train_cond"])
    a = full.attrs
    assert a["generator"] == "emg" and a["seed"] == 0 and a["bin_size_ms"] == 20.0
    assert a["gamma_shape"] == 4.0
    assert a["truth_units"] == TRUTH_UNITS == "normalised EMG (mean per bin)"
    assert a["n_muscles"] == 16 and a["n_conditions"] == 50 and a["trials_per_condition"] == 20
    lat = both(full, "latents")
    assert np.allclose(lat.mean(axis=(0, 1)), 0, atol=1e-3)
    assert np.allclose(lat.std(axis=(0, 1)), 1, atol=1e-3)


def test_data_and_truth_are_positive_and_normalised(full):
    x, truth = both(full, "encod_data"), both(full, "truth")
    assert np.isfinite(x).all() and (x > 0).all()
    assert np.isfinite(truth).all() and truth.min() >= 0.05 - 1e-6
    # each muscle averages 1 (normalised EMG), silent part of the time, bursts of a few units
    assert np.allclose(truth.mean(axis=(0, 1)), 1.0, atol=1e-4)
    assert 0.05 < (truth < 0.2).mean() < 0.6 and 3 < np.percentile(truth, 99) < 8
    # the truth is the noise-free mean: smooth in time, unlike the data
    assert np.abs(np.diff(truth, axis=1)).mean() < 0.25 * np.abs(np.diff(x, axis=1)).mean()


@pytest.mark.parametrize("k", [4.0, 9.0])
def test_gamma_noise_is_mean_preserving_with_cv(full, k):
    d = full if k == 4.0 else make_emg(seed=5, gamma_shape=k)
    x, truth = both(d, "encod_data"), both(d, "truth")
    ratio = x / truth
    assert abs(ratio.mean() - 1) < 0.005  # law of large numbers over 1.28 M bins
    assert abs(ratio.std() - 1 / np.sqrt(k)) < 0.005
    # per-bin mean ≈ truth and CV = 1/sqrt(k) at every level of the truth (shape k, scale mu/k)
    edges = np.quantile(truth, np.linspace(0, 1, 11))
    level = np.clip(np.searchsorted(edges, truth, side="right") - 1, 0, 9)
    for q in range(10):
        sel = level == q
        assert abs(x[sel].mean() / truth[sel].mean() - 1) < 0.02, q
        assert abs(ratio[sel].std() * np.sqrt(k) - 1) < 0.03, q
    # skewed to the right like a gamma: median below the mean
    assert np.median(ratio) < 1


def test_determinism_by_seed():
    a, b, c = make_emg(seed=7, **SMALL), make_emg(seed=7, **SMALL), make_emg(seed=8, **SMALL)
    assert sorted(a) == sorted(b) and a.attrs == b.attrs
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train_truth"], c["train_truth"])
    assert not np.array_equal(a["train_encod_data"], c["train_encod_data"])


def test_single_trial_variability(full):
    # the condition average (over the train trials) explains clearly less of the truth than the
    # truth itself, even averaging the noise-free truth: the trials of a condition differ
    r2_data = condition_average_r2(full)
    r2_truth = condition_average_r2(full, "truth")
    assert r2_data < 0.8 and r2_truth < 0.8
    assert r2(full["valid_truth"], full["valid_truth"]) == 1.0
    # ... and this comes from the per-trial start jitter and tempo: without them it is exact
    still = make_emg(seed=0, start_sd=0.0, tempo_sd=0.0, **SMALL)
    assert condition_average_r2(still, "truth") > 0.999
    assert condition_average_r2(make_emg(seed=0, tempo_sd=0.0, **SMALL), "truth") < 0.95
    assert condition_average_r2(make_emg(seed=0, start_sd=0.0, **SMALL), "truth") < 0.95


@pytest.mark.parametrize("kwargs", [dict(gamma_shape=0.0), dict(gamma_shape=float("nan")),
                                    dict(n_muscles=0), dict(start_sd=-1.0), dict(n_bins=1)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_emg(seed=0, **dict(SMALL, **kwargs))


def test_cli_writes_the_file(cli, tmp_path, capsys):
    out = tmp_path / "emg.h5"
    assert cli.main(["synth", "emg", "--out", str(out)]) == 0
    assert "emg.h5" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert f.attrs["generator"] == "emg" and f.attrs["gamma_shape"] == 4.0
        assert f.attrs["bin_size_ms"] == 20.0 and f.attrs["seed"] == 0
        assert f.attrs["truth_units"] == "normalised EMG (mean per bin)"
        for split, n in (("train", 800), ("valid", 200)):
            for key in PER_SPLIT:
                assert f"{split}_{key}" in f, key
            assert f[f"{split}_encod_data"].shape == (n, 80, 16)
            assert f[f"{split}_truth"].attrs["units"] == "normalised EMG (mean per bin)"
            assert (f[f"{split}_encod_data"][()] > 0).all()


def test_cli_options(cli, tmp_path):
    out = tmp_path / "emg.h5"
    argv = ["synth", "emg", "--out", str(out), "--seed", "3", "--gamma-shape", "9",
            "--muscles", "6"]
    assert cli.main(argv) == 0
    with h5py.File(out) as f:
        assert f.attrs["gamma_shape"] == 9.0 and f.attrs["seed"] == 3 and f.attrs["n_muscles"] == 6
        assert f["train_encod_data"].shape == (800, 80, 6)
        ref = make_emg(seed=3, gamma_shape=9.0, n_muscles=6)
        assert np.array_equal(f["valid_encod_data"][()], ref["valid_encod_data"])


@pytest.mark.parametrize("option", [["--gamma-shape", "0"], ["--gamma-shape", "x"],
                                    ["--muscles", "0"]])
def test_cli_bad_options(cli, tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exc:
        cli.main(["synth", "emg", "--out", str(tmp_path / "e.h5"), *option])
    assert exc.value.code == 2
    assert option[0] in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_seed(cli, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # a usage error of argparse: one line, exit code 2
        cli.main(["synth", "emg", "--out", str(tmp_path / "e.h5"), "--seed", "-1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: lfads-run synth emg: argument --seed") and err.count("\n") == 1
    assert not (tmp_path / "e.h5").exists()


def test_synth_help_lists_emg(cli, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["synth", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "emg" in out and "gamma noise" in out
    with pytest.raises(SystemExit):
        cli.main(["synth", "emg", "--help"])
    out = capsys.readouterr().out
    assert "--gamma-shape" in out and "--muscles" in out
