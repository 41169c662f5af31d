"""Synthetic spiking datasets with known ground truth (numpy only).

Two generators are provided, both deterministic given ``seed``:

* :func:`make_lorenz` -- Poisson spikes driven by a 3-d Lorenz attractor.
* :func:`make_rnn` -- Poisson spikes driven by a chaotic rate RNN, optionally
  perturbed by one brief input pulse per trial.

Both return a :class:`SynthData` (a plain ``dict`` of arrays with an extra
``attrs`` mapping holding the generation metadata) with the keys::

    {split}_encod_data   float32 [trials, n_bins, n_neurons]  spike counts
    {split}_recon_data   float32 [trials, n_bins, n_neurons]  same counts
    {split}_truth        float32 [trials, n_bins, n_neurons]  rates, counts/bin
    {split}_inds         int64   [trials]  index into the unshuffled trial order
    {split}_cond         int64   [trials]  condition of each trial

for ``split`` in ``("train", "valid")``; plus ``{split}_latents`` (Lorenz,
float32 [trials, n_bins, 3]) or ``{split}_inputs`` (RNN, float32
[trials, n_bins]). In the unshuffled order trial ``i`` belongs to condition
``i // trials_per_condition``.

:func:`write_h5` stores such a dict in an HDF5 file, atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from ..files import temp_sibling

__all__ = [
    "SynthData",
    "make_lorenz",
    "make_lorenz_sessions",
    "make_rnn",
    "write_h5",
    "SYNTH_GENERATORS",
]

SPLITS = ("train", "valid")

# Lorenz system parameters and integration settings.
LORENZ_SIGMA = 10.0
LORENZ_RHO = 28.0
LORENZ_BETA = 8.0 / 3.0
LORENZ_MAX_STEP = 0.0025  # largest RK4 step, Lorenz time units
LORENZ_TRIAL_TIME = 1.0  # Lorenz time covered by one trial of n_bins bins
LORENZ_N_CHAINS = 16  # independent trajectories start states are drawn from
LORENZ_BURN_IN = 5.0  # Lorenz time discarded before sampling start states
LORENZ_POOL_TIME = 10.0  # Lorenz time (per chain) start states are drawn from
LORENZ_LOADING_NORM = 0.85  # norm of each neuron's loading vector
LORENZ_BIAS_JITTER = 0.2  # std of the per-neuron log-rate bias jitter

# RNN input pulse settings.
RNN_PULSE_BINS = 3  # duration of the input pulse, bins
RNN_PULSE_AMPLITUDE = 1.0  # value of the pulse signal during the pulse
RNN_READOUT_GAIN = 1.5  # gain applied to the readout before the tanh


class SynthData(dict):
    """``dict[str, np.ndarray]`` with an ``attrs`` dict of generation metadata.

    ``attrs`` always holds ``generator`` (str), ``seed`` (int) and
    ``bin_size_ms`` (float), plus the generator's parameters. :func:`write_h5`
    writes them as file attributes.
    """

    def __init__(self, arrays: dict[str, np.ndarray], attrs: dict[str, Any]):
        super().__init__(arrays)
        self.attrs: dict[str, Any] = dict(attrs)


# --------------------------------------------------------------------------- #
# Shared helpers
# --------------------------------------------------------------------------- #


def _poisson_counts(rng: np.random.Generator, rates: np.ndarray) -> np.ndarray:
    """Draw Poisson counts for ``rates`` (counts per bin), returned as float32."""
    return rng.poisson(rates).astype(np.float32)


def _split_indices(
    rng: np.random.Generator, n_trials: int, valid_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``range(n_trials)`` and split it into (train, valid) int64 indices."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    perm = rng.permutation(n_trials).astype(np.int64)
    n_valid = int(round(valid_fraction * n_trials))
    return perm[n_valid:], perm[:n_valid]


def _assemble(
    rng: np.random.Generator,
    truth: np.ndarray,
    conditions: np.ndarray,
    extras: dict[str, np.ndarray],
    valid_fraction: float,
) -> dict[str, np.ndarray]:
    """Draw spikes, shuffle and split every per-trial array into train/valid.

    Args:
        truth: [trials, n_bins, n_neurons] rates in counts per bin.
        conditions: [trials] condition index of each trial.
        extras: name -> [trials, ...] arrays (e.g. ``latents``), split alike.
    """
    spikes = _poisson_counts(rng, truth)
    split_inds = _split_indices(rng, truth.shape[0], valid_fraction)
    out: dict[str, np.ndarray] = {}
    for split, inds in zip(SPLITS, split_inds):
        out[f"{split}_encod_data"] = spikes[inds]
        out[f"{split}_recon_data"] = spikes[inds].copy()
        out[f"{split}_truth"] = truth[inds].astype(np.float32)
        out[f"{split}_inds"] = inds
        out[f"{split}_cond"] = conditions[inds].astype(np.int64)
        for name, values in extras.items():
            out[f"{split}_{name}"] = values[inds].astype(np.float32)
    return out


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


# --------------------------------------------------------------------------- #
# Lorenz
# --------------------------------------------------------------------------- #


def _lorenz_deriv(state: np.ndarray) -> np.ndarray:
    """Lorenz vector field; ``state`` is [..., 3] (x, y, z)."""
    x, y, z = state[..., 0], state[..., 1], state[..., 2]
    return np.stack(
        [
            LORENZ_SIGMA * (y - x),
            x * (LORENZ_RHO - z) - y,
            x * y - LORENZ_BETA * z,
        ],
        axis=-1,
    )


def _rk4_step(state: np.ndarray, h: float) -> np.ndarray:
    """One classical Runge-Kutta step of size ``h`` for a batch [..., 3]."""
    k1 = _lorenz_deriv(state)
    k2 = _lorenz_deriv(state + 0.5 * h * k1)
    k3 = _lorenz_deriv(state + 0.5 * h * k2)
    k4 = _lorenz_deriv(state + h * k3)
    return state + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _lorenz_integrate(
    start: np.ndarray, n_samples: int, sample_dt: float
) -> np.ndarray:
    """Integrate from ``start`` [B, 3], sampling every ``sample_dt``.

    Returns [B, n_samples, 3]; sample 0 is ``start`` itself. RK4 substeps are
    at most :data:`LORENZ_MAX_STEP` long.
    """
    n_sub = max(1, int(np.ceil(sample_dt / LORENZ_MAX_STEP)))
    h = sample_dt / n_sub
    out = np.empty((start.shape[0], n_samples, 3))
    state = np.asarray(start, dtype=np.float64)
    out[:, 0] = state
    for t in range(1, n_samples):
        for _ in range(n_sub):
            state = _rk4_step(state, h)
        out[:, t] = state
    return out


def _lorenz_start_states(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pick ``n`` random states [n, 3] on the attractor.

    :data:`LORENZ_N_CHAINS` independent trajectories are burnt in for
    :data:`LORENZ_BURN_IN` time units; start states are drawn without
    replacement from the following :data:`LORENZ_POOL_TIME` units.
    """
    sample_dt = 0.01
    n_burn = int(round(LORENZ_BURN_IN / sample_dt))
    n_pool = int(round(LORENZ_POOL_TIME / sample_dt))
    x0 = rng.normal(0.0, 1.0, size=(LORENZ_N_CHAINS, 3)) + np.array([0.0, 0.0, 25.0])
    pool = _lorenz_integrate(x0, n_burn + n_pool, sample_dt)[:, n_burn:]
    pool = pool.reshape(-1, 3)
    return pool[rng.choice(len(pool), size=n, replace=False)]


def _lorenz_condition_latents(rng: np.random.Generator, n_conditions: int, n_bins: int) -> np.ndarray:
    """One Lorenz trajectory per condition, z-scored over all of them: [C, n_bins, 3]."""
    starts = _lorenz_start_states(rng, n_conditions)
    latents = _lorenz_integrate(starts, n_bins, LORENZ_TRIAL_TIME / n_bins)
    return (latents - latents.mean(axis=(0, 1))) / latents.std(axis=(0, 1))


def _lorenz_rates(rng: np.random.Generator, latents: np.ndarray, n_neurons: int, bin_ms: float,
                  base_rate_hz: float) -> np.ndarray:
    """Rates (counts per bin) of ``n_neurons`` new neurons reading out ``latents`` [..., 3]."""
    loadings = rng.normal(size=(3, n_neurons))
    loadings *= LORENZ_LOADING_NORM / np.linalg.norm(loadings, axis=0)
    bias = np.log(base_rate_hz * bin_ms / 1000.0) + LORENZ_BIAS_JITTER * rng.normal(size=n_neurons)
    return np.exp(latents @ loadings + bias)


def make_lorenz_sessions(
    seed: int = 0,
    n_sessions: int = 3,
    n_conditions: int = 60,
    trials_per_condition: int = 20,
    n_bins: int = 100,
    neurons: tuple[int, ...] = (40, 30, 20),
    condition_fraction: float = 0.7,
    bin_ms: float = 10.0,
    base_rate_hz: float = 8.0,
    valid_fraction: float = 0.2,
) -> list[SynthData]:
    """Several recording sessions of one Lorenz system (stitching, multisession LFADS).

    The conditions' latent trajectories are shared by every session (as in :func:`make_lorenz`);
    each session records its own neurons (``neurons[s % len(neurons)]`` of them, with loadings and
    biases of their own) during its own random subset of ``condition_fraction`` of the
    conditions, ``trials_per_condition`` trials each. Each session is a :class:`SynthData` with
    :func:`make_lorenz`'s keys; ``{split}_cond`` index the shared conditions, and attrs hold
    ``session``, ``n_sessions``, ``n_neurons`` and ``session_conditions``.
    """
    _check_positive(n_sessions=n_sessions, n_conditions=n_conditions,
                    trials_per_condition=trials_per_condition, n_bins=n_bins, bin_ms=bin_ms,
                    base_rate_hz=base_rate_hz, condition_fraction=condition_fraction)
    if not neurons or min(neurons) < 1:
        raise ValueError(f"neurons must be positive counts, got {neurons}")
    rng = np.random.default_rng(seed)
    latents = _lorenz_condition_latents(rng, n_conditions, n_bins)
    n_used = max(1, int(round(condition_fraction * n_conditions)))
    sessions = []
    for s in range(n_sessions):
        n_neurons = int(neurons[s % len(neurons)])
        used = np.sort(rng.choice(n_conditions, size=n_used, replace=False))
        cond_rates = _lorenz_rates(rng, latents[used], n_neurons, bin_ms, base_rate_hz)
        local = np.repeat(np.arange(n_used), trials_per_condition)
        arrays = _assemble(rng, truth=cond_rates[local], conditions=used[local],
                           extras={"latents": latents[used][local]}, valid_fraction=valid_fraction)
        attrs = dict(generator="lorenz", seed=int(seed), bin_size_ms=float(bin_ms),
                     n_conditions=int(n_conditions), trials_per_condition=int(trials_per_condition),
                     base_rate_hz=float(base_rate_hz), lorenz_trial_time=LORENZ_TRIAL_TIME,
                     session=s, n_sessions=int(n_sessions), n_neurons=n_neurons,
                     session_conditions=used.astype(np.int64))
        sessions.append(SynthData(arrays, attrs))
    return sessions


def make_lorenz(
    seed: int = 0,
    n_conditions: int = 60,
    trials_per_condition: int = 20,
    n_bins: int = 100,
    n_neurons: int = 40,
    bin_ms: float = 10.0,
    base_rate_hz: float = 8.0,
    valid_fraction: float = 0.2,
) -> SynthData:
    """Poisson spikes driven by the Lorenz attractor.

    Each condition starts at a random point of the attractor and is integrated
    (RK4) for :data:`LORENZ_TRIAL_TIME` Lorenz time units (about one loop),
    sampled at ``n_bins`` bins. The three latents are z-scored over all
    conditions and bins, projected to ``n_neurons`` log-rates through
    N(0, 1) loadings, each neuron's loading vector rescaled to norm
    :data:`LORENZ_LOADING_NORM` (log-rates then vary by about +-1.5 around
    their mean), offset by
    ``log(base_rate_hz * bin_ms / 1000)`` plus a small per-neuron jitter, and
    exponentiated into rates (counts per bin). All trials of a condition share
    the rates; each trial has its own Poisson draw.

    Returns:
        :class:`SynthData` with the keys listed in the module docstring,
        including ``{split}_latents`` float32 [trials, n_bins, 3] (z-scored).
    """
    _check_positive(
        n_conditions=n_conditions,
        trials_per_condition=trials_per_condition,
        n_bins=n_bins,
        n_neurons=n_neurons,
        bin_ms=bin_ms,
        base_rate_hz=base_rate_hz,
    )
    rng = np.random.default_rng(seed)
    latents = _lorenz_condition_latents(rng, n_conditions, n_bins)
    cond_rates = _lorenz_rates(rng, latents, n_neurons, bin_ms, base_rate_hz)  # [C, T, N]

    conditions = np.repeat(np.arange(n_conditions, dtype=np.int64), trials_per_condition)
    arrays = _assemble(
        rng,
        truth=cond_rates[conditions],
        conditions=conditions,
        extras={"latents": latents[conditions]},
        valid_fraction=valid_fraction,
    )
    attrs = dict(
        generator="lorenz",
        seed=int(seed),
        bin_size_ms=float(bin_ms),
        n_conditions=int(n_conditions),
        trials_per_condition=int(trials_per_condition),
        base_rate_hz=float(base_rate_hz),
        lorenz_trial_time=LORENZ_TRIAL_TIME,
    )
    return SynthData(arrays, attrs)


# --------------------------------------------------------------------------- #
# Chaotic RNN
# --------------------------------------------------------------------------- #


def _pulse_inputs(
    rng: np.random.Generator, n_trials: int, n_bins: int
) -> np.ndarray:
    """One pulse per trial starting in the middle half of the trial.

    Returns [n_trials, n_bins] with :data:`RNN_PULSE_AMPLITUDE` during the
    pulse (:data:`RNN_PULSE_BINS` bins, clipped at the trial end), 0 elsewhere.
    """
    inputs = np.zeros((n_trials, n_bins))
    lo = n_bins // 4
    hi = max(lo + 1, (3 * n_bins) // 4)
    onsets = rng.integers(lo, hi, size=n_trials)
    for trial, onset in enumerate(onsets):
        inputs[trial, onset : onset + RNN_PULSE_BINS] = RNN_PULSE_AMPLITUDE
    return inputs


def _run_rnn(
    x0: np.ndarray,
    weights: np.ndarray,
    input_vec: np.ndarray,
    inputs: np.ndarray,
    alpha: float,
    gamma: float,
) -> np.ndarray:
    """Euler-integrate the rate RNN for a batch of trials.

    Args:
        x0: [B, U] initial states.
        weights: [U, U] recurrent matrix W.
        input_vec: [U] input direction B.
        inputs: [B, T] scalar input signal u_t.
        alpha: dt / tau.
        gamma: recurrent gain.

    Returns:
        [B, T, U] states; x_t = (1-a) x_{t-1} + a*gamma*W tanh(x_{t-1}) + B u_t,
        with the row for t = 0 equal to x0 + B u_0.
    """
    n_trials, n_bins = inputs.shape
    states = np.empty((n_trials, n_bins, x0.shape[1]))
    x = x0 + inputs[:, :1] * input_vec
    states[:, 0] = x
    for t in range(1, n_bins):
        recurrent = np.tanh(x) @ weights.T
        x = (1.0 - alpha) * x + alpha * gamma * recurrent + inputs[:, t : t + 1] * input_vec
        states[:, t] = x
    return states


def make_rnn(
    seed: int = 0,
    n_conditions: int = 60,
    trials_per_condition: int = 20,
    n_bins: int = 100,
    n_units: int = 50,
    n_neurons: int = 40,
    bin_ms: float = 10.0,
    tau_ms: float = 25.0,
    gamma: float = 1.5,
    max_rate_hz: float = 30.0,
    with_inputs: bool = True,
    valid_fraction: float = 0.2,
) -> SynthData:
    """Poisson spikes driven by a chaotic rate RNN.

    ``x_t = (1 - dt/tau) x_{t-1} + (dt/tau) gamma W tanh(x_{t-1}) + B u_t``
    with ``W ~ N(0, 1/n_units)``, ``dt = bin_ms`` and a random N(0, 1) initial
    state per condition. With ``with_inputs`` each trial gets one pulse u_t
    (:data:`RNN_PULSE_BINS` bins) at a random time in the middle half of the
    trial, so trials of one condition differ; otherwise u_t = 0 and all trials
    of a condition share the rates.

    Rates: ``max_rate_hz * (tanh(g * C tanh(x)) + 1) / 2`` with
    ``C ~ N(0, 1/n_units)`` [n_neurons, n_units], converted to counts per bin
    (``* bin_ms / 1000``); they never exceed ``max_rate_hz``.

    Returns:
        :class:`SynthData` with the keys listed in the module docstring plus
        ``{split}_inputs`` float32 [trials, n_bins].
    """
    _check_positive(
        n_conditions=n_conditions,
        trials_per_condition=trials_per_condition,
        n_bins=n_bins,
        n_units=n_units,
        n_neurons=n_neurons,
        bin_ms=bin_ms,
        tau_ms=tau_ms,
        max_rate_hz=max_rate_hz,
    )
    rng = np.random.default_rng(seed)
    n_trials = n_conditions * trials_per_condition

    weights = rng.normal(0.0, 1.0 / np.sqrt(n_units), size=(n_units, n_units))
    input_vec = rng.normal(size=n_units)
    readout = rng.normal(0.0, 1.0 / np.sqrt(n_units), size=(n_neurons, n_units))
    cond_x0 = rng.normal(size=(n_conditions, n_units))

    conditions = np.repeat(np.arange(n_conditions, dtype=np.int64), trials_per_condition)
    if with_inputs:
        inputs = _pulse_inputs(rng, n_trials, n_bins)
    else:
        inputs = np.zeros((n_trials, n_bins))

    states = _run_rnn(
        cond_x0[conditions], weights, input_vec, inputs, bin_ms / tau_ms, gamma
    )
    drive = RNN_READOUT_GAIN * (np.tanh(states) @ readout.T)  # [B, T, N]
    truth = max_rate_hz * (np.tanh(drive) + 1.0) / 2.0 * (bin_ms / 1000.0)

    arrays = _assemble(
        rng,
        truth=truth,
        conditions=conditions,
        extras={"inputs": inputs},
        valid_fraction=valid_fraction,
    )
    attrs = dict(
        generator="rnn",
        seed=int(seed),
        bin_size_ms=float(bin_ms),
        n_conditions=int(n_conditions),
        trials_per_condition=int(trials_per_condition),
        n_units=int(n_units),
        tau_ms=float(tau_ms),
        gamma=float(gamma),
        max_rate_hz=float(max_rate_hz),
        with_inputs=bool(with_inputs),
    )
    return SynthData(arrays, attrs)


# --------------------------------------------------------------------------- #
# HDF5 output
# --------------------------------------------------------------------------- #


def write_h5(
    data: dict[str, np.ndarray],
    path: str | os.PathLike,
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write every array of ``data`` as a gzip-4 dataset of an HDF5 file.

    File attributes: ``conversion_factor = 1.0``, ``bin_size_ms``,
    ``generator`` and ``seed``, taken from ``data.attrs`` (a
    :class:`SynthData`) and then overridden by ``attrs``. ``bin_size_ms`` is
    required; ``generator`` defaults to ``"custom"`` and ``seed`` to -1 when
    unknown. Every ``{split}_truth`` dataset gets ``conversion_factor = 1.0``
    and ``units``: the attribute ``truth_units``, else ``"counts per bin"``.

    The file is written to a temporary file in the target directory (created
    if missing) and moved into place with ``os.replace``.

    Returns:
        The path written.
    """
    path = Path(path)
    file_attrs: dict[str, Any] = {"generator": "custom", "seed": -1}
    file_attrs.update(getattr(data, "attrs", {}) or {})
    file_attrs.update(attrs or {})
    file_attrs["conversion_factor"] = float(file_attrs.get("conversion_factor", 1.0))
    if "bin_size_ms" not in file_attrs:
        raise ValueError("write_h5 needs 'bin_size_ms' (in data.attrs or attrs)")

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = temp_sibling(path)
    os.close(fd)
    try:
        _write_h5_file(tmp_name, data, file_attrs)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise
    return path


def _write_h5_file(
    filename: str, data: dict[str, np.ndarray], file_attrs: dict[str, Any]
) -> None:
    """Write datasets and attributes to ``filename`` (overwriting it)."""
    with h5py.File(filename, "w") as f:
        for key, value in file_attrs.items():
            f.attrs[key] = value
        for name, array in data.items():
            array = np.asarray(array)
            # HDF5 cannot compress scalar datasets.
            opts = {"compression": "gzip", "compression_opts": 4} if array.ndim else {}
            dset = f.create_dataset(name, data=array, **opts)
            if name.endswith("_truth"):
                dset.attrs["conversion_factor"] = 1.0
                dset.attrs["units"] = str(file_attrs.get("truth_units", "counts per bin"))


SYNTH_GENERATORS: dict[str, Callable[..., SynthData]] = {
    "lorenz": make_lorenz,
    "rnn": make_rnn,
}
