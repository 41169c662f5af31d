"""``lfads-run deconvolve`` and :mod:`lfads_calcium.deconvolve` (OASIS AR(1))."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from lfads_calcium.deconvolve import (DATA_UNITS, _oasis_g, _noise_sd, deconvolve_traces, estimate_tau,
                                      frame_interval_bins)

BIN_S, TAU = 0.01, 0.3


@pytest.fixture
def cli():
    from lfads_core import cli, hooks

    hooks.clear_cache()
    yield cli
    hooks.clear_cache()


def simulate(seed=0, trials=40, bins=200, neurons=4, rate_hz=3.0, amp=0.5, noise=0.05, frame_bins=1):
    """dF/F of an AR(1) calcium model with known spike amplitudes; with frame_bins K, each neuron
    is observed every K bins at its own offset. Returns (dff, true events at the observed
    samples: the frame-summed decayed amplitudes, NaN elsewhere)."""
    rng = np.random.default_rng(seed)
    g = np.exp(-BIN_S / TAU)
    spikes = rng.poisson(rate_hz * BIN_S, size=(trials, bins, neurons))
    jumps = spikes * amp * rng.lognormal(-0.045, 0.3, size=spikes.shape)
    c = rng.uniform(0, 1, size=(trials, neurons))  # a non-zero start level per trial
    calcium = np.empty(jumps.shape)
    for t in range(bins):
        c = g * c + jumps[:, t]
        calcium[:, t] = c
    dff = calcium + noise * rng.normal(size=calcium.shape)
    true = sum(g ** j * np.pad(jumps, ((0, 0), (j, 0), (0, 0)))[:, :bins] for j in range(frame_bins))
    unobserved = (np.arange(bins)[:, None] - np.arange(neurons)[None, :] % frame_bins) % frame_bins != 0
    dff[:, unobserved] = np.nan
    true[:, unobserved] = np.nan
    return dff, true


def per_neuron_corr(events, true):
    ok = np.isfinite(true) & np.isfinite(events)
    return [np.corrcoef(events[..., n][ok[..., n]], true[..., n][ok[..., n]])[0, 1]
            for n in range(true.shape[-1])]


def first_observed(observed):
    """[trials, T, N] bool: each trial's first observed sample of each neuron."""
    cum = np.cumsum(observed, axis=1)
    return observed & (cum == 1)


def expected_nan(dff):
    """NaN in the events: the input's NaN and each trial's first observed sample."""
    return np.isnan(dff) | first_observed(np.isfinite(dff))


@pytest.mark.parametrize("tau", [TAU, None], ids=["tau-given", "tau-auto"])
def test_recovers_known_events(tau):
    dff, true = simulate()
    events, info = deconvolve_traces(dff, BIN_S, tau, return_info=True)
    assert events.shape == dff.shape and events.dtype == np.float32
    assert np.array_equal(np.isnan(events), expected_nan(dff))
    ok = np.isfinite(events)
    assert np.all(events[ok] >= 0)
    assert min(per_neuron_corr(events, true)) > 0.8
    assert np.mean(events[ok] == 0) > 0.8  # zero-inflated
    assert 0.8 < events[ok].sum() / true[ok].sum() < 1.1  # dF/F units: the calcium jump per event
    assert np.all(info["frame_bins"] == 1)
    assert np.allclose(info["tau_s"], TAU, rtol=0.01 if tau else 0.1)


def calcium(seed, tau, bin_s, trials, bins, neurons=3, rate_hz=3.0, amp=0.3, noise=0.05,
            period_s=None, burst_hz=0.0):
    """dF/F of AR(1) calcium at its steady state from the first sample (a burn-in of 5 tau);
    rates steady, or modulated by a sinusoid of ``period_s`` with a random phase per trial;
    ``burst_hz``: the rate of the first 3 samples of every trial."""
    rng = np.random.default_rng(seed)
    burn = int(5 * tau / bin_s)
    t = np.arange(burn + bins) * bin_s
    rate = np.full((trials, t.size, neurons), rate_hz * bin_s)
    if period_s:
        phase = rng.uniform(0, 2 * np.pi, size=(trials, 1, 1))
        rate = rate * (1 + 0.9 * np.sin(2 * np.pi * t[None, :, None] / period_s + phase))
    if burst_hz:
        rate[:, burn:burn + 3] = burst_hz * bin_s
    jumps = rng.poisson(rate) * amp * rng.lognormal(-0.045, 0.3, size=rate.shape)
    c, g = np.zeros((trials, neurons)), np.exp(-bin_s / tau)
    out = np.empty(jumps.shape)
    for i in range(t.size):
        c = g * c + jumps[:, i]
        out[:, i] = c
    return (out + noise * rng.normal(size=out.shape))[:, burn:]


def neuron_tau(dff, n, bin_s):
    rows = [dff[i, :, n] for i in range(dff.shape[0])]
    y = np.concatenate(rows)
    sn = _noise_sd(rows)
    return estimate_tau(rows, y, bin_s, sn), -bin_s / np.log(_oasis_g(y, sn))


@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_tau_estimate_on_short_trials_of_steady_firing(tau):
    """1.2-s trials at 30 Hz whose calcium never returns to baseline: OASIS's autocovariance
    estimate is short (about 0.5 s for 1 s); the decays after events give tau within 12 % per
    neuron (0.92-1.01 s for 1 s over 9 simulated neurons), 6 % for the median."""
    dff = calcium(0, tau, 1 / 30, trials=300, bins=36)
    ests, oasis = zip(*(neuron_tau(dff, n, 1 / 30) for n in range(dff.shape[-1])))
    assert all(abs(e - tau) < 0.12 * tau for e in ests), ests
    assert abs(np.median(ests) - tau) < 0.06 * tau, ests
    if tau == 1.0:
        assert max(oasis) < 0.8  # what the refit corrects


def test_tau_estimate_with_slowly_modulated_rates():
    """Rates modulated over 4 s in 6-s trials inflate the autocovariance (OASIS: 0.64-0.68 s for
    0.3 s); the decays after events are not fooled (0.29-0.30 s)."""
    dff = calcium(1, 0.3, 1 / 30, trials=60, bins=180, period_s=4.0, rate_hz=6.0)
    ests, oasis = zip(*(neuron_tau(dff, n, 1 / 30) for n in range(dff.shape[-1])))
    assert all(abs(e - 0.3) < 0.12 * 0.3 for e in ests), ests
    assert min(oasis) > 0.5, oasis


def test_tau_estimate_with_a_burst_at_each_trial_start():
    """A large transient at every trial's start and few spikes after it: a too-short starting
    tau makes OASIS put events along the slow decay; those (the trace falls there) are not
    onsets, so the refit lengthens tau instead of keeping it short (0.39 s for 1 s if they were)."""
    dff = calcium(3, 1.0, 1 / 30, trials=150, bins=36, rate_hz=0.5, burst_hz=60.0, amp=0.2)
    ests, oasis = zip(*(neuron_tau(dff, n, 1 / 30) for n in range(dff.shape[-1])))
    assert all(abs(e - 1.0) < 0.1 for e in ests), (ests, oasis)
    assert max(oasis) < 0.7, oasis


def test_auto_uses_the_median_estimate_for_every_neuron():
    """Neurons of noise alone (no decay longer than a sample fits) and flat ones give no estimate
    and do not pull the median."""
    dff = calcium(2, 0.5, 1 / 30, trials=60, bins=36, neurons=7)
    dff[..., 4] *= 0  # flat: no estimate
    dff[..., 5:] = 0.05 * np.random.default_rng(0).normal(size=dff[..., 5:].shape)  # noise
    _, info = deconvolve_traces(dff, 1 / 30, None, return_info=True)
    est = info["tau_s_estimate"]
    assert np.all(np.isnan(est[4:])) and np.all(np.isfinite(est[:4]))
    assert np.all(info["tau_s"][[0, 1, 2, 3, 5, 6]] == np.median(est[:4]))
    assert abs(info["tau_s"][0] - 0.5) < 0.05
    _, given = deconvolve_traces(dff, 1 / 30, 0.5, return_info=True)
    assert np.all(np.isnan(given["tau_s_estimate"])) and np.all(given["tau_s"][:4] == 0.5)


def test_events_near_a_trials_end_are_not_shrunk():
    """OASIS's L1 penalty shrinks an event the more, the fewer samples follow it: 0.40 / 0.24 /
    0.06 of the truth at the last 3 samples of 2-s trials at 15 Hz (tau 1 s) before the refit
    of the amplitudes on OASIS's support; 0.93 / 0.70 / 0.22 with it (and the fitted baseline)."""
    rng = np.random.default_rng(0)
    bin_s, tau, trials, bins, burn = 1 / 15, 1.0, 300, 30, 75
    shape = (trials, burn + bins, 6)
    jumps = rng.poisson(3.0 * bin_s, size=shape) * 0.15 * rng.lognormal(-0.045, 0.3, size=shape)
    c, calcium_ = np.zeros((trials, 6)), np.empty(shape)
    for t in range(shape[1]):
        c = np.exp(-bin_s / tau) * c + jumps[:, t]
        calcium_[:, t] = c
    dff, jumps = (calcium_ + 0.04 * rng.normal(size=shape))[:, burn:], jumps[:, burn:]
    events = deconvolve_traces(dff, bin_s, tau)
    assert np.isnan(events[:, 0]).all()  # the first sample: not observed
    ratio = events[:, 1:].mean(axis=(0, 2)) / jumps[:, 1:].mean(axis=(0, 2))
    assert np.all(ratio[-3:-1] > 0.5), ratio
    assert 0.7 < np.nanmean(events[:, 5:25]) / jumps[:, 5:25].mean() < 1.1


def test_a_slow_indicator_at_a_low_frame_rate_keeps_its_baseline_at_zero():
    """tau 1.5 s at 7.5 Hz, steady 1-6 Hz firing: the calcium never returns to its baseline (0),
    and OASIS's baseline sat ~0.35 dF/F above it, shrinking the events to ~0.6 of the truth (QA
    on a simulation of that regime); the baseline the decays head to keeps them near 1."""
    rng = np.random.default_rng(1)
    bin_s, tau, trials, bins, burn, neurons = 1 / 7.5, 1.5, 200, 30, 30, 6
    shape = (trials, burn + bins, neurons)
    rates = rng.uniform(1, 6, size=neurons)
    jumps = rng.poisson(rates * bin_s, size=shape) * 0.15 * rng.lognormal(-0.045, 0.3, size=shape)
    c, calcium_ = np.zeros((trials, neurons)), np.empty(shape)
    for t in range(shape[1]):
        c = np.exp(-bin_s / tau) * c + jumps[:, t]
        calcium_[:, t] = c
    dff, jumps = (calcium_ + 0.04 * rng.normal(size=shape))[:, burn:], jumps[:, burn:]
    events, info = deconvolve_traces(dff, bin_s, tau, return_info=True)
    assert np.all(np.abs(info["baseline"]) < 0.1), info["baseline"]
    ratio = np.nansum(events[:, 1:], axis=(0, 1)) / jumps[:, 1:].sum(axis=(0, 1))
    assert np.all((ratio > 0.85) & (ratio < 1.15)), ratio


def test_frame_bins_keep_the_nan_pattern():
    dff, true = simulate(frame_bins=3, trials=60)
    events, info = deconvolve_traces(dff, BIN_S, None, return_info=True)
    assert np.array_equal(np.isnan(events), expected_nan(dff))
    assert abs(np.isnan(dff).mean() - 2 / 3) < 0.01
    assert np.all(info["frame_bins"] == 3)
    assert np.allclose(info["tau_s"], TAU, rtol=0.1)
    assert min(per_neuron_corr(events, true)) > 0.8
    assert frame_interval_bins(np.isfinite(dff[..., 1])) == 3


def test_flat_or_empty_neurons():
    dff, _ = simulate(trials=5, bins=50, neurons=3)
    dff[..., 0] = 0.25  # flat: no events
    dff[..., 1] = np.nan  # never observed
    events = deconvolve_traces(dff, BIN_S, TAU)
    assert np.all(events[:, 1:, 0] == 0) and np.all(np.isnan(events[..., 1]))
    assert np.isfinite(events[:, 1:, 2]).all() and np.isnan(events[:, 0]).all()


def write_input(path, frame_bins=3, bin_attr=True):
    dff, _ = simulate(trials=30, bins=60, neurons=3, frame_bins=frame_bins)
    with h5py.File(path, "w") as f:
        if bin_attr:
            f.attrs["bin_size_ms"] = 10.0
        f.attrs["note"] = "my session"
        f.attrs["offsets"] = np.array([0, 1, 2])
        e = f.create_dataset("train_encod_data", data=dff[:20])
        e.attrs["units"] = "dF/F"
        e.attrs["source"] = "suite2p"
        f.create_dataset("train_recon_data", data=dff[:20])
        f.create_dataset("valid_encod_data", data=dff[20:25])
        f.create_dataset("valid_recon_data", data=dff[20:25])
        f.create_dataset("test_encod_data", data=dff[25:, :, :2])  # its own shape: alone
        f.create_dataset("train_truth", data=np.ones((20, 60, 3), np.float32)).attrs["units"] = "x"
        f.create_dataset("train_inds", data=np.arange(20))
        f.create_dataset("scalar", data=3.5)
        grp = f.create_group("meta")
        grp.attrs["animal"] = "m1"
        grp.create_dataset("names", data=np.array([b"a", b"b", b"c"]))
    return dff


def test_file_keeps_every_key_and_attribute(cli, tmp_path, capsys):
    src, out = tmp_path / "dff.h5", tmp_path / "sub" / "events.h5"
    dff = write_input(src)
    assert cli.main(["deconvolve", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 neurons" in printed and "train 20 trials" in printed and "frame interval 3" in printed
    assert "zero events" in printed and "estimated" in printed
    with h5py.File(src) as a, h5py.File(out) as b:
        seen_a, seen_b = [], []
        a.visit(seen_a.append)
        b.visit(seen_b.append)
        assert seen_a == seen_b
        for key, value in a.attrs.items():
            assert np.array_equal(b.attrs[key], value)
        assert b.attrs["deconvolution"] == "OASIS AR(1)" and b.attrs["data_units"] == DATA_UNITS
        assert b.attrs["tau_s"] > 0
        for key in ("train_truth", "train_inds", "scalar", "meta/names"):
            assert np.array_equal(a[key][()], b[key][()])
            assert dict(a[key].attrs) == dict(b[key].attrs)
        assert b["meta"].attrs["animal"] == "m1"
        assert b["train_encod_data"].attrs["source"] == "suite2p"
        assert b["train_encod_data"].attrs["units"] == DATA_UNITS
        for key in ("train_encod_data", "train_recon_data", "valid_encod_data", "test_encod_data"):
            ev, x = b[key][()], a[key][()]
            assert np.array_equal(np.isnan(ev), expected_nan(x)), key
            assert np.nanmin(ev) >= 0 and np.nanmax(ev) > 0
        assert np.array_equal(b["train_encod_data"][()], b["train_recon_data"][()], equal_nan=True)
    del dff
    assert sorted(p.name for p in out.parent.iterdir()) == ["events.h5"]  # no temporary left


def test_given_tau_and_bin_ms(cli, tmp_path, capsys):
    src, out = tmp_path / "dff.h5", tmp_path / "events.h5"
    write_input(src, frame_bins=1, bin_attr=False)
    assert cli.main(["deconvolve", str(src), "--out", str(out), "--tau-s", "0.3", "--bin-ms", "10"]) == 0
    assert "tau 0.3 s (given)" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert f.attrs["tau_s"] == 0.3 and f.attrs["tau_s_source"] == "given"


def test_auto_tau_on_noise_alone_says_to_give_it(cli, tmp_path, capsys):
    src, out = tmp_path / "dff.h5", tmp_path / "events.h5"
    noise = 0.05 * np.random.default_rng(0).normal(size=(40, 50, 3))
    with h5py.File(src, "w") as f:
        f.attrs["bin_size_ms"] = 33.3
        f.create_dataset("train_encod_data", data=noise[:30])
        f.create_dataset("valid_encod_data", data=noise[30:])
    assert cli.main(["deconvolve", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "no decay could be fitted to events" in text and "--tau-s" in text, text
    with h5py.File(out) as f:
        assert f.attrs["tau_s_source"].startswith("OASIS autocovariance") and f.attrs["tau_s"] > 0


def test_events_are_not_deconvolved_again(cli, tmp_path, capsys):
    src, events, again = tmp_path / "dff.h5", tmp_path / "events.h5", tmp_path / "again.h5"
    write_input(src)
    assert cli.main(["deconvolve", str(src), "--out", str(events), "--tau-s", "0.3"]) == 0
    capsys.readouterr()
    assert cli.main(["deconvolve", str(events), "--out", str(again)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {events}: holds events already (file attribute deconvolution = "
                   f"'OASIS AR(1)'); deconvolve the dF/F file"), err
    assert not again.exists()


def _not_hdf5(p):
    p.write_text("hello")


def _no_encod(p):
    with h5py.File(p, "w") as f:
        f.attrs["bin_size_ms"] = 10.0
        f.create_dataset("train_data", data=np.zeros((2, 3, 4)))


def _wrong_shape(p):
    with h5py.File(p, "w") as f:
        f.attrs["bin_size_ms"] = 10.0
        f.create_dataset("train_encod_data", data=np.zeros((2, 3)))


def _no_bin(p):
    write_input(p, bin_attr=False)


@pytest.mark.parametrize("make, extra, words", [
    (None, [], "file not found"),
    (_not_hdf5, [], "not a readable HDF5 file"),
    (_no_encod, [], "_encod_data"),
    (_wrong_shape, [], "3-d array"),
    (_no_bin, [], "--bin-ms"),
    (write_input, ["--tau-s", "0"], "--tau-s must be a positive"),
    (write_input, ["--tau-s", "fast"], "--tau-s must be a positive"),
    (write_input, ["--bin-ms", "-2"], "--bin-ms must be a positive"),
    (write_input, ["--tau-s", "400"], "--tau-s 400: calcium indicators decay in 0.05 to a few seconds"),
    (write_input, ["--bin-ms", "0.033"], "--bin-ms 0.033: imaging bins are milliseconds long"),
    (write_input, ["SAME"], "is the input file"),
    (write_input, ["EXISTS"], "exists (add --force to replace it)"),
    (write_input, ["BLOCKED"], "not a folder"),
    (write_input, ["READ-ONLY"], "is not writable"),
], ids=["missing", "not-hdf5", "no-encod", "shape", "no-bin-size", "tau-zero", "tau-text", "bin-ms",
        "tau-in-ms", "bin-in-s",
        "out-is-in", "out-exists", "out-under-a-file", "out-folder-read-only"])
def test_errors_are_one_line(cli, tmp_path, capsys, monkeypatch, make, extra, words):
    src = tmp_path / "in.h5"
    out = tmp_path / "out.h5"
    if make is not None:
        make(src)
    if extra == ["SAME"]:
        out, extra = src, []
    elif extra == ["EXISTS"]:
        out.write_text("events of an earlier run")
        extra = []
    elif extra == ["BLOCKED"]:
        (tmp_path / "plain").write_text("a file, not a folder")
        out, extra = tmp_path / "plain" / "out.h5", []
    elif extra == ["READ-ONLY"]:  # root may write anywhere: fake a folder it may not
        from lfads_calcium import deconvolve

        real = deconvolve.os.access
        monkeypatch.setattr(deconvolve.os, "access",
                            lambda p, mode: False if Path(p) == tmp_path else real(p, mode))
        extra = []
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["deconvolve", str(src), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert words in err
    assert (str(out) in err) if words in ("is the input file", "not a folder", "is not writable",
                                          "exists (add --force to replace it)") else \
        (str(src) in err or "--" in words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    if extra == [] and words.startswith("exists"):
        assert out.read_text() == "events of an earlier run"
        assert cli.main(["deconvolve", str(src), "--out", str(out), "--force"]) == 0
        assert h5py.is_hdf5(out)


def test_help_lists_deconvolve(cli, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "deconvolve" in out and "lfads-calcium" in out
    with pytest.raises(SystemExit):
        cli.main(["deconvolve", "--help"])
    assert "--tau-s" in capsys.readouterr().out


def test_hooks_module_is_light():
    import subprocess
    import sys

    code = ("import sys, lfads_calcium.hooks as h; h.lfads_commands(); h.lfads_synth_datasets(); "
            "print(sorted(m for m in ('numpy', 'h5py', 'oasis', 'scipy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent)
    assert out.stdout.strip() == "[]"
