"""Hooks of lfads-calcium (entry-point group ``lfads``): ``lfads-run deconvolve`` and
``lfads-run synth calcium``.

Kept light: numpy, h5py and oasis are imported inside the functions, since every
``lfads-run --help`` imports this module.
"""

from __future__ import annotations

import argparse

from lfads_core import Command, SynthDataset, hookimpl, positive_int

DECONVOLVE_HELP = "OASIS deconvolution of dF/F traces into event amplitudes (dF/F units)"


def _configure_deconvolve(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Deconvolve the dF/F of an lfads input file ({split}_encod_data and {split}_recon_data, "
        "NaN where a neuron was not sampled) into calcium event amplitudes with OASIS AR(1), per "
        "neuron on its observed samples only. Every other key and attribute is copied; events "
        "keep the NaN pattern and the units of dF/F (0 = no event).")
    parser.add_argument("IN", help="input HDF5 file with dF/F traces")
    parser.add_argument("--out", required=True, metavar="OUT", help="HDF5 file to write (not IN)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--tau-s", default="auto", metavar="T|auto",
                        help="decay time constant of the indicator in seconds, or 'auto' to "
                             "estimate it per neuron from the decays after events and use the "
                             "median for all (default: auto; e.g. ~0.3-0.4 for GCaMP6f, "
                             "~1 for GCaMP6s)")
    parser.add_argument("--bin-ms", default=None, metavar="MS",
                        help="bin size in ms (default: the file's 'bin_size_ms' attribute; when given, it replaces "
                             "that attribute in the output)")


def _positive(text: str, option: str, unit: str) -> float:
    from lfads_core.errors import LfadsError

    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        extra = " or 'auto'" if option == "--tau-s" else ""
        raise LfadsError(f"{option} must be a positive number of {unit}{extra}, got '{text}'")
    return value


def _run_deconvolve(args: argparse.Namespace) -> int:
    from .deconvolve import TAU_SOURCE_FALLBACK, deconvolve_file

    tau = None if str(args.tau_s).strip().lower() == "auto" else _positive(args.tau_s, "--tau-s", "seconds")
    bin_ms = None if args.bin_ms is None else _positive(args.bin_ms, "--bin-ms", "milliseconds")
    s = deconvolve_file(args.IN, args.out, tau_s=tau, bin_ms=bin_ms, force=args.force)
    splits = ", ".join(f"{name} {n} trials" for name, n in s["splits"].items())
    print(f"wrote {s['out']}: OASIS AR(1) events (dF/F units) of {s['neurons']} neurons; {splits}")
    if s["tau_s_source"] == "given":
        tau_text = f"tau {s['tau_s']:.3g} s (given)"
    elif s["tau_s_range"] is not None and s["tau_s_source"] == TAU_SOURCE_FALLBACK:
        lo, hi = s["tau_s_range"]
        tau_text = (f"tau {lo:.3g}-{hi:.3g} s per neuron (no decay could be fitted to events, so "
                    f"OASIS's autocovariance estimates: give the indicator's --tau-s)")
    elif s["tau_s_range"] is not None:
        lo, hi = s["tau_s_range"]
        tau_text = f"tau {s['tau_s']:.3g} s (estimated per neuron: median; range {lo:.3g}-{hi:.3g} s)"
    else:
        tau_text = "tau: no neuron had enough data to estimate it"
    frames = "/".join(str(k) for k in s["frame_bins"]) or "1"
    print(f"{tau_text}; frame interval {frames} bin(s) of {s['bin_ms']:g} ms; "
          f"{100 * s['zero_fraction']:.1f}% of the observed samples are zero events "
          f"({s['seconds']:.1f} s)")
    return 0




def _configure_synth(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frame-bins", type=positive_int, default=1, metavar="K",
                        help="sample each neuron once per frame of K bins at its own scan offset, "
                             "NaN in the other bins (default 1: every bin)")


def _make_calcium(seed: int, frame_bins: int = 1):
    from .synth import make_calcium

    return make_calcium(seed=seed, frame_bins=frame_bins)  # a ValueError is a one-line error


@hookimpl
def lfads_commands():
    return [Command(name="deconvolve", help=DECONVOLVE_HELP, configure=_configure_deconvolve,
                    run=_run_deconvolve)]


@hookimpl
def lfads_synth_datasets():
    return [SynthDataset(
        name="calcium",
        help="two-photon dF/F (FILE_dff) and OASIS events (FILE) from Lorenz-driven spikes, with "
             "true rates, spikes and latents",
        make=_make_calcium, configure=_configure_synth)]
