"""``lfads-run``: train a spec, and the subcommands validate, plugins, synth and sample.

Every user error prints one line ``error: ...`` on stderr and exits with code 2 (``--debug``
shows the traceback instead).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from .errors import LfadsError

SUBCOMMANDS = ("validate", "plugins", "synth", "sample")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _train_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lfads-run",
        description="Train LFADS on the data of a spec file, then write posterior samples and plots. "
                    f"Subcommands: {', '.join(SUBCOMMANDS)} (lfads-run SUBCOMMAND --help).")
    p.add_argument("spec", help="spec YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set train.lr=0.001 (repeatable)")
    p.add_argument("--out", help="output directory (overrides the spec's 'output')")
    p.add_argument("--force", action="store_true",
                   help="if the output directory holds a run of another spec, move it aside and start over")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _sub_parser(cmd: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"lfads-run {cmd}")
    if cmd == "validate":
        p.description = "Check a spec and its data without training; print a summary."
        p.add_argument("spec")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--out")
    elif cmd == "plugins":
        p.description = "List every registered component: kind, name, distribution, version, status."
        p.add_argument("--json", action="store_true", help="print JSON")
    elif cmd == "synth":
        p.description = "Write a synthetic dataset with ground truth in the input format."
        p.add_argument("kind", choices=["lorenz", "rnn"])
        p.add_argument("--out", required=True, help="HDF5 file to write")
        p.add_argument("--seed", type=int, default=0)
    elif cmd == "sample":
        p.description = "Posterior-sample again from the best checkpoint of a run directory."
        p.add_argument("run_dir")
        p.add_argument("--samples", type=int, help="number of posterior samples (default: the spec's)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _validate(args) -> None:
    from . import run
    from .spec.load import load_spec

    spec = load_spec(args.spec, args.overrides, args.out)
    ds = run.load_data(spec)
    model, augs = run.make_model(spec, ds)
    n_in, n_out, t_in, t_out, ext = ds.shape
    m = spec.model
    print(f"spec ok: {args.spec}")
    print(f"data: {ds.path}")
    for name, split in ds.splits.items():
        recon = "" if split.recon is None else f", recon {split.recon.shape[1]} bins x {split.recon.shape[2]} ch"
        print(f"  {name}: {split.n_trials} trials, encod {split.encod.shape[1]} bins x "
              f"{split.encod.shape[2]} ch{recon}" + (", truth" if split.truth is not None else ""))
    print(f"external inputs: {ext}" + (f"; bin size {ds.bin_size_ms} ms" if ds.bin_size_ms else ""))
    print("components: " + ", ".join(f"{k} {getattr(m, k).name}" for k in
                                     ("readin", "encoder", "generator", "readout", "reconstruction",
                                      "ic_prior", "co_prior")))
    print("augmentations: " + (", ".join(a.name for a in m.augmentations) or "none"))
    n_params = sum(p.numel() for p in model.parameters())
    ctrl = "on" if model.generator.co_dim > 0 else "off (autonomous)"
    print(f"model: {n_params} parameters; controller {ctrl}; factors {model.generator.fac_dim}")
    print(f"output: {spec.output}")


def _plugins(args) -> None:
    from . import hooks, registry

    rows = registry.listing() + hooks.listing()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        status = "" if r["status"] == "ok" else f"  [{r['status']}]"
        print(f"{r['kind']:<15} {r['name']:<{width}}  {r['distribution']} {r['version']}{status}")


def _synth(args) -> None:
    from .data.synth import SYNTH_GENERATORS, write_h5

    data = SYNTH_GENERATORS[args.kind](seed=args.seed)
    try:
        path = write_h5(data, args.out)
    except OSError as exc:
        raise LfadsError(f"--out {args.out}: cannot write ({exc.strerror or exc})") from None
    n = {s: data[f"{s}_encod_data"].shape for s in ("train", "valid")}
    print(f"wrote {path}: {args.kind}, train {n['train']}, valid {n['valid']} (with ground truth)")


def _sample(args) -> None:
    from . import run

    run.sample(args.run_dir, args.samples)


def _train(args) -> None:
    from . import run
    from .spec.load import load_spec

    spec = load_spec(args.spec, args.overrides, args.out)
    run.train(spec, force=args.force)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        cmd, args = argv[0], _sub_parser(argv[0]).parse_args(argv[1:])
    else:
        cmd, args = "train", _train_parser().parse_args(argv)
    handler = {"validate": _validate, "plugins": _plugins, "synth": _synth, "sample": _sample,
               "train": _train}[cmd]
    try:
        handler(args)
    except LfadsError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `lfads-run plugins | head`
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
