"""Hooks of lfads-emg (entry-point group ``lfads``): ``lfads-run synth emg``.

Kept light: numpy is imported (through :mod:`.synth`) inside the functions, since every
``lfads-run --help`` imports this module.
"""

from __future__ import annotations

import argparse

from lfads_core import SynthDataset, hookimpl, positive_float, positive_int

DEFAULT_GAMMA_SHAPE = 4.0
DEFAULT_MUSCLES = 16




def _configure_synth(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gamma-shape", type=positive_float, default=DEFAULT_GAMMA_SHAPE,
                        metavar="K",
                        help="shape of the gamma noise of each bin; its coefficient of variation "
                             f"is 1/sqrt(K) (default {DEFAULT_GAMMA_SHAPE:g}: CV 0.5; 3-10 gives "
                             "the CV 0.3-0.6 of rectified, filtered, binned EMG)")
    parser.add_argument("--muscles", type=positive_int, default=DEFAULT_MUSCLES, metavar="N",
                        help=f"number of muscles (channels) (default {DEFAULT_MUSCLES})")


def _make_emg(seed: int, gamma_shape: float = DEFAULT_GAMMA_SHAPE, muscles: int = DEFAULT_MUSCLES):
    from .synth import make_emg

    return make_emg(seed=seed, gamma_shape=gamma_shape, n_muscles=muscles)  # ValueError: one line


@hookimpl
def lfads_synth_datasets():
    return [SynthDataset(
        name="emg",
        help="multi-muscle EMG: Lorenz latents with per-trial start jitter and tempo -> softplus "
             "means -> gamma noise, with true means and latents",
        make=_make_emg, configure=_configure_synth)]
