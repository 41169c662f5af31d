"""Trials of different lengths: NaN padding past each trial's end is a shorter trial (model input
0 and loss mask 0 there) without any plugin; NaN anywhere else still needs an augmentation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lfads_core.data.batches import to_tensors
from lfads_core.data.h5 import Split, trailing_padding

REPO = Path(__file__).resolve().parents[1]


def _padded(lengths, t=12, n=3):
    x = np.ones((len(lengths), t, n), np.float32)
    for i, length in enumerate(lengths):
        x[i, length:] = np.nan
    return x


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=6))
def test_trailing_nan_of_any_lengths_is_padding(lengths):
    assert trailing_padding(np.isnan(_padded(lengths)))


def test_other_nan_patterns_are_not_padding():
    x = _padded([5, 12])
    x[1, 3, 0] = np.nan  # one channel of one bin
    assert not trailing_padding(np.isnan(x))
    y = _padded([5, 12])
    y[0, 7] = 1.0  # observed again after the padding started
    assert not trailing_padding(np.isnan(y))
    z = _padded([5, 12])
    z[1, 0] = np.nan  # a trial without its first bin
    assert not trailing_padding(np.isnan(z))


def test_padding_is_input_zero_and_loss_mask_zero():
    x = _padded([4, 12])
    data = to_tensors(Split("train", x, x.copy()))
    assert float(data.encod[0, 4:].abs().sum()) == 0.0
    assert float(data.mask[0, 4:].sum()) == 0.0 and float(data.mask[0, :4].min()) == 1.0
    assert float(data.mask[1].min()) == 1.0


def test_ragged_trials_train_without_a_plugin(tmp_path):
    rng = np.random.default_rng(0)
    f = tmp_path / "ragged.h5"
    with h5py.File(f, "w") as h:
        for split, n in (("train", 24), ("valid", 8)):
            counts = rng.poisson(1.0, size=(n, 20, 6)).astype(np.float32)
            lengths = rng.integers(8, 21, size=n)
            for i, length in enumerate(lengths):
                counts[i, length:] = np.nan
            h[f"{split}_encod_data"] = counts
            h[f"{split}_recon_data"] = counts
        h.attrs["bin_size_ms"] = 10.0
    sets = ["model.encoder.ic_enc_dim=8", "model.encoder.ci_enc_dim=4", "model.encoder.ic_dim=4",
            "model.generator.gen_dim=8", "model.generator.con_dim=4", "model.generator.co_dim=2",
            "model.generator.fac_dim=4", "data.batch_size=8", "train.max_epochs=2",
            "sampling.num_samples=2", f"data.path={f}"]
    args = [x for s in sets for x in ("--set", s)]
    env = {"OMP_NUM_THREADS": "1", "LFADS_THREADS": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "lfads_core.cli", *a], capture_output=True,  # noqa: E731
                                    text=True, env=env, timeout=300)
    res = run("validate", str(REPO / "examples" / "lorenz.yaml"), *args)
    assert res.returncode == 0, res.stderr
    res = run(str(REPO / "examples" / "lorenz.yaml"), *args, "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "run" / "lfads_output.h5") as out:
        assert np.isfinite(out["train_output_params"][()]).all()


def test_files_a_run_writes_follow_the_umask(tmp_path):
    import os

    from lfads_core.data.synth import make_lorenz, write_h5
    from lfads_core.output.write import write_output
    from lfads_core.train.checkpoint import atomic_write_text

    old = os.umask(0o022)
    try:
        write_h5(make_lorenz(seed=0, n_conditions=2, trials_per_condition=2, n_bins=5, n_neurons=2),
                 tmp_path / "d.h5")
        atomic_write_text(tmp_path / "s.json", "{}")
        write_output(tmp_path / "o.h5", {"train": {"factors": np.zeros((1, 2, 2), np.float32)}},
                     {"train": np.arange(1)}, {})
    finally:
        os.umask(old)
    for name in ("d.h5", "s.json", "o.h5"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
