"""The members of a population: a Trainer each, built from the spec and the data without files
(:mod:`lfads_core.assembly`), with its own seed (initial weights, data order, augmentations)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import attrs
import torch

from .. import registry
from ..assembly import make_model, training_batches
from ..components import InitCache
from ..data.h5 import Dataset
from ..device import resolve_device, use_graphs
from ..errors import SpecError
from ..spec.schema import Spec
from ..train.loop import L2_KEYS, Trainer


def hyperparameter_paths(spec: Spec) -> list[str]:
    """The spec paths a population may tune: what ``Trainer.set_hparams`` takes."""
    paths = ["train.lr", "model.dropout_rate", "train.kl.ic_scale", "train.kl.co_scale",
             *(f"train.l2.{v}" for v in L2_KEYS.values())]
    for i, aug in enumerate(spec.model.augmentations):
        cls = registry.load("augmentation", aug.name)
        paths += [f"model.augmentations.{i}.{name}" for name in getattr(cls, "hyperparameters", ())]
    return paths


def check_search_space(spec: Spec, source: str = "spec") -> None:
    """Every search-space path must be a hyperparameter a member can change (one line each)."""
    known = hyperparameter_paths(spec)
    problems = [f"{source}: pbt.search_space.{path}: not a hyperparameter PBT can change "
                f"(known: {', '.join(known)})" for path in spec.pbt.search_space if path not in known]
    if spec.pbt.fitness == "sample_valid" and not any(a.name == "sample_validation"
                                                       for a in spec.model.augmentations):
        problems.append(f"{source}: pbt.fitness: sample_valid needs the augmentation "
                        f"sample_validation in model.augmentations (e.g. first: "
                        f"{{name: sample_validation, fraction: 0.1}})")
    if problems:
        raise SpecError("\n".join(problems))


def member_seed(spec: Spec, member: int) -> int:
    return spec.train.seed + 1_000_003 * (member + 1)


def build_member(spec: Spec, sessions: Sequence[Dataset], member: int, hparams: dict[str, float],
                 cache: Optional[InitCache] = None, log: Callable[[str], None] = lambda s: None,
                 device: Optional[str] = None) -> Trainer:
    """Member ``member``'s Trainer: weights, batch order and augmentations from its own seed,
    ``hparams`` applied, on ``device`` (default: the spec's)."""
    own = attrs.evolve(spec, train=attrs.evolve(spec.train, seed=member_seed(spec, member)))
    dev = resolve_device(device or spec.train.device)
    model, augs = make_model(own, sessions, cache)
    model.to(dev)
    graphs = use_graphs(spec.train.cuda_graphs, dev)
    train, valid = training_batches(own, sessions, dev, drop_last=graphs)
    trainer = Trainer(model, augs, train, valid, own.train, log=log, graphs=graphs)
    trainer.set_hparams(hparams)
    return trainer


def train_member(trainer: Trainer, epochs: int, fitness: str = "valid") -> dict:
    """``epochs`` more epochs (early stopping and max_epochs do not stop a member: the
    population decides). Returns ``fitness`` (lower is better: the smoothed validation
    reconstruction, or with ``fitness="sample_valid"`` the last epoch's sample-validation NLL)
    and the epochs' metrics rows, or ``error`` (the original message) on a failure."""
    start = len(trainer.history)
    try:
        done = 0
        while done < epochs:
            if trainer.run_epoch() is not None:
                done += 1
    except Exception as exc:  # noqa: BLE001 - a member's failure is reported, the population goes on
        return {"error": f"{type(exc).__name__}: {exc}", "rows": trainer.history[start:]}
    if fitness == "sample_valid":
        value = trainer.history[-1].get("train_sample_valid", float("inf"))
    else:
        value = trainer.smoothed if trainer.smoothed is not None else float("inf")
    return {"fitness": float(value), "rows": trainer.history[start:]}


def cpu_state(state):
    """A state dict with every tensor on the CPU (to send between processes and save)."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: cpu_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(cpu_state(v) for v in state)
    return state
