"""Guard rails of day one: data that look wrong are warned about (one line naming the file and
key, silenced by data.warn: false), non-numeric arrays and missing keys are one-line errors, a
file's arrays may live in a group (data.group)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from lfads_core.data.h5 import load_dataset
from lfads_core.data.sanity import data_warnings, rates_too_high, swapped_axes
from lfads_core.errors import DataError


def _smooth_counts(trials=30, t=50, n=20, seed=0):
    rng = np.random.default_rng(seed)
    tt = np.linspace(0, 2 * np.pi, t)[None, :, None]
    rates = np.exp(0.5 * np.sin(tt + rng.uniform(0, 6, size=(1, 1, n))))
    return rng.poisson(np.broadcast_to(rates, (trials, t, n))).astype(np.float32)


def test_swapped_axes_are_noticed_and_normal_data_are_not():
    good = _smooth_counts(t=50, n=20)
    assert swapped_axes(good) is None
    many = _smooth_counts(t=20, n=60)  # more channels than bins, but in the right order
    assert swapped_axes(many) is None
    swapped = np.ascontiguousarray(_smooth_counts(t=120, n=30).transpose(0, 2, 1))  # [trials, 30, 120]
    problem = swapped_axes(swapped)
    assert problem and "swapped" in problem and "120 channels" in problem


def test_rates_stored_as_counts_are_noticed():
    counts = _smooth_counts()
    assert rates_too_high(counts, 10.0) is None
    hz = counts * 100.0  # rates in Hz, bins of 10 ms
    assert "spikes/s" in rates_too_high(hz, 10.0)
    assert rates_too_high(hz, None) is None


def _write(path, data, group=None):
    with h5py.File(path, "w") as f:
        root = f.create_group(group) if group else f
        for k, v in data.items():
            root[k] = v
        f.attrs["bin_size_ms"] = 10.0
    return path


def _arrays(**extra):
    x = _smooth_counts()
    return {"train_encod_data": x, "train_recon_data": x, "valid_encod_data": x[:5],
            "valid_recon_data": x[:5], **extra}


def test_group_missing_keys_and_non_numeric(tmp_path):
    f = _write(tmp_path / "g.h5", _arrays(), group="session1")
    with pytest.raises(DataError, match=r"missing dataset 'train_encod_data'.*the file has: session1.*data.group: session1"):
        load_dataset(str(f))
    assert load_dataset(str(f), "session1").train.n_trials == 30
    with pytest.raises(DataError, match=r"data.group: .* has no group 'other' \(groups: session1\)"):
        load_dataset(str(f), "other")
    bad = _arrays()
    bad["valid_recon_data"] = np.array([["a", "b"]], dtype="S1")
    f2 = _write(tmp_path / "s.h5", bad)
    with pytest.raises(DataError, match=r"'valid_recon_data' holds \|S1 values, expected numbers"):
        load_dataset(str(f2))


def test_truth_of_another_shape_is_said_not_dropped_silently(tmp_path):
    f = _write(tmp_path / "t.h5", _arrays(valid_truth=np.ones((5, 50, 3), np.float32)))
    ds = load_dataset(str(f))
    assert ds.valid.truth is None
    assert any("valid_truth has shape (5, 50, 3)" in n and "left out of the metrics" in n for n in ds.notes)


def test_data_warnings_name_the_file(tmp_path):
    x = _smooth_counts() * 100.0
    f = _write(tmp_path / "hz.h5", {"train_encod_data": x, "train_recon_data": x,
                                    "valid_encod_data": x[:5], "valid_recon_data": x[:5]})
    ds = load_dataset(str(f))
    warnings = data_warnings(ds, counts=True)
    assert len(warnings) == 1 and warnings[0].startswith(f"{f}: train_recon_data channel")
    assert data_warnings(ds, counts=False) == []
    ds.bin_size_ms = 0.02  # 20 ms given in seconds
    warnings = data_warnings(ds, counts=False)
    assert warnings == [f"{f}: bin size 0.02 ms (the file's attribute bin_size_ms or bin_size, or data.bin_size_ms): bins are "
                        "usually 1 to 100 ms; was it given in seconds?"]


def test_out_onto_a_folder_that_is_not_a_run_is_refused_unless_force(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    data = _write(tmp_path / "d.h5", _arrays())
    target = tmp_path / "papers"
    target.mkdir()
    (target / "thesis.tex").write_text("keep me")
    env = {"OMP_NUM_THREADS": "1", "LFADS_THREADS": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"}
    sets = ["model.encoder.ic_enc_dim=4", "model.encoder.ci_enc_dim=4", "model.encoder.ic_dim=4",
            "model.generator.gen_dim=4", "model.generator.con_dim=4", "model.generator.co_dim=1",
            "model.generator.fac_dim=3", "train.max_epochs=1", "sampling.num_samples=2",
            "sampling.plots=false", f"data.path={data}"]
    cmd = [sys.executable, "-m", "lfads_core.cli", str(repo / "examples" / "lorenz.yaml"),
           *[x for s in sets for x in ("--set", s)], "--out", str(target)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and "is not empty and holds no run" in res.stderr
    assert len(res.stderr.splitlines()) == 1 and sorted(p.name for p in target.iterdir()) == ["thesis.tex"]
    res = subprocess.run(cmd + ["--force"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("papers.old-")]
    assert len(moved) == 1 and (moved[0] / "thesis.tex").read_text() == "keep me"
    assert (target / "spec.yaml").exists() and "kl_ic" in res.stdout and "left ~" in res.stdout
    version = subprocess.run([sys.executable, "-m", "lfads_core.cli", "--version"], capture_output=True,
                             text=True, env=env, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("lfads-core ")


def test_a_bin_unobserved_in_every_trial_raises_no_numpy_warning():
    """Calcium events are NaN at every trial's first sample: the swapped-axes check averaged an
    all-NaN column and numpy printed 'Mean of empty slice' on every validate and run (QA)."""
    import warnings as w

    recon = np.random.default_rng(0).random((20, 10, 40))
    recon[:, 0] = np.nan
    with w.catch_warnings():
        w.simplefilter("error")
        swapped_axes(recon)
