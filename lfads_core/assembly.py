"""From a spec to data, model and augmentations, checked: what a run (and later AutoLFADS) builds
before training. Reads the data files; writes nothing."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from . import registry
from .components import DataSizes, InitCache, InitContext, SessionData
from .conformance import check_model
from .data.batches import SessionBatches, batches, to_tensors
from .data.h5 import Dataset, check_support, load_dataset
from .data.sanity import data_warnings
from .data.sessions import check_sessions, session_files
from .data.stats import DataStats
from .device import resolve_device, use_compile
from .errors import DataError, LfadsError, PluginError
from .model.build import build_augmentations, build_model
from .model.lfads import LFADS, SessionShape
from .model.steps import compile_steps, uncompiled
from .spec.schema import Spec


def set_threads(threads: Optional[int]) -> int:
    """torch threads: the spec's ``train.threads``, else the CPUs this process may use."""
    if threads is None:
        env = os.environ.get("LFADS_THREADS") or os.environ.get("OMP_NUM_THREADS")
        threads = int(env) if env and env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def session_shape(ds: Dataset) -> SessionShape:
    n_in, n_out, t_in, t_out, ext = ds.shape
    return SessionShape(n_in=n_in, n_out=n_out, t_in=t_in, t_out=t_out, ext_dim=ext)


def nan_allowed(spec: Spec) -> bool:
    """Whether an augmentation of the spec declares ``handles_nan`` (NaN that are not trailing
    padding then pass the data check)."""
    return any(getattr(registry.load("augmentation", a.name), "handles_nan", False)
               for a in spec.model.augmentations)


def load_data(spec: Spec) -> list[Dataset]:
    """Load every session file of ``data.path`` (one for a plain path) and check it against the
    spec's model (support, NaN, sizes) and the sessions against each other."""
    sessions = [load_dataset(path, spec.data.group) for path in session_files(spec.data.path)]
    check_sessions(sessions)
    model = spec.model
    recon_cls = registry.load("reconstruction", model.reconstruction.name)
    allow_nan = nan_allowed(spec)
    for ds in sessions:
        if spec.data.bin_size_ms is not None:
            ds.bin_size_ms = spec.data.bin_size_ms
        recon = recon_cls(model.reconstruction.config, n_channels=ds.shape[1])
        ds.notes.extend(check_support(ds, recon, allow_nan, model.reconstruction.name))
        if spec.data.warn:
            ds.notes.extend(f"warning: {w} (data.warn: false silences this)"
                            for w in data_warnings(ds, "bits_per_spike" in recon.metrics))
    t_in = sessions[0].shape[2]
    enc = model.encoder.config
    for field in ("ci_lag", "ic_enc_seq_len"):
        value = getattr(enc, field, None)
        if value is not None and value >= t_in + (field == "ic_enc_seq_len"):
            raise DataError(f"model.encoder.{field}: {value} does not fit the data's {t_in} "
                            f"encoder bins ({sessions[0].path})")
    for ds in sessions:
        sizes = data_sizes(ds)
        for i, aug in enumerate(model.augmentations):
            cls = registry.load("augmentation", aug.name)
            problem = cls.check(cls(aug.config), sizes)
            if problem:
                raise DataError(f"model.augmentations.{i} ({aug.name}): {problem} ({ds.path})")
    return sessions


def data_sizes(ds: Dataset) -> DataSizes:
    n_in, n_out, t_in, t_out, ext = ds.shape
    return DataSizes(t_in=t_in, n_in=n_in, t_out=t_out, n_out=n_out, ext_dim=ext,
                     n_train=ds.train.n_trials)


def session_data(sessions: Sequence[Dataset]) -> list[SessionData]:
    """What data-dependent initialisation sees of each session: its training data."""
    return [SessionData(name=ds.name, encod=ds.train.encod, recon=ds.train.recon,
                        cond=ds.train.cond, stats=DataStats.from_array(ds.train.recon),
                        bin_size_ms=ds.bin_size_ms) for ds in sessions]


def load_session_data(spec: Spec) -> list[SessionData]:
    """Every session's training data as a run sees it (loaded and checked like a run's): for a
    plugin's own commands, e.g. ``lfads-run pcr SPEC``."""
    return session_data(load_data(spec))


def make_model(spec: Spec, sessions: Sequence[Dataset], cache: Optional[InitCache] = None,
               device: Optional[torch.device] = None) -> tuple[LFADS, list]:
    """The model and the augmentations. Readout biases start from each session's training data
    (the reconstruction's ``init_params``); then the readin and readout classes initialise
    themselves from the data (``init_from_data``, e.g. PCR), with results kept in ``cache``.
    The model stays on the CPU; ``device`` (default: ``train.device``'s) is where it will train,
    which decides ``train.compile: auto``."""
    torch.manual_seed(spec.train.seed)
    data = session_data(sessions)
    model = build_model(spec.model, [session_shape(ds) for ds in sessions], [d.stats for d in data])
    ctx = InitContext(sessions=data, reconstructions=list(model.reconstructions),
                      cache=cache if cache is not None else InitCache())
    for key, modules in (("readin", model.readins), ("readout", model.readouts)):
        comp = getattr(spec.model, key)
        try:
            type(modules[0]).init_from_data(list(modules), ctx)
        except LfadsError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's failure: one line naming it
            who = registry.lookup(comp.kind, comp.name).who
            raise PluginError(f"model.{key}: {who}: init_from_data failed: "
                              f"{type(exc).__name__}: {exc}") from None
    compile_steps(model, use_compile(spec.train.compile, device or _planned_device(spec)))
    return model, build_augmentations(spec.model)


def _planned_device(spec: Spec) -> torch.device:
    """``train.device`` resolved, or the CPU where it cannot be (the run reports that itself)."""
    try:
        return resolve_device(spec.train.device)
    except LfadsError:
        return torch.device("cpu")


def check_components(spec: Spec, sessions: Sequence[Dataset], model: LFADS, augs: list) -> None:
    """A few training trials of every session through every component with checked output
    shapes, then the loss and its gradients: a component that breaks its contract is a one-line
    error naming it. The recurrent steps run uncompiled here: the check runs on the CPU, and
    compiling them there (where the fused kernels are off) would take longer than the check,
    or fail where the CPU has no compiler and switch compiling off for the GPU too."""
    m = spec.model
    who = {key: registry.lookup(getattr(m, key).kind, getattr(m, key).name).who
           for key in ("readin", "encoder", "generator", "readout", "reconstruction", "ic_prior",
                       "co_prior")}
    who.update({f"augmentations.{i}": registry.lookup("augmentation", a.name).who
                for i, a in enumerate(m.augmentations)})
    with uncompiled(model):
        for i, ds in enumerate(sessions):
            batch = next(batches(to_tensors(ds.train, session=i), min(3, ds.train.n_trials)))
            check_model(model, augs, batch, who, data_sizes(ds))


def training_batches(spec: Spec, sessions: Sequence[Dataset], device: torch.device,
                     drop_last: bool = False, shared: Optional[dict] = None
                     ) -> tuple[SessionBatches, SessionBatches]:
    """The training and validation batches of every session (training: sessions weighted by
    ``data.session_weights``, without ragged batches when ``drop_last``; validation: every
    trial once). On a GPU the data live there when they take at most half its free memory;
    otherwise they stay in pinned host memory and each batch is copied over.

    ``shared``: a dict the caller keeps for calls with the same ``sessions`` (the members of a
    population in one process): their tensors are made, and moved to the device, once and then
    shared (batches only read them), instead of one copy per member."""
    key = str(device)
    if shared is not None and key in shared:
        splits, target = shared[key]
    else:
        splits = {name: [to_tensors(ds.splits[name], session=i) for i, ds in enumerate(sessions)]
                  for name in ("train", "valid")}
        target = None
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            fits = sum(t.nbytes for ts in splits.values() for t in ts) <= free // 2
            splits = {k: [t.to(device, pin=not fits) for t in ts] for k, ts in splits.items()}
            target = None if fits else device
        if shared is not None:
            shared[key] = splits, target
    bs = spec.data.batch_size
    return (SessionBatches(splits["train"], bs, spec.data.session_weights, drop_last, target),
            SessionBatches(splits["valid"], bs, device=target))
