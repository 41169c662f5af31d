"""Tests for lfads_core.output.plots: each function writes a non-empty PNG."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lfads_core.output.plots import plot_factors, plot_rates, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000


def open_pyplot_figures() -> list[int]:
    """Figure numbers held by pyplot, if anything imported it."""
    plt = sys.modules.get("matplotlib.pyplot")
    return list(plt.get_fignums()) if plt is not None else []


@pytest.fixture
def rates_data():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.05, 0.5, size=(4, 20, 6))
    rates = truth * rng.uniform(0.8, 1.2, size=truth.shape)
    spikes = rng.poisson(truth).astype(np.float32)
    return spikes, rates, truth


def test_plot_rates_with_truth_ms_axis(tmp_path, rates_data):
    spikes, rates, truth = rates_data
    before = open_pyplot_figures()
    out = plot_rates(tmp_path / "rates.png", spikes, rates, truth=truth, bin_ms=10.0)
    assert out == tmp_path / "rates.png"
    assert_png(out)
    assert open_pyplot_figures() == before


def test_plot_rates_without_truth_few_trials_given_neurons(tmp_path, rates_data):
    spikes, rates, _ = rates_data
    out = plot_rates(tmp_path / "sub" / "r.png", spikes[:2], rates[:2], trials=(0, 1, 5),
                     neurons=[5, 0])
    assert_png(out)


def test_plot_rates_shape_mismatch(tmp_path, rates_data):
    spikes, rates, truth = rates_data
    with pytest.raises(ValueError):
        plot_rates(tmp_path / "bad.png", spikes, rates[:, :10])
    with pytest.raises(ValueError):
        plot_rates(tmp_path / "bad.png", spikes, rates, truth=truth[:2])


@pytest.mark.parametrize("n_factors", [1, 2, 3, 8])
def test_plot_factors(tmp_path, n_factors):
    rng = np.random.default_rng(n_factors)
    factors = np.cumsum(rng.normal(size=(12, 25, n_factors)), axis=1)
    out = plot_factors(tmp_path / f"f{n_factors}.png", factors, n_trials=5)
    assert_png(out)


def test_plot_factors_fewer_trials_than_requested(tmp_path):
    factors = np.random.default_rng(0).normal(size=(3, 10, 4))
    assert_png(plot_factors(tmp_path / "f.png", factors))


def test_plot_training_curves_from_csv_strings(tmp_path):
    rows = []
    for epoch in range(6):
        rows.append({
            "epoch": str(epoch),
            "train_loss": str(10.0 / (epoch + 1)),
            "valid_loss": str(11.0 / (epoch + 1)),
            "train_recon": f"{5.0 - 0.3 * epoch}",
            "valid_recon": f"{5.5 - 0.3 * epoch}",
            "valid_recon_smooth": "" if epoch == 0 else f"{5.6 - 0.3 * epoch}",
            "kl_ic": f"{0.5 + epoch}",
            "kl_co": "",
            "lr": f"{1e-2 * 0.9 ** epoch}",
            "kl_ramp": f"{min(1.0, epoch / 4)}",
            "l2_ramp": "not-a-number",
        })
    before = open_pyplot_figures()
    assert_png(plot_training_curves(tmp_path / "curves.png", rows))
    assert open_pyplot_figures() == before


def test_plot_training_curves_sparse_and_empty(tmp_path):
    rows = [{"epoch": 0, "valid_recon": 3.0}, {"epoch": 1}, {"valid_recon": 2.5, "kl_co": 0.0}]
    assert_png(plot_training_curves(tmp_path / "sparse.png", rows))
    assert_png(plot_training_curves(tmp_path / "empty.png", []))
