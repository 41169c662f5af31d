"""The run directory: the resolved spec (and the resume policy when one is there), metrics.csv,
the data-dependent initialisation cache (``init/``). Checkpoints are written by
:mod:`lfads_core.train.checkpoint`."""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from .components import InitCache
from .errors import RunDirError
from .spec.load import dump_spec, spec_to_dict
from .spec.schema import Spec
from .train.checkpoint import atomic_write_bytes, atomic_write_text

SPEC_FILE = "spec.yaml"
INIT_DIR = "init"  # InitCache entries: <key>.npz, tagged with the data's fingerprint
# Spec fields that may differ when a run is resumed.
RESUMABLE = {("output",), ("train", "max_epochs"), ("train", "threads"), ("sampling",),
             ("train", "early_stopping", "patience"), ("train", "device"), ("train", "cuda_graphs"),
             ("train", "compile"),
             ("pbt", "address"), ("pbt", "max_generations"), ("pbt", "resources")}


def _strip(d: dict, paths=RESUMABLE) -> dict:
    d = json.loads(json.dumps(d))
    for path in paths:
        node = d
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return d


def _differences(a, b, prefix="") -> list[str]:
    """Every differing leaf of two spec dicts, as ``path: old -> new``, in field order."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in list(a) + [k for k in b if k not in a] if a.get(key) != b.get(key)
                for d in _differences(a.get(key), b.get(key), f"{prefix}{key}.")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) if x != y
                for d in _differences(x, y, f"{prefix}{i}.")]
    return [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]


def _describe_differences(a, b, limit: int = 4) -> str:
    diffs = _differences(a, b)
    more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


def prepare_run_dir(spec: Spec, force: bool, log: Callable[[str], None]) -> Path:
    """Create the run directory, or check that it holds a run of the same spec (resume).
    With ``force`` a run of another spec is moved aside, never deleted."""
    run_dir = Path(spec.output)
    saved = run_dir / SPEC_FILE
    if run_dir.is_dir() and not saved.exists() and any(run_dir.iterdir()):
        if not force:
            raise RunDirError(f"output {run_dir}: the folder exists, is not empty and holds no run "
                              f"(no {SPEC_FILE}); use another --out, or --force to move its "
                              f"contents aside")
        _move_aside(run_dir, log)
    elif saved.exists():
        try:
            old = yaml.safe_load(saved.read_text())
        except yaml.YAMLError:
            old = None
        new = spec_to_dict(spec)
        if not isinstance(old, dict) or _strip(old) != _strip(new):
            if not force:
                diff = _describe_differences(_strip(old), _strip(new)) if isinstance(old, dict) else "unreadable"
                raise RunDirError(f"{run_dir} holds a run of a different spec ({diff}); use another "
                                  f"--out or --force to move the old run aside and start over")
            _move_aside(run_dir, log)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"output {run_dir}: cannot create the run directory "
                          f"({exc.strerror or exc})") from None
    for stale in run_dir.glob(".*.tmp"):  # left by a write that was killed
        stale.unlink()
    atomic_write_text(run_dir / SPEC_FILE, dump_spec(spec))
    return run_dir


def _move_aside(run_dir: Path, log: Callable[[str], None]) -> None:
    """Rename ``run_dir`` to ``NAME.old-<time>`` (never delete anything)."""
    stamp = time.strftime('%Y%m%d-%H%M%S')
    aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}")
    shutil.move(str(run_dir), aside)
    log(f"moved the previous contents of {run_dir} to {aside}")


def write_metrics(path: Path, history: list[dict], first: tuple[str, ...] = ()) -> None:
    """Rows as a CSV table (columns: ``first``, then every key in order of appearance; floats
    with 6 significant digits), written atomically. metrics.csv, pbt.csv."""
    if not history:
        return
    keys = list(first) + [k for k in history[0] if k not in first]
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def read_init_cache(run_dir: Path, fingerprint: str) -> InitCache:
    """The cached initialisation results of an earlier start on the same data files (read only;
    entries of other data or unreadable ones are ignored and computed again)."""
    entries = {}
    for path in sorted((Path(run_dir) / INIT_DIR).glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["__fingerprint__"]) == fingerprint:
                    entries[path.stem] = {k: f[k] for k in f.files if k != "__fingerprint__"}
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never an error
            continue
    return InitCache(entries)


def write_init_cache(run_dir: Path, cache: InitCache, fingerprint: str) -> None:
    """Write the entries computed in this start (atomically, one file per key)."""
    for key in sorted(cache.new):
        buf = io.BytesIO()
        np.savez(buf, __fingerprint__=np.asarray(fingerprint), **cache.entries[key])
        atomic_write_bytes(Path(run_dir) / INIT_DIR / f"{key}.npz", buf.getvalue())
    cache.new.clear()
