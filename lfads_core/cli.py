"""``lfads-run``: train a spec, and the subcommands validate, plugins, synth and sample, plus
those that installed plugins add through the ``lfads_commands`` hook.

Every user error prints one line ``error: ...`` per problem on stderr and exits with code 2
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from .errors import LfadsError
from .hooks import BUILTIN_COMMANDS as SUBCOMMANDS
from .hooks import positive_int

HELP = {"validate": "check a spec, its data and the assembled model without training",
        "plugins": "list the installed components, hooks and commands (--check: test each)",
        "synth": "write a synthetic dataset with ground truth",
        "sample": "posterior-sample again from a run directory",
        "prepare": "bin spike times (NWB, .npz or CSV) into trials: write an input HDF5 file"}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from . import __version__

    return __version__


def _plugin_commands() -> dict:
    from . import hooks

    return hooks.commands()


def _epilog() -> str:
    found = _plugin_commands()
    width = max([10] + [len(n) for n in found]) + 2  # the built-ins line up alike with or without plugins
    lines = ["subcommands (lfads-run SUBCOMMAND --help):"]
    lines += [f"  {name:<{width}} {HELP[name]}" for name in SUBCOMMANDS]
    if found:
        lines.append("from installed plugins:")
        for name, items in found.items():
            for p in items:
                note = f" [error: {p.problem}]" if p.problem else ""
                lines.append(f"  {name:<{width}} {p.item.help} ({p.dist} {p.version}){note}")
    return "\n".join(lines)


def _train_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lfads-run", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train LFADS on the data of a spec file, then write posterior samples and plots.",
        epilog=_epilog())
    p.add_argument("spec", help="spec YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set train.lr=0.001 (repeatable)")
    p.add_argument("--out", help="output directory (overrides the spec's 'output')")
    p.add_argument("--version", action="version", version=f"lfads-core {_version()}")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides train.device)")
    p.add_argument("--address", help="AutoLFADS (a spec with pbt:): join the Ray cluster at auto or "
                   "HOST:PORT (overrides pbt.address; default: an embedded local Ray; local: no Ray)")
    p.add_argument("--force", action="store_true",
                   help="if the output directory holds a run of another spec, move it aside and start over")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _sub_parser(cmd: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"lfads-run {cmd}")
    if cmd == "validate":
        p.description = "Check a spec and its data without training; print a summary."
        p.add_argument("spec", help="spec YAML file")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a spec field, e.g. --set train.lr=0.001 (repeatable)")
        p.add_argument("--out", help="output directory (overrides the spec's 'output')")
        p.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides train.device)")
    elif cmd == "plugins":
        p.description = ("List every registered component, hook plugin, plugin command and synthetic "
                         "dataset: kind, name, distribution, version, status.")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--check", action="store_true",
                       help="also build each component alone at small sizes and check its outputs "
                            "(exit code 2 when any fails)")
    elif cmd == "synth":
        from . import hooks

        p.description = ("Write a synthetic dataset with ground truth in the input format "
                         "(lfads-run synth KIND --help for the options of one).")
        kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND", parser_class=_Parser)
        for name, items in hooks.synth_datasets().items():
            item, who = items[0].item, f"{items[0].dist} {items[0].version}"
            if len(items) > 1 or items[0].problem:
                continue  # listed as an error by lfads-run plugins
            sp = kinds.add_parser(name, help=f"{item.help} ({who})", description=f"{item.help} ({who})")
            sp.add_argument("--out", required=True, help="HDF5 file to write")
            sp.add_argument("--seed", type=_seed, default=0, help="random seed, >= 0 (default 0)")
            sp.add_argument("--debug", action="store_true", help="show tracebacks")
            if item.configure is not None:
                item.configure(sp)
    elif cmd == "sample":
        p.description = "Posterior-sample again from the best checkpoint of a run directory."
        p.add_argument("run_dir", help="a run directory (holding spec.yaml and checkpoints/)")
        p.add_argument("--samples", type=positive_int, help="number of posterior samples, >= 1 (default: the spec's)")
        p.add_argument("--device", default="auto",
                       help="auto (default: a GPU when there is one), cpu, cuda or cuda:N")
        p.add_argument("--data", metavar="FILE",
                       help="another data file (new trials of a trained session): sample its splits "
                            "and write RUN_DIR/samples_<stem>.h5 instead of re-sampling the run's data")
        p.add_argument("--split", action="append", metavar="NAME",
                       help="with --data: the split(s) to sample (repeatable; default: every split)")
        p.add_argument("--session", metavar="NAME",
                       help="with --data, for a run of several sessions: the session of the file")
        p.add_argument("--output", metavar="FILE", help="with --data: where to write (default "
                       "RUN_DIR/samples_<data stem>.h5)")
    elif cmd == "prepare":
        from .prepare import configure

        configure(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _validate(args) -> None:
    from . import hooks, run
    from .data.sessions import is_multisession

    from .spec.load import load_spec

    spec = load_spec(args.spec, _with_device(args), args.out)
    hooks.hook()  # a misspelt hook of an installed hook plugin is an error here too
    sessions = run.load_data(spec)
    model, augs = run.make_model(spec, sessions)
    run.check_components(spec, sessions, model, augs)
    if spec.pbt is not None:
        from .pbt.members import check_search_space
        from .pbt.ray_runner import preflight

        check_search_space(spec, source=str(args.spec))
        preflight(spec, source=str(args.spec))
    device = _device_line(spec)  # e.g. CUDA asked for where there is none: before "spec ok"
    first = sessions[0]
    n_in, n_out, t_in, t_out, ext = first.shape
    m = spec.model
    print(f"spec ok: {args.spec}")
    if is_multisession(spec.data.path):
        print(f"data: {len(sessions)} sessions of {t_in} encoder / {t_out} reconstruction bins "
              f"(data.path {spec.data.path}; training batches weighted by "
              f"data.session_weights: {spec.data.session_weights})")
    for ds in sessions:
        print(f"{'session ' + ds.name + ': ' if is_multisession(spec.data.path) else 'data: '}{ds.path}")
        for name, split in ds.splits.items():
            recon = "" if split.recon is None else f", recon {split.recon.shape[1]} bins x {split.recon.shape[2]} ch"
            print(f"  {name}: {split.n_trials} trials, encod {split.encod.shape[1]} bins x "
                  f"{split.encod.shape[2]} ch{recon}" + (", truth" if split.truth is not None else "")
                  + (", latents" if split.latents is not None else "")
                  + (", conditions" if split.cond is not None else ""))
    print(f"external inputs: {ext}" + (f"; bin size {first.bin_size_ms:.6g} ms" if first.bin_size_ms else ""))
    print("components: " + ", ".join(f"{k} {getattr(m, k).name}" for k in
                                     ("readin", "encoder", "generator", "readout", "reconstruction",
                                      "ic_prior", "co_prior")))
    recon = model.reconstructions[0]
    applies = (["rate_r2 (with truth)"] if first.train.truth is not None else []) + list(recon.metrics) \
        + (["latent_r2 (with latents)"] if first.train.latents is not None else [])
    applies = ", ".join(applies) or "none"
    print(f"reconstruction {m.reconstruction.name}: data {recon.support}; output in {recon.units}; "
          f"summary metrics: {applies}")
    print("augmentations: " + (", ".join(a.name for a in m.augmentations) or "none"))
    n_params = sum(p.numel() for p in model.parameters())
    ctrl = "on" if model.generator.co_dim > 0 else "off (autonomous)"
    print(f"model: {n_params} parameters; controller {ctrl}; factors {model.generator.fac_dim}")
    print(f"device: {device}")
    if spec.pbt is not None:
        from .pbt.ray_runner import describe_cluster
        from .pbt.runners import describe_engine

        pbt = spec.pbt
        print(f"AutoLFADS: population {pbt.population}, {pbt.generation_epochs} epochs per generation "
              f"after {pbt.burn_in_epochs} of burn-in, at most {pbt.max_generations} generations, "
              f"fitness {pbt.fitness}; tuning {', '.join(pbt.search_space)}; Ray: "
              f"{describe_cluster(spec)}; engine {describe_engine(spec)}")
    print(f"output: {spec.output}")
    for ds in sessions:
        for note in ds.notes:
            print(note if note.startswith("warning: ") else f"note: {note}")


def _plugins(args) -> int:
    from . import hooks, registry

    rows = registry.listing() + hooks.listing()
    if args.check:
        from .conformance import component_problems

        for r in rows:
            if r["kind"] in registry.KINDS and r["status"] == "ok":
                cls = registry.load(r["kind"], r["name"])
                try:
                    cls.Config()
                except Exception:  # noqa: BLE001 - required fields: it needs a config to be built
                    r["status"] = "ok (not checked: its Config has required fields)"
                    continue
                problems = component_problems(r["kind"], cls)
                r["status"] = f"error: {'; '.join(problems)}" if problems else "ok (checked)"
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(r["name"]) for r in rows), default=4)
        for r in rows:
            status = r["status"]
            if status == "ok":
                status = ""
            elif status.startswith("ok ("):  # "ok (checked)", "ok (not checked: ...)"
                status = "  " + status[len("ok ("):-1]
            else:
                status = f"  [{status}]"
            print(f"{r['kind']:<15} {r['name']:<{width}}  {r['distribution']} {r['version']}{status}")
    failed = [r for r in rows if r["status"].startswith(("error", "conflict"))]
    if args.check and failed:
        print(f"error: {len(failed)} of {len(rows)} plugin entries failed the check", file=sys.stderr)
        return 2
    return 0


def _synth(args) -> None:
    from pathlib import Path

    from . import hooks
    from .data.synth import write_h5

    provided = hooks.synth_datasets()[args.kind][0]
    item = provided.item
    options = {k: v for k, v in vars(args).items() if k not in ("kind", "out", "seed", "debug")}
    try:
        data = item.make(args.seed, **options)
    except ValueError as exc:  # a value the generator refuses: one line, as for any user error
        raise LfadsError(f"synth {args.kind}: {exc}") from None
    out = Path(args.out)
    # One mapping of arrays, or several files: {file-name suffix: arrays} ("" is --out itself),
    # or {"NAME.h5": arrays}: files in the folder --out.
    files = data if data and all(isinstance(v, dict) for v in data.values()) else {"": data}
    in_folder = all(name.endswith(".h5") for name in files)
    if in_folder and out.exists() and not out.is_dir():
        raise LfadsError(f"--out {out}: exists and is not a folder (this dataset writes one file per "
                         f"session into a folder)")
    for suffix, arrays in files.items():
        path = out / suffix if in_folder else out.with_name(f"{out.stem}{suffix}{out.suffix}")
        try:
            write_h5(arrays, path, item.file_attrs)
        except OSError as exc:
            raise LfadsError(f"--out {path}: cannot write ({exc.strerror or exc})") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise LfadsError(f"synth {args.kind} of {provided.dist} {provided.version} gave data that "
                             f"cannot be written: {exc}") from None
        n = {s: tuple(arrays[f"{s}_encod_data"].shape) for s in ("train", "valid")}
        print(f"wrote {path}: {args.kind}, train {n['train']}, valid {n['valid']} (with ground truth)")


def _sample(args) -> None:
    from . import run
    from .output.results import sample_other

    if args.data:
        sample_other(args.run_dir, args.data, args.split, args.session, args.output, args.samples,
                     args.device)
        return
    for flag in ("split", "session", "output"):
        if getattr(args, flag):
            raise LfadsError(f"--{flag} goes with --data FILE")
    run.sample(args.run_dir, args.samples, device=args.device)


def _prepare(args) -> None:
    from .prepare import command

    command(args)


def _train(args) -> None:
    from . import run
    from .spec.load import load_spec

    spec = load_spec(args.spec, _with_device(args), args.out)
    if args.address:
        if spec.pbt is None:
            raise LfadsError(f"--address: {args.spec} has no pbt section (AutoLFADS); a single run "
                             f"uses no Ray")
        import attrs

        spec = attrs.evolve(spec, pbt=attrs.evolve(spec.pbt, address=args.address))
    if spec.pbt is not None:
        from .pbt.run import train_pbt

        train_pbt(spec, force=args.force, source=str(args.spec))
        return
    run.train(spec, force=args.force)


def _with_device(args) -> list[str]:
    """``--set`` overrides, with ``--device X`` as ``train.device=X`` (checked like the spec)."""
    return list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])


def _device_line(spec) -> str:
    from .assembly import set_threads
    from .device import describe, has_triton, resolve_device, use_compile, use_graphs

    device = resolve_device(spec.train.device)
    if device.type != "cuda":
        from .model import fused
        n = set_threads(spec.train.threads)
        per = ""
        if spec.pbt is not None and spec.pbt.address != "local":  # a Ray worker's members
            n, per = max(1, int(spec.pbt.resources.cpu)), " per member, pbt.resources.cpu"
        status = fused.status()
        line = (f"cpu ({n} thread{'s' if n != 1 else ''}{per}; train.device: {spec.train.device}); "
                f"fused CPU kernels: {status}")
        if use_compile(spec.train.compile, device):  # train.compile: on
            fused_off = status.startswith(("off", "unavailable"))
            line += "; compiled steps on" + ("" if fused_off else " (where the fused kernels do not run)")
        return line
    graphs = "on" if use_graphs(spec.train.cuda_graphs, device) else "off"
    compiled = "on" if use_compile(spec.train.compile, device) else "off"
    if compiled == "off" and spec.train.compile == "auto" and not has_triton():
        compiled = "off, no Triton"
    return (f"{describe(device)}; CUDA graphs {graphs}; compiled steps {compiled} "
            f"(train.device: {spec.train.device}, train.compile: {spec.train.compile})")


def _plugin_parser(name: str):
    """The parser and the command of a plugin subcommand, or a one-line usage error."""
    items = _plugin_commands()[name]
    if len(items) > 1 or items[0].problem:
        sys.exit(_usage_error(f"lfads-run {name}: {items[0].problem}"))
    command = items[0].item
    p = _Parser(prog=f"lfads-run {name}", description=f"{command.help} ({items[0].dist} {items[0].version})")
    try:
        command.configure(p)
    except argparse.ArgumentError as exc:
        sys.exit(_usage_error(f"lfads-run {name}: the plugin's arguments are malformed: {exc}"))
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p, command


def _seed(text: str) -> int:
    from .hooks import nonnegative_int

    return nonnegative_int(text)


def _looks_like_a_command(word: str) -> bool:
    """A bare word that is no file: a subcommand of a plugin that is not installed, or a typo."""
    return (not word.startswith("-") and not os.path.exists(word) and os.sep not in word
            and "." not in word)


def _usage_error(text: str) -> int:
    print(f"error: {text}", file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        cmd, args = argv[0], _sub_parser(argv[0]).parse_args(argv[1:])
        handler = {"validate": _validate, "plugins": _plugins, "synth": _synth, "sample": _sample,
                   "prepare": _prepare}[cmd]
    elif argv and not argv[0].startswith("-") and argv[0] in _plugin_commands():
        parser, command = _plugin_parser(argv[0])
        args = parser.parse_args(argv[1:])
        handler = command.run
    elif argv and argv[0].lower().endswith((".nwb", ".npz", ".csv")):
        return _usage_error(f"{argv[0]}: a recording, not a spec; bin it into lfads's input format "
                            f"first: lfads-run prepare {argv[0]} --out FILE.h5 --bin-ms B ... "
                            f"(docs/prepare.md)")
    elif argv and _looks_like_a_command(argv[0]):
        known = list(SUBCOMMANDS) + list(_plugin_commands())
        return _usage_error(f"{argv[0]}: no such spec file or subcommand (subcommands: "
                            f"{', '.join(known)}; see lfads-run --help)")
    else:
        args = _train_parser().parse_args(argv)
        handler = _train
    from . import interrupt

    interrupt.install()
    try:
        code = handler(args)
    except LfadsError as exc:
        if args.debug:  # the traceback, then the same exit code
            import traceback

            traceback.print_exc()
        for line in str(exc).splitlines() or [""]:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume" if handler is _train else
              "interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `lfads-run plugins | head`
        sys.stderr.close()
        return 0
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
