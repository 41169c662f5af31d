"""The output file ``lfads_output.h5``, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from ..files import temp_sibling


def write_output(path: str | os.PathLike, results: dict[str, dict[str, np.ndarray]],
                 inds: dict[str, np.ndarray], attrs: dict, units: Optional[str] = None) -> None:
    """``results[split][field]`` -> dataset ``{split}_{field}``; ``inds[split]`` -> ``{split}_inds``."""
    path = Path(path)
    fd, tmp = temp_sibling(path)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for split, fields in results.items():
                for field, arr in fields.items():
                    ds = f.create_dataset(f"{split}_{field}", data=arr, compression="gzip",
                                          compression_opts=4)
                    if field == "output_params" and units:
                        ds.attrs["units"] = units
            for split, idx in inds.items():
                f.create_dataset(f"{split}_inds", data=idx)
            for key, value in attrs.items():
                if value is not None:
                    f.attrs[key] = value
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
