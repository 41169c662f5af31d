"""Tests for lfads_core.output.plots: each function writes a PNG, and each figure says what it
shows (split, trial numbers, units, explained variance, best epoch, conditions)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lfads_core.output.plots import (
    best_epoch_from_rows,
    explained_variance,
    factors_figure,
    neuron_label,
    pc_label,
    pick_neurons,
    pick_trials_by_condition,
    plot_factors,
    plot_rates,
    plot_training_curves,
    rates_figure,
    time_label,
    training_figure,
    trials_label,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000


def open_pyplot_figures() -> list[int]:
    """Figure numbers held by pyplot, if anything imported it."""
    plt = sys.modules.get("matplotlib.pyplot")
    return list(plt.get_fignums()) if plt is not None else []


def all_text(fig) -> str:
    """Every piece of text of a figure: titles, axis labels, annotations, legends."""
    parts = [fig._suptitle.get_text() if fig._suptitle else "",
             fig._supylabel.get_text() if getattr(fig, "_supylabel", None) else ""]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        if hasattr(ax, "get_zlabel"):
            parts.append(ax.get_zlabel())
        parts += [t.get_text() for t in ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            parts += [t.get_text() for t in legend.get_texts()]
    return "\n".join(parts)


@pytest.fixture
def rates_data():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.05, 0.5, size=(4, 20, 6))
    rates = truth * rng.uniform(0.8, 1.2, size=truth.shape)
    spikes = rng.poisson(truth).astype(np.float32)
    return spikes, rates, truth


# --------------------------------------------------------------------------- #
# Labels and picks (pure)
# --------------------------------------------------------------------------- #


def test_pick_neurons_spans_the_rate_range():
    rng = np.random.default_rng(1)
    means = rng.uniform(0.0, 10.0, size=50)
    picked = pick_neurons(means, 4)
    assert len(set(picked)) == 4
    assert picked[0] == int(np.argmin(means)) and picked[-1] == int(np.argmax(means))
    assert list(means[picked]) == sorted(means[picked])
    # the middle ones sit near the 1/3 and 2/3 quantiles, not among the most active
    ranks = np.argsort(np.argsort(means))
    assert abs(ranks[picked[1]] - 49 / 3) <= 1 and abs(ranks[picked[2]] - 2 * 49 / 3) <= 1


def test_pick_neurons_few_nan_and_one():
    assert pick_neurons([3.0, 1.0, 2.0], 4) == [1, 2, 0]
    assert pick_neurons([np.nan, 5.0, 1.0, np.nan, 3.0, 4.0, 2.0], 4) == [2, 6, 5, 1]
    assert pick_neurons([np.nan, np.nan], 4) == [0, 1]
    assert pick_neurons([1.0, 2.0, 3.0], 1) == [1]
    for n in range(4, 40):  # always distinct, always both ends
        picked = pick_neurons(np.arange(n, dtype=float), 4)
        assert len(set(picked)) == 4 and picked[0] == 0 and picked[-1] == n - 1


def test_trials_label_names_split_and_original_numbers():
    label = trials_label("valid", [0, 2], trial_numbers=[412, 7, 33])
    assert label == "valid split, trials #412, #33 (original trial numbers)"
    assert trials_label("train", [1], trial_numbers=np.array([5, 9])) == \
        "train split, trial #9 (original trial number)"
    label = trials_label("valid", [0, 1])
    assert label.startswith("valid split, trial indices #0, #1") and "within the split" in label
    long = trials_label(None, list(range(12)))
    assert long.startswith("trial indices #0") and "(+4 more)" in long


def test_unit_labels():
    assert time_label(10.0) == "time (ms)" and time_label(None) == "time (bins)"
    assert neuron_label(17, 0.25, "counts per bin", bin_ms=10.0) == \
        "neuron 17: mean 0.25 counts per bin (25 Hz)"
    assert neuron_label(3, 1.5, "data units", bin_ms=10.0) == "neuron 3: mean 1.5 data units"
    assert neuron_label(3, float("nan"), "data units") == "neuron 3: mean n/a"
    assert pc_label(0, 0.432) == "PC1 (43% var.)"


def test_explained_variance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 30, 3)) * np.array([3.0, 1.0, 0.1])
    frac = explained_variance(x)
    assert frac.sum() == pytest.approx(1.0)
    assert frac[0] > 0.8 and np.all(np.diff(frac) <= 0)


def test_pick_trials_by_condition():
    cond = np.repeat([4, 1, 9, 2, 7, 3], 3)  # 6 conditions of 3 trials
    picked = pick_trials_by_condition(cond, 10)
    assert len(picked) == 10
    assert [int(c) for c in cond[picked]] == [4, 4, 1, 1, 9, 9, 2, 2, 7, 7]
    assert pick_trials_by_condition(np.arange(20), 10) == list(range(10))  # one trial each
    assert pick_trials_by_condition([1, 1], 10) == [0, 1]


def test_best_epoch_from_rows():
    rows = [{"epoch": "1", "is_best": "1"}, {"epoch": "2", "is_best": "0"},
            {"epoch": "3", "is_best": "1"}, {"epoch": "4", "is_best": ""}]
    assert best_epoch_from_rows(rows) == 3.0
    assert best_epoch_from_rows([{"epoch": 1}]) is None


# --------------------------------------------------------------------------- #
# Rates
# --------------------------------------------------------------------------- #


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
    with pytest.raises(ValueError):
        plot_rates(tmp_path / "bad.png", spikes, rates, trial_numbers=[1, 2])


def test_rates_figure_says_split_trials_units_and_neurons(rates_data):
    spikes, rates, truth = rates_data
    rates = rates * np.arange(1, 7)  # neuron 5 the most active, 0 the least
    fig = rates_figure(spikes, rates, truth, bin_ms=10.0, units="counts per bin", split="valid",
                       trial_numbers=[412, 7, 33, 90], trials=(0, 2))
    text = all_text(fig)
    assert "valid split, trials #412, #33 (original trial numbers)" in text
    assert "trial #412 (index 0)" in text and "trial #33 (index 2)" in text
    assert "time (ms)" in text and "counts per bin" in text
    axes = fig.axes
    assert len(axes) == 4 * 2
    assert fig._supylabel.get_text() == "counts per bin"  # once for the figure, not per row
    assert all(ax.get_ylabel() == "" for ax in axes)
    labelled = [t.get_text() for t in axes[0::2][0].texts] + \
        [t.get_text() for ax in axes[2::2] for t in ax.texts]
    assert labelled[0].startswith("neuron 0: mean ") and labelled[-1].startswith("neuron 5: mean ")
    assert all("Hz" in t for t in labelled)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["data", "inferred", "truth"]


def test_rates_figure_default_indices_and_bins(rates_data):
    spikes, rates, _ = rates_data
    fig = rates_figure(spikes, rates, units="data units", split="train")
    text = all_text(fig)
    assert "train split, trial indices #0, #1, #2" in text and "trial index 1" in text
    assert "time (bins)" in text and "data units" in text and "Hz" not in text


def test_rates_figure_nan_data_not_drawn_as_zeros(tmp_path, rates_data):
    spikes, rates, truth = rates_data
    spikes = spikes.astype(float) + 1.0  # every observed bar is at least 1 high
    spikes[0, 5:9, :] = np.nan
    fig = rates_figure(spikes, rates, truth, trials=(0,), neurons=[2])
    (ax,) = fig.axes
    bars = ax.containers[0]
    assert len(bars) == 20 - 4
    assert min(b.get_height() for b in bars) >= 1.0
    starts = sorted(b.get_x() for b in bars)
    assert not any(5 <= x < 9 for x in starts)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["data", "unobserved", "inferred", "truth"]
    assert_png(plot_rates(tmp_path / "nan.png", spikes, rates, truth))
    # fully unobserved neuron: no bars, no error
    spikes[:, :, 3] = np.nan
    fig = rates_figure(spikes, rates, trials=(1,), neurons=[3])
    (ax,) = fig.axes
    assert ax.containers == [] and ax.get_lines()  # no bars; the inferred line is drawn
    assert "neuron 3: mean" in ax.texts[0].get_text()


# --------------------------------------------------------------------------- #
# Factors
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("n_factors", [1, 2, 3, 8])
def test_plot_factors(tmp_path, n_factors):
    rng = np.random.default_rng(n_factors)
    factors = np.cumsum(rng.normal(size=(12, 25, n_factors)), axis=1)
    out = plot_factors(tmp_path / f"f{n_factors}.png", factors, n_trials=5)
    assert_png(out)
    fig = factors_figure(factors, n_trials=5)
    frac = explained_variance(factors)
    for i in range(min(3, n_factors)):
        assert pc_label(i, frac[i]) in all_text(fig)


def test_plot_factors_fewer_trials_than_requested(tmp_path):
    factors = np.random.default_rng(0).normal(size=(3, 10, 4))
    assert_png(plot_factors(tmp_path / "f.png", factors))


def test_factors_figure_explained_variance_and_title():
    rng = np.random.default_rng(3)
    factors = rng.normal(size=(8, 30, 5)) * np.array([4.0, 2.0, 1.0, 0.5, 0.1])
    fig = factors_figure(factors, n_trials=3, split="valid", trial_numbers=np.arange(100, 108),
                         bin_ms=5.0)
    frac = explained_variance(factors)
    main = fig.axes[0]
    assert main.get_xlabel() == pc_label(0, frac[0])
    assert main.get_ylabel() == pc_label(1, frac[1])
    assert main.get_zlabel() == pc_label(2, frac[2])
    assert "% var.)" in main.get_xlabel()
    text = all_text(fig)
    assert "valid split, trials #100, #101, #102 (original trial numbers)" in text
    assert "time (ms)" in text and "PCA over all 8 trials" in text


def test_factors_coloured_by_condition_with_legend(tmp_path):
    rng = np.random.default_rng(4)
    factors = rng.normal(size=(12, 10, 4))
    cond = np.repeat([7, 3, 5], 4)
    fig = factors_figure(factors, n_trials=6, cond=cond)
    main = fig.axes[0]
    legend = [t.get_text() for t in main.get_legend().get_texts()]
    assert legend == ["condition 7", "condition 3", "condition 5"]
    # shown trials: 2 of each condition, the same colour within a condition
    colours = [line.get_color() for line in main.get_lines()]
    assert len(colours) == 6
    assert colours[0] == colours[1] != colours[2] == colours[3] != colours[4] == colours[5]
    assert "coloured by condition" in all_text(fig)
    assert_png(plot_factors(tmp_path / "c.png", factors, n_trials=6, cond=cond))
    with pytest.raises(ValueError):
        factors_figure(factors, cond=cond[:3])


def test_factors_many_conditions_colour_bar(tmp_path):
    factors = np.random.default_rng(5).normal(size=(30, 10, 3))
    cond = np.arange(30)
    fig = factors_figure(factors, n_trials=20, cond=cond)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "condition label" in labels  # the colour bar's axis
    assert_png(plot_factors(tmp_path / "cb.png", factors, n_trials=20, cond=cond))


# --------------------------------------------------------------------------- #
# Training curves
# --------------------------------------------------------------------------- #


def csv_rows(n=6):
    rows = []
    for epoch in range(1, n + 1):
        rows.append({
            "epoch": str(epoch),
            "train_loss": str(10.0 / epoch),
            "valid_loss": str(11.0 / epoch),
            "train_recon": f"{5.0 - 0.3 * epoch}",
            "valid_recon": f"{5.5 - 0.3 * epoch}",
            "valid_recon_smooth": "" if epoch == 1 else f"{5.6 - 0.3 * epoch}",
            "kl_ic": f"{0.5 + epoch}",
            "kl_co": "",
            "train_l2": f"{0.1 / epoch}",
            "lr": f"{1e-2 * 0.9 ** epoch}",
            "kl_ramp": f"{min(1.0, epoch / 4)}",
            "l2_ramp": "not-a-number",
            "is_best": "1" if epoch in (2, 4) else "0",
        })
    return rows


def test_plot_training_curves_from_csv_strings(tmp_path):
    before = open_pyplot_figures()
    assert_png(plot_training_curves(tmp_path / "curves.png", csv_rows()))
    assert open_pyplot_figures() == before


def test_training_figure_units_best_epoch_and_separate_ramps():
    fig = training_figure(csv_rows())
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert set(axes) == {"Total loss", "Reconstruction", "KL divergence", "L2 penalty",
                         "Learning rate", "Ramps"}
    for ax in fig.axes:
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
    assert axes["Reconstruction"].get_ylabel() == "NLL per element (nats)"
    assert axes["KL divergence"].get_ylabel() == "KL (nats per trial)"
    assert "nats" in axes["Total loss"].get_ylabel()
    # best epoch (from is_best: the last flagged row) on every panel with data
    for ax in fig.axes:
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "best epoch 4" in legend
        assert any(list(line.get_xdata()) == [4.0, 4.0] for line in ax.get_lines())
    assert "best (smoothed)" in [t.get_text() for t in axes["Reconstruction"].get_legend().get_texts()]
    assert "best epoch 4" in fig._suptitle.get_text()
    # ramps apart from the learning rate; lr on a log scale, ramps linear 0..1
    lr_keys = [line.get_label() for line in axes["Learning rate"].get_lines()]
    ramp_keys = [line.get_label() for line in axes["Ramps"].get_lines()]
    assert "lr" in lr_keys and not any(k.endswith("_ramp") for k in lr_keys)
    assert "kl_ramp" in ramp_keys and "lr" not in ramp_keys
    assert axes["Learning rate"].get_yscale() == "log"
    assert axes["Ramps"].get_yscale() == "linear" and axes["Ramps"].get_ylim() == (-0.05, 1.05)
    assert "0 to 1" in axes["Ramps"].get_ylabel()


def test_training_figure_explicit_best_epoch():
    fig = training_figure(csv_rows(), best_epoch=5)
    rec = next(ax for ax in fig.axes if ax.get_title() == "Reconstruction")
    assert "best epoch 5" in [t.get_text() for t in rec.get_legend().get_texts()]
    fig = training_figure([{"epoch": 1, "valid_recon": 3.0}])
    assert "best epoch unknown" in fig._suptitle.get_text()


def test_plot_training_curves_sparse_and_empty(tmp_path):
    rows = [{"epoch": 0, "valid_recon": 3.0}, {"epoch": 1}, {"valid_recon": 2.5, "kl_co": 0.0}]
    assert_png(plot_training_curves(tmp_path / "sparse.png", rows))
    assert_png(plot_training_curves(tmp_path / "empty.png", []))
    assert_png(plot_training_curves(tmp_path / "best.png", rows, best_epoch=1))
