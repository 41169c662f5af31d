"""Files the runs write: temporary siblings renamed into place, with the modes the user's umask
gives new files (``tempfile.mkstemp`` alone creates them ``-rw-------``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def umask_mode() -> int:
    """0o666 without the process's umask bits (e.g. 0o644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def temp_sibling(path: Path) -> tuple[int, str]:
    """``mkstemp`` next to ``path`` (``.NAME.xxxx.tmp``), with the umask's mode."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, umask_mode())
    return fd, tmp
