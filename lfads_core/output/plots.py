"""Diagnostic figures written as PNG files.

Uses :class:`matplotlib.figure.Figure` directly (Agg rendering through
``savefig``), never ``pyplot``: no global figure state, nothing to leak.
Each ``plot_*`` function writes one PNG and returns its path; the matching
``*_figure`` function builds the figure without writing it (for tests and
notebooks). The label-building helpers are pure functions.

What every figure says about itself:

* rates: the split and the original trial numbers shown, each neuron's index
  and mean inferred rate, time in ms (or bins) and the signal's units; the
  neurons span the range of mean rates (:func:`pick_neurons`); unobserved
  (NaN) data are shaded, never drawn as zeros.
* factors: the explained variance of each principal component on its axis,
  the split and trials shown, trials coloured by condition when labels exist.
* training curves: units on every axis, the best epoch marked on every panel,
  the ramps (0..1 factors) on their own panel apart from the learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "plot_rates", "plot_factors", "plot_training_curves",
    "rates_figure", "factors_figure", "training_figure",
    "pick_neurons", "pick_trials_by_condition", "best_epoch_from_rows",
    "trials_label", "neuron_label", "time_label", "pc_label", "explained_variance",
]

DPI = 100
FIGSIZE = (10.0, 6.0)
MAX_TRIAL_COLUMNS = 3
MAX_NEURON_ROWS = 4
MAX_LISTED_TRIALS = 8
MAX_LEGEND_CONDITIONS = 10


def _save(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically (parent created if needed)."""
    import io

    from ..train.checkpoint import atomic_write_bytes

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return path


# --------------------------------------------------------------------------- #
# Labels (pure)
# --------------------------------------------------------------------------- #


def time_label(bin_ms: float | None) -> str:
    """x-axis label of a time axis: ms when the bin width is known, else bins."""
    return "time (ms)" if bin_ms else "time (bins)"


def trials_label(split: str | None, positions: Sequence[int],
                 trial_numbers: Sequence[int] | np.ndarray | None = None) -> str:
    """Which trials a figure shows, e.g. ``"valid split, trials #12, #40 (original trial
    numbers)"``; without ``trial_numbers`` the positions are labelled as indices within the
    split. Long lists are cut after :data:`MAX_LISTED_TRIALS`."""
    positions = [int(p) for p in positions]
    one = len(positions) == 1
    if trial_numbers is not None:
        shown = [int(trial_numbers[p]) for p in positions]
        what = "trial" if one else "trials"
        how = "original trial number" if one else "original trial numbers"
    else:
        shown = positions
        what = "trial index" if one else "trial indices"
        how = "within the split; original numbers not given"
    listed = ", ".join(f"#{t}" for t in shown[:MAX_LISTED_TRIALS])
    if len(shown) > MAX_LISTED_TRIALS:
        listed += f", ... (+{len(shown) - MAX_LISTED_TRIALS} more)"
    prefix = f"{split} split, " if split else ""
    return f"{prefix}{what} {listed} ({how})"


def _trial_title(position: int, trial_numbers: Sequence[int] | np.ndarray | None) -> str:
    """Column title of one trial: its original number (and index), or its index."""
    if trial_numbers is None:
        return f"trial index {position}"
    return f"trial #{int(trial_numbers[position])} (index {position})"


def neuron_label(neuron: int, mean: float, units: str, bin_ms: float | None = None) -> str:
    """``"neuron 17: mean 0.23 counts per bin (23 Hz)"`` (Hz only for counts per bin with a
    known bin width)."""
    if not math.isfinite(mean):
        return f"neuron {neuron}: mean n/a"
    text = f"neuron {neuron}: mean {mean:.3g} {units}"
    if bin_ms and units == "counts per bin":
        text += f" ({mean * 1000.0 / bin_ms:.3g} Hz)"
    return text


def pc_label(index: int, fraction: float) -> str:
    """``"PC1 (43% var.)"`` for component ``index`` (from 0) explaining ``fraction``."""
    return f"PC{index + 1} ({100.0 * fraction:.0f}% var.)"


# --------------------------------------------------------------------------- #
# Rates over the data
# --------------------------------------------------------------------------- #


def pick_neurons(mean_rates: Sequence[float] | np.ndarray, k: int = MAX_NEURON_ROWS) -> list[int]:
    """``k`` neurons spread over the range of mean rates, from the lowest to the highest.

    Takes the neurons at evenly spaced ranks of the sorted finite means (for ``k = 4``: the
    lowest, the 1/3 and 2/3 quantiles and the highest), ordered by increasing mean. With at
    most ``k`` finite means all of them come back; neurons whose mean is not finite are only
    used when no mean is.
    """
    mean_rates = np.asarray(mean_rates, dtype=float).reshape(-1)
    k = max(1, int(k))
    finite = np.flatnonzero(np.isfinite(mean_rates))
    if finite.size == 0:
        return list(range(min(k, mean_rates.size)))
    order = finite[np.argsort(mean_rates[finite], kind="stable")]
    if order.size <= k:
        return [int(n) for n in order]
    if k == 1:
        return [int(order[order.size // 2])]
    ranks = np.floor(np.linspace(0.0, order.size - 1, k) + 0.5).astype(int)
    return [int(order[r]) for r in ranks]


def _mean_rates(rates: np.ndarray) -> np.ndarray:
    """Mean over trials and time of each neuron of [trials, T, N] (NaN-aware, no warnings)."""
    flat = rates.reshape(-1, rates.shape[-1])
    ok = np.isfinite(flat)
    counts = ok.sum(axis=0)
    sums = np.where(ok, flat, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _nan_runs(values: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of non-finite entries of a 1-d array."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return []
    edges = np.diff(np.concatenate([[0], bad.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def rates_figure(
    spikes: np.ndarray,
    rates: np.ndarray,
    truth: np.ndarray | None = None,
    trials: Sequence[int] = (0, 1, 2),
    neurons: Sequence[int] | None = None,
    bin_ms: float | None = None,
    units: str = "counts per bin",
    *,
    split: str | None = "valid",
    trial_numbers: Sequence[int] | np.ndarray | None = None,
) -> Figure:
    """The figure of :func:`plot_rates`, not written."""
    spikes = np.asarray(spikes, dtype=float)
    rates = np.asarray(rates, dtype=float)
    if spikes.shape != rates.shape or rates.ndim != 3:
        raise ValueError(f"need equal [trials, T, N] shapes, got {spikes.shape}, {rates.shape}")
    if truth is not None:
        truth = np.asarray(truth, dtype=float)
        if truth.shape != rates.shape:
            raise ValueError(f"truth shape {truth.shape} != rates shape {rates.shape}")
    if trial_numbers is not None:
        trial_numbers = np.asarray(trial_numbers).reshape(-1)
        if trial_numbers.shape[0] != rates.shape[0]:
            raise ValueError(f"{trial_numbers.shape[0]} trial numbers for {rates.shape[0]} trials")
    cols = [int(t) for t in trials if 0 <= int(t) < rates.shape[0]][:MAX_TRIAL_COLUMNS]
    cols = cols or [0]
    means = _mean_rates(rates)
    if neurons is not None:
        rows = [int(n) for n in neurons if 0 <= int(n) < rates.shape[-1]][:MAX_NEURON_ROWS]
        rows = rows or pick_neurons(means)
    else:
        rows = pick_neurons(means)
    n_bins = rates.shape[1]
    width = float(bin_ms) if bin_ms else 1.0
    x = np.arange(n_bins) * width

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    axes = fig.subplots(len(rows), len(cols), squeeze=False, sharex=True, sharey="row")
    legend: dict[str, Any] = {}
    for r, neuron in enumerate(rows):
        for c, trial in enumerate(cols):
            ax = axes[r, c]
            values = spikes[trial, :, neuron]
            ok = np.isfinite(values)
            if ok.any():
                bars = ax.bar(x[ok], values[ok], width=width, align="edge", color="0.8",
                              label="data")
                legend.setdefault("data", bars)
            for start, stop in _nan_runs(values):
                span = ax.axvspan(x[start], x[stop - 1] + width, color="C1", alpha=0.12, lw=0,
                                  label="unobserved")
                legend.setdefault("unobserved", span)
            (line,) = ax.plot(x + width / 2, rates[trial, :, neuron], color="C0", lw=1.2,
                              label="inferred")
            legend.setdefault("inferred", line)
            if truth is not None:
                (line,) = ax.plot(x + width / 2, truth[trial, :, neuron], color="C3", lw=1.0,
                                  ls="--", label="truth")
                legend.setdefault("truth", line)
            ax.text(0.01, 0.97, neuron_label(neuron, float(means[neuron]), units, bin_ms),
                    transform=ax.transAxes, ha="left", va="top", fontsize=6.5,
                    bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})
            if r == 0:
                ax.set_title(_trial_title(trial, trial_numbers), fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel(time_label(bin_ms), fontsize=8)
            ax.tick_params(labelsize=7)
            ax.margins(y=0.35)  # headroom for the neuron label and the legend
    order = [k for k in ("data", "unobserved", "inferred", "truth") if k in legend]
    fig.legend([legend[k] for k in order], order, fontsize=7, loc="lower center",
               ncol=len(order), frameon=False)
    fig.supylabel(units, fontsize=8)  # once: per row, long units overlapped between the rows
    fig.suptitle(f"Inferred mean ({units}) over the data: {trials_label(split, cols, trial_numbers)}\n"
                 f"neurons spanning the range of mean inferred rates (over all "
                 f"{rates.shape[0]} trials)", fontsize=10)
    fig.tight_layout(rect=(0.0, 0.035, 1.0, 1.0))  # room for the legend below
    return fig


def plot_rates(
    path: str | Path,
    spikes: np.ndarray,
    rates: np.ndarray,
    truth: np.ndarray | None = None,
    trials: Sequence[int] = (0, 1, 2),
    neurons: Sequence[int] | None = None,
    bin_ms: float | None = None,
    units: str = "counts per bin",
    *,
    split: str | None = "valid",
    trial_numbers: Sequence[int] | np.ndarray | None = None,
) -> Path:
    """Inferred signal (line) over the data (bars), optionally vs truth.

    Args:
        spikes, rates, truth: [trials, T, N] data, inferred mean and truth of one split, in
            ``units`` (the reconstruction's: counts per bin for spikes). NaN (unobserved) data
            are shaded, not drawn.
        trials: positions within the split to show, one column each (at most 3; positions
            past the end are dropped).
        neurons: neurons to show, one row each (at most 4); default: 4 spanning the range of
            mean inferred rates (:func:`pick_neurons`). Each panel names the neuron and its
            mean inferred rate over the split.
        bin_ms: bin width; when given the x axis is in ms, else in bins.
        split: the split's name, shown in the title.
        trial_numbers: original trial number of each trial of the split (its ``{split}_inds``);
            default: the positions, labelled as indices within the split.
    """
    return _save(rates_figure(spikes, rates, truth, trials, neurons, bin_ms, units,
                              split=split, trial_numbers=trial_numbers), path)


# --------------------------------------------------------------------------- #
# Factors
# --------------------------------------------------------------------------- #


def explained_variance(factors: np.ndarray) -> np.ndarray:
    """Fraction of the variance over trials x time of [trials, T, F] explained by each PC."""
    flat = np.asarray(factors, dtype=float).reshape(-1, np.shape(factors)[-1])
    s = np.linalg.svd(flat - flat.mean(axis=0), compute_uv=False)
    total = float(np.sum(s**2))
    return (s**2) / total if total > 0 else np.zeros_like(s)


def _top_pcs(factors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Project [trials, T, F] onto the top ``k`` PCs over trials x time.

    Returns ([trials, T, k] projections, [k] fractions of variance explained).
    """
    n_trials, n_bins, n_factors = factors.shape
    flat = factors.reshape(-1, n_factors)
    centred = flat - flat.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    total = float(np.sum(s**2))
    fractions = (s**2) / total if total > 0 else np.zeros_like(s)
    return (centred @ vt[:k].T).reshape(n_trials, n_bins, k), fractions[:k]


def pick_trials_by_condition(cond: Sequence | np.ndarray, n_trials: int,
                             max_conditions: int = 5) -> list[int]:
    """Up to ``n_trials`` trial positions, several per condition so that colouring by
    condition means something: conditions in order of first appearance, at most
    ``ceil(n_trials / min(#conditions, max_conditions))`` trials each."""
    cond = np.asarray(cond).reshape(-1)
    n_trials = max(1, int(n_trials))
    labels: list = []
    members: dict = {}
    for i, label in enumerate(cond.tolist()):
        if label not in members:
            labels.append(label)
            members[label] = []
        members[label].append(i)
    if not labels:
        return []
    per = math.ceil(n_trials / min(len(labels), max(1, max_conditions)))
    chosen: list[int] = []
    for label in labels:
        chosen += members[label][: min(per, n_trials - len(chosen))]
        if len(chosen) >= n_trials:
            break
    return chosen


def _condition_colours(fig: Figure, ax, labels: list) -> tuple[list, Any]:
    """Colours for the condition ``labels`` of the shown trials; a legend (few distinct labels)
    or colour bar (many) naming them. Returns (colours, legend handles or None)."""
    from matplotlib.lines import Line2D

    distinct = list(dict.fromkeys(labels))
    if len(distinct) <= MAX_LEGEND_CONDITIONS:
        colour_of = {lab: f"C{i}" for i, lab in enumerate(distinct)}
        handles = [Line2D([], [], color=colour_of[lab], lw=1.5, label=f"condition {lab}")
                   for lab in distinct]
        return [colour_of[lab] for lab in labels], handles
    import matplotlib as mpl

    try:
        values = np.asarray(labels, dtype=float)
        ticks = None
    except (TypeError, ValueError):
        ranks = {lab: i for i, lab in enumerate(sorted(distinct, key=str))}
        values = np.asarray([ranks[lab] for lab in labels], dtype=float)
        ticks = (list(ranks.values()), [str(lab) for lab in ranks])
    norm = mpl.colors.Normalize(vmin=float(values.min()), vmax=float(values.max()))
    cmap = mpl.colormaps["viridis"]
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(sm, ax=ax, shrink=0.8)
    bar.set_label("condition label", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if ticks is not None:
        bar.set_ticks(ticks[0], labels=ticks[1])
    return [cmap(norm(v)) for v in values], None


def factors_figure(
    factors: np.ndarray,
    n_trials: int = 10,
    *,
    cond: Sequence | np.ndarray | None = None,
    split: str | None = None,
    trial_numbers: Sequence[int] | np.ndarray | None = None,
    bin_ms: float | None = None,
) -> Figure:
    """The figure of :func:`plot_factors`, not written."""
    factors = np.asarray(factors, dtype=float)
    if factors.ndim != 3:
        raise ValueError(f"factors must be [trials, T, F], got {factors.shape}")
    n_all, n_bins, n_factors = factors.shape
    if cond is not None:
        cond = np.asarray(cond).reshape(-1)
        if cond.shape[0] != n_all:
            raise ValueError(f"{cond.shape[0]} condition labels for {n_all} trials")
    if trial_numbers is not None:
        trial_numbers = np.asarray(trial_numbers).reshape(-1)
        if trial_numbers.shape[0] != n_all:
            raise ValueError(f"{trial_numbers.shape[0]} trial numbers for {n_all} trials")
    if cond is not None:
        shown = pick_trials_by_condition(cond, n_trials)
    else:
        shown = list(range(min(max(1, n_trials), n_all)))
    k = min(3, n_factors)
    pcs, fractions = _top_pcs(factors, k)
    pcs = pcs[shown]
    t = np.arange(n_bins) * (bin_ms if bin_ms else 1.0)

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    if k >= 2:
        grid = fig.add_gridspec(k, 2, width_ratios=[1.3, 1], wspace=0.45, left=0.04, right=0.97,
                                top=0.86, bottom=0.09)
    else:
        grid = fig.add_gridspec(1, 1, top=0.86, bottom=0.09)
    if k == 3:
        import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3d projection)

        main = fig.add_subplot(grid[:, 0], projection="3d")
    elif k == 2:
        main = fig.add_subplot(grid[:, 0])
    else:
        main = None
    time_axes = [fig.add_subplot(grid[i, -1]) for i in range(k)]
    for ax in time_axes[1:]:
        ax.sharex(time_axes[0])

    if cond is not None:
        colours, handles = _condition_colours(fig, time_axes, cond[shown].tolist())
    else:
        colours = [f"C{i % 10}" for i in range(len(shown))]
        handles = None
    for j, (traj, colour) in enumerate(zip(pcs, colours)):
        label = None if cond is not None else _trial_title(shown[j], trial_numbers)
        if k == 3:
            main.plot(traj[:, 0], traj[:, 1], traj[:, 2], color=colour, lw=1.0, label=label)
            main.scatter(*traj[0], color=colour, s=12)  # start point
        elif k == 2:
            main.plot(traj[:, 0], traj[:, 1], color=colour, lw=1.0, label=label)
            main.scatter(*traj[0], color=colour, s=12)
        for i, ax in enumerate(time_axes):
            ax.plot(t, traj[:, i], color=colour, lw=1.0,
                    label=label if main is None and i == 0 else None)
    if main is not None:
        main.set_xlabel(pc_label(0, fractions[0]), fontsize=8)
        main.set_ylabel(pc_label(1, fractions[1]), fontsize=8)
        if k == 3:
            main.set_zlabel(pc_label(2, fractions[2]), fontsize=8)
        main.tick_params(labelsize=7)
    for i, ax in enumerate(time_axes):
        ax.set_ylabel(pc_label(i, fractions[i]), fontsize=8)
        ax.tick_params(labelsize=7)
    time_axes[-1].set_xlabel(time_label(bin_ms), fontsize=8)
    legend_ax = main if main is not None else time_axes[0]
    if handles is not None:
        legend_ax.legend(handles=handles, fontsize=7, loc="upper left", title="colour",
                         title_fontsize=7)
    elif len(shown) <= MAX_LISTED_TRIALS:
        legend_ax.legend(fontsize=6.5, loc="upper left")
    coloured = "coloured by condition" if cond is not None else "one colour per trial"
    dots = "; dots: start" if main is not None else ""
    top = "top PC" if k == 1 else f"top {k} PCs"
    fig.suptitle(f"Factor trajectories in the {top} ({coloured}{dots})\n"
                 f"{trials_label(split, shown, trial_numbers)}\n"
                 f"PCA over all {n_all} trials x {n_bins} bins of {n_factors} factors", fontsize=9)
    return fig


def plot_factors(
    path: str | Path,
    factors: np.ndarray,
    n_trials: int = 10,
    *,
    cond: Sequence | np.ndarray | None = None,
    split: str | None = None,
    trial_numbers: Sequence[int] | np.ndarray | None = None,
    bin_ms: float | None = None,
) -> Path:
    """Trajectories of ``n_trials`` trials in the space of the top (at most 3) PCs of the
    factors, and each PC against time; every PC axis names its explained variance.

    Args:
        factors: [trials, T, F] of one split; the PCA is over all its trials and bins.
        n_trials: how many trials to draw: the first ones, or with ``cond`` a few trials of
            each of the first conditions (:func:`pick_trials_by_condition`).
        cond: [trials] condition labels (``{split}_cond``): trials coloured by condition, with
            a legend (at most 10 conditions shown) or colour bar naming the labels.
        split, trial_numbers: the split's name and its trials' original numbers
            (``{split}_inds``), shown in the title.
        bin_ms: bin width; when given time is in ms, else in bins.
    """
    return _save(factors_figure(factors, n_trials, cond=cond, split=split,
                                trial_numbers=trial_numbers, bin_ms=bin_ms), path)


# --------------------------------------------------------------------------- #
# Training curves
# --------------------------------------------------------------------------- #

# (title, metric keys, y label, y scale: "linear", "log" (when all values are positive) or
# "ramp" (linear, 0..1))
_PANELS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("Total loss", ("train_loss", "valid_loss"),
     "loss (nats: NLL per element\n+ ramped KL, L2)", "linear"),
    ("Reconstruction", ("train_recon", "valid_recon", "valid_recon_smooth"),
     "NLL per element (nats)", "linear"),
    ("KL divergence", ("train_kl_ic", "train_kl_co", "valid_kl_ic", "valid_kl_co", "kl_ic", "kl_co"),
     "KL (nats per trial)", "log"),
    ("L2 penalty", ("train_l2",), "weighted L2\n(Σ λ · ½ mean w²)", "log"),
    ("Learning rate", ("lr",), "learning rate", "log"),
    ("Ramps", ("kl_ramp", "l2_ramp"), "ramp factor (0 to 1)", "ramp"),
)


def _to_float(value: Any) -> float | None:
    """Float from a number or csv string; None if missing, empty or invalid."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``key`` over rows where both parse as floats.

    A row without a usable ``epoch`` uses its position in ``rows``.
    """
    xs: list[float] = []
    ys: list[float] = []
    for i, row in enumerate(rows):
        y = _to_float(row.get(key))
        if y is None:
            continue
        x = _to_float(row.get("epoch"))
        xs.append(float(i) if x is None else x)
        ys.append(y)
    return xs, ys


def best_epoch_from_rows(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The epoch of the last row flagged ``is_best`` (metrics.csv), or None."""
    best = None
    for i, row in enumerate(rows):
        flag = _to_float(row.get("is_best"))
        if flag:
            x = _to_float(row.get("epoch"))
            best = float(i) if x is None else x
    return best


def _draw_panel(ax, rows, title: str, keys: Sequence[str], ylabel: str, scale: str,
                best: float | None) -> None:
    """Plot every available key of one panel, with the best epoch marked."""
    drawn = 0
    all_positive = True
    for i, key in enumerate(keys):
        xs, ys = _series(rows, key)
        if not ys:
            continue
        if min(ys) <= 0:
            all_positive = False
        style = "--" if key.endswith("_smooth") or key == "l2_ramp" else "-"
        ax.plot(xs, ys, style, color=f"C{i}", lw=1.2, label=key)
        if best is not None and key == "valid_recon_smooth" and best in xs:
            ax.plot([best], [ys[xs.index(best)]], "*", color="k", ms=9, label="best (smoothed)")
        drawn += 1
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if not drawn:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    if best is not None:
        ax.axvline(best, color="k", ls=":", lw=1.0, label=f"best epoch {best:g}")
    if scale == "log" and all_positive:
        ax.set_yscale("log")
    elif scale == "ramp":
        ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=6.5)


def training_figure(rows: Sequence[Mapping[str, Any]], *,
                    best_epoch: float | None = None) -> Figure:
    """The figure of :func:`plot_training_curves`, not written."""
    best = _to_float(best_epoch) if best_epoch is not None else best_epoch_from_rows(rows)
    fig = Figure(figsize=(12.0, 7.0), dpi=DPI)
    axes = fig.subplots(2, 3, squeeze=False).ravel()
    for ax, (title, keys, ylabel, scale) in zip(axes, _PANELS):
        _draw_panel(ax, rows, title, keys, ylabel, scale, best)
    where = f"best epoch {best:g} (lowest smoothed valid NLL)" if best is not None \
        else "best epoch unknown"
    fig.suptitle(f"Training curves: {where}")
    fig.tight_layout()
    return fig


def plot_training_curves(path: str | Path, rows: list[dict], *,
                         best_epoch: float | None = None) -> Path:
    """Loss, reconstruction, KL, L2, learning-rate and ramp curves from metrics.csv rows.

    Args:
        rows: one dict per epoch with ``epoch`` and any of ``train_loss``,
            ``valid_loss``, ``train_recon``, ``valid_recon``,
            ``valid_recon_smooth``, ``{train,valid}_kl_ic``, ``{train,valid}_kl_co``,
            ``train_l2``, ``lr``, ``kl_ramp``, ``l2_ramp``, ``is_best``. Values may be numbers
            or strings (csv); missing, empty or non-numeric values are skipped.
        best_epoch: epoch marked on every panel (a dotted line; a star on the smoothed
            validation reconstruction); default: the last row flagged ``is_best``.
    """
    return _save(training_figure(rows, best_epoch=best_epoch), path)
