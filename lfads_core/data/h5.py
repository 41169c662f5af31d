"""Reading and checking LFADS input files (HDF5, keys of docs/user-guide.md "Data format")."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import h5py
import numpy as np

from ..errors import DataError

REQUIRED = ("train_encod_data", "train_recon_data", "valid_encod_data", "valid_recon_data")


@dataclasses.dataclass
class Split:
    """One split of one session. Arrays are float32 [trials, T, channels]."""

    name: str
    encod: np.ndarray  # [n, T_e, N_in]
    recon: Optional[np.ndarray]  # [n, T_r, N] (None for test data without targets)
    ext: Optional[np.ndarray] = None  # [n, T_r, E]
    truth: Optional[np.ndarray] = None  # [n, T_r, N] ground-truth signal in output units
    inds: Optional[np.ndarray] = None  # [n] trial indices in the original order
    truth_factor: float = 1.0  # the file's conversion_factor for truth
    latents: Optional[np.ndarray] = None  # [n, T_r, L] true latent states (synthetic data)
    cond: Optional[np.ndarray] = None  # [n] integer condition labels ({split}_cond)

    @property
    def n_trials(self) -> int:
        return self.encod.shape[0]


@dataclasses.dataclass
class Dataset:
    path: str
    splits: dict[str, Split]
    bin_size_ms: Optional[float] = None
    notes: list = dataclasses.field(default_factory=list)  # the reconstruction's data notes

    @property
    def name(self) -> str:
        """The session's name: the file's stem."""
        return os.path.splitext(os.path.basename(self.path))[0]

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def valid(self) -> Split:
        return self.splits["valid"]

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(N_in, N, T_e, T_r, E), from the train split (or, in a file of new trials, the first
        split; without targets, N and T_r are those of the encoder data)."""
        tr = self.splits.get("train") or next(iter(self.splits.values()))
        recon = next((s.recon for s in self.splits.values() if s.recon is not None), tr.encod)
        ext = tr.ext.shape[-1] if tr.ext is not None else 0
        return tr.encod.shape[2], recon.shape[2], tr.encod.shape[1], recon.shape[1], ext


def _read(f: h5py.File, key: str, path: str) -> np.ndarray:
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{path}: '{key}' is a group, expected an array")
    if obj.dtype.kind not in "fiub":
        raise DataError(f"{path}: '{key}' holds {obj.dtype} values, expected numbers")
    return np.asarray(obj[()], dtype=np.float32)


def _labels(f: h5py.File, key: str, path: str) -> np.ndarray:
    """Condition labels: one integer per trial."""
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{path}: '{key}' is a group, expected one integer label per trial")
    arr = np.asarray(obj[()])
    if arr.dtype.kind not in "iub" and not (arr.dtype.kind == "f" and np.all(np.isfinite(arr))
                                            and np.all(arr == np.round(arr))):
        raise DataError(f"{path}: '{key}' must hold one integer condition label per trial, "
                        f"got {arr.dtype} values")
    return arr.astype(np.int64).reshape(-1)


def _check3d(arr: np.ndarray, key: str, path: str) -> None:
    if arr.ndim != 3:
        raise DataError(f"{path}: '{key}' must have 3 dimensions [trials, time, channels], "
                        f"got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise DataError(f"{path}: '{key}' has no trials")


def load_dataset(path: str, group: Optional[str] = None, training: bool = True) -> Dataset:
    """Load and check one session file (its arrays at the root, or in ``group``). Every problem
    is a one-line DataError naming the file. ``training=False`` (new trials to sample) needs
    only one split's ``{split}_encod_data`` instead of the train and valid data."""
    if not os.path.exists(path):
        raise DataError(f"data.path: file not found: {path}")
    if os.path.isdir(path):
        raise DataError(f"data.path: {path} is a directory, expected an HDF5 file")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise DataError(f"{path}: not a readable HDF5 file") from None
    with f:
        if group is not None:
            if group not in f or not isinstance(f[group], h5py.Group):
                groups = [k for k in f if isinstance(f[k], h5py.Group)]
                raise DataError(f"data.group: {path} has no group '{group}' (groups: "
                                f"{', '.join(groups) or 'none'})")
            f = f[group]
        required = REQUIRED if training else ()
        if not training and not any(f"{s}_encod_data" in f for s in ("train", "valid", "test")):
            raise DataError(f"{path}: no trials: expected {{split}}_encod_data for a split train, valid "
                            f"or test (the file has: {', '.join(list(f)[:12]) or 'nothing'})")
        missing = [k for k in required if k not in f]
        if missing:
            where = f" in group '{group}'" if group else ""
            holding = [k for k in f if isinstance(f[k], h5py.Group) and all(r in f[k] for r in REQUIRED)]
            hint = (f"; the group(s) {', '.join(holding)} hold them: data.group: {holding[0]}"
                    if holding else "")
            raise DataError(f"{path}: missing dataset '{missing[0]}'{where} (required: "
                            f"{', '.join(REQUIRED)}; the file has: {', '.join(list(f)[:12]) or 'nothing'}"
                            f"{' ...' if len(f) > 12 else ''}){hint}")
        splits = {}
        for name in ("train", "valid", "test"):
            if f"{name}_encod_data" not in f:
                continue
            encod = _read(f, f"{name}_encod_data", path)
            _check3d(encod, f"{name}_encod_data", path)
            recon = None
            if f"{name}_recon_data" in f:
                recon = _read(f, f"{name}_recon_data", path)
                _check3d(recon, f"{name}_recon_data", path)
            split = Split(name, encod, recon)
            for key, attr in ((f"{name}_ext_input", "ext"), (f"{name}_truth", "truth"),
                              (f"{name}_latents", "latents")):
                if key in f:
                    arr = _read(f, key, path)
                    if attr == "truth":
                        factor = f[key].attrs.get("conversion_factor", f.attrs.get("conversion_factor", 1.0))
                        split.truth_factor = float(np.asarray(factor).reshape(-1)[0])
                    setattr(split, attr, arr)
            if f"{name}_inds" in f:
                split.inds = np.asarray(f[f"{name}_inds"][()]).astype(np.int64).reshape(-1)
            if f"{name}_cond" in f:
                split.cond = _labels(f, f"{name}_cond", path)
            splits[name] = split
        bin_size = f.attrs.get("bin_size_ms", f.attrs.get("bin_size", None))
    ds = Dataset(path, splits, float(bin_size) if bin_size is not None else None)
    check_shapes(ds)
    return ds


def check_shapes(ds: Dataset) -> None:
    """Encod/recon trial counts and channel/time sizes must agree across splits."""
    path = ds.path
    ref = ds.splits.get("train") or next(iter(ds.splits.values()))
    ref_recon = next((s for s in ds.splits.values() if s.recon is not None), None)
    # Without targets (new trials), T_r is what the external inputs have, if longer.
    t_r = ref_recon.recon.shape[1] if ref_recon else max(
        [ref.encod.shape[1]] + [s.ext.shape[1] for s in ds.splits.values() if s.ext is not None and s.ext.ndim == 3])
    for split in ds.splits.values():
        n = split.n_trials
        e = split.encod
        if split.recon is not None:
            r = split.recon
            if r.shape[0] != n:
                raise DataError(f"{path}: {split.name}_encod_data has {n} trials but "
                                f"{split.name}_recon_data has {r.shape[0]}")
            if r.shape[1] < e.shape[1]:
                raise DataError(f"{path}: {split.name}_recon_data has {r.shape[1]} bins, fewer than "
                                f"the {e.shape[1]} of {split.name}_encod_data")
            if r.shape[1:] != ref_recon.recon.shape[1:]:
                raise DataError(f"{path}: {split.name}_recon_data is {tuple(r.shape[1:])} per trial "
                                f"but {ref_recon.name}_recon_data is {tuple(ref_recon.recon.shape[1:])}")
        if e.shape[1:] != ref.encod.shape[1:]:
            raise DataError(f"{path}: {split.name}_encod_data is {tuple(e.shape[1:])} per trial "
                            f"but {ref.name}_encod_data is {tuple(ref.encod.shape[1:])}")
        if split.ext is not None:
            x = split.ext
            if x.ndim != 3 or x.shape[0] != n or x.shape[1] not in (e.shape[1], t_r):
                raise DataError(f"{path}: {split.name}_ext_input must be [{n}, {t_r}, E], "
                                f"got {tuple(x.shape)}")
            if x.shape[1] < t_r:
                split.ext = np.pad(x, ((0, 0), (0, t_r - x.shape[1]), (0, 0)))
            if np.isnan(split.ext).any():
                raise DataError(f"{path}: {split.name}_ext_input contains NaN")
        if split.truth is not None and (split.recon is None or split.truth.shape != split.recon.shape):
            ds.notes.append(f"{path}: {split.name}_truth has shape {tuple(split.truth.shape)}, not "
                            f"that of {split.name}_recon_data "
                            f"{tuple(split.recon.shape) if split.recon is not None else '(absent)'}: "
                            f"left out of the metrics")
            split.truth = None  # truth of another layout is kept out of metrics, not an error
        if split.truth is not None:
            split.truth = truth_in_data_units(split.truth, split.recon, split.truth_factor)
        lat = split.latents
        if lat is not None and (lat.ndim != 3 or split.recon is None or lat.shape[:2] != split.recon.shape[:2]
                                or not np.isfinite(lat).all()):
            split.latents = None  # latents of another layout are kept out of metrics, not an error
        if split.inds is not None and split.inds.shape[0] != n:
            raise DataError(f"{path}: {split.name}_inds has {split.inds.shape[0]} entries for {n} trials")
        if split.cond is not None and split.cond.shape[0] != n:
            raise DataError(f"{path}: {split.name}_cond has {split.cond.shape[0]} labels for {n} trials")
    ext_dims = {s.name: s.ext.shape[-1] if s.ext is not None else 0 for s in ds.splits.values()}
    if len(set(ext_dims.values())) > 1:
        sizes = ", ".join(f"{name}_ext_input {f'{e} inputs' if e else 'absent'}" for name, e in ext_dims.items())
        raise DataError(f"{path}: the external inputs must be in every split with the same size ({sizes})")


def truth_in_data_units(truth: np.ndarray, recon: np.ndarray, factor: float) -> np.ndarray:
    """Ground truth in the units of the data (counts per bin for spikes).

    Files differ in how ``conversion_factor`` is meant (multiply or divide); the one whose
    overall mean is closest to the data's mean is used (the factor is 1 in our own files).
    """
    data_mean = float(np.nanmean(recon))
    if factor in (0.0, 1.0) or not np.isfinite(factor) or data_mean <= 0:
        return truth
    candidates = [truth * np.float32(factor), truth / np.float32(factor), truth]
    gap = [abs(np.log(max(float(np.nanmean(c)), 1e-12) / data_mean)) for c in candidates]
    return candidates[int(np.argmin(gap))].astype(np.float32)


def trailing_padding(nan: np.ndarray) -> bool:
    """Whether the NaN of [trials, T, channels] only pad trials at their end: in each trial
    every bin is observed in every channel or in none, and once a bin is NaN all later ones are
    (a shorter trial; the core gives the model 0 there and masks it out of the loss). A trial
    must keep at least its first bin."""
    if nan.ndim != 3:
        return False
    whole = nan.all(axis=2)
    if not np.array_equal(nan.any(axis=2), whole) or whole[:, 0].any():
        return False
    return bool(np.all(np.diff(whole.astype(np.int8), axis=1) >= 0))


def check_support(ds: Dataset, recon, allow_nan: bool, recon_name: str) -> list[str]:
    """Data must lie in the reconstruction's support (its ``check_data`` gets each split's
    [trials, T_r, N] recon array, NaN where unobserved); NaNs only with an augmentation for them.
    Returns the reconstruction's notes on the data (``data_note``), one line each."""
    notes = []
    for split in ds.splits.values():
        for kind, arr in (("encod", split.encod), ("recon", split.recon)):
            if arr is None:
                continue
            key = f"{split.name}_{kind}_data"
            nan = np.isnan(arr)
            if np.isinf(arr).any():
                raise DataError(f"{ds.path}: {key} contains infinite values")
            if nan.any() and not allow_nan and not trailing_padding(nan):
                raise DataError(f"{ds.path}: {key} contains {int(nan.sum())} NaN values that are not "
                                f"trailing padding (every channel NaN from some bin to the end of a "
                                f"trial: a shorter trial) and no augmentation in model.augmentations "
                                f"handles NaN (such as sbtt from lfads-calcium: augmentations: [sbtt, ...])")
            if kind == "recon":
                problem = recon.check_data(arr)
                if problem:
                    raise DataError(f"{ds.path}: {key} {problem} (model.reconstruction: {recon_name})")
                note = recon.data_note(arr) if hasattr(recon, "data_note") else None
                if note:
                    notes.append(f"{ds.path}: {key} {note} (model.reconstruction: {recon_name})")
    return notes
