"""Entry-point registries of components.

Every component kind has one entry-point group (``lfads.<kind>``) mapping a short name to a
component class. Discovery reads distribution metadata only; a component is imported when a
spec selects it (:func:`load`). A plugin that fails to import is reported by :func:`listing`
and raises :class:`~lfads_core.errors.PluginError` only when used.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from importlib import metadata

import attrs

from .errors import PluginError

KINDS = ("readin", "encoder", "generator", "prior", "reconstruction", "augmentation", "readout")


@attrs.frozen
class Entry:
    """One registered component (metadata only; nothing imported)."""

    kind: str
    name: str
    value: str  # "module:Class"
    dist: str
    version: str

    @property
    def who(self) -> str:
        """How errors name it: ``prior 'laplace' from lfads-example 0.1.0``."""
        return f"{self.kind} '{self.name}' from {self.dist} {self.version}"

    def load(self) -> type:
        """Import the component class and check it (:func:`class_problems`); an import failure
        or a malformed class becomes a one-line PluginError naming the distribution."""
        try:
            ep = metadata.EntryPoint(name=self.name, value=self.value, group=f"lfads.{self.kind}")
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 - any plugin failure is reported the same way
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise PluginError(f"{self.who} failed to import ({self.value}): "
                              f"{type(exc).__name__}: {first}") from None
        problems = class_problems(self.kind, cls)
        if problems:
            raise PluginError(f"{self.who} ({self.value}): {'; '.join(problems)}")
        return cls


def class_problems(kind: str, cls) -> list[str]:
    """What is wrong with a component class of ``kind``: not a subclass of the kind's base class
    (:mod:`lfads_core.components`), no attrs ``Config``, abstract methods not implemented, an
    augmentation's ``hyperparameters`` that are not float fields of its ``Config``."""
    from .components import BASES

    base = BASES[kind]
    if not isinstance(cls, type):
        return [f"the entry point names {type(cls).__name__} {cls!r}, expected a class"]
    problems = []
    if not issubclass(cls, base):
        problems.append(f"{cls.__name__} does not subclass lfads_core.{base.__name__}")
    config = getattr(cls, "Config", None)
    if config is None:
        problems.append(f"{cls.__name__} has no Config (a frozen attrs class of its spec "
                        f"parameters; `@attrs.frozen class Config: pass` when it has none)")
    elif not (isinstance(config, type) and attrs.has(config)):
        problems.append(f"{cls.__name__}.Config is not an attrs class (decorate it with @attrs.frozen)")
    if issubclass(cls, base) and inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        problems.append(f"{cls.__name__} does not implement {missing}")
    if kind == "augmentation" and config is not None and isinstance(config, type) and attrs.has(config):
        fields = {f.name: f for f in attrs.fields(config)}
        for name in getattr(cls, "hyperparameters", ()):
            field = fields.get(name)
            if field is None:
                problems.append(f"{cls.__name__}.hyperparameters names '{name}', which is not a field "
                                f"of its Config (fields: {', '.join(fields) or 'none'})")
            elif field.type in (int, "int", bool, "bool", str, "str"):
                kind_of = getattr(field.type, "__name__", field.type)
                problems.append(f"{cls.__name__}.hyperparameters names '{name}', a field of type "
                                f"{kind_of}; hyperparameters are float fields (PBT draws real values)")
    if kind == "reconstruction" and issubclass(cls, base):
        n = getattr(cls, "n_params", None)
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            problems.append(f"{cls.__name__}.n_params must be a class attribute, an integer >= 1 "
                            f"(parameters per channel), got {n!r}")
    return problems


@functools.cache
def entries(kind: str) -> dict[str, tuple[Entry, ...]]:
    """All entries of a kind by name (several entries for one name mean a conflict)."""
    if kind not in KINDS:
        raise PluginError(f"unknown component kind '{kind}' (expected one of {', '.join(KINDS)})")
    found: dict[str, dict[str, Entry]] = {}
    for ep in metadata.entry_points(group=f"lfads.{kind}"):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        # The same distribution can be seen twice on sys.path (editable installs): dedupe by dist.
        found.setdefault(ep.name, {})[dist] = Entry(kind, ep.name, ep.value, dist, version)
    return {name: tuple(by_dist.values()) for name, by_dist in sorted(found.items())}


def names(kind: str) -> list[str]:
    return list(entries(kind))


def lookup(kind: str, name: str) -> Entry:
    """The unique entry for (kind, name), or a PluginError listing the installed names."""
    found = entries(kind)
    if name not in found:
        installed = ", ".join(found) or "none"
        close = difflib.get_close_matches(name, list(found), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise PluginError(f"unknown {kind} '{name}' (installed: {installed}){hint}")
    dups = found[name]
    if len(dups) > 1:
        who = " and ".join(f"{e.dist} {e.version}" for e in dups)
        raise PluginError(f"{kind} '{name}' is registered by several distributions: {who}")
    return dups[0]


@functools.cache
def load(kind: str, name: str) -> type:
    """The component class registered as (kind, name)."""
    return lookup(kind, name).load()


def listing(check_imports: bool = True) -> list[dict]:
    """Every registered component: kind, name, distribution, version, and an import status."""
    rows = []
    for kind in KINDS:
        for name, dups in entries(kind).items():
            for e in dups:
                row = {"kind": kind, "name": name, "distribution": e.dist, "version": e.version,
                       "target": e.value, "status": "ok"}
                if len(dups) > 1:
                    row["status"] = "conflict: registered by " + ", ".join(d.dist for d in dups)
                elif check_imports:
                    try:
                        e.load()
                    except PluginError as exc:
                        row["status"] = f"error: {exc}"
                rows.append(row)
    return rows


def clear_cache() -> None:
    """Forget discovered entry points (after installing a plugin at run time)."""
    entries.cache_clear()
    load.cache_clear()
