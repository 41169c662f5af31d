"""Hooks of lfads-multisession (entry-point group ``lfads``): ``lfads-run pcr SPEC``.

Kept light: every ``lfads-run --help`` imports this module; numpy and the data loading are
imported inside the command.
"""

from __future__ import annotations

import argparse

from lfads_core import Command, hookimpl

PCR_HELP = "principal-component regression of a spec's sessions (multisession readin init)"


def _configure_pcr(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Load a spec's sessions (data.path: one file, a glob or a list) and show what the PCR "
        "initialisation of the 'multisession' readin finds: the mode (condition averages over "
        "shared conditions, or single trials), and per session its trials, neurons, conditions "
        "used, the variance its readin (dim D) carries through to the readout, and the "
        "variance in the D principal components. Trains nothing, writes nothing.")
    parser.add_argument("spec", help="spec file (YAML) with model.readin: {name: multisession, ...}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec value (repeatable), e.g. --set model.readin.dim=20")


def _run_pcr(args: argparse.Namespace) -> int:
    from .report import run_pcr

    run_pcr(args.spec, args.overrides)
    return 0


@hookimpl
def lfads_commands():
    return [Command(name="pcr", help=PCR_HELP, configure=_configure_pcr, run=_run_pcr)]
