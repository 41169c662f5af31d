"""Hooks of lfads-spikes (entry-point group ``lfads``): the synthetic dataset
``lfads-run synth lorenz_overdispersed``.

Over-dispersed spike counts with known rates: the Lorenz rates of :func:`lfads_core.make_lorenz`
(counts per bin), each bin of each trial and neuron multiplied by an independent gamma gain of
shape R and mean 1, then Poisson counts. Given the rate λ, a count is negative binomial with mean
λ and size R (variance λ + λ²/R): a gamma-Poisson mixture. ``{split}_truth`` holds the Lorenz
rates λ (counts per bin), the mean of the counts; ``{split}_latents``, ``_inds``, ``_cond``
are make_lorenz's.

Kept light: numpy and the core's data code are imported inside the functions, since every
``lfads-run --help`` imports this module.
"""

from __future__ import annotations

import argparse

from lfads_core import SynthDataset, hookimpl, positive_float, positive_int

DEFAULT_DISPERSION = 2.0
DEFAULT_BASE_RATE_HZ = 25.0




def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dispersion", type=positive_float, default=DEFAULT_DISPERSION, metavar="R",
                        help="shape R of the per-bin gamma gain (the negative binomial size; variance "
                             f"λ + λ²/R; smaller is more over-dispersed; default {DEFAULT_DISPERSION:g})")
    parser.add_argument("--base-rate-hz", type=positive_float, default=DEFAULT_BASE_RATE_HZ,
                        metavar="HZ", help="mean firing rate of the Lorenz rates before their "
                                           f"modulation, 10 ms bins (default {DEFAULT_BASE_RATE_HZ:g})")
    parser.add_argument("--n-conditions", type=positive_int, default=60, metavar="C",
                        help="Lorenz initial conditions (default 60)")
    parser.add_argument("--trials-per-condition", type=positive_int, default=20, metavar="K",
                        help="trials per condition (default 20; 20%% of all trials are validation)")
    parser.add_argument("--n-bins", type=positive_int, default=100, metavar="T",
                        help="bins per trial (default 100)")
    parser.add_argument("--n-neurons", type=positive_int, default=40, metavar="N",
                        help="neurons (default 40)")


def make_lorenz_overdispersed(seed: int = 0, dispersion: float = DEFAULT_DISPERSION,
                              base_rate_hz: float = DEFAULT_BASE_RATE_HZ, n_conditions: int = 60,
                              trials_per_condition: int = 20, n_bins: int = 100,
                              n_neurons: int = 40):
    """make_lorenz's rates × Gamma(R, 1/R) per bin -> Poisson counts (see the module docstring).

    Returns make_lorenz's mapping (with ``.attrs``), its ``{split}_encod_data`` and
    ``{split}_recon_data`` replaced by the over-dispersed counts (the same array in both)."""
    import numpy as np

    from lfads_core import make_lorenz

    if not dispersion > 0:
        raise ValueError(f"dispersion must be positive, got {dispersion}")
    data = make_lorenz(seed=seed, n_conditions=n_conditions,
                       trials_per_condition=trials_per_condition, n_bins=n_bins,
                       n_neurons=n_neurons, base_rate_hz=base_rate_hz)
    rng = np.random.default_rng([int(seed), 0x0D15])  # a stream apart from make_lorenz's
    for split in ("train", "valid"):
        rates = data[f"{split}_truth"].astype(np.float64)
        gain = rng.gamma(shape=dispersion, scale=1.0 / dispersion, size=rates.shape)
        counts = rng.poisson(rates * gain).astype(np.float32)
        data[f"{split}_encod_data"] = counts
        data[f"{split}_recon_data"] = counts.copy()
    data.attrs.update(generator="lorenz_overdispersed", dispersion=float(dispersion))
    return data


@hookimpl
def lfads_synth_datasets():
    return [SynthDataset(
        name="lorenz_overdispersed",
        help="Lorenz rates x per-bin gamma gain -> over-dispersed (negative binomial) counts",
        make=make_lorenz_overdispersed, configure=_configure,
        file_attrs={"truth_units": "counts per bin"})]
