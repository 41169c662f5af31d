"""The training loop: plain PyTorch, no files and no Ray.

Loss = loss_scale · (recon + ramp_kl·(λ_ic·KL_ic + λ_co·KL_co) + ramp_l2·L2 + penalty), with
L2 = Σ_k λ_k·½‖W_k‖² / Σ_{k: λ_k > 0} numel(W_k) (the original LFADS convention: the weighted
sum over the groups divided by the total number of penalised weights),
with recon the mean NLL per observed element and KLs summed over dimensions and time, averaged
over trials (docs/user-guide.md, "Loss and scales").

Hyperparameters that may change between epochs live in :attr:`Trainer.hparams`, keyed by their
spec path (``train.lr``, ``model.dropout_rate``, ``train.kl.ic_scale``,
``model.augmentations.0.rate``, ...); :meth:`Trainer.set_hparams` applies them, the learning rate
inside the optimizer included. :meth:`state_dict` holds the whole training state.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable, Optional

import torch

from ..components import AugmentContext
from ..data.batches import BatchSource, SplitBatches, TensorSplit
from ..errors import TrainingError
from ..model.lfads import LFADS
from ..spec.schema import TrainSpec
from .graphs import StepGraphs
from .schedules import plateau_step, ramp, smooth

L2_KEYS = {"gen": "gen_scale", "con": "con_scale", "ic_enc": "ic_enc_scale", "ci_enc": "ci_enc_scale"}
# Hyperparameter -> the loss scale (Trainer.scales) it sets.
SCALE_OF = {"train.kl.ic_scale": "kl_ic", "train.kl.co_scale": "kl_co",
            **{f"train.l2.{v}": k for k, v in L2_KEYS.items()}}


class NonFiniteLoss(Exception):
    pass


def _source(data, batch_size: Optional[int]) -> BatchSource:
    if isinstance(data, TensorSplit):
        if batch_size is None:
            raise TypeError("a TensorSplit needs batch_size")
        return SplitBatches(data, batch_size)
    return data


def uncovered_l2_groups(model: LFADS) -> list[str]:
    """L2 groups a component declares that no ``train.l2`` scale covers (not penalised)."""
    return sorted(g for g in model.l2_groups() if g not in L2_KEYS)


def total_loss(terms: dict[str, torch.Tensor], scales: dict[str, torch.Tensor]) -> torch.Tensor:
    """The unscaled loss from the loss terms and the scales and ramps (:attr:`Trainer.scales`:
    ``kl_ic``, ``kl_co``, ``kl_ramp``, ``l2_ramp``, ``l2_div`` and one per L2 group)."""
    sc = scales
    kl = sc["kl_ic"] * terms["kl_ic"] + sc["kl_co"] * terms["kl_co"]
    l2 = sum((sc[k[3:]] * v for k, v in terms.items() if k.startswith("l2_") and k[3:] in L2_KEYS),
             torch.zeros_like(terms["recon"]))
    return terms["recon"] + sc["kl_ramp"] * kl + sc["l2_ramp"] * sc["l2_div"] * l2 + terms["penalty"]


def finite_step(terms: dict[str, torch.Tensor], norm: Optional[torch.Tensor]) -> torch.Tensor:
    """Where a step's loss (and gradient norm, when it trained) is finite (a device tensor)."""
    finite = torch.isfinite(terms["loss"])
    return finite & torch.isfinite(norm) if norm is not None else finite


def augmentation_seed(seed: int, index: int) -> int:
    """The seed of the random generator of augmentation ``index`` for ``train.seed``."""
    return (seed * 1_000_003 + 7919 * (index + 1)) % (2**63 - 1)


class Trainer:
    def __init__(self, model: LFADS, augmentations: list, train: BatchSource | TensorSplit,
                 valid: BatchSource | TensorSplit, spec: TrainSpec, batch_size: Optional[int] = None,
                 log: Callable[[str], None] = print, graphs: bool = False):
        """``train``/``valid``: where each epoch's batches come from (a :class:`BatchSource`), or
        one session's :class:`TensorSplit` batched by ``batch_size``. The model and the batches
        are on the device to train on. ``graphs`` (CUDA only): capture each session's training
        step as a CUDA graph and replay it (:mod:`.graphs`); batches must then have one size per
        session (the sources drop ragged last batches)."""
        self.model, self.augmentations, self.spec = model, augmentations, spec
        self.train_batches, self.valid_batches = _source(train, batch_size), _source(valid, batch_size)
        self.log = log
        self.device = next(model.parameters()).device
        self.graphs: Optional[StepGraphs] = StepGraphs(self._step, log) if graphs else None
        # On the CPU a non-finite loss is caught at its batch; on CUDA at the end of the epoch
        # (reading it at every batch would wait for the device each time).
        self.check_each_batch = self.device.type == "cpu"
        self.sample = True  # posterior samples in the training loss (False: the means; for tests)
        self.capturable = graphs
        self.lr_tensor = torch.tensor(spec.lr, device=self.device) if graphs else None
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.lr_tensor if graphs else spec.lr,
                                          eps=spec.adam_eps, weight_decay=spec.weight_decay,
                                          capturable=graphs)
        self.hparams: dict[str, float] = {
            "train.lr": spec.lr,
            "model.dropout_rate": model.dropout_rate,
            "train.kl.ic_scale": spec.kl.ic_scale,
            "train.kl.co_scale": spec.kl.co_scale,
            **{f"train.l2.{v}": getattr(spec.l2, v) for v in L2_KEYS.values()},
        }
        for i, aug in enumerate(augmentations):
            for name in getattr(aug, "hyperparameters", ()):
                self.hparams[f"model.augmentations.{i}.{name}"] = float(getattr(aug, name))
        # What the loss reads of the hyperparameters and ramps: 0-d tensors on the device, changed
        # in place, so a captured graph reads the current values.
        self.scales = {k: torch.zeros((), device=self.device)
                       for k in ("kl_ic", "kl_co", "kl_ramp", "l2_ramp", "l2_div", *L2_KEYS)}
        self.l2_sizes = model.l2_sizes()
        if graphs:
            self.model.dropout_rate = torch.tensor(float(model.dropout_rate), device=self.device)
        self.set_hparams(dict(self.hparams))
        self.epoch = 0
        self.history: list[dict] = []
        self.smoothed: Optional[float] = None
        self.best = math.inf
        self.best_epoch = 0  # epoch (from 1) of the best smoothed validation reconstruction
        self.since_best = 0
        self.plateau_best = math.inf
        self.plateau_bad = 0
        self.nan_recoveries = 0
        self.stop_reason: Optional[str] = None
        self.data_rng = torch.Generator().manual_seed(spec.seed)
        # One generator per augmentation, saved with the state: a resumed run draws the same masks.
        self.aug_rngs = [torch.Generator().manual_seed(augmentation_seed(spec.seed, i))
                         for i in range(len(augmentations))]

    # -- hyperparameters -------------------------------------------------------------------
    def set_hparams(self, values: dict[str, float]) -> None:
        """Apply new hyperparameter values (keys as in :attr:`hparams`)."""
        for key, value in values.items():
            if key not in self.hparams:
                raise KeyError(f"unknown hyperparameter '{key}' (known: {', '.join(self.hparams)})")
            self.hparams[key] = value = float(value)
            if key == "train.lr":
                self._apply_lr()
            elif key == "model.dropout_rate":
                if isinstance(self.model.dropout_rate, torch.Tensor):
                    self.model.dropout_rate.fill_(value)
                else:
                    self.model.dropout_rate = value
            elif key.startswith("model.augmentations."):
                _, _, index, name = key.split(".")
                setattr(self.augmentations[int(index)], name, value)
            else:  # a loss scale
                self.scales[SCALE_OF[key]].fill_(value)
                if key.startswith("train.l2."):
                    self.scales["l2_div"].fill_(1.0 / max(1, self._l2_numel()))

    def _l2_numel(self) -> int:
        """The penalised weights: those of the groups whose scale is > 0."""
        return sum(n for g, n in self.l2_sizes.items()
                   if g in L2_KEYS and self.hparams[f"train.l2.{L2_KEYS[g]}"] > 0)

    def _apply_lr(self) -> None:
        """The learning rate into every parameter group (a device tensor changed in place when
        the step is a graph: the captured Adam reads it)."""
        lr = self.hparams["train.lr"]
        if self.lr_tensor is not None:
            self.lr_tensor.fill_(lr)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_tensor if self.lr_tensor is not None else lr

    @property
    def ramp_end(self) -> int:
        return max(self.spec.kl.ramp_epochs, self.spec.l2.ramp_epochs)

    # -- one pass --------------------------------------------------------------------------
    def _total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The unscaled loss from the terms, with the scales and ramps of :attr:`scales`."""
        return total_loss(terms, self.scales)

    def _weighted_l2(self, terms: dict) -> float:
        """L2 = Σ_k λ_k · ½‖W_k‖² / (penalised weights), from epoch averages."""
        return sum(self.hparams[f"train.l2.{L2_KEYS[k[3:]]}"] * v for k, v in terms.items()
                   if k.startswith("l2_") and k[3:] in L2_KEYS) / max(1, self._l2_numel())

    def _step(self, batch, training: bool = True) -> tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]:
        """Forward and loss terms (``loss``: the total); when training also backward, clipping
        and the optimizer step. Returns (terms, gradient norm or None). No host reads: on CUDA
        this is what a graph captures."""
        model = self.model
        out = model(batch.encod, session=batch.session, ext=batch.ext, sample=self.sample)
        terms = model.losses(out, batch)
        total = terms["loss"] = self._total(terms)
        norm = None
        if training:
            self.optimizer.zero_grad(set_to_none=True)
            (total * self.spec.loss_scale).backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.spec.grad_clip)
            self.optimizer.step()
        return {k: v.detach() for k, v in terms.items()}, norm

    def augment(self, batch, training: bool):
        """``batch`` through this trainer's augmentations, each with its own generator."""
        for aug, rng in zip(self.augmentations, self.aug_rngs):
            batch = aug(batch, AugmentContext(training, self.epoch + 1, rng))
        return batch

    def _pass(self, training: bool) -> dict[str, float]:
        model, source = self.model, self.train_batches if training else self.valid_batches
        model.train(training)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        gen = self.data_rng if training else None
        with torch.set_grad_enabled(training):
            for batch in source(gen):
                batch = self.augment(batch, training)
                step = self.graphs.step if self.graphs is not None else self._step
                terms, norm = step(batch, training)
                finite = finite_step(terms, norm)
                if self.check_each_batch and not bool(finite):
                    raise NonFiniteLoss()
                bad |= ~finite
                n = batch.encod.shape[0]
                count += n
                for k, v in terms.items():
                    sums[k] = sums[k] + v.detach() * n if k in sums else v.detach() * n
        keys = list(sums)
        values = torch.stack([sums[k].float().reshape(()) for k in keys] + [bad.float()]).tolist()
        if values.pop():  # the epoch's one read of the device
            raise NonFiniteLoss()
        return {k: v / count for k, v in zip(keys, values)}

    def run_epoch(self) -> Optional[dict]:
        """Train and validate one epoch; returns its metrics row, or None if the epoch hit a
        non-finite loss and was rolled back (learning rate lowered)."""
        good = copy.deepcopy(self.state_dict())
        start = time.perf_counter()
        self.scales["kl_ramp"].fill_(ramp(self.epoch, self.spec.kl.ramp_epochs))
        self.scales["l2_ramp"].fill_(ramp(self.epoch, self.spec.l2.ramp_epochs))
        try:
            train = self._pass(True)
            valid = self._pass(False)
        except NonFiniteLoss:
            self.load_state_dict(good)
            self.recover_from_non_finite()
            return None
        return self._finish_epoch(train, valid, time.perf_counter() - start)

    def recover_from_non_finite(self) -> None:
        """After an epoch with a non-finite loss was rolled back: count the recovery and lower
        the learning rate, or raise :class:`TrainingError` past ``train.nan.max_recoveries``."""
        self.nan_recoveries += 1
        if self.nan_recoveries > self.spec.nan.max_recoveries:
            raise TrainingError(
                f"non-finite loss again in epoch {self.epoch + 1} after {self.spec.nan.max_recoveries} "
                f"recoveries; lower train.lr or check the data") from None
        lr = self.hparams["train.lr"] * self.spec.nan.lr_factor
        self.set_hparams({"train.lr": lr})
        self.log(f"non-finite loss in epoch {self.epoch + 1}: restored the last good state, "
                 f"learning rate lowered to {lr:.3g} (recovery {self.nan_recoveries})")

    def _finish_epoch(self, train: dict, valid: dict, seconds: float) -> dict:
        spec = self.spec
        self.smoothed = smooth(self.smoothed, valid["recon"], spec.early_stopping.smoothing)
        eligible = self.epoch >= self.ramp_end or self.ramp_end >= spec.max_epochs
        is_best = eligible and self.smoothed < self.best
        if is_best:
            self.best, self.best_epoch, self.since_best = self.smoothed, self.epoch + 1, 0
        elif eligible:
            self.since_best += 1
        if spec.lr_schedule.enabled:
            ls = spec.lr_schedule
            lr, self.plateau_best, self.plateau_bad = plateau_step(
                self.hparams["train.lr"], self.plateau_best, self.smoothed, self.plateau_bad,
                ls.factor, ls.patience, ls.min_lr)
            if lr != self.hparams["train.lr"]:
                self.set_hparams({"train.lr": lr})
        row = {"epoch": self.epoch + 1,  # epochs completed, counted from 1
               **{f"train_{k.removeprefix('metric_')}": v for k, v in train.items()
                  if not k.startswith("l2_")},
               "train_l2": self._weighted_l2(train),
               **{f"valid_{k}": valid[k] for k in ("loss", "recon", "kl_ic", "kl_co")},
               **{f"valid_{k.removeprefix('metric_')}": v for k, v in valid.items()
                  if k.startswith("metric_")},
               "valid_recon_smooth": self.smoothed,
               "lr": self.hparams["train.lr"],
               "kl_ramp": ramp(self.epoch, spec.kl.ramp_epochs),
               "l2_ramp": ramp(self.epoch, spec.l2.ramp_epochs),
               "is_best": int(is_best), "seconds": seconds}
        self.history.append(row)
        self.epoch += 1
        if self.epoch >= spec.max_epochs:
            self.stop_reason = f"reached max_epochs ({spec.max_epochs})"
        elif spec.early_stopping.enabled and self.since_best >= spec.early_stopping.patience:
            self.stop_reason = (f"early stopping: no improvement of the smoothed validation "
                                f"reconstruction for {spec.early_stopping.patience} epochs")
        return row

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None or self.epoch >= self.spec.max_epochs

    def fit(self, on_epoch_end: Callable[["Trainer", dict], None] = lambda t, r: None) -> None:
        """Run epochs until max_epochs or early stopping; ``on_epoch_end(trainer, row)``."""
        while not self.finished:
            row = self.run_epoch()
            if row is not None:
                on_epoch_end(self, row)

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The whole training state; loadable on any device (the learning rate a float)."""
        optimizer = self.optimizer.state_dict()
        optimizer["param_groups"] = [{**g, "lr": float(g["lr"])} for g in optimizer["param_groups"]]
        return {"model": self.model.state_dict(), "optimizer": optimizer,
                "hparams": dict(self.hparams), "epoch": self.epoch, "history": list(self.history),
                "smoothed": self.smoothed, "best": self.best, "best_epoch": self.best_epoch,
                "since_best": self.since_best, "plateau": (self.plateau_best, self.plateau_bad),
                "nan_recoveries": self.nan_recoveries, "stop_reason": self.stop_reason,
                "rng": torch.get_rng_state(), "data_rng": self.data_rng.get_state(),
                "aug_rngs": [g.get_state() for g in self.aug_rngs]}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])  # in place: a captured graph stays valid
        self._load_optimizer(state["optimizer"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.smoothed, self.best, self.best_epoch = state["smoothed"], state["best"], state["best_epoch"]
        self.since_best = state["since_best"]
        self.plateau_best, self.plateau_bad = state["plateau"]
        self.nan_recoveries, self.stop_reason = state["nan_recoveries"], state["stop_reason"]
        torch.set_rng_state(state["rng"])
        self.data_rng.set_state(state["data_rng"])
        for g, saved in zip(self.aug_rngs, state.get("aug_rngs", ())):
            g.set_state(saved)
        if self.stop_reason and self.stop_reason.startswith("reached max_epochs") \
                and self.epoch < self.spec.max_epochs:
            self.stop_reason = None  # max_epochs was raised: go on
        if self.stop_reason and self.stop_reason.startswith("early stopping") \
                and self.since_best < self.spec.early_stopping.patience:
            self.stop_reason = None  # patience was raised: go on
        # After the optimizer state: every hyperparameter, the learning rate included, takes effect.
        self.set_hparams(state["hparams"])

    def adopt(self, state: dict, hparams: dict[str, float]) -> None:
        """PBT exploit: take another trainer's weights and optimizer state (``state``, from its
        :meth:`state_dict`) and the hyperparameters ``hparams``; keep this trainer's own random
        streams, data order, epoch count and history; restart its early-stopping, plateau and
        NaN counters from the adopted model's smoothed validation loss. A trainer behind the
        other (rebuilt after its process died, or failed within a generation) takes its epoch
        count and history too: it goes on as a clone, its KL and L2 ramps where the other's are."""
        self.model.load_state_dict(state["model"])
        self._load_optimizer(state["optimizer"])
        if self.epoch < state["epoch"]:
            self.epoch, self.history = state["epoch"], list(state["history"])
        self.smoothed = state["smoothed"]
        self.best, self.best_epoch, self.since_best = math.inf, self.epoch, 0
        self.plateau_best, self.plateau_bad = math.inf, 0
        self.nan_recoveries, self.stop_reason = 0, None
        self.set_hparams({**self.hparams, **hparams})

    def _load_optimizer(self, saved: dict) -> None:
        """The optimizer state of any device, as this optimizer keeps it (capturable or not).
        With captured graphs the state tensors are overwritten in place (the graphs read them);
        where the saved state does not match their layout the graphs are captured again."""
        saved = copy.deepcopy(saved)  # never alias the source
        for group in saved["param_groups"]:
            group["capturable"] = self.capturable
        if self.graphs is not None and self.graphs.captured:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            current = [self.optimizer.state.get(p, {}) for p in params]
            states = saved["state"]
            if all(set(states.get(i, {})) == set(cur) for i, cur in enumerate(current)):
                with torch.no_grad():
                    for i, cur in enumerate(current):
                        for k, v in states.get(i, {}).items():
                            cur[k].copy_(v)
                return
            self.graphs.reset()
        self.optimizer.load_state_dict(saved)
        self._apply_lr()
