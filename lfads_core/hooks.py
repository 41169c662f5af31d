"""Cross-cutting hooks (pluggy): plugins that react to a run or add ``lfads-run`` subcommands
and synthetic datasets, rather than provide a component.

A plugin registers a module or object in the entry-point group ``lfads``; its functions named
like the hookspecs below and decorated with :data:`hookimpl` are called. A plugin that fails to
import is reported (``lfads-run plugins``) and skipped; a misspelt hook name is an error.
Keep a hook module light (import heavy libraries inside ``Command.run``): it is imported by every
``lfads-run --help``.
"""

from __future__ import annotations

import argparse
import functools
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional

import attrs
import pluggy

from .errors import PluginError

hookspec = pluggy.HookspecMarker("lfads")
hookimpl = pluggy.HookimplMarker("lfads")


class HookSpecs:
    @hookspec
    def lfads_epoch_end(self, run_dir: Path, epoch: int, metrics: dict) -> None:
        """After each training epoch, once its checkpoint is written. ``metrics`` is the row of
        metrics.csv (epoch, train_*/valid_* losses, lr, ramps, is_best, seconds)."""

    @hookspec
    def lfads_run_end(self, run_dir: Path, summary: dict) -> None:
        """After the outputs of a run are written. ``summary`` is the content of summary.json."""

    @hookspec
    def lfads_commands(self) -> list["Command"]:
        """Subcommands this plugin adds: ``lfads-run NAME ...`` (listed in ``lfads-run --help``
        while the plugin is installed)."""

    @hookspec
    def lfads_synth_datasets(self) -> list["SynthDataset"]:
        """Synthetic datasets this plugin adds: ``lfads-run synth NAME --out FILE``."""


BUILTIN_COMMANDS = ("validate", "plugins", "synth", "sample", "prepare")  # lfads_core.cli runs these
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@attrs.frozen
class Command:
    """A subcommand ``lfads-run NAME``.

    ``help``: one line for ``lfads-run --help``. ``configure(parser)`` adds its arguments to an
    ``argparse.ArgumentParser`` (``--debug`` is added by the core). ``run(args)`` does the work
    and returns an exit code (None means 0); raise :class:`lfads_core.errors.LfadsError` (or a
    subclass such as ``DataError``) for a user error: the core prints it as one line
    ``error: ...`` and exits with code 2.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Optional[int]]


@attrs.frozen
class SynthDataset:
    """A synthetic dataset ``lfads-run synth NAME --out FILE [--seed S] [options]``.

    ``make(seed, **options)`` returns a mapping of input-file keys to arrays (``train_encod_data``,
    ..., ideally ``{split}_truth`` in the reconstruction's units), optionally with an ``attrs``
    mapping attribute holding file attributes (``bin_size_ms`` is required there or in
    ``file_attrs``; ``truth_units`` names the units of the truth arrays). To write several files,
    return ``{suffix: mapping}``: each goes to ``<FILE stem><suffix><FILE suffix>`` (suffix ``""``
    is FILE itself). Or return ``{"NAME.h5": mapping, ...}`` (every key ending in ``.h5``): FILE
    is then a folder that receives those files (one per session). ``configure(parser)``, if given, adds options (``--frame-bins``); their
    values reach ``make`` as keyword arguments named by argparse's ``dest``.
    """

    name: str
    help: str
    make: Callable[..., Any]
    file_attrs: dict = attrs.Factory(dict)
    configure: Optional[Callable[[argparse.ArgumentParser], None]] = None


def positive_int(text: str) -> int:
    """An argparse ``type`` for options of commands and synth datasets: an integer >= 1 (a bad
    value is a one-line usage error naming the option)."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0 (seeds, counts)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got '{text}'") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a positive number, got '{text}'") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got '{text}'")
    return value


@attrs.frozen
class Provided:
    """A command or synth dataset with the distribution that provides it; ``problem`` is set for a
    name taken by a built-in or by several distributions."""

    item: Any
    dist: str
    version: str
    problem: Optional[str] = None


_BUILTINS_NAME = "lfads-core builtins"


class _Builtins:
    """The core's own synthetic datasets, provided through the same hook as plugins'."""

    @staticmethod
    @hookimpl
    def lfads_synth_datasets():
        from .data import synth

        def lorenz(seed: int, sessions: int = 1):
            if sessions == 1:
                return synth.make_lorenz(seed=seed)
            return {f"session{s}.h5": data for s, data in
                    enumerate(synth.make_lorenz_sessions(seed=seed, n_sessions=sessions))}

        def sessions_option(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("--sessions", type=positive_int, default=1, metavar="N",
                                help="N > 1: N sessions sharing the latent dynamics, with their own "
                                     "neurons (40, 30, 20, ...) and 70%% of the conditions each, "
                                     "written as --out DIR/session<i>.h5")

        return [SynthDataset("lorenz", "Poisson spikes from a Lorenz attractor (with true rates)",
                             lorenz, configure=sessions_option),
                SynthDataset("rnn", "Poisson spikes from a chaotic RNN with input pulses (with true "
                             "rates)", lambda seed: synth.make_rnn(seed=seed))]


@functools.cache
def _manager() -> tuple[pluggy.PluginManager, tuple[dict, ...], tuple[str, ...]]:
    pm = pluggy.PluginManager("lfads")
    pm.add_hookspecs(HookSpecs)
    pm.register(_Builtins, name=_BUILTINS_NAME)
    rows = []
    for ep in metadata.entry_points(group="lfads"):
        dist, version = (ep.dist.name, ep.dist.version) if ep.dist is not None else ("?", "?")
        row = {"kind": "hooks", "name": ep.name, "distribution": dist, "version": version,
               "target": ep.value, "status": "ok"}
        try:
            pm.register(ep.load(), name=f"{ep.name} ({dist})")
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the run down
            row["status"] = f"error: hook plugin '{ep.name}' from {dist} {version} failed to load: " \
                            f"{type(exc).__name__}: {exc}"
        rows.append(row)
    invalid = []
    while True:  # a hookimpl that matches no hookspec (a misspelt hook) is an error
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin)
            pm.unregister(exc.plugin)
            invalid.append(f"hook plugin {name}: {exc}")
            for row in rows:
                if name.startswith(f"{row['name']} ("):
                    row["status"] = f"error: {exc}"
    return pm, tuple(rows), tuple(invalid)


def hook():
    """The relay to call hooks: ``hook().lfads_epoch_end(run_dir=..., epoch=..., metrics=...)``.
    Raises PluginError if an installed hook plugin implements a hook that does not exist."""
    pm, _, invalid = _manager()
    if invalid:
        raise PluginError(invalid[0])
    return pm.hook


def _provided(hook_name: str) -> tuple[dict[str, list[Provided]], tuple[str, ...]]:
    """Everything the implementations of ``hook_name`` return, by name, with its distribution,
    and the problems of implementations that raised or returned something else (reported, not
    fatal). Names of lfads-core (its built-in commands and synthetic datasets) cannot be taken."""
    pm, rows, _ = _manager()
    dists = {f"{r['name']} ({r['distribution']})": (r["distribution"], r["version"]) for r in rows}
    dists[_BUILTINS_NAME] = ("lfads-core", _core_version())
    commands_hook = hook_name == "lfads_commands"
    expected = Command if commands_hook else SynthDataset
    found: dict[str, list[Provided]] = {}
    errors = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        dist, version = dists.get(impl.plugin_name, ("?", "?"))
        try:
            items = list(impl.function() or [])
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the CLI down
            errors.append(f"{hook_name} of {dist} {version} failed: {type(exc).__name__}: {exc}")
            continue
        for item in items:
            if not isinstance(item, expected) or not _NAME.match(getattr(item, "name", "") or ""):
                errors.append(f"{hook_name} of {dist} {version} returned {item!r}; expected "
                              f"lfads_core.{expected.__name__} objects with a lower-case name")
                continue
            found.setdefault(item.name, []).append(Provided(item, dist, version))
    core = set(BUILTIN_COMMANDS) if commands_hook else {
        name for name, items in found.items() if any(p.dist == "lfads-core" for p in items)}
    taken = "a built-in command of lfads-run" if commands_hook else "a synthetic dataset of lfads-core"
    for name, items in found.items():
        if name in core:  # the core's own stays usable, listed first
            found[name] = sorted((p if p.dist == "lfads-core" else
                                  attrs.evolve(p, problem=f"'{name}' is {taken}") for p in items),
                                 key=lambda p: p.problem is not None)
        elif len(items) > 1:
            who = " and ".join(f"{p.dist} {p.version}" for p in items)
            found[name] = [attrs.evolve(p, problem=f"'{name}' is provided by several distributions: "
                                        f"{who}") for p in items]
    return dict(sorted(found.items())), tuple(errors)


@functools.cache
def _collected(hook_name: str) -> tuple[dict[str, list[Provided]], tuple[str, ...]]:
    return _provided(hook_name)


def commands() -> dict[str, list[Provided]]:
    """Plugin subcommands by name (a list of more than one entry, or one with a ``problem``,
    means the name cannot be used)."""
    return _collected("lfads_commands")[0]


def synth_datasets() -> dict[str, list[Provided]]:
    """Synthetic datasets (the core's and plugins') by name."""
    return _collected("lfads_synth_datasets")[0]


def _hook_errors() -> list[str]:
    return [e for name in ("lfads_commands", "lfads_synth_datasets") for e in _collected(name)[1]]


def _core_version() -> str:
    from . import __version__

    return __version__


def listing() -> list[dict]:
    """Hook plugins, their subcommands and synthetic datasets, in the format of
    :func:`lfads_core.registry.listing`."""
    rows = list(_manager()[1])
    for kind, found in (("command", commands()), ("synth", synth_datasets())):
        for name, items in found.items():
            for p in items:
                rows.append({"kind": kind, "name": name, "distribution": p.dist, "version": p.version,
                             "target": "", "status": f"error: {p.problem}" if p.problem else "ok"})
    for problem in _hook_errors():  # a hook implementation that raised or returned something else
        rows.append({"kind": "hooks", "name": problem.split(" ", 1)[0], "distribution": "",
                     "version": "", "target": "", "status": f"error: {problem}"})
    return rows


def clear_cache() -> None:
    """Forget loaded hook plugins (after installing one at run time; tests)."""
    _manager.cache_clear()
    _collected.cache_clear()


def load_errors() -> list[str]:
    """Problems of hook plugins: failed imports, and hook implementations that raised."""
    return [r["status"][len("error: "):] for r in _manager()[1] if r["status"] != "ok"] + _hook_errors()
