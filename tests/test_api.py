"""The Python API of a run (``lfads_core.load_run``, ``Run.infer``) and ``lfads-run sample
RUN_DIR --data FILE --split S``: the same numbers as the run's own outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import lfads_core as lfads
from lfads_core.errors import DataError, RunDirError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "LFADS_THREADS": "1", "MPLBACKEND": "Agg"}
TINY = ["model.encoder.ic_enc_dim=8", "model.encoder.ci_enc_dim=4", "model.encoder.ic_dim=4",
        "model.generator.gen_dim=8", "model.generator.con_dim=4", "model.generator.co_dim=2",
        "model.generator.fac_dim=4", "data.batch_size=16", "train.max_epochs=2",
        "sampling.num_samples=4"]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lfads_core.cli", *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    rng = np.random.default_rng(0)
    with h5py.File(tmp / "data.h5", "w") as f:
        for split, n in (("train", 32), ("valid", 8), ("test", 6)):
            rates = np.exp(rng.normal(0.0, 0.5, size=(n, 15, 6))).astype(np.float32)
            counts = rng.poisson(rates).astype(np.float32)
            f[f"{split}_encod_data"] = counts
            f[f"{split}_recon_data"] = counts
            f[f"{split}_truth"] = rates
        f.attrs["bin_size_ms"] = 10.0
    res = cli(REPO / "examples" / "lorenz.yaml", *[x for s in TINY for x in ("--set", s)],
              "--set", f"data.path={tmp / 'data.h5'}", "--out", tmp / "run")
    assert res.returncode == 0, res.stderr
    return tmp


def test_load_run_gives_spec_metrics_summary(trained):
    run = lfads.load_run(trained / "run")
    assert run.spec.train.max_epochs == 2 and run.sessions == ["data"]
    assert list(run.metrics["epoch"]) == [1.0, 2.0]
    assert run.metrics["valid_recon"].shape == (2,)
    assert "valid_rate_r2" in run.summary


def test_infer_matches_the_runs_own_outputs(trained):
    run = lfads.load_run(trained / "run")
    with h5py.File(trained / "data.h5") as f:
        x = f["valid_encod_data"][()]
    out = run.infer(x, num_samples=4)
    with h5py.File(trained / "run" / "lfads_output.h5") as f:
        np.testing.assert_allclose(out.rates, f["valid_output_params"][()], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.factors, f["valid_factors"][()], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.inputs, f["valid_gen_inputs"][()], rtol=1e-5, atol=1e-6)
    assert out.units == "counts per bin" and run.best_epoch in (1, 2)


def test_sample_data_split_equals_infer(trained):
    res = cli("sample", trained / "run", "--data", trained / "data.h5", "--split", "test",
              "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert "test_rate_r2" in res.stdout
    run = lfads.load_run(trained / "run")
    with h5py.File(trained / "data.h5") as f:
        x = f["test_encod_data"][()]
    out = run.infer(x, num_samples=4)
    with h5py.File(trained / "run" / "samples_data.h5") as f:
        assert set(k.split("_")[0] for k in f) == {"test"}
        np.testing.assert_allclose(f["test_output_params"][()], out.rates, rtol=1e-5, atol=1e-6)
        assert f.attrs["session"] == "data"


def test_api_errors_are_one_line(trained, tmp_path):
    run = lfads.load_run(trained / "run")
    with pytest.raises(DataError, match=r"x must be \[trials, 15 bins, 6 channels\].*got shape \(2, 15, 5\)"):
        run.infer(np.zeros((2, 15, 5)))
    with pytest.raises(DataError, match="numeric"):
        run.infer(np.full((2, 15, 6), "a"))
    with pytest.raises(RunDirError, match="not a run directory"):
        lfads.load_run(tmp_path)
    res = cli("sample", trained / "run", "--data", trained / "data.h5", "--split", "nope")
    assert res.returncode == 2 and "no split 'nope'" in res.stderr and len(res.stderr.splitlines()) == 1
    res = cli("sample", trained / "run", "--split", "test")
    assert res.returncode == 2 and "--split goes with --data" in res.stderr
    res = cli("sample", trained / "run", "--data", trained / "data.h5", "--session", "day9")
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith("error: --session day9: the run has no such session (its sessions: data)")
    res = cli("sample", trained / "run", "--samples", "0")
    assert res.returncode == 2 and "argument --samples: must be an integer >= 1, got 0" in res.stderr
    with pytest.raises(DataError, match="x has no trials"):
        run.infer(np.zeros((0, 15, 6)))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(DataError, match=rf"num_samples must be an integer >= 1, got {bad!r}"):
            run.infer(np.zeros((2, 15, 6)), num_samples=bad)
    with pytest.raises(DataError, match="the model takes no external inputs"):
        run.infer(np.zeros((2, 15, 6)), ext=np.zeros((2, 15, 1)))


def test_sample_data_of_new_trials_only(trained, tmp_path):
    """A file of new trials needs no train or valid split, nor targets."""
    with h5py.File(trained / "data.h5") as f:
        x = f["test_encod_data"][()]
    with h5py.File(tmp_path / "new.h5", "w") as f:
        f["test_encod_data"] = x
    res = cli("sample", trained / "run", "--data", tmp_path / "new.h5", "--split", "test",
              "--output", tmp_path / "out.h5")
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "out.h5") as f, h5py.File(trained / "run" / "samples_data.h5") as g:
        np.testing.assert_allclose(f["test_output_params"][()], g["test_output_params"][()], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case, expect", [
    ("negative", "new.h5: test_recon_data has negative values in channel 0 (min -1); Poisson needs counts >= 0"),
    ("swapped", "new.h5: test_encod_data is 6 bins x 15 channels per trial; the run's model (session "
                "data) takes 15 bins x 6 channels"),
    ("ext", "new.h5: test_ext_input must be absent: the run's model takes no external inputs, got shape (6, 15, 2)"),
    ("nothing", "new.h5: no trials: expected {split}_encod_data"),
])
def test_sample_data_errors_name_the_file_and_key(trained, tmp_path, case, expect):
    with h5py.File(trained / "data.h5") as f:
        x = f["test_encod_data"][()]
    with h5py.File(tmp_path / "new.h5", "w") as f:
        if case == "negative":
            y = x.copy()
            y[0, 0, 0] = -1
            f["test_encod_data"], f["test_recon_data"] = x, y
        elif case == "swapped":
            f["test_encod_data"] = x.transpose(0, 2, 1)
        elif case == "ext":
            f["test_encod_data"], f["test_ext_input"] = x, np.zeros((6, 15, 2), np.float32)
        else:
            f["something"] = x
    res = cli("sample", trained / "run", "--data", tmp_path / "new.h5", "--output", tmp_path / "out.h5")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.splitlines()) == 1 and expect in res.stderr, res.stderr
    assert not (tmp_path / "out.h5").exists()


def test_infer_accepts_shorter_trials(trained):
    run = lfads.load_run(trained / "run")
    with h5py.File(trained / "data.h5") as f:
        x = f["valid_encod_data"][()]
    x[0, 10:] = np.nan  # trailing padding
    out = run.infer(x, num_samples=2)
    assert np.isfinite(out.rates).all() and out.rates.shape == (8, 15, 6)


def test_resume_conflict_lists_every_differing_field():
    from lfads_core.rundir import _describe_differences

    old = {"model": {"gen_dim": 8, "co_dim": 2}, "train": {"lr": 0.01, "aug": [{"p": 1}]}, "x": 1}
    new = {"model": {"gen_dim": 6, "co_dim": 2}, "train": {"lr": 0.02, "aug": [{"p": 2}]}, "y": 2}
    assert _describe_differences(old, new) == ("model.gen_dim: 8 -> 6; train.lr: 0.01 -> 0.02; "
                                               "train.aug.0.p: 1 -> 2; x: 1 -> None; and 1 more")
    assert _describe_differences(old, new, limit=5).endswith("y: None -> 2")
