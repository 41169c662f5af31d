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
from ..data.sessions import is_multisession
from ..device import resolve_device, use_graphs
from ..errors import SpecError
from ..heap import hold_memory
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
    """Every search-space path must be a hyperparameter a member can change, and both bounds of
    its range values that field accepts (members draw and explore within [low, high]); one line
    each."""
    from ..spec.load import spec_from_dict
    from .run import best_spec

    known = hyperparameter_paths(spec)
    problems = [f"{source}: pbt.search_space.{path}: not a hyperparameter PBT can change "
                f"(known: {', '.join(known)})" for path in spec.pbt.search_space if path not in known]
    for path, dim in spec.pbt.search_space.items():
        for bound in ("low", "high") if path in known else ():
            try:
                spec_from_dict(best_spec(spec, {path: getattr(dim, bound)}))
            except SpecError as exc:
                why = str(exc).splitlines()[0].split(f"{path}: ", 1)[-1]
                problems.append(f"{source}: pbt.search_space.{path}.{bound}: outside what {path} "
                                f"accepts ({why})")
    if spec.pbt.fitness == "sample_valid" and not any(a.name == "sample_validation"
                                                       for a in spec.model.augmentations):
        problems.append(f"{source}: pbt.fitness: sample_valid needs the augmentation "
                        f"sample_validation in model.augmentations (e.g. first: "
                        f"{{name: sample_validation, fraction: 0.1}}; the search space's "
                        f"model.augmentations.N entries then count it)")
    if (spec.pbt.engine != "trials" and spec.pbt.stacked_batches == "member"
            and is_multisession(spec.data.path)):
        problems.append(f"{source}: pbt.stacked_batches: member needs one session (data.path names "
                        f"several); use shared or auto")
    if problems:
        raise SpecError("\n".join(problems))


def member_seed(spec: Spec, member: int) -> int:
    return spec.train.seed + 1_000_003 * (member + 1)


def build_member(spec: Spec, sessions: Sequence[Dataset], member: int, hparams: dict[str, float],
                 cache: Optional[InitCache] = None, log: Callable[[str], None] = lambda s: None,
                 device: Optional[str] = None, data: Optional[dict] = None) -> Trainer:
    """Member ``member``'s Trainer: weights, batch order and augmentations from its own seed,
    ``hparams`` applied, on ``device`` (default: the spec's). ``data``: a dict kept for the
    members of one process, which then share one copy of the data tensors
    (:func:`~lfads_core.assembly.training_batches`)."""
    own = attrs.evolve(spec, train=attrs.evolve(spec.train, seed=member_seed(spec, member)))
    dev = resolve_device(device or spec.train.device)
    model, augs = make_model(own, sessions, cache, dev)
    model.to(dev)
    graphs = use_graphs(spec.train.cuda_graphs, dev)
    train, valid = training_batches(own, sessions, dev, drop_last=graphs, shared=data)
    trainer = Trainer(model, augs, train, valid, own.train, log=log, graphs=graphs)
    trainer.set_hparams(hparams)
    return trainer


def train_member(trainer: Trainer, epochs: int, fitness: str = "valid") -> dict:
    """``epochs`` more epochs (early stopping and max_epochs do not stop a member: the
    population decides). Returns ``fitness`` (lower is better: the smoothed validation
    reconstruction, or with ``fitness="sample_valid"`` the last epoch's sample-validation NLL)
    and the epochs' metrics rows, or ``error`` (the original message) on a failure."""
    start = len(trainer.history)
    hold_memory()
    try:
        done = 0
        while done < epochs:
            if trainer.run_epoch() is not None:
                done += 1
    except Exception as exc:  # noqa: BLE001 - a member's failure is reported, the population goes on
        return {"error": f"{type(exc).__name__}: {exc}", "rows": trainer.history[start:]}
    return {"fitness": _fitness(trainer, fitness), "rows": trainer.history[start:]}


def _fitness(trainer: Trainer, fitness: str) -> float:
    if fitness == "sample_valid":
        return float(trainer.history[-1].get("train_sample_valid", float("inf")))
    return float(trainer.smoothed) if trainer.smoothed is not None else float("inf")


def train_stacked(group, epochs: int, fitness: str = "valid") -> list[dict]:
    """:func:`train_member` for the members of a :class:`~lfads_core.train.stacked.StackedTrainer`
    trained together: ``epochs`` successful epochs each (a member rolled back after a non-finite
    loss trains one more while the others wait); one result per member, in the group's order. A
    failure of the whole step is every member's error."""
    starts = [len(t.history) for t in group.trainers]
    done = [0] * group.members
    errors: list = [None] * group.members
    hold_memory()
    group.load()
    try:
        while True:
            active = [errors[i] is None and done[i] < epochs for i in range(group.members)]
            if not any(active):
                break
            for i, res in enumerate(group.run_epoch(active)):
                if isinstance(res, Exception):
                    errors[i] = f"{type(res).__name__}: {res}"
                elif res is not None:
                    done[i] += 1
    except Exception as exc:  # noqa: BLE001 - reported for every member; the population goes on
        errors = [e or f"{type(exc).__name__}: {exc}" for e in errors]
    out = []
    for i, t in enumerate(group.trainers):
        rows = t.history[starts[i]:]
        out.append({"error": errors[i], "rows": rows} if errors[i] else
                   {"fitness": _fitness(t, fitness), "rows": rows})
    return out


def cpu_state(state):
    """A state dict with every tensor on the CPU (to send between processes and save)."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: cpu_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(cpu_state(v) for v in state)
    return state
