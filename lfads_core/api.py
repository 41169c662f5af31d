"""The Python API of a finished (or running) run: ``lfads.load_run(RUN_DIR)`` and
``run.infer(x)`` on new trials.

    import lfads_core as lfads
    run = lfads.load_run("runs/lorenz")
    out = run.infer(x, num_samples=50)   # x: numpy [trials, T_e, N_in], NaN where unobserved
    out.rates                            # [trials, T_r, N], the reconstruction's units
    run.metrics["valid_recon"]           # metrics.csv as columns of numpy arrays

The model is rebuilt from the run's saved spec and checkpoint alone: the training data file is
not read (it may have moved).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from .data.batches import TensorSplit
from .device import resolve_device
from .errors import DataError, RunDirError
from .model.build import build_model
from .model.lfads import LFADS, SessionShape
from .output.sample import posterior_sample
from .rundir import SPEC_FILE
from .spec.load import spec_from_dict
from .spec.schema import Spec
from .train.checkpoint import load_checkpoint

__all__ = ["load_run", "Run", "Inference"]


@dataclasses.dataclass
class Inference:
    """What :meth:`Run.infer` returns: numpy arrays averaged over the posterior samples.

    ``rates`` [n, T_r, N]: the reconstruction's mean in ``units`` (counts per bin for Poisson,
    the ``{split}_output_params`` of ``lfads_output.h5``); ``factors`` [n, T_r, F];
    ``gen_states`` [n, T_r, G]; ``inputs`` [n, T_r, U] (the inferred inputs that drove the
    generator), ``co_means``, ``co_stds`` [n, T_r, U] (None without a controller);
    ``ic_mean``, ``ic_std`` [n, Z].
    """

    rates: np.ndarray
    factors: np.ndarray
    gen_states: np.ndarray
    ic_mean: np.ndarray
    ic_std: np.ndarray
    inputs: Optional[np.ndarray]
    co_means: Optional[np.ndarray]
    co_stds: Optional[np.ndarray]
    units: str


class Run:
    """A run directory: its ``spec``, ``metrics`` (metrics.csv), ``summary`` (summary.json),
    ``sessions`` (names) and the model of its best epoch (``model``, built on first use)."""

    def __init__(self, path: Path, spec: Spec, state: dict, device: torch.device):
        self.path, self.spec, self.device = path, spec, device
        self.sessions: list[str] = list(state.get("session_names")
                                        or [Path(str(spec.data.path)).stem])  # older checkpoints
        self.shapes = [SessionShape(**s) for s in state["sessions"]]
        self._model: Optional[LFADS] = None
        self.best_epoch: Optional[int] = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, sessions={self.sessions}, best_epoch={self.best_epoch})"

    @property
    def model(self) -> LFADS:
        """The model with the weights of the best epoch (the last if none is marked best)."""
        if self._model is None:
            from .output.results import load_best

            model = build_model(self.spec.model, self.shapes)
            self.best_epoch = load_best(self.path, model)
            self._model = model.to(self.device).eval()
        return self._model

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        """metrics.csv as columns: ``{column: numpy array over epochs}``."""
        path = self.path / "metrics.csv"
        if not path.exists():
            raise RunDirError(f"{path}: no metrics yet (the run has not finished an epoch)")
        with open(path) as f:
            rows = list(csv.DictReader(f))
        return {k: np.array([_number(r.get(k)) for r in rows]) for k in (rows[0] if rows else {})}

    @property
    def summary(self) -> dict:
        """summary.json (written after sampling)."""
        path = self.path / "summary.json"
        if not path.exists():
            raise RunDirError(f"{path}: no summary yet (the run has not sampled)")
        return json.loads(path.read_text())

    def infer(self, x: np.ndarray, num_samples: int = 50, session: int | str = 0,
              ext: Optional[np.ndarray] = None, seed: int = 0,
              rows_per_pass: Optional[int] = None) -> Inference:
        """Posterior-sample new trials ``x`` [n, T_e, N_in] (numpy; NaN where unobserved, e.g.
        trailing padding of shorter trials) with the best weights; ``session``: the session's
        index or name (several sessions); ``ext`` [n, T_r, E]: measured external inputs, when
        the model has them. Same numbers as ``lfads-run sample`` for the same trials and seed
        on the same device."""
        s = self._session(session)
        shape = self.shapes[s]
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise DataError(f"infer: x must be a numeric array, got dtype {x.dtype}")
        if x.ndim == 2:
            x = x[None]
        want = (shape.t_in, shape.n_in)
        if x.ndim != 3 or x.shape[1:] != want:
            raise DataError(f"infer: x must be [trials, {want[0]} bins, {want[1]} channels] "
                            f"(session {self.sessions[s]}), got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise DataError("infer: x has no trials")
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise DataError(f"infer: num_samples must be an integer >= 1, got {num_samples!r}")
        if shape.ext_dim and ext is None:
            raise DataError(f"infer: the model takes {shape.ext_dim} external inputs: give ext "
                            f"[trials, {shape.t_out}, {shape.ext_dim}]")
        if not shape.ext_dim and ext is not None:
            raise DataError("infer: the model takes no external inputs: leave ext out")
        x = x.astype(np.float32)
        if np.isinf(x).any():
            raise DataError("infer: x contains infinite values")
        encod = torch.from_numpy(np.nan_to_num(x, nan=0.0))
        ext_t = None
        if ext is not None:
            ext = np.asarray(ext, dtype=np.float32)
            if ext.shape != (x.shape[0], shape.t_out, shape.ext_dim):
                raise DataError(f"infer: ext must be [{x.shape[0]}, {shape.t_out}, {shape.ext_dim}], "
                                f"got {tuple(ext.shape)}")
            ext_t = torch.from_numpy(ext)
        # Sampling reads only encod, ext and session: new trials need no targets.
        data = TensorSplit(encod=encod, recon=encod, mask=encod, ext=ext_t, session=s)
        out = posterior_sample(self.model, data, num_samples, rows_per_pass, seed)
        return Inference(rates=out["output_params"], factors=out["factors"],
                         gen_states=out["gen_states"], ic_mean=out["ic_mean"], ic_std=out["ic_std"],
                         inputs=out.get("gen_inputs"), co_means=out.get("co_means"),
                         co_stds=out.get("co_stds"), units=self.model.reconstructions[s].units)

    def _session(self, session: int | str) -> int:
        if isinstance(session, str):
            if session not in self.sessions:
                raise DataError(f"infer: no session '{session}' (sessions: {', '.join(self.sessions)})")
            return self.sessions.index(session)
        if not 0 <= session < len(self.sessions):
            raise DataError(f"infer: session {session} does not exist (0..{len(self.sessions) - 1})")
        return session


def load_run(path: str | os.PathLike, device: str = "cpu") -> Run:
    """Open a run directory (``spec.yaml`` and ``checkpoints/last.pt`` are needed; the data
    file is not). ``device``: ``cpu`` (default), ``auto``, ``cuda``, ``cuda:N``."""
    path = Path(path)
    saved = path / SPEC_FILE
    if not saved.exists():
        raise RunDirError(f"{path}: not a run directory (no {SPEC_FILE})")
    try:
        raw = yaml.safe_load(saved.read_text())
    except yaml.YAMLError:
        raise RunDirError(f"{saved}: unreadable spec") from None
    spec = spec_from_dict(raw, source=str(saved))
    last = path / "checkpoints" / "last.pt"
    if not last.exists():
        raise RunDirError(f"{path}: no checkpoint yet (train first)")
    state = load_checkpoint(last)
    if "sessions" not in state:
        raise RunDirError(f"{last}: a checkpoint without the data sizes (written by an older lfads)")
    return Run(path, spec, state, resolve_device(device, "load_run(device=...)"))


def _number(text: Optional[str]) -> float:
    try:
        return float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")
