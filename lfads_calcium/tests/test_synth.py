"""``lfads-run synth calcium`` and :func:`lfads_calcium.synth.make_calcium`."""

import math

import h5py
import numpy as np
import pytest

from lfads_calcium.synth import make_calcium

SMALL = dict(n_conditions=6, trials_per_condition=10, n_neurons=8)
PER_SPLIT = ("truth", "truth_rates", "spikes", "spike_amplitudes", "latents", "inds", "cond")


@pytest.fixture
def cli():
    from lfads_core import cli, hooks

    hooks.clear_cache()
    yield cli
    hooks.clear_cache()


def frame_summed(jumps, g, k):
    """True events at bin resolution summed (decayed) over the K bins up to each sample."""
    t = jumps.shape[1]
    return sum(g ** j * np.pad(jumps, ((0, 0), (j, 0), (0, 0)))[:, :t] for j in range(k))


def test_calcium_model():
    files = make_calcium(seed=3, noise_sd=1e-9, **SMALL)
    events, dff = files[""], files["_dff"]
    g = math.exp(-0.01 / dff.attrs["tau_s"])
    x, jumps = dff["train_encod_data"].astype(np.float64), dff["train_spike_amplitudes"]
    # AR(1): c_t = g c_{t-1} + amplitudes of the spikes of bin t; trials start above 0
    assert np.allclose(x[:, 1:] - g * x[:, :-1], jumps[:, 1:], atol=1e-5)
    assert (x[:, 0] > 0).mean() > 0.5
    spikes = dff["train_spikes"]
    assert np.array_equal(spikes > 0, jumps > 0)
    per_spike = jumps[spikes > 0] / spikes[spikes > 0]
    assert 0.1 < np.median(per_spike) < 0.3  # ~0.2 dF/F per spike
    # truth at K = 1: rate x the neuron's mean amplitude
    ratio = dff["train_truth"] / dff["train_truth_rates"]
    assert np.allclose(ratio, ratio[:1, :1], rtol=1e-4)
    assert 2 < dff["train_truth_rates"].mean() / 0.01 < 10  # a few Hz
    for f in (events, dff):
        assert f.attrs["generator"] == "calcium" and f.attrs["bin_size_ms"] == 10.0
        assert f.attrs["frame_bins"] == 1 and f.attrs["seed"] == 3 and "truth_units" in f.attrs
    assert events.attrs["deconvolution"] == "OASIS AR(1)" and events.attrs["true_tau_s"] == 0.3
    assert np.array_equal(events["train_truth"], dff["train_truth"])
    again = make_calcium(seed=3, noise_sd=1e-9, **SMALL)
    assert all(np.array_equal(again["_dff"][k], dff[k], equal_nan=True) for k in dff)


@pytest.mark.parametrize("k", [1, 3])
def test_events_recover_the_spikes(k):
    files = make_calcium(seed=0, frame_bins=k, **SMALL)
    events, dff = files[""], files["_dff"]
    g = math.exp(-0.01 / dff.attrs["tau_s"])
    for split in ("train", "valid"):
        ev = events[f"{split}_encod_data"]
        true = frame_summed(dff[f"{split}_spike_amplitudes"], g, k)
        seen = np.isfinite(ev)
        observed = np.isfinite(dff[f"{split}_encod_data"])
        assert np.array_equal(seen, observed & (np.cumsum(observed, axis=1) > 1))  # not the first
        corr = [np.corrcoef(ev[..., n][seen[..., n]], true[..., n][seen[..., n]])[0, 1]
                for n in range(ev.shape[2])]
        assert np.mean(corr) > 0.85 and min(corr) > 0.7, corr
        # the truth is in the units of the events (K-bin sums at K > 1)
        assert 0.6 < np.nanmean(ev) / events[f"{split}_truth"][seen].mean() < 1.1
        assert np.mean(ev[seen] == 0) > 0.7


def test_cli_writes_both_files(cli, tmp_path, capsys, monkeypatch):
    import lfads_calcium.synth as synth

    full = synth.make_calcium  # 12 of its 60 conditions: the command's wiring, in 1/5 of the time
    monkeypatch.setattr(synth, "make_calcium", lambda **kw: full(**kw, n_conditions=12))
    out = tmp_path / "cal.h5"
    assert cli.main(["synth", "calcium", "--out", str(out), "--frame-bins", "3", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "cal.h5" in printed and "cal_dff.h5" in printed
    dff_path = tmp_path / "cal_dff.h5"
    with h5py.File(out) as ev, h5py.File(dff_path) as dff:
        for f in (ev, dff):
            assert f.attrs["frame_bins"] == 3 and f.attrs["seed"] == 1 and f.attrs["bin_size_ms"] == 10
            assert f.attrs["generator"] == "calcium" and f.attrs["true_tau_s"] == 0.3
            offsets = f.attrs["scan_offsets"]
            for split, n in (("train", 192), ("valid", 48)):
                data = f[f"{split}_encod_data"][()]
                assert data.shape == (n, 100, 40)
                assert np.array_equal(data, f[f"{split}_recon_data"][()], equal_nan=True)
                assert abs(np.isnan(data).mean() - 2 / 3) < 0.015
                seen = (np.arange(100)[:, None] - offsets[None, :]) % 3 == 0
                if f is ev:  # a trial's first observed sample carries no event information
                    seen[offsets, np.arange(40)] = False
                assert np.isfinite(data[:, seen]).all() and np.isnan(data[:, ~seen]).all()
                for key in PER_SPLIT:
                    assert f"{split}_{key}" in f, key
                truth = f[f"{split}_truth"]
                assert truth.shape == (n, 100, 40) and np.isfinite(truth[()]).all()
                assert truth.attrs["units"] == f.attrs["truth_units"]
                assert f[f"{split}_latents"].shape == (n, 100, 3)
        assert ev.attrs["deconvolution"] == "OASIS AR(1)" and ev.attrs["data_units"].startswith("event")
        assert np.nanmin(ev["train_encod_data"][()]) == 0
        assert "deconvolution" not in dff.attrs
    # the events file is exactly what `lfads-run deconvolve` makes of the dF/F file
    again = tmp_path / "again.h5"
    assert cli.main(["deconvolve", str(dff_path), "--out", str(again)]) == 0
    with h5py.File(out) as ev, h5py.File(again) as re:
        assert sorted(ev) == sorted(re)
        assert np.array_equal(ev["valid_encod_data"][()], re["valid_encod_data"][()], equal_nan=True)
        assert ev.attrs["tau_s"] == re.attrs["tau_s"]


@pytest.mark.parametrize("value, how", [("0", "usage"), ("x", "usage"), ("500", "run")])
def test_bad_frame_bins(cli, tmp_path, capsys, value, how):
    argv = ["synth", "calcium", "--out", str(tmp_path / "c.h5"), "--frame-bins", value]
    if how == "usage":
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    else:
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "frame" in err
    assert list(tmp_path.iterdir()) == []
