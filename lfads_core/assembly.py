"""From a spec to data, model and augmentations, checked: what a run (and later AutoLFADS) builds
before training. Reads the data file; writes nothing."""

from __future__ import annotations

import os
from typing import Optional

import torch

from . import registry
from .components import DataSizes
from .conformance import check_model
from .data.batches import batches, to_tensors
from .data.h5 import Dataset, check_support, load_dataset
from .data.stats import DataStats
from .errors import DataError
from .model.build import build_augmentations, build_model
from .model.lfads import LFADS, SessionShape
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


def load_data(spec: Spec) -> Dataset:
    """Load the data file and check it against the spec's model (support, NaN, sizes)."""
    ds = load_dataset(spec.data.path)
    if spec.data.bin_size_ms is not None:
        ds.bin_size_ms = spec.data.bin_size_ms
    model = spec.model
    recon_cls = registry.load("reconstruction", model.reconstruction.name)
    recon = recon_cls(model.reconstruction.config, n_channels=ds.shape[1])
    allow_nan = any(getattr(registry.load("augmentation", a.name), "handles_nan", False)
                    for a in model.augmentations)
    ds.notes = check_support(ds, recon, allow_nan, model.reconstruction.name)
    t_in = ds.shape[2]
    enc = model.encoder.config
    for field in ("ci_lag", "ic_enc_seq_len"):
        value = getattr(enc, field, None)
        if value is not None and value >= t_in + (field == "ic_enc_seq_len"):
            raise DataError(f"model.encoder.{field}: {value} does not fit the data's {t_in} "
                            f"encoder bins ({spec.data.path})")
    sizes = data_sizes(ds)
    for i, aug in enumerate(model.augmentations):
        cls = registry.load("augmentation", aug.name)
        problem = cls.check(cls(aug.config), sizes)
        if problem:
            raise DataError(f"model.augmentations.{i} ({aug.name}): {problem} ({spec.data.path})")
    return ds


def data_sizes(ds: Dataset) -> DataSizes:
    n_in, n_out, t_in, t_out, ext = ds.shape
    return DataSizes(t_in=t_in, n_in=n_in, t_out=t_out, n_out=n_out, ext_dim=ext,
                     n_train=ds.train.n_trials)


def make_model(spec: Spec, ds: Dataset) -> tuple[LFADS, list]:
    """The model (readout biases from the training data's statistics) and the augmentations."""
    torch.manual_seed(spec.train.seed)
    model = build_model(spec.model, [session_shape(ds)], [DataStats.from_array(ds.train.recon)])
    return model, build_augmentations(spec.model)


def check_components(spec: Spec, ds: Dataset, model: LFADS, augs: list) -> None:
    """A few training trials through every component with checked output shapes, then the loss
    and its gradients: a component that breaks its contract is a one-line error naming it."""
    m = spec.model
    who = {key: registry.lookup(getattr(m, key).kind, getattr(m, key).name).who
           for key in ("readin", "encoder", "generator", "readout", "reconstruction", "ic_prior",
                       "co_prior")}
    who.update({f"augmentations.{i}": registry.lookup("augmentation", a.name).who
                for i, a in enumerate(m.augmentations)})
    batch = next(batches(to_tensors(ds.train), min(3, ds.train.n_trials)))
    check_model(model, augs, batch, who, data_sizes(ds))
