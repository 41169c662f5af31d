"""Synthetic two-photon calcium data with ground truth (``lfads-run synth calcium``).

Model (all per neuron n, bin t of ``bin_ms``; defaults in brackets):

1. Spikes: :func:`lfads_core.make_lorenz` (Lorenz latents -> log-rates -> Poisson counts)
   with ``n_neurons`` [40], ``bin_ms`` [10], 60 conditions x 20 trials of 100 bins, and
   ``base_rate_hz`` [4]: rates of a few Hz (5.7 Hz on average; 0.5-30 Hz between the 1st and
   99th percentiles of neurons x bins).
2. Amplitudes: each spike adds a jump ``a`` to the neuron's calcium, in dF/F. Each neuron has
   its own mean amplitude ``A_n = amp_mean * exp(amp_neuron_sd * z_n)`` [0.2 dF/F, 0.3]
   (indicator expression differs between cells; ~0.2 dF/F per action potential is GCaMP6f-like);
   spike-to-spike amplitudes are lognormal with mean ``A_n`` and coefficient of variation
   ``amp_cv`` [0.3].
3. Calcium: AR(1), ``c_t = g c_{t-1} + sum of the amplitudes of the spikes of bin t`` with
   ``g = exp(-bin / tau_s)``, ``tau_s`` [0.3 s, a GCaMP6f-like decay]. Every trial starts with
   a burn-in of ``ceil(5 tau / bin)`` bins of spikes at the trial's first-bin rate, so the trial
   starts at a random, stationary level instead of 0.
4. dF/F = c + Gaussian noise of standard deviation ``noise_sd`` [0.05 dF/F per sample: a single
   spike is ~4 noise s.d., 0.2 / 0.05 ~ good two-photon data], zero baseline.
5. ``frame_bins`` K > 1: a neuron is sampled once per frame of K bins, at its own scan offset
   ``o_n`` (uniform in 0..K-1, fixed for all trials): bins t with ``(t - o_n) % K == 0`` are
   observed, the others are NaN (in the dF/F and in the events). The noise is per sample, so
   it does not depend on K.

Two files (a mapping ``{"": events, "_dff": dff}`` for ``lfads-run synth``):

- ``FILE``: ``{split}_encod_data`` = ``{split}_recon_data`` = events from
  :func:`lfads_calcium.deconvolve.deconvolve_arrays` applied to the dF/F (the pipeline of
  ``lfads-run deconvolve`` with its default ``--tau-s auto``, not the true spikes), the input of
  the ``zig`` reconstruction.
- ``FILE_dff``: ``{split}_encod_data`` = ``{split}_recon_data`` = the dF/F traces, the input of
  ``lfads-run deconvolve``.

Both carry, at bin resolution and without NaN:

- ``{split}_truth``: the expected event amplitude at a sample in dF/F, the units of the
  events and of ``zig``'s mean: ``A_n * sum_{j<K} g^j r_{t-j}`` (rates before the trial at the
  first-bin rate). With K = 1 this is ``rate x mean amplitude``; with K > 1 an observed event is
  the calcium jump since the previous frame, i.e. the spikes of K bins, decayed, so the truth
  is summed likewise. (The deconvolved events average about 0.99 x this truth, small ones
  being zeroed; each trial's first observed sample is NaN in the events.)
- ``{split}_truth_rates`` (spikes per bin), ``{split}_spikes`` (counts),
  ``{split}_spike_amplitudes`` (the summed amplitudes of each bin's spikes: the true events at
  bin resolution, dF/F), ``{split}_latents`` (z-scored Lorenz state), ``{split}_inds``,
  ``{split}_cond``; file attributes ``bin_size_ms``, ``generator = "calcium"``, ``seed``,
  ``frame_bins``, ``scan_offsets`` [N], ``true_tau_s``, ``noise_sd``, ``amp_mean``, ``amp_cv``,
  ``base_rate_hz``, ``n_conditions``, ``trials_per_condition``, ``truth_units``; ``tau_s`` is
  the true decay in the dF/F file and, as ``lfads-run deconvolve`` writes it, the decay the
  deconvolution used in the events file, which also has its ``deconvolution``,
  ``tau_s_source``, ``data_units`` and ``event_threshold``. Running ``lfads-run deconvolve`` on
  ``FILE_dff`` reproduces ``FILE``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["CalciumData", "make_calcium"]

SPLITS = ("train", "valid")
TRUTH_UNITS = "expected event amplitude per sample (dF/F)"


class CalciumData(dict):
    """``dict[str, np.ndarray]`` with an ``attrs`` dict of file attributes."""

    def __init__(self, arrays: dict, attrs: dict[str, Any]):
        super().__init__(arrays)
        self.attrs: dict[str, Any] = dict(attrs)


def make_calcium(seed: int = 0, frame_bins: int = 1, *, n_conditions: int = 60,
                 trials_per_condition: int = 20, n_bins: int = 100, n_neurons: int = 40,
                 bin_ms: float = 10.0, base_rate_hz: float = 4.0, tau_s: float = 0.3,
                 amp_mean: float = 0.2, amp_neuron_sd: float = 0.3, amp_cv: float = 0.3,
                 noise_sd: float = 0.05, valid_fraction: float = 0.2,
                 deconvolve_tau_s: float | None = None) -> dict[str, CalciumData]:
    """Synthetic dF/F and deconvolved events with ground truth (model: module docstring).

    ``deconvolve_tau_s``: the decay time given to the deconvolution (None: estimated, as
    ``lfads-run deconvolve --tau-s auto``). Returns ``{"": events, "_dff": dff}``.
    """
    import numpy as np

    from lfads_core import make_lorenz

    from .deconvolve import deconvolve_arrays

    frame_bins = int(frame_bins)
    if frame_bins < 1:
        raise ValueError(f"frame_bins must be >= 1, got {frame_bins}")
    for name, value in dict(tau_s=tau_s, amp_mean=amp_mean, noise_sd=noise_sd, bin_ms=bin_ms).items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if frame_bins > n_bins:
        raise ValueError(f"frame_bins ({frame_bins}) must not exceed n_bins ({n_bins})")

    lor = make_lorenz(seed=seed, n_conditions=n_conditions, trials_per_condition=trials_per_condition,
                      n_bins=n_bins, n_neurons=n_neurons, bin_ms=bin_ms, base_rate_hz=base_rate_hz,
                      valid_fraction=valid_fraction)
    rng = np.random.default_rng([int(seed), 0xCA])  # a stream of its own, after make_lorenz's
    bin_s = bin_ms / 1000.0
    g = math.exp(-bin_s / tau_s)
    amp_n = amp_mean * np.exp(amp_neuron_sd * rng.normal(size=n_neurons))  # mean amplitude [N]
    sigma = math.sqrt(math.log1p(amp_cv ** 2))
    offsets = rng.integers(0, frame_bins, size=n_neurons)
    observed = (np.arange(n_bins)[:, None] - offsets[None, :]) % frame_bins == 0  # [T, N]
    n_burn = int(math.ceil(5 * tau_s / bin_s))

    def amplitudes(counts):
        """Summed lognormal amplitudes of ``counts`` spikes per element (mean A_n each)."""
        counts = counts.astype(np.int64)
        total = np.zeros(counts.shape)
        for k in range(1, int(counts.max(initial=0)) + 1):
            has = counts >= k
            draw = np.exp(rng.normal(-0.5 * sigma ** 2, sigma, size=counts.shape))
            total += np.where(has, draw, 0.0)
        return total * amp_n

    events, dff = {}, {}
    for split in SPLITS:
        rates = lor[f"{split}_truth"].astype(np.float64)  # [trials, T, N] spikes per bin
        spikes = lor[f"{split}_encod_data"]
        jumps = amplitudes(spikes)  # true events at bin resolution, dF/F
        # burn-in at the first-bin rate: the calcium a trial starts with
        burn = amplitudes(rng.poisson(np.repeat(rates[:, :1], n_burn, axis=1)))
        c = np.zeros(rates.shape[::2])
        for t in range(n_burn):
            c = g * c + burn[:, t]
        calcium = np.empty_like(rates)
        for t in range(n_bins):
            c = g * c + jumps[:, t]
            calcium[:, t] = c
        trace = calcium + noise_sd * rng.normal(size=calcium.shape)
        trace[:, ~observed] = np.nan
        # expected event at a sample: the spikes of the K bins since the previous frame, decayed
        padded = np.concatenate([np.repeat(rates[:, :1], frame_bins - 1, axis=1), rates], axis=1)
        truth = sum(g ** j * padded[:, frame_bins - 1 - j: frame_bins - 1 - j + n_bins]
                    for j in range(frame_bins)) * amp_n
        common = {f"{split}_truth": truth.astype(np.float32),
                  f"{split}_truth_rates": rates.astype(np.float32),
                  f"{split}_spikes": spikes.astype(np.float32),
                  f"{split}_spike_amplitudes": jumps.astype(np.float32),
                  f"{split}_latents": lor[f"{split}_latents"],
                  f"{split}_inds": lor[f"{split}_inds"],
                  f"{split}_cond": lor[f"{split}_cond"]}
        trace = trace.astype(np.float32)
        dff.update({f"{split}_encod_data": trace, f"{split}_recon_data": trace.copy(), **common})
        events.update(common)

    deconv, deconv_attrs, _ = deconvolve_arrays(dff, bin_s, deconvolve_tau_s)
    for key, value in deconv.items():
        events[key] = value
    attrs = dict(bin_size_ms=float(bin_ms), generator="calcium", seed=int(seed),
                 frame_bins=frame_bins, tau_s=float(tau_s), noise_sd=float(noise_sd),
                 amp_mean=float(amp_mean), amp_neuron_sd=float(amp_neuron_sd), amp_cv=float(amp_cv),
                 base_rate_hz=float(base_rate_hz),
                 n_conditions=int(n_conditions), trials_per_condition=int(trials_per_condition),
                 true_tau_s=float(tau_s), truth_units=TRUTH_UNITS,
                 scan_offsets=offsets.astype(np.int64))
    dff_attrs = dict(attrs, data_units="dF/F")
    event_attrs = dict(attrs, **deconv_attrs)  # its tau_s: the decay the deconvolution used
    order = [f"{s}_{k}" for s in SPLITS for k in ("encod_data", "recon_data")]
    events = {k: events[k] for k in order + [k for k in events if k not in order]}
    dff = {k: dff[k] for k in order + [k for k in dff if k not in order]}
    return {"": CalciumData(events, event_attrs), "_dff": CalciumData(dff, dff_attrs)}
