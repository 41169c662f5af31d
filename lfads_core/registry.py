"""Entry-point registries of components.

Every component kind has one entry-point group (``lfads.<kind>``) mapping a short name to a
component class. Discovery reads distribution metadata only; a component is imported when a
spec selects it (:func:`load`). A plugin that fails to import is reported by :func:`listing`
and raises :class:`~lfads_core.errors.PluginError` only when used.
"""

from __future__ import annotations

import difflib
import functools
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

    def load(self) -> type:
        """Import the component class; an import failure becomes a PluginError."""
        try:
            ep = metadata.EntryPoint(name=self.name, value=self.value, group=f"lfads.{self.kind}")
            return ep.load()
        except Exception as exc:  # noqa: BLE001 - any plugin failure is reported the same way
            raise PluginError(
                f"{self.kind} '{self.name}' from {self.dist} {self.version} failed to import "
                f"({self.value}): {type(exc).__name__}: {exc}"
            ) from None


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
