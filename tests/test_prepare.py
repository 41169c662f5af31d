"""``lfads-run prepare``: spike times (NWB, .npz, CSV) and a trials table to the input HDF5 file.

Counts are checked against hand-made spike times (bin edges, windows before a trial's start,
overlapping windows) and against an independent np.histogram reference; the split, held-out
neurons, ragged trials, the written keys and attributes, and one-line errors (exit code 2)
through ``lfads_core.cli.main``.
"""

from __future__ import annotations

import csv
import sys
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from lfads_core.cli import main
from lfads_core.data.h5 import trailing_padding
from lfads_core.prepare.events import bin_spikes, bins_in
from lfads_core.prepare.split import choose_heldout, split_trials

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------------------- #
def run(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main(["prepare", *map(str, args)])
    except SystemExit as exc:  # usage errors of argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def write_npz(path: Path, units: dict[int, list[float]], all_units=None, **extra) -> Path:
    ids = np.concatenate([[u] * len(t) for u, t in units.items()]).astype(np.int64)
    times = np.concatenate([np.asarray(t, dtype=np.float64) for t in units.values()])
    arrays = {"spike_times": times, "unit_ids": ids, **extra}
    if all_units is not None:
        arrays["units"] = np.asarray(all_units)
    np.savez(path, **arrays)
    return path


def write_trials(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_nwb(path: Path, units: dict[int, list[float]], rows: list[dict], hand=None) -> Path:
    """An NWB file: units with spike times, trials with start/stop/go_cue_time/condition (and a
    ragged column), optionally a 2-d hand position at 1 kHz in processing/behavior/Position."""
    pynwb = pytest.importorskip("pynwb")
    from pynwb.behavior import Position

    nwb = pynwb.NWBFile(session_description="test", identifier="test",
                        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    for uid, times in units.items():
        nwb.add_unit(spike_times=list(times), id=uid)
    extra = [k for k in rows[0] if k not in ("start_time", "stop_time")]
    for k in extra:
        nwb.add_trial_column(k, f"column {k}")
    nwb.add_trial_column("events", "a ragged column", index=True)
    for row in rows:
        nwb.add_trial(**row, events=[1.0, 2.0])
    if hand is not None:
        module = nwb.create_processing_module("behavior", "behaviour")
        pos = Position(name="Position")
        pos.create_spatial_series(name="hand", data=hand, reference_frame="origin", rate=1000.0,
                                  starting_time=0.0)
        module.add(pos)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def session(n_trials=24, n_units=6, seed=0, ragged=False):
    """Random spikes over a session and trials of 0.5 s (or 0.3-0.5 s), with a go cue and one of
    three conditions; returns (units, trial rows)."""
    rng = np.random.default_rng(seed)
    rows, t = [], 0.5
    for i in range(n_trials):
        length = float(rng.uniform(0.3, 0.5)) if ragged else 0.5
        rows.append({"start_time": round(t, 3), "stop_time": round(t + length, 3),
                     "go_cue_time": round(t + 0.2, 3), "condition": ["left", "right", "up"][i % 3],
                     "reach_speed": float(i)})
        t += 0.75
    units = {10 + u: np.sort(rng.uniform(0, t + 0.5, size=int(rng.integers(20, 200)))).tolist()
             for u in range(n_units)}
    units[10 + n_units] = []  # a unit with no spikes is fine
    return units, rows


def reference(units: dict, starts, n_bins, bin_s):
    """Counts by np.histogram, trial by trial (bins [e_k, e_k+1), last bin half-open too)."""
    out = np.full((len(starts), max(n_bins), len(units)), np.nan)
    for i, (s, n) in enumerate(zip(starts, n_bins)):
        edges = s + bin_s * np.arange(n + 1)
        for u, times in enumerate(units.values()):
            times = np.asarray(times)
            out[i, :n, u] = np.histogram(times[times < edges[-1]], bins=edges)[0]
    return out


def load(path: Path) -> tuple[dict, dict]:
    with h5py.File(path) as f:
        return {k: f[k][()] for k in f}, dict(f.attrs)


def one_line_error(code: int, err: str) -> str:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --------------------------------------------------------------------------------------- #
# Binning
# --------------------------------------------------------------------------------------- #
def test_counts_exact_on_bin_edges(tmp_path, capsys):
    # trial 1.0-1.05 s, 10 ms bins: a spike on an edge counts in the later bin, one at the end of
    # the last bin in none; 1.01/1.02/1.03 are not exact in binary floating point.
    units = {3: [0.999, 1.0, 1.0099, 1.01, 1.02, 1.03, 1.0499, 1.05, 1.2], 4: [1.04, 1.04]}
    src = write_npz(tmp_path / "s.npz", units)
    trials = write_trials(tmp_path / "t.csv", [{"start_time": 1.0, "stop_time": 1.05},
                                               {"start_time": 1.15, "stop_time": 1.25}])
    code, out, err = run(capsys, src, "--trials", trials, "--out", tmp_path / "o.h5", "--bin-ms", 10,
                         "--valid-fraction", 0.5)
    assert code == 0, err
    d, attrs = load(tmp_path / "o.h5")
    counts = np.zeros((2, 10, 2))
    counts[d["train_inds"]] = d["train_recon_data"]
    counts[d["valid_inds"]] = d["valid_recon_data"]
    np.testing.assert_array_equal(counts[0, :5, 0], [2, 1, 1, 1, 1])   # 1.0, 1.0099 | 1.01 | ...
    np.testing.assert_array_equal(counts[0, :5, 1], [0, 0, 0, 0, 2])
    np.testing.assert_array_equal(counts[1, :10, 0], [0, 0, 0, 0, 0, 1, 0, 0, 0, 0])  # 1.2
    assert np.isnan(counts[0, 5:]).all() and not np.isnan(counts[1]).any()
    assert "ragged trials: 1" in out


def test_window_before_trial_start_counts_the_recording(tmp_path, capsys):
    # the window starts 20 ms before start_time: spikes before the trial's start count
    units = {1: [0.975, 0.985, 0.99, 1.0, 1.015, 1.03]}
    src = write_npz(tmp_path / "s.npz", units)
    trials = write_trials(tmp_path / "t.csv", [{"start_time": 1.0, "stop_time": 1.01},
                                               {"start_time": 3.0, "stop_time": 3.01}])
    code, _, err = run(capsys, src, "--trials", trials, "--out", tmp_path / "o.h5", "--bin-ms", 10,
                       "--window", -20, 30, "--valid-fraction", 0.5)
    assert code == 0, err
    d, attrs = load(tmp_path / "o.h5")
    first = d["train_recon_data"] if d["train_inds"][0] == 0 else d["valid_recon_data"]
    np.testing.assert_array_equal(first[0, :, 0], [1, 1, 1, 1, 0])  # 1.03 is the window's end
    np.testing.assert_array_equal(attrs["window_ms"], [-20, 30])
    assert d["train_recon_data"].shape[1] == 5 and not np.isnan(d["train_recon_data"]).any()


def test_bin_spikes_overlapping_trials_and_reference():
    rng = np.random.default_rng(1)
    units = {u: np.sort(rng.uniform(0, 10, 300)) for u in range(4)}
    starts = np.sort(rng.uniform(0, 9, 30))  # windows overlap
    n_bins = rng.integers(1, 40, 30)
    got = bin_spikes(list(units.values()), starts, n_bins, 0.02)
    np.testing.assert_array_equal(got, reference(units, starts, n_bins, 0.02))
    assert bins_in(np.array([0.05, 0.0499, np.nan, -1.0]), 0.01).tolist() == [5, 4, 0, 0]


# --------------------------------------------------------------------------------------- #
# NWB
# --------------------------------------------------------------------------------------- #
def test_nwb_alignment_window_and_keys(tmp_path, capsys):
    units, rows = session()
    hand = np.stack([np.arange(20000) / 1000.0, -np.arange(20000) / 1000.0], axis=1)
    src = write_nwb(tmp_path / "rec.nwb", units, rows, hand=hand)
    out_h5 = tmp_path / "o.h5"
    code, out, err = run(capsys, src, "--out", out_h5, "--bin-ms", 10, "--align", "go_cue_time",
                         "--window", -100, 250, "--cond", "condition", "--behavior", "reach_speed",
                         "--behavior-series", "hand", "--seed", 3)
    assert code == 0, err
    d, attrs = load(out_h5)
    n_units = len(units)
    assert set(d) == {"train_encod_data", "train_recon_data", "valid_encod_data", "valid_recon_data",
                      "train_inds", "valid_inds", "train_cond", "valid_cond", "cond_labels",
                      "train_behavior", "valid_behavior", "train_behavior_series",
                      "valid_behavior_series", "unit_ids", "heldout_units"}
    assert d["train_recon_data"].shape == (19, 35, n_units) and d["valid_recon_data"].shape == (5, 35, n_units)
    assert d["train_recon_data"].dtype == np.float32 and d["train_inds"].dtype == np.int64
    np.testing.assert_array_equal(d["train_encod_data"], d["train_recon_data"])
    # counts against the reference, trial by trial, in original order
    go = np.array([r["go_cue_time"] for r in rows])
    ref = reference(units, go - 0.1, [35] * len(rows), 0.01)
    np.testing.assert_array_equal(d["train_recon_data"], ref[d["train_inds"]])
    np.testing.assert_array_equal(d["valid_recon_data"], ref[d["valid_inds"]])
    # conditions: codes of the sorted labels
    assert [s.decode() if isinstance(s, bytes) else s for s in d["cond_labels"]] == ["left", "right", "up"]
    np.testing.assert_array_equal(d["train_cond"], d["train_inds"] % 3)
    # behaviour: per-trial column, and the hand position averaged in each bin
    np.testing.assert_array_equal(d["valid_behavior"][:, 0], d["valid_inds"].astype(float))
    series = d["valid_behavior_series"]
    assert series.shape == (5, 35, 2) and series.dtype == np.float32
    start = go[d["valid_inds"]] - 0.1
    expect = start[:, None] + 0.01 * np.arange(35)[None, :] + 0.0045  # mean of 10 samples at 1 kHz
    np.testing.assert_allclose(series[:, :, 0], expect, atol=1e-5)
    np.testing.assert_allclose(series[:, :, 1], -expect, atol=1e-5)
    # attributes
    assert attrs["bin_size_ms"] == 10 and attrs["align"] == "go_cue_time" and attrs["seed"] == 3
    assert attrs["source"] == str(src.resolve()) and attrs["source_format"] == "nwb"
    assert attrs["valid_fraction"] == 0.2 and attrs["n_heldout"] == 0 and attrs["lfads_core_version"]
    assert attrs["created"] and attrs["command"].startswith("lfads-run prepare ")
    assert "--window -100 250" in attrs["command"] and "--cond condition" in attrs["command"]
    assert list(attrs["behavior_columns"]) == ["reach_speed"] and attrs["cond_column"] == "condition"
    # summary
    assert f"wrote {out_h5}" in out and "train 19, valid 5" in out and "bins: 35" in out
    assert f"{n_units} held in, 0 held out" in out and "spikes per bin" in out and "ragged trials: 0" in out


def test_nwb_ragged_trials_without_window(tmp_path, capsys):
    units, rows = session(ragged=True)
    src = write_nwb(tmp_path / "rec.nwb", units, rows)
    code, out, err = run(capsys, src, "--out", tmp_path / "o.h5", "--bin-ms", 20)
    assert code == 0, err
    d, attrs = load(tmp_path / "o.h5")
    lengths = bins_in(np.array([r["stop_time"] - r["start_time"] for r in rows]), 0.02)
    assert d["train_recon_data"].shape[1] == lengths.max()
    for split in ("train", "valid"):
        for key in ("encod", "recon"):
            arr = d[f"{split}_{key}_data"]
            assert trailing_padding(np.isnan(arr))
            np.testing.assert_array_equal((~np.isnan(arr[:, :, 0])).sum(axis=1), lengths[d[f"{split}_inds"]])
    starts = np.array([r["start_time"] for r in rows])
    ref = reference(units, starts, lengths, 0.02)
    np.testing.assert_array_equal(d["train_recon_data"], ref[d["train_inds"]])
    assert attrs["stop_column"] == "stop_time" and "window_ms" not in attrs
    assert f"ragged trials: {int((lengths < lengths.max()).sum())}" in out


def test_output_passes_validate(tmp_path, capsys):
    # ragged trials (trailing NaN) and held-out neurons, accepted by lfads-run validate
    units, rows = session(ragged=True)
    src = write_nwb(tmp_path / "rec.nwb", units, rows)
    code, _, err = run(capsys, src, "--out", tmp_path / "o.h5", "--bin-ms", 20, "--heldout-neurons", 2)
    assert code == 0, err
    spec = yaml.safe_load((REPO / "examples" / "lorenz.yaml").read_text())
    spec["data"] = {"path": str(tmp_path / "o.h5"), "batch_size": 8}
    spec["output"] = str(tmp_path / "run")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    small = ["model.encoder.ic_enc_dim=8", "model.encoder.ci_enc_dim=4", "model.encoder.ic_dim=4",
             "model.generator.gen_dim=8", "model.generator.con_dim=4", "model.generator.co_dim=2",
             "model.generator.fac_dim=4", "train.device=cpu"]
    code = main(["validate", str(spec_path), *[a for s in small for a in ("--set", s)]])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "spec ok" in out


def test_nwb_without_pynwb_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "rec.nwb").write_bytes(b"not used")
    monkeypatch.setitem(sys.modules, "pynwb", None)  # import pynwb raises ImportError
    line = one_line_error(*run(capsys, tmp_path / "rec.nwb", "--out", tmp_path / "o.h5", "--bin-ms", 10)[::2])
    assert 'pip install "lfads-core[nwb]"' in line


# --------------------------------------------------------------------------------------- #
# Split and held-out neurons
# --------------------------------------------------------------------------------------- #
def test_split_stratified_seeded_reproducible():
    codes = np.repeat(np.arange(5), [10, 10, 20, 5, 15])  # 60 trials
    train, valid = split_trials(60, 0.2, seed=7, codes=codes)
    assert len(valid) == 12 and len(train) == 48
    assert sorted(np.concatenate([train, valid]).tolist()) == list(range(60))
    np.testing.assert_array_equal(np.bincount(codes[valid], minlength=5), [2, 2, 4, 1, 3])
    again = split_trials(60, 0.2, seed=7, codes=codes)
    np.testing.assert_array_equal(valid, again[1])
    other = split_trials(60, 0.2, seed=8, codes=codes)[1]
    assert not np.array_equal(valid, other)
    np.testing.assert_array_equal(np.bincount(codes[other], minlength=5), [2, 2, 4, 1, 3])
    # shares rounded: largest remainders get the trials left over; each split keeps a trial
    valid = split_trials(10, 0.25, seed=0, codes=np.repeat([0, 1, 2], [4, 3, 3]))[1]
    assert len(valid) == 2  # round(2.5) == 2
    assert len(split_trials(3, 0.01, seed=0)[1]) == 1 and len(split_trials(3, 0.99, seed=0)[0]) == 1


def test_heldout_neurons_last_channels(tmp_path, capsys):
    units, rows = session(n_units=8)
    src = write_npz(tmp_path / "s.npz", units, all_units=list(units))
    trials = write_trials(tmp_path / "t.csv", rows)
    base = [src, "--trials", trials, "--bin-ms", 10, "--window", 0, 300, "--seed", 5]
    assert run(capsys, *base, "--out", tmp_path / "all.h5")[0] == 0
    code, out, err = run(capsys, *base, "--out", tmp_path / "ho.h5", "--heldout-neurons", 3)
    assert code == 0, err
    full, _ = load(tmp_path / "all.h5")
    d, attrs = load(tmp_path / "ho.h5")
    ids = np.array(list(units))
    chosen = ids[choose_heldout(len(ids), 3, 5)]
    assert attrs["n_heldout"] == 3 and d["heldout_units"].tolist() == chosen.tolist()
    held_in = [u for u in ids if u not in chosen]
    assert d["unit_ids"].tolist() == held_in + chosen.tolist()
    for split in ("train", "valid"):
        recon, encod = d[f"{split}_recon_data"], d[f"{split}_encod_data"]
        assert recon.shape[2] == 9 and encod.shape[2] == 6
        np.testing.assert_array_equal(encod, recon[:, :, :6])
        # the same trials as without held-out neurons (separate random streams), channels reordered
        np.testing.assert_array_equal(d[f"{split}_inds"], full[f"{split}_inds"])
        pos = [ids.tolist().index(u) for u in d["unit_ids"]]
        np.testing.assert_array_equal(recon, full[f"{split}_recon_data"][:, :, pos])
    assert "6 held in, 3 held out" in out


# --------------------------------------------------------------------------------------- #
# Plain arrays
# --------------------------------------------------------------------------------------- #
def test_csv_spikes_and_silent_units_match_npz(tmp_path, capsys):
    units, rows = session(n_units=3)
    trials = write_trials(tmp_path / "t.csv", rows)
    spikes = tmp_path / "spikes.csv"
    with open(spikes, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["unit", "time"])
        for u, times in units.items():
            w.writerows([u, repr(t)] for t in times)
    # the npz lists every unit (13 has no spikes; the CSV cannot show it)
    src = write_npz(tmp_path / "s.npz", units, all_units=list(units))
    opts = ["--trials", trials, "--bin-ms", 25, "--cond", "condition"]
    assert run(capsys, spikes, "--out", tmp_path / "a.h5", *opts)[0] == 0
    assert run(capsys, src, "--out", tmp_path / "b.h5", *opts)[0] == 0
    a, _ = load(tmp_path / "a.h5")
    b, attrs = load(tmp_path / "b.h5")
    assert b["unit_ids"].tolist() == list(units) and a["unit_ids"].tolist() == list(units)[:-1]
    np.testing.assert_array_equal(a["train_recon_data"], b["train_recon_data"][:, :, :-1])
    assert np.all(b["train_recon_data"][:, :, -1] == 0)
    assert attrs["source_format"] == "npz" and attrs["trials_source"] == str(trials.resolve())


def test_trials_with_nan_alignment_are_dropped(tmp_path, capsys):
    units, rows = session(n_trials=6)
    rows[2]["go_cue_time"] = ""  # an aborted trial
    src = write_npz(tmp_path / "s.npz", units)
    trials = write_trials(tmp_path / "t.csv", rows)
    code, out, err = run(capsys, src, "--trials", trials, "--out", tmp_path / "o.h5", "--bin-ms", 10,
                         "--align", "go_cue_time", "--window", 0, 100)
    assert code == 0, err
    d, attrs = load(tmp_path / "o.h5")
    assert sorted(np.concatenate([d["train_inds"], d["valid_inds"]]).tolist()) == [0, 1, 3, 4, 5]
    assert "dropped trials: 1 (no go_cue_time (NaN): 1)" in out and attrs["n_trials_dropped"] == 1


# --------------------------------------------------------------------------------------- #
# Errors: one line, exit code 2, nothing written
# --------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("extra, expect", [
    (["--align", "move_onset"], "--align move_onset: no such column in"),
    (["--cond", "target"], "--cond target: no such column in"),
    (["--window", 100, 100], "--window 100 100: empty"),
    (["--window", 0, 105], "not a whole number of --bin-ms 10 bins"),
    (["--heldout-neurons", 6], "--heldout-neurons 6: must be fewer than the 6 units"),
    (["--behavior", "condition"], "--behavior condition: column of"),
    (["--window", 0, 100, "--stop", "stop_time"], "--stop: only without --window"),
])
def test_errors_are_one_line(tmp_path, capsys, extra, expect):
    units, rows = session(n_trials=6)
    src = write_npz(tmp_path / "s.npz", units)
    trials = write_trials(tmp_path / "t.csv", rows)
    line = one_line_error(*run(capsys, src, "--trials", trials, "--out", tmp_path / "o.h5",
                               "--bin-ms", 10, *extra)[::2])
    assert expect in line, line
    if "no such column" in expect:
        assert "(columns: start_time, stop_time, go_cue_time, condition, reach_speed)" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz", "t.csv"]  # no output, no temp file


def test_errors_about_files(tmp_path, capsys):
    units, rows = session(n_trials=4)
    src = write_npz(tmp_path / "s.npz", units)
    trials = write_trials(tmp_path / "t.csv", rows)
    out = tmp_path / "o.h5"

    def error(*args) -> str:
        return one_line_error(*run(capsys, *args)[::2])

    assert "--trials: required for .npz input" in error(src, "--out", out, "--bin-ms", 10)
    assert "unknown kind of file '.mat'" in error(tmp_path / "x.mat", "--out", out, "--bin-ms", 10)
    assert "no such file" in error(tmp_path / "x.npz", "--out", out, "--bin-ms", 10)
    # every trial ends before its first bin is whole
    short = write_trials(tmp_path / "short.csv", [{"start_time": 1.0, "stop_time": 1.005}] * 3)
    line = error(src, "--trials", short, "--out", out, "--bin-ms", 10)
    assert "no trials left of 3" in line and "shorter than one bin" in line
    # the default stop column is named with a hint
    nostop = write_trials(tmp_path / "nostop.csv", [{"start_time": 1.0}, {"start_time": 2.0}])
    line = error(src, "--trials", nostop, "--out", out, "--bin-ms", 10)
    assert "--stop stop_time: no such column" in line and "(columns: start_time)" in line
    # an existing output needs --force
    assert run(capsys, src, "--trials", trials, "--out", out, "--bin-ms", 10)[0] == 0
    assert "exists (add --force" in error(src, "--trials", trials, "--out", out, "--bin-ms", 10)
    assert run(capsys, src, "--trials", trials, "--out", out, "--bin-ms", 20, "--force")[0] == 0
    assert load(out)[1]["bin_size_ms"] == 20
    # npz without the spike arrays; usage errors of argparse are one line too
    np.savez(tmp_path / "bad.npz", times=np.zeros(3))
    assert "no array 'spike_times' or 'unit_ids'" in error(tmp_path / "bad.npz", "--trials", trials,
                                                          "--out", out, "--bin-ms", 10, "--force")
    assert "--bin-ms" in error(src, "--out", out, "--bin-ms", 0)
    assert "--valid-fraction" in error(src, "--out", out, "--bin-ms", 10, "--valid-fraction", 1)


def test_nwb_errors(tmp_path, capsys):
    units, rows = session(n_trials=4)
    src = write_nwb(tmp_path / "rec.nwb", units, rows)
    out = tmp_path / "o.h5"
    line = one_line_error(*run(capsys, src, "--out", out, "--bin-ms", 10, "--cond", "events")[::2])
    assert "--cond events: column of" in line and "ragged" in line
    line = one_line_error(*run(capsys, src, "--out", out, "--bin-ms", 10, "--behavior-series", "eye")[::2])
    assert "--behavior-series eye: no such TimeSeries" in line
    (tmp_path / "junk.nwb").write_bytes(b"this is not HDF5")
    line = one_line_error(*run(capsys, tmp_path / "junk.nwb", "--out", out, "--bin-ms", 10)[::2])
    assert "cannot read as an NWB file" in line


def test_every_option_has_help(capsys):
    from lfads_core.cli import _sub_parser

    parser = _sub_parser("prepare")
    assert all(action.help for action in parser._actions)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "  prepare" in capsys.readouterr().out


def test_times_in_other_units_or_clocks(tmp_path, capsys, monkeypatch):
    """Trial times in ms (read as seconds) make an array beyond the free memory: an error before
    anything is allocated; spikes outside every trial: an error; most trials empty, or spike
    times in ms: warnings. --out may not be the --trials file."""
    units, rows = session(n_trials=6)
    src = write_npz(tmp_path / "s.npz", units)
    out = tmp_path / "o.h5"
    ms = write_trials(tmp_path / "ms.csv", [{"start_time": r["start_time"] * 1000,
                                             "stop_time": r["stop_time"] * 1000} for r in rows])
    import os as _os
    page = _os.sysconf("SC_PAGE_SIZE")
    monkeypatch.setattr(_os, "sysconf", lambda name: 2**28 // page if name == "SC_AVPHYS_PAGES" else page)
    line = one_line_error(*run(capsys, src, "--trials", ms, "--out", out, "--bin-ms", 0.1)[::2])
    assert "the longest trial is 500 s, 5000000 bins of 0.1 ms" in line and "are the trial times in seconds?" in line
    monkeypatch.undo()
    late = write_trials(tmp_path / "late.csv", [{"start_time": 1e4 + i, "stop_time": 1e4 + i + 0.5} for i in range(4)])
    line = one_line_error(*run(capsys, src, "--trials", late, "--out", out, "--bin-ms", 10)[::2])
    assert "no spike falls in any trial (spike times" in line and "trials 10000 to 10003.5 s" in line
    assert not out.exists()
    ms_spikes = write_npz(tmp_path / "ms.npz", {u: [t * 1000 for t in ts] for u, ts in units.items()})
    trials = write_trials(tmp_path / "t.csv", rows)
    code, text, err = run(capsys, ms_spikes, "--trials", trials, "--out", out, "--bin-ms", 10)
    assert code == 0, err
    assert "warning: " in text and "are spike and trial times both in seconds" in text
    assert "of the spikes lie in the trials' time range" in text
    line = one_line_error(*run(capsys, src, "--trials", trials, "--out", trials, "--bin-ms", 10, "--force")[::2])
    assert "is the --trials file" in line
    silent = write_npz(tmp_path / "silent.npz", {1: [], 2: []}, all_units=[1, 2])
    line = one_line_error(*run(capsys, silent, "--trials", trials, "--out", tmp_path / "s.h5", "--bin-ms", 10)[::2])
    assert "its 2 units have no spikes at all" in line
    assert trials.read_text().startswith("start_time,")  # untouched


def test_trials_outside_the_recording_are_a_warning(tmp_path, capsys):
    """A trial wholly after the last spike (or before the first) is written without any spike:
    a warning naming how many (fewer than half were silent before)."""
    units, rows = session(n_trials=12)
    src = write_npz(tmp_path / "s.npz", units)
    late = [*rows[:10], *({**r, "start_time": r["start_time"] + 1e4, "stop_time": r["stop_time"] + 1e4,
                           "go_cue_time": r["go_cue_time"] + 1e4} for r in rows[10:])]
    trials = write_trials(tmp_path / "t.csv", late)
    code, text, err = run(capsys, src, "--trials", trials, "--out", tmp_path / "o.h5", "--bin-ms", 10)
    assert code == 0, err
    assert "warning: 2 of 12 trials lie wholly outside the recorded spikes (spike times" in text
    code, text, err = run(capsys, src, "--trials", write_trials(tmp_path / "ok.csv", rows), "--out",
                          tmp_path / "ok.h5", "--bin-ms", 10)
    assert code == 0 and "lie wholly outside" not in text, text + err
