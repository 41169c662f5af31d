"""Writing the prepared input file atomically (a temporary file, then ``os.replace``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DataError
from ..files import temp_sibling


def write_prepared(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Every array as a dataset (gzip-4 when it has elements; text as UTF-8 strings), every
    attribute that is not None as a file attribute. The file appears whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_sibling(path)  # with the umask's mode
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in attrs.items():
                if value is not None:
                    f.attrs[key] = value
            for name, array in arrays.items():
                array = np.asarray(array)
                if array.dtype.kind == "U":
                    array = array.astype(object)
                    f.create_dataset(name, data=array, dtype=h5py.string_dtype())
                    continue
                opts = {"compression": "gzip", "compression_opts": 4} if array.size and array.ndim else {}
                f.create_dataset(name, data=array, **opts)
        os.replace(tmp, path)
    except OSError as exc:
        raise DataError(f"--out {path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
