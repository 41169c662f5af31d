"""Diagnostic figures written as PNG files.

Uses :class:`matplotlib.figure.Figure` directly (Agg rendering through
``savefig``), never ``pyplot``: no global figure state, nothing to leak.
Each function writes one PNG and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_rates", "plot_factors", "plot_training_curves"]

DPI = 100
FIGSIZE = (10.0, 6.0)
MAX_TRIAL_COLUMNS = 3
MAX_NEURON_ROWS = 4


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
# Rates over spikes
# --------------------------------------------------------------------------- #


def _pick_neurons(rates: np.ndarray, neurons: Sequence[int] | None) -> list[int]:
    """Given neurons (at most 4), or the 4 with highest mean rate [.., N]."""
    if neurons is not None:
        return [int(n) for n in neurons][:MAX_NEURON_ROWS]
    mean_rate = np.nanmean(rates.reshape(-1, rates.shape[-1]), axis=0)
    order = np.argsort(-np.nan_to_num(mean_rate, nan=-np.inf), kind="stable")
    return [int(n) for n in order[:MAX_NEURON_ROWS]]


def plot_rates(
    path: str | Path,
    spikes: np.ndarray,
    rates: np.ndarray,
    truth: np.ndarray | None = None,
    trials: Sequence[int] = (0, 1, 2),
    neurons: Sequence[int] | None = None,
    bin_ms: float | None = None,
    units: str = "counts per bin",
) -> Path:
    """Inferred signal (line) over the data (bars), optionally vs truth.

    Args:
        spikes, rates, truth: [trials, T, N] data, inferred mean and truth, in ``units``
            (the reconstruction's: counts per bin for spikes). NaN (unobserved) is not drawn.
        trials: trials to show, one column each (at most 3; indices past the
            end are dropped).
        neurons: neurons to show, one row each (at most 4); default: the 4
            with the highest mean inferred rate.
        bin_ms: bin width; when given the x axis is in ms, else in bins.
    """
    spikes = np.asarray(spikes, dtype=float)
    rates = np.asarray(rates, dtype=float)
    if spikes.shape != rates.shape or rates.ndim != 3:
        raise ValueError(f"need equal [trials, T, N] shapes, got {spikes.shape}, {rates.shape}")
    if truth is not None:
        truth = np.asarray(truth, dtype=float)
        if truth.shape != rates.shape:
            raise ValueError(f"truth shape {truth.shape} != rates shape {rates.shape}")
    cols = [int(t) for t in trials if 0 <= int(t) < rates.shape[0]][:MAX_TRIAL_COLUMNS]
    cols = cols or [0]
    rows = _pick_neurons(rates, neurons)
    n_bins = rates.shape[1]
    x = np.arange(n_bins) * (bin_ms if bin_ms else 1.0)
    width = bin_ms if bin_ms else 1.0

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    axes = fig.subplots(len(rows), len(cols), squeeze=False, sharex=True, sharey="row")
    for r, neuron in enumerate(rows):
        for c, trial in enumerate(cols):
            ax = axes[r, c]
            ax.bar(x, np.nan_to_num(spikes[trial, :, neuron]), width=width, align="edge",
                   color="0.8", label="data")
            ax.plot(x + width / 2, rates[trial, :, neuron], color="C0", lw=1.2,
                    label="inferred")
            if truth is not None:
                ax.plot(x + width / 2, truth[trial, :, neuron], color="C3", lw=1.0,
                        ls="--", label="truth")
            if r == 0:
                ax.set_title(f"trial {trial}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"channel {neuron}\n{units}", fontsize=8)
            if r == len(rows) - 1:
                ax.set_xlabel("time (ms)" if bin_ms else "time (bins)", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, -1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Inferred mean ({units}) over the data")
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- #
# Factors
# --------------------------------------------------------------------------- #


def _top_pcs(factors: np.ndarray, k: int) -> np.ndarray:
    """Project [trials, T, F] onto the top ``k`` PCs over trials x time.

    Returns [trials, T, k].
    """
    n_trials, n_bins, n_factors = factors.shape
    flat = factors.reshape(-1, n_factors)
    centred = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[:k].T).reshape(n_trials, n_bins, k)


def plot_factors(path: str | Path, factors: np.ndarray, n_trials: int = 10) -> Path:
    """Trajectories of the first ``n_trials`` trials in the top-3 PC space.

    Args:
        factors: [trials, T, F]. With F >= 3 the trajectories are drawn in
            3-d; with F < 3 the raw factors are drawn against time.
    """
    factors = np.asarray(factors, dtype=float)
    if factors.ndim != 3:
        raise ValueError(f"factors must be [trials, T, F], got {factors.shape}")
    shown = factors[: max(1, n_trials)]
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    colours = [f"C{i % 10}" for i in range(shown.shape[0])]
    if factors.shape[-1] >= 3:
        import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3d projection)

        pcs = _top_pcs(factors, 3)[: shown.shape[0]]
        ax = fig.add_subplot(projection="3d")
        for trial, colour in zip(pcs, colours):
            ax.plot(trial[:, 0], trial[:, 1], trial[:, 2], color=colour, lw=1.0)
            ax.scatter(*trial[0], color=colour, s=12)  # start point
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.set_zlabel("PC 3")
    else:
        axes = fig.subplots(shown.shape[-1], 1, squeeze=False, sharex=True)[:, 0]
        for f, ax in enumerate(axes):
            for trial, colour in zip(shown, colours):
                ax.plot(trial[:, f], color=colour, lw=1.0)
            ax.set_ylabel(f"factor {f}")
        axes[-1].set_xlabel("time (bins)")
    fig.suptitle("Factor trajectories (top PCs)")
    return _save(fig, path)


# --------------------------------------------------------------------------- #
# Training curves
# --------------------------------------------------------------------------- #

_PANELS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    # (title, metric keys, log y-scale)
    ("Total loss", ("train_loss", "valid_loss"), False),
    ("Reconstruction", ("train_recon", "valid_recon", "valid_recon_smooth"), False),
    ("KL terms", ("train_kl_ic", "train_kl_co", "valid_kl_ic", "valid_kl_co", "kl_ic", "kl_co"), True),
    ("Learning rate / ramps", ("lr", "kl_ramp", "l2_ramp"), True),
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


def _draw_panel(ax, rows, title: str, keys: Sequence[str], log_y: bool) -> None:
    """Plot every available key of one panel; ramps go on a linear twin axis."""
    drawn = 0
    ramp_ax = None
    all_positive = True
    for i, key in enumerate(keys):
        xs, ys = _series(rows, key)
        if not ys:
            continue
        target = ax
        if key.endswith("_ramp"):
            ramp_ax = ramp_ax or ax.twinx()
            target = ramp_ax
        elif min(ys) <= 0:
            all_positive = False
        style = "--" if key.endswith("_smooth") or key.endswith("_ramp") else "-"
        target.plot(xs, ys, style, color=f"C{i}", lw=1.2, label=key)
        drawn += 1
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch", fontsize=8)
    ax.tick_params(labelsize=7)
    if not drawn:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    if log_y and all_positive and ax.lines:
        ax.set_yscale("log")
    handles, labels = ax.get_legend_handles_labels()
    if ramp_ax is not None:
        ramp_ax.set_ylim(-0.05, 1.05)
        ramp_ax.tick_params(labelsize=7)
        more_h, more_l = ramp_ax.get_legend_handles_labels()
        handles, labels = handles + more_h, labels + more_l
    ax.legend(handles, labels, fontsize=7)


def plot_training_curves(path: str | Path, rows: list[dict]) -> Path:
    """Loss, reconstruction, KL and learning-rate curves from metrics.csv rows.

    Args:
        rows: one dict per epoch with ``epoch`` and any of ``train_loss``,
            ``valid_loss``, ``train_recon``, ``valid_recon``,
            ``valid_recon_smooth``, ``{train,valid}_kl_ic``, ``{train,valid}_kl_co``, ``lr``, ``kl_ramp``,
            ``l2_ramp``. Values may be numbers or strings (csv); missing,
            empty or non-numeric values are skipped.
    """
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    axes = fig.subplots(2, 2, squeeze=False).ravel()
    for ax, (title, keys, log_y) in zip(axes, _PANELS):
        _draw_panel(ax, rows, title, keys, log_y)
    fig.suptitle("Training curves")
    fig.tight_layout()
    return _save(fig, path)
