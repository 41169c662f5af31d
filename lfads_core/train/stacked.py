"""Several members of a population trained as one stacked model (``pbt.engine: stacked``).

Members differ in hyperparameters, never in shapes, so their weights stack along a leading
member dimension [P, ...] and the assembled model runs once per step for all of them under
``torch.func.vmap`` (``functional_call`` over the stacked weights, ``randomness="different"``:
every member draws its own dropout masks and posterior samples). Each kernel launch then serves
P members. Nothing of the components is specific to stacking: plugin components work as long
as ``vmap`` can run them (:meth:`StackedTrainer.check` says when not).

The members stay :class:`~lfads_core.train.loop.Trainer` objects: each keeps its model,
optimizer, hyperparameters, history, early-stopping counters and random streams, so states,
checkpoints and exploits (``Trainer.state_dict`` / ``adopt``) are those of the trials engine.
:meth:`StackedTrainer.load` stacks their weights and Adam states, :meth:`StackedTrainer.store`
writes them back (after every epoch).

Per member: its hyperparameters (learning rate, dropout, KL and L2 scales and ramps: [P]
tensors), its augmentations with their own generators and rates, its gradient-norm clipping,
its Adam step (:class:`~lfads_core.train.vadam.StackedAdam`), its NaN check (a non-finite
member is rolled back to the start of the epoch alone, the others go on) and its validation
terms. Batches: ``"member"`` draws each member's own batch order from its data generator (as
the trials engine does; one session), ``"shared"`` draws one order for all from the first
member's generator (any number of sessions).
"""

from __future__ import annotations

import copy
import functools
import gc
import time
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..errors import TrainingError
from ..protocols import Batch
from .graphs import FIELDS, StepGraphs
from .loop import Trainer, finite_step, total_loss
from .schedules import ramp
from .vadam import StackedAdam, clip_member_norms

BATCHES = ("member", "shared")


class NotStackable(Exception):
    """The assembled model cannot run under vmap (a component does something vmap cannot)."""


def stack_batches(batches: Sequence[Batch]) -> Batch:
    """P members' batches of one session and shape as one Batch whose tensors are [P, B, ...]
    (a tensor all members share is expanded, not copied)."""
    first = batches[0]
    fields = {}
    for f in FIELDS:
        ts = [getattr(b, f) for b in batches]
        if ts[0] is None:
            fields[f] = None
        elif all(t is ts[0] for t in ts):
            fields[f] = ts[0].expand(len(ts), *ts[0].shape)
        else:
            fields[f] = torch.stack(ts)
    return Batch(**fields, session=first.session)


class _TermsOf(nn.Module):
    """The model's loss terms as one module call, so that ``functional_call`` puts the stacked
    weights in place for the loss too (priors, L2 kernels, reconstruction penalties)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch, scales: dict, sample: bool) -> dict[str, Tensor]:
        out = self.model(batch.encod, session=batch.session, ext=batch.ext, sample=sample)
        terms = self.model.losses(out, batch)
        terms["loss"] = total_loss(terms, scales)
        return terms


class StackedTrainer:
    """The members ``trainers`` (one architecture, built from one spec) trained as one model.

    ``batches``: ``"member"`` or ``"shared"`` (module docstring). ``graphs`` (CUDA): the stacked
    step captured as CUDA graphs (:mod:`.graphs`)."""

    def __init__(self, trainers: Sequence[Trainer], batches: str = "member",
                 log: Callable[[str], None] = print, graphs: bool = False):
        if batches not in BATCHES:
            raise ValueError(f"batches must be one of {BATCHES}, not {batches!r}")
        self.trainers = list(trainers)
        self.batches, self.log = batches, log
        lead = self.trainers[0]
        self.spec = lead.spec
        self.device = lead.device
        self.base = copy.deepcopy(lead.model)  # the functional template (its own tensors unused)
        self.terms_of = _TermsOf(self.base)
        named = dict(lead.model.named_parameters())
        self.trainable = [n for n, p in named.items() if p.requires_grad]
        p_count = len(self.trainers)
        with torch.no_grad():
            self.params = {n: torch.stack([dict(t.model.named_parameters())[n].detach() for t in self.trainers])
                           .requires_grad_(p.requires_grad) for n, p in named.items()}
            self.buffers = {n: torch.stack([dict(t.model.named_buffers())[n] for t in self.trainers])
                            for n, _ in lead.model.named_buffers()}
        group = lead.optimizer.param_groups[0]
        self.adam = StackedAdam({n: self.params[n] for n in self.trainable}, betas=tuple(group["betas"]),
                                eps=group["eps"], weight_decay=group["weight_decay"])
        zeros = lambda: torch.zeros(p_count, device=self.device)  # noqa: E731
        self.lr, self.dropout = zeros(), zeros()
        self.scales = {k: zeros() for k in lead.scales}
        self.active = torch.ones(p_count, dtype=torch.bool, device=self.device)
        self.graphs: Optional[StepGraphs] = StepGraphs(self._step, log) if graphs else None
        self.sample = True  # posterior samples in the training loss (False: the means; for tests)
        self.load()

    @property
    def members(self) -> int:
        return len(self.trainers)

    # -- weights and optimizer state between the trainers and the stack ---------------------
    @torch.no_grad()
    def load(self) -> None:
        """The trainers' weights, Adam states and hyperparameters into the stack (in place: a
        captured graph stays valid)."""
        for i, t in enumerate(self.trainers):
            params = dict(t.model.named_parameters())
            for n, p in params.items():
                self.params[n][i].copy_(p)
            for n, b in t.model.named_buffers():
                self.buffers[n][i].copy_(b)
            for n in self.trainable:
                state = t.optimizer.state.get(params[n], {})
                if "exp_avg" in state:
                    self.adam.exp_avg[n][i].copy_(state["exp_avg"])
                    self.adam.exp_avg_sq[n][i].copy_(state["exp_avg_sq"])
                else:
                    self.adam.exp_avg[n][i].zero_()
                    self.adam.exp_avg_sq[n][i].zero_()
                self.adam.steps[n][i] = float(state.get("step", 0.0))
        self._hparams()

    @torch.no_grad()
    def store(self, members: Optional[Sequence[int]] = None) -> None:
        """The stack's weights and Adam states back into the trainers (``members``: which;
        default all), in the layout ``torch.optim.Adam`` keeps."""
        steps = {n: v.tolist() for n, v in self.adam.steps.items()}
        for i in range(self.members) if members is None else members:
            t = self.trainers[i]
            params = dict(t.model.named_parameters())
            for n, p in params.items():
                p.copy_(self.params[n][i])
            for n, b in t.model.named_buffers():
                b.copy_(self.buffers[n][i])
            for n in self.trainable:
                p = params[n]
                if steps[n][i] == 0:  # never updated: no state, as torch.optim.Adam keeps it
                    t.optimizer.state.pop(p, None)
                    continue
                where = p.device if t.capturable else "cpu"
                t.optimizer.state[p] = {
                    "step": torch.tensor(steps[n][i], dtype=torch.float32, device=where),
                    "exp_avg": self.adam.exp_avg[n][i].clone(),
                    "exp_avg_sq": self.adam.exp_avg_sq[n][i].clone()}

    def _hparams(self) -> None:
        """Each member's current hyperparameters and ramps into the [P] tensors the step reads."""
        with torch.no_grad():
            for i, t in enumerate(self.trainers):
                t.scales["kl_ramp"].fill_(ramp(t.epoch, t.spec.kl.ramp_epochs))
                t.scales["l2_ramp"].fill_(ramp(t.epoch, t.spec.l2.ramp_epochs))
                self.lr[i] = t.hparams["train.lr"]
                self.dropout[i] = t.hparams["model.dropout_rate"]
                for k, v in t.scales.items():
                    self.scales[k][i] = v

    # -- one step --------------------------------------------------------------------------
    def _terms(self, params: dict, buffers: dict, fields: dict, dropout: Tensor, scales: dict,
               session: int) -> dict[str, Tensor]:
        """One member's loss terms (under vmap: ``params`` etc. are the member's slices)."""
        self.base.dropout_rate = dropout
        batch = Batch(**fields, session=session)
        weights = {**{f"model.{k}": v for k, v in params.items()},
                   **{f"model.{k}": v for k, v in buffers.items()}}
        return functional_call(self.terms_of, weights, (batch, scales, self.sample))

    def _forward(self, batch: Batch) -> dict[str, Tensor]:
        fields = {f: getattr(batch, f) for f in FIELDS if getattr(batch, f) is not None}
        fn = vmap(functools.partial(self._terms, session=batch.session), randomness="different")
        return fn(self.params, self.buffers, fields, self.dropout, self.scales)

    def _step(self, batch: Batch, training: bool = True) -> tuple[dict[str, Tensor], Optional[Tensor]]:
        """Forward and loss terms of every member ([P] each); when training also backward,
        per-member clipping and the stacked Adam step (members not ``active`` keep theirs)."""
        if not training:
            with torch.no_grad():
                return {k: v.detach() for k, v in self._forward(batch).items()}, None
        terms = self._forward(batch)
        # None for a weight the step does not use (another session's readin or readout): Adam
        # and the clipping leave it alone, as the trials engine's torch.optim.Adam does.
        got = torch.autograd.grad(terms["loss"].sum() * self.spec.loss_scale,
                                  [self.params[n] for n in self.trainable], allow_unused=True)
        grads = dict(zip(self.trainable, got))
        norms = clip_member_norms(grads, self.spec.grad_clip)
        self.adam.step(grads, self.lr, self.active)
        return {k: v.detach() for k, v in terms.items()}, norms

    def check(self) -> None:
        """One forward and backward pass on two validation trials, no update: raises
        :class:`NotStackable` naming what failed when the model cannot run stacked."""
        lead = self.trainers[0]
        batch = next(iter(lead.valid_batches(None)))
        small = Batch(**{f: None if getattr(batch, f) is None else getattr(batch, f)[:2] for f in FIELDS},
                      session=batch.session)
        self.base.train(True)
        try:
            terms = self._forward(stack_batches([small] * self.members))
            torch.autograd.grad(terms["loss"].sum(), [self.params[n] for n in self.trainable],
                                allow_unused=True)
        except Exception as exc:  # noqa: BLE001 - anything vmap or a component refuses
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise NotStackable(f"{type(exc).__name__}: {first}") from None

    # -- epochs ----------------------------------------------------------------------------
    def _member_batches(self, training: bool):
        """Per step: the members' batches (before augmentation)."""
        if not training:
            for batch in self.trainers[0].valid_batches(None):
                yield [batch] * self.members
        elif self.batches == "shared":
            lead = self.trainers[0]
            for batch in lead.train_batches(lead.data_rng):
                yield [batch] * self.members
        else:
            sources = [t.train_batches(t.data_rng) for t in self.trainers]
            for step in zip(*sources, strict=True):
                if any(b.session != step[0].session or b.encod.shape != step[0].encod.shape for b in step):
                    raise TrainingError("pbt.stacked_batches: member needs batches of one session and "
                                        "size at every step; use shared with several sessions")
                yield list(step)

    def _pass(self, training: bool) -> tuple[dict[str, Tensor], Tensor, int]:
        """One epoch's training or validation pass: sums of the terms weighted by batch size,
        [P] each, the members with a non-finite loss or gradient, the number of trials."""
        self.base.train(training)
        sums: dict[str, Tensor] = {}
        bad = torch.zeros(self.members, dtype=torch.bool, device=self.device)
        count = 0
        with torch.set_grad_enabled(training):
            for step in self._member_batches(training):
                own = [t.augment(batch, training) for t, batch in zip(self.trainers, step)]
                run = self.graphs.step if self.graphs is not None else self._step
                terms, norms = run(stack_batches(own), training)
                bad |= ~finite_step(terms, norms)
                n = own[0].encod.shape[0]
                count += n
                for k, v in terms.items():
                    v = v.detach().reshape(self.members) * n
                    sums[k] = sums[k] + v if k in sums else v
        return sums, bad, count

    def run_epoch(self, active: Sequence[bool]) -> list:
        """Train and validate one epoch of the ``active`` members. Per member: its metrics row;
        None when it was not active, or hit a non-finite loss and was rolled back to the
        epoch's start (its learning rate lowered); or a :class:`TrainingError` when it hit one
        more often than ``train.nan.max_recoveries``."""
        self._hparams()
        with torch.no_grad():
            self.active.copy_(torch.tensor(list(active), dtype=torch.bool))
            saved = ({n: p.detach().clone() for n, p in self.params.items()},
                     {n: v.clone() for n, v in self.adam.exp_avg.items()},
                     {n: v.clone() for n, v in self.adam.exp_avg_sq.items()},
                     {n: v.clone() for n, v in self.adam.steps.items()})
        start = time.perf_counter()
        train, bad_t, n_train = self._pass(True)
        valid, bad_v, n_valid = self._pass(False)
        keys_t, keys_v = list(train), list(valid)
        table = torch.stack([train[k].double() / n_train for k in keys_t]
                            + [valid[k].double() / n_valid for k in keys_v]
                            + [(bad_t | bad_v).double()]).tolist()  # the epoch's one read
        seconds = time.perf_counter() - start
        bad = table.pop()
        out: list = []
        for i, t in enumerate(self.trainers):
            if not active[i]:
                out.append(None)
                continue
            if bad[i]:
                self._restore(i, saved)
                out.append(self._nan(t))
                continue
            row_t = {k: table[j][i] for j, k in enumerate(keys_t)}
            row_v = {k: table[len(keys_t) + j][i] for j, k in enumerate(keys_v)}
            out.append(t._finish_epoch(row_t, row_v, seconds))
        self.store([i for i in range(self.members) if active[i]])
        return out

    @torch.no_grad()
    def _restore(self, i: int, saved: tuple) -> None:
        params, exp_avg, exp_avg_sq, steps = saved
        for n, p in self.params.items():
            p[i].copy_(params[n][i])
        for n in self.trainable:
            self.adam.exp_avg[n][i].copy_(exp_avg[n][i])
            self.adam.exp_avg_sq[n][i].copy_(exp_avg_sq[n][i])
            self.adam.steps[n][i] = steps[n][i]

    @staticmethod
    def _nan(t: Trainer):
        """A member's non-finite epoch (its weights already rolled back), as Trainer.run_epoch
        handles one: None, or the TrainingError past its recoveries."""
        try:
            t.recover_from_non_finite()
        except TrainingError as exc:
            return exc
        return None


def member_memory(trainer_factory: Callable[[], Trainer]) -> int:
    """Peak CUDA memory (bytes) of one stacked training step of a single member: what a
    member adds to a group. Builds a throwaway member with ``trainer_factory``."""
    t = trainer_factory()
    group = StackedTrainer([t], log=lambda s: None)
    torch.cuda.synchronize(t.device)
    before = torch.cuda.memory_allocated(t.device)
    torch.cuda.reset_peak_memory_stats(t.device)
    batch = next(iter(t.train_batches(torch.Generator().manual_seed(0))))
    group.base.train(True)
    group._step(stack_batches([batch]), True)
    torch.cuda.synchronize(t.device)
    peak = torch.cuda.max_memory_allocated(t.device) - before
    del group, t
    gc.collect()  # a trainer and its step graphs refer to each other: freed by the collector only
    torch.cuda.empty_cache()
    return int(peak)


def planned_memory(free: int, total: int, held: int, share: float) -> int:
    """The GPU memory (bytes) a worker may fill with stacked members: the ``free`` memory, but
    with a fractional GPU (``pbt.resources.gpu`` = ``share`` < 1; workers sharing a GPU each
    see all of its free memory) at most its share of the ``total`` less what it ``held``
    already (``torch.cuda.memory_reserved``: its members' weights and data)."""
    if share >= 1 or share <= 0:
        return free
    return max(0, min(free, int(share * total) - held))


def group_size(hosted: int, per_member: Optional[int] = None, free: Optional[int] = None,
               fraction: float = 0.7) -> int:
    """How many of the ``hosted`` members train as one group: all of them, or on a GPU as many
    as ``fraction`` of its ``free`` memory holds at ``per_member`` bytes each (at least 1)."""
    if per_member is None or free is None or per_member <= 0:
        return max(1, hosted)
    return max(1, min(hosted, int(fraction * free // per_member)))


__all__ = ["StackedTrainer", "NotStackable", "stack_batches", "group_size", "member_memory",
           "planned_memory"]
