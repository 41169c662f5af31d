"""Cross-cutting hooks (pluggy), for plugins that react to a run rather than provide a component.

A plugin registers a module or object in the entry-point group ``lfads``; its functions named
like the hookspecs below and decorated with :data:`hookimpl` are called. A plugin that fails to
import is reported (``lfads-run plugins``) and skipped; a misspelt hook name is an error.
"""

from __future__ import annotations

import functools
from importlib import metadata
from pathlib import Path

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


@functools.cache
def _manager() -> tuple[pluggy.PluginManager, tuple[dict, ...], tuple[str, ...]]:
    pm = pluggy.PluginManager("lfads")
    pm.add_hookspecs(HookSpecs)
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


def listing() -> list[dict]:
    """Hook plugins in the format of :func:`lfads_core.registry.listing`."""
    return list(_manager()[1])


def load_errors() -> list[str]:
    return [r["status"][len("error: "):] for r in _manager()[1] if r["status"] != "ok"]
