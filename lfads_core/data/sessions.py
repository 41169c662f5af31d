"""Several sessions: which files ``data.path`` names, and what they must share.

``data.path`` is one HDF5 file (one session), a glob (``data/*.h5``) or a list of files and
globs; every file is one session, with its own neurons. Sessions must share the bin counts, the
bin size and the external inputs; their neuron and trial counts may differ.
"""

from __future__ import annotations

import glob
import hashlib
import os
from typing import Sequence

from ..errors import DataError
from .h5 import Dataset

_GLOB_CHARS = set("*?[")


def is_glob(path: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in path)


def is_multisession(path: str | list[str]) -> bool:
    """A glob or a list names sessions (outputs per session); a plain path names one file."""
    return isinstance(path, list) or is_glob(path)


def session_files(path: str | list[str]) -> list[str]:
    """The files of ``data.path``, in order (each glob sorted), each once. A glob that matches
    nothing and two sessions with one file name (outputs are named by it) are errors."""
    patterns = path if isinstance(path, list) else [path]
    files: list[str] = []
    for pattern in patterns:
        if is_glob(pattern):
            found = sorted(p for p in glob.glob(pattern) if not os.path.isdir(p))
            if not found:
                raise DataError(f"data.path: no file matches {pattern}")
        else:
            found = [pattern]
        files += [f for f in found if f not in files]
    stems: dict[str, str] = {}
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        if stem in stems:
            raise DataError(f"data.path: sessions {stems[stem]} and {f} have the same file name "
                            f"'{stem}' (session outputs are named after it); rename one")
        stems[stem] = f
    return files


def check_sessions(sessions: Sequence[Dataset]) -> None:
    """Sessions must agree on encoder and reconstruction bins, bin size and external inputs."""
    first = sessions[0]
    _, _, t_in, t_out, ext = first.shape
    for ds in sessions[1:]:
        _, _, ti, to, e = ds.shape
        if (ti, to) != (t_in, t_out):
            raise DataError(f"{ds.path}: {ti} encoder / {to} reconstruction bins per trial, but "
                            f"{first.path} has {t_in} / {t_out}; sessions must have the same bin "
                            f"counts (crop or re-bin them to one length)")
        if e != ext:
            raise DataError(f"{ds.path}: {e} external inputs, but {first.path} has {ext}; "
                            f"sessions must have the same external inputs")
    sized = [ds for ds in sessions if ds.bin_size_ms is not None]
    for ds in sized[1:]:
        if abs(ds.bin_size_ms - sized[0].bin_size_ms) > 1e-9 * sized[0].bin_size_ms:
            raise DataError(f"{ds.path}: bins of {ds.bin_size_ms:g} ms, but {sized[0].path} has "
                            f"{sized[0].bin_size_ms:g} ms; sessions must have one bin size")
    if sized:
        for ds in sessions:
            ds.bin_size_ms = sized[0].bin_size_ms
    labelled = [ds.train.cond is not None for ds in sessions]
    if any(labelled) and not all(labelled):
        missing = [ds.name for ds, has in zip(sessions, labelled) if not has]
        sessions[0].notes.append(
            f"session{'s' if len(missing) > 1 else ''} {', '.join(missing)} of {len(sessions)} "
            f"{'have' if len(missing) > 1 else 'has'} no train_cond while the others have: what uses "
            f"condition labels across sessions (the multisession readin's PCR start) falls back to "
            f"single trials for every session")


def fingerprint(paths: Sequence[str]) -> str:
    """Identifies the data files (path, size, modification time) without reading them."""
    h = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
