"""Several sessions in one run: which files ``data.path`` names, the checks across sessions, the
session sampler, the initialisation cache, and end-to-end runs through ``lfads-run`` (outputs per
session, summary table, resume, one-line errors naming the file).

Sessions here share their channel count so the core's identity readin serves; sessions with
different neurons (the multisession readin and PCR) are tested in plugins/lfads_multisession.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lfads_core.components import InitCache
from lfads_core.data.batches import SessionBatches, TensorSplit
from lfads_core.data.h5 import load_dataset
from lfads_core.data.sessions import check_sessions, fingerprint, is_multisession, session_files
from lfads_core.errors import DataError
from lfads_core.rundir import read_init_cache, write_init_cache

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".venv" / "bin" / "lfads-run"
LFADS_RUN = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "lfads_core.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "LFADS_THREADS": "1", "MKL_NUM_THREADS": "1",
       "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}
TINY = ["model.encoder.ic_enc_dim=8", "model.encoder.ci_enc_dim=4", "model.encoder.ic_dim=4",
        "model.generator.gen_dim=8", "model.generator.con_dim=4", "model.generator.co_dim=2",
        "model.generator.fac_dim=4", "data.batch_size=16", "train.max_epochs=2",
        "train.kl.ramp_epochs=0", "train.l2.ramp_epochs=0", "sampling.num_samples=3"]


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*LFADS_RUN, *map(str, args)], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


def sets(*items: str) -> list[str]:
    return [part for item in items for part in ("--set", item)]


def assert_ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"


def assert_one_line_error(res, *needles):
    assert res.returncode == 2, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def session_arrays(n_train: int, n_valid: int = 8, t: int = 20, n: int = 8, seed: int = 0) -> dict:
    """Poisson counts with smooth true rates, condition labels and the input-format keys."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, trials in (("train", n_train), ("valid", n_valid)):
        cond = rng.integers(0, 4, size=trials)
        tt = np.linspace(0, 2 * np.pi, t)[None, :, None]
        gain = rng.uniform(0.5, 1.5, size=(1, 1, n))
        rates = np.exp(0.3 + 0.8 * np.sin(tt + cond[:, None, None]) * gain).astype(np.float32)
        spikes = rng.poisson(rates).astype(np.float32)
        out.update({f"{split}_encod_data": spikes, f"{split}_recon_data": spikes.copy(),
                    f"{split}_truth": rates, f"{split}_cond": cond})
    return out


def write_h5(path: Path, data: dict, **attrs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, arr in data.items():
            f[key] = arr
        f.attrs.update(attrs)
    return path


# -- which files ----------------------------------------------------------------------------
def test_session_files_globs_lists_and_errors(tmp_path):
    for name in ("b", "a", "c"):
        write_h5(tmp_path / "s" / f"{name}.h5", session_arrays(8))
    assert [Path(p).stem for p in session_files(str(tmp_path / "s" / "*.h5"))] == ["a", "b", "c"]
    listed = [str(tmp_path / "s" / "c.h5"), str(tmp_path / "s" / "*.h5")]
    assert [Path(p).stem for p in session_files(listed)] == ["c", "a", "b"]  # each file once
    assert is_multisession(listed) and is_multisession("x/*.h5") and not is_multisession("x/a.h5")
    with pytest.raises(DataError, match=r"data.path: no file matches .*nothing\*\.h5"):
        session_files(str(tmp_path / "nothing*.h5"))
    write_h5(tmp_path / "t" / "a.h5", session_arrays(8))
    with pytest.raises(DataError, match="same file name 'a'"):
        session_files([str(tmp_path / "s" / "a.h5"), str(tmp_path / "t" / "a.h5")])


def test_sessions_must_share_bins_bin_size_and_inputs(tmp_path):
    a = load_dataset(str(write_h5(tmp_path / "a.h5", session_arrays(8), bin_size_ms=10.0)))
    b = load_dataset(str(write_h5(tmp_path / "b.h5", session_arrays(8, t=24), bin_size_ms=10.0)))
    with pytest.raises(DataError, match=r"b\.h5: 24 encoder / 24 reconstruction bins .*a\.h5 has 20 / 20"):
        check_sessions([a, b])
    c = load_dataset(str(write_h5(tmp_path / "c.h5", session_arrays(8), bin_size_ms=20.0)))
    with pytest.raises(DataError, match=r"c\.h5: bins of 20 ms, but .*a\.h5 has 10 ms"):
        check_sessions([a, c])
    d = load_dataset(str(write_h5(tmp_path / "d.h5", session_arrays(8, n=5))))  # no bin size
    check_sessions([a, d])  # other neuron counts are fine; a missing bin size is taken over
    assert d.bin_size_ms == 10.0
    assert d.train.cond is not None and d.train.cond.shape == (8,)
    unlabelled = session_arrays(8)
    del unlabelled["train_cond"], unlabelled["valid_cond"]
    e = load_dataset(str(write_h5(tmp_path / "e.h5", unlabelled, bin_size_ms=10.0)))
    check_sessions([a, e])  # a note, not an error: PCR falls back to single trials
    assert a.notes == ["session e of 2 has no train_cond while the others have: what uses condition "
                       "labels across sessions (the multisession readin's PCR start) falls back to "
                       "single trials for every session"]


# -- the sampler ----------------------------------------------------------------------------
def _split(n: int, session: int, channels: int = 3) -> TensorSplit:
    x = torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, 2, channels).clone()
    return TensorSplit(encod=x, recon=x.clone(), mask=torch.ones_like(x), session=session)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 60), min_size=2, max_size=4), batch=st.integers(1, 16),
       seed=st.integers(0, 1000))
def test_sampler_trials_visits_every_trial_once_and_validation_in_order(sizes, batch, seed):
    data = [_split(n, i) for i, n in enumerate(sizes)]
    source = SessionBatches(data, batch, "trials")
    seen = {i: [] for i in range(len(sizes))}
    count = 0
    for b in source(torch.Generator().manual_seed(seed)):
        assert b.encod.shape[0] <= batch and b.encod.shape[-1] == 3
        assert torch.equal(b.encod[:, 0, 0].long(), b.index)  # rows of the batch's own session
        assert b.index.device.type == "cpu"  # read by augmentations without waiting for a GPU
        seen[b.session] += b.index.tolist()
        count += 1
    assert count == sum(source.n_batches())
    for i, n in enumerate(sizes):
        assert sorted(seen[i]) == list(range(n))
    valid = list(source(None))
    assert [(b.session, b.index.tolist()) for b in valid] == [
        (i, list(range(s, min(s + batch, n)))) for i, n in enumerate(sizes) for s in range(0, n, batch)]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 60), min_size=2, max_size=4), batch=st.integers(1, 16),
       seed=st.integers(0, 1000))
def test_sampler_equal_gives_sessions_equal_batches_without_repeats_within_a_round(sizes, batch, seed):
    data = [_split(n, i) for i, n in enumerate(sizes)]
    source = SessionBatches(data, batch, "equal")
    counts = source.n_batches()
    assert sum(counts) == sum(-(-n // batch) for n in sizes) and max(counts) - min(counts) <= 1
    per = {i: [] for i in range(len(sizes))}
    for b in source(torch.Generator().manual_seed(seed)):
        assert 1 <= b.encod.shape[0] <= min(batch, sizes[b.session])
        assert torch.equal(b.encod[:, 0, 0].long(), b.index)
        per[b.session].append(b.index.tolist())
    for i, n in enumerate(sizes):
        assert len(per[i]) == counts[i]
        times = np.bincount([j for idx in per[i] for j in idx], minlength=n)
        assert times.max() - times.min() <= 1  # rounds of permutations: no trial favoured
        assert all(len(set(idx)) == len(idx) for idx in per[i])


def test_sampler_of_one_session_is_the_single_session_order():
    from lfads_core.data.batches import batches

    d = _split(37, 0)
    a = [b.index.tolist() for b in SessionBatches([d], 8, "equal")(torch.Generator().manual_seed(3))]
    b = [b.index.tolist() for b in batches(d, 8, torch.Generator().manual_seed(3))]
    assert a == b


# -- initialisation cache -------------------------------------------------------------------
def test_init_cache_is_kept_per_data_fingerprint(tmp_path):
    data = write_h5(tmp_path / "a.h5", session_arrays(8))
    fp = fingerprint([str(data)])
    calls = []
    cache = InitCache()
    first = cache.get("pcr-k3", lambda: calls.append(1) or {"w": np.eye(3)})
    assert cache.get("pcr-k3", lambda: calls.append(1) or {"w": np.zeros(3)}) is first
    assert calls == [1]
    write_init_cache(tmp_path / "run", cache, fp)
    again = read_init_cache(tmp_path / "run", fp)
    np.testing.assert_array_equal(again.get("pcr-k3", lambda: {"w": np.zeros(3)})["w"], np.eye(3))
    assert not again.new
    write_h5(data, session_arrays(9))  # other data: the entry is computed again
    other = read_init_cache(tmp_path / "run", fingerprint([str(data)]))
    assert other.get("pcr-k3", lambda: {"w": np.zeros(3)})["w"].sum() == 0
    with pytest.raises(ValueError, match="letters, digits"):
        cache.get("a/b", dict)


# -- end to end -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sessions_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sessions")
    shutil.copy(REPO / "examples" / "lorenz.yaml", root / "spec.yaml")
    for i, n in enumerate((40, 24, 16)):
        write_h5(root / "data" / f"day{i + 1}.h5", session_arrays(n, seed=i), bin_size_ms=10.0)
    return root


@pytest.fixture(scope="module")
def multi_run(sessions_dir) -> tuple[Path, subprocess.CompletedProcess]:
    out = sessions_dir / "runs" / "multi"
    res = run_cli(sessions_dir / "spec.yaml", *sets(*TINY, "data.path=data/day*.h5"), "--out", out,
                  cwd=sessions_dir)
    assert_ok(res)
    return out, res


def test_multisession_run_writes_outputs_per_session_and_a_table(multi_run, sessions_dir):
    out, res = multi_run
    assert "training on 80 trials of 3 sessions (40, 24, 16)" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["sessions"]) == ["day1", "day2", "day3"]
    with open(out / "sessions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["session"] for r in rows] == ["day1", "day2", "day3"]
    for row, n in zip(rows, (40, 24, 16)):
        name = row["session"]
        assert int(row["train_trials"]) == n and int(row["valid_trials"]) == 8
        assert float(row["valid_rate_r2"]) == pytest.approx(summary["sessions"][name]["valid_rate_r2"], rel=1e-4)
        assert name in res.stdout  # the table is printed
        with h5py.File(out / f"lfads_output_{name}.h5") as f:
            assert f["train_output_params"].shape == (n, 20, 8)
            assert f["valid_factors"].shape == (8, 20, 4)
            assert f.attrs["session"] == name and f.attrs["data_path"].endswith(f"{name}.h5")
        assert (out / "plots" / f"rates_{name}.png").exists()
    assert not (out / "lfads_output.h5").exists()


def test_validate_lists_the_sessions(sessions_dir):
    res = run_cli("validate", sessions_dir / "spec.yaml", *sets(*TINY, "data.path=data/day*.h5"),
                  cwd=sessions_dir)
    assert_ok(res)
    assert "data: 3 sessions of 20 encoder / 20 reconstruction bins" in res.stdout
    for name, n in (("day1", 40), ("day2", 24), ("day3", 16)):
        assert f"session {name}: " in res.stdout
    assert "train: 40 trials" in res.stdout and "train: 16 trials" in res.stdout


def test_multisession_run_resumes_and_refuses_other_sessions(multi_run, sessions_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(multi_run[0], out)
    args = [sessions_dir / "spec.yaml", *sets(*TINY, "data.path=data/day*.h5", "train.max_epochs=3"),
            "--out", out]
    res = run_cli(*args, cwd=sessions_dir)
    assert_ok(res)
    assert "resuming" in res.stdout and "epoch 3/3" in res.stdout
    state = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert state["session_names"] == ["day1", "day2", "day3"] and state["trainer"]["epoch"] == 3
    # A fourth file matching the glob changes the sessions: refused, nothing lost.
    extra = write_h5(sessions_dir / "data" / "day4.h5", session_arrays(8, seed=9), bin_size_ms=10.0)
    try:
        before = (out / "checkpoints" / "last.pt").read_bytes()
        args[-3] = "train.max_epochs=4"
        res = run_cli(*args, cwd=sessions_dir)
        assert_one_line_error(res, "data.path", "day4", "checkpoint")
        assert (out / "checkpoints" / "last.pt").read_bytes() == before
    finally:
        extra.unlink()


def test_multisession_bad_input_is_one_line_naming_the_file(sessions_dir, tmp_path):
    spec = sessions_dir / "spec.yaml"
    res = run_cli("validate", spec, *sets(*TINY, f"data.path={tmp_path}/none*.h5"), cwd=sessions_dir)
    assert_one_line_error(res, "data.path: no file matches", "none*.h5")
    write_h5(tmp_path / "d" / "a.h5", session_arrays(8), bin_size_ms=10.0)
    write_h5(tmp_path / "d" / "b.h5", session_arrays(8, t=30), bin_size_ms=10.0)
    res = run_cli("validate", spec, *sets(*TINY, f"data.path={tmp_path}/d/*.h5"), cwd=sessions_dir)
    assert_one_line_error(res, "b.h5", "30 encoder", "a.h5 has 20", "same bin counts")
    broken = session_arrays(8)
    del broken["valid_recon_data"]
    write_h5(tmp_path / "e" / "a.h5", session_arrays(8), bin_size_ms=10.0)
    write_h5(tmp_path / "e" / "c.h5", broken, bin_size_ms=10.0)
    res = run_cli("validate", spec, *sets(*TINY, f"data.path=[{tmp_path}/e/a.h5, {tmp_path}/e/c.h5]"),
                  cwd=sessions_dir)
    assert_one_line_error(res, "c.h5", "missing dataset 'valid_recon_data'")
    write_h5(tmp_path / "f" / "a.h5", session_arrays(8), bin_size_ms=10.0)
    write_h5(tmp_path / "f" / "b.h5", session_arrays(8, n=5), bin_size_ms=10.0)
    res = run_cli("validate", spec, *sets(*TINY, f"data.path={tmp_path}/f/*.h5"), cwd=sessions_dir)
    assert_one_line_error(res, "model.readin", "identity", "[5, 8]", "multisession")
