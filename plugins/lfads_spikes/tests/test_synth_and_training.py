"""``lfads-run synth lorenz_overdispersed`` (keys, over-dispersion, determinism, options, a light
hook module) and a short training of each reconstruction of lfads-spikes through ``lfads-run``
(its validation loss falls)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from lfads_core import make_lorenz

from lfads_spikes.hooks import make_lorenz_overdispersed

SMALL = dict(n_conditions=6, trials_per_condition=10, n_bins=20, n_neurons=8)
SMALL_ARGS = ["--n-conditions", "6", "--trials-per-condition", "10", "--n-bins", "20",
              "--n-neurons", "8"]


@pytest.fixture
def cli():
    from lfads_core import cli, hooks

    hooks.clear_cache()
    yield cli
    hooks.clear_cache()


# -- the synthetic dataset -----------------------------------------------------------------------
def test_keys_shapes_and_truth_are_make_lorenz_s():
    data = make_lorenz_overdispersed(seed=3, dispersion=1.5, **SMALL)
    lorenz = make_lorenz(seed=3, base_rate_hz=25.0, **SMALL)
    assert set(data) == set(lorenz)
    for split, trials in (("train", 48), ("valid", 12)):
        x = data[f"{split}_encod_data"]
        assert x.shape == (trials, 20, 8) and x.dtype == np.float32
        assert np.array_equal(x, data[f"{split}_recon_data"])
        assert np.array_equal(x, np.round(x)) and x.min() >= 0
        for key in ("truth", "latents", "inds", "cond"):
            assert np.array_equal(data[f"{split}_{key}"], lorenz[f"{split}_{key}"])
    assert data.attrs["generator"] == "lorenz_overdispersed" and data.attrs["dispersion"] == 1.5
    assert data.attrs["bin_size_ms"] == 10.0


def test_counts_are_over_dispersed_negative_binomial_given_the_rates():
    r = 2.0
    data = make_lorenz_overdispersed(seed=0, dispersion=r, n_conditions=20, trials_per_condition=10)
    x = np.concatenate([data["train_recon_data"], data["valid_recon_data"]]).astype(np.float64)
    rate = np.concatenate([data["train_truth"], data["valid_truth"]]).astype(np.float64)
    assert (x.reshape(-1, 40).var(0) > x.reshape(-1, 40).mean(0)).all()
    # given the rate λ: mean λ, variance λ + λ²/R (Poisson would be λ)
    assert x.mean() == pytest.approx(rate.mean(), rel=0.02)
    resid = ((x - rate) ** 2).mean()
    assert resid == pytest.approx((rate + rate ** 2 / r).mean(), rel=0.03)
    assert resid > 1.2 * rate.mean()
    less = make_lorenz_overdispersed(seed=0, dispersion=1e6, n_conditions=20, trials_per_condition=10)
    y = np.concatenate([less["train_recon_data"], less["valid_recon_data"]])
    assert ((y - rate) ** 2).mean() == pytest.approx(rate.mean(), rel=0.03)


def test_deterministic_given_the_seed():
    a, b = (make_lorenz_overdispersed(seed=7, **SMALL) for _ in range(2))
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    c = make_lorenz_overdispersed(seed=8, **SMALL)
    assert not np.array_equal(a["train_encod_data"], c["train_encod_data"])


def test_cli_writes_the_file_with_its_options(cli, tmp_path, capsys):
    out = tmp_path / "od.h5"
    assert cli.main(["synth", "lorenz_overdispersed", "--out", str(out), "--dispersion", "3",
                     "--seed", "2", *SMALL_ARGS]) == 0
    assert "wrote" in capsys.readouterr().out
    want = make_lorenz_overdispersed(seed=2, dispersion=3.0, **SMALL)
    with h5py.File(out) as f:
        assert f.attrs["dispersion"] == 3.0 and f.attrs["bin_size_ms"] == 10.0
        assert f["valid_truth"].attrs["units"] == "counts per bin"
        assert np.array_equal(f["train_encod_data"][()], want["train_encod_data"])
    with pytest.raises(SystemExit) as exc:
        cli.main(["synth", "lorenz_overdispersed", "--out", str(out), "--dispersion", "0"])
    assert exc.value.code == 2 and "--dispersion: must be a positive number" in capsys.readouterr().err


def test_hooks_module_is_light():
    code = ("import sys, lfads_spikes.hooks as h; h.lfads_synth_datasets(); "
            "print(sorted(m for m in ('numpy', 'h5py', 'scipy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent)
    assert out.stdout.strip() == "[]"


# -- a short training of each reconstruction ------------------------------------------------------
@pytest.mark.parametrize("reconstruction", ["poisson", "negative_binomial"])
def test_short_training_lowers_the_validation_loss(cli, tmp_path, capsys, reconstruction):
    """About 3 s per reconstruction on one thread."""
    data = tmp_path / "od.h5"
    assert cli.main(["synth", "lorenz_overdispersed", "--out", str(data), "--base-rate-hz", "60",
                     "--n-conditions", "8", "--trials-per-condition", "10", "--n-bins", "25",
                     "--n-neurons", "12"]) == 0
    (tmp_path / "spec.yaml").write_text(
        "data: {path: od.h5, batch_size: 16}\n"
        "model:\n"
        f"  reconstruction: {{name: {reconstruction}}}\n"
        "  augmentations: [{name: spike_jitter, max_shift: 1}, {name: coordinated_dropout, rate: 0.2}]\n"
        "  encoder: {name: bigru, ic_enc_dim: 16, ci_enc_dim: 4, ic_dim: 8}\n"
        "  generator: {name: gru, gen_dim: 24, con_dim: 4, co_dim: 1, fac_dim: 6}\n"
        "train: {max_epochs: 30, kl: {ramp_epochs: 0}, l2: {ramp_epochs: 0}, lr: 0.01, threads: 1}\n"
        "sampling: {num_samples: 2, plots: false}\n")
    out_dir = tmp_path / "run"
    code = cli.main([str(tmp_path / "spec.yaml"), "--out", str(out_dir)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    with open(out_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    valid = [float(r["valid_recon"]) for r in rows]
    assert len(rows) == 30 and np.mean(valid[-3:]) < valid[0] - 0.05, valid
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["units"] == "counts per bin"
    assert summary["valid_rate_r2"] > 0.3 and summary["valid_bits_per_spike"] > 0.1, summary
    if reconstruction == "negative_binomial":
        assert 0 < float(rows[-1]["valid_overdispersion"]) < float(rows[0]["valid_overdispersion"])


def test_validate_reports_the_components_and_a_too_long_shift(cli, tmp_path, capsys):
    assert cli.main(["synth", "lorenz_overdispersed", "--out", str(tmp_path / "od.h5"),
                     *SMALL_ARGS]) == 0
    (tmp_path / "spec.yaml").write_text(
        "data: {path: od.h5}\n"
        "model:\n"
        "  reconstruction: {name: negative_binomial}\n"
        "  augmentations: [{name: spike_jitter, max_shift: 2}]\n"
        "  encoder: {name: bigru, ic_enc_dim: 8, ci_enc_dim: 4, ic_dim: 4}\n"
        "  generator: {name: gru, gen_dim: 16, con_dim: 4, co_dim: 1, fac_dim: 4}\n")
    capsys.readouterr()
    assert cli.main(["validate", str(tmp_path / "spec.yaml")]) == 0
    out = capsys.readouterr().out
    assert "non-negative integer counts" in out and "counts per bin" in out
    code = cli.main(["validate", str(tmp_path / "spec.yaml"), "--set",
                     "model.augmentations.0.max_shift=20"])
    [line] = capsys.readouterr().err.splitlines()
    assert code == 2 and line.startswith("error: model.augmentations.0 (spike_jitter): max_shift: 20 "
                                         "bins is not less than the trials' 20 encoder bins"), line
