"""Tensors of a split and batches of trials (:class:`~lfads_core.protocols.Batch`)."""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Optional, Protocol

import numpy as np
import torch
from torch import Tensor

from ..protocols import Batch
from .h5 import Split


@dataclasses.dataclass
class TensorSplit:
    """A split as tensors: NaNs zeroed in ``encod``/``recon``; ``mask`` is 1 where recon is observed."""

    encod: Tensor  # [n, T_e, N_in]
    recon: Tensor  # [n, T_r, N]
    mask: Tensor  # [n, T_r, N] float
    ext: Optional[Tensor] = None  # [n, T_r, E]
    session: int = 0

    @property
    def n_trials(self) -> int:
        return self.encod.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.encod, self.recon, self.mask, self.ext)
                   if t is not None)

    def to(self, device: torch.device, pin: bool = False) -> "TensorSplit":
        """On ``device``; ``pin``: in pinned host memory instead (for batches copied to a GPU
        ahead of time)."""
        move = (lambda t: t.pin_memory()) if pin else (lambda t: t.to(device))  # noqa: E731
        return dataclasses.replace(self, encod=move(self.encod), recon=move(self.recon),
                                   mask=move(self.mask), ext=None if self.ext is None else move(self.ext))


def to_tensors(split: Split, session: int = 0, device: Optional[torch.device] = None) -> TensorSplit:
    """The split as tensors, on ``device`` (default: the CPU)."""
    recon = split.recon if split.recon is not None else np.full(split.encod.shape, np.nan, np.float32)
    finite = np.isfinite(recon)
    ext = torch.from_numpy(split.ext) if split.ext is not None else None
    data = TensorSplit(encod=torch.from_numpy(np.nan_to_num(split.encod, nan=0.0)),
                       recon=torch.from_numpy(np.where(finite, recon, 0.0).astype(np.float32)),
                       mask=torch.from_numpy(finite.astype(np.float32)), ext=ext, session=session)
    return data.to(device) if device is not None else data


class BatchSource(Protocol):
    """What the training loop iterates once per epoch: ``source(generator)`` yields the epoch's
    :class:`Batch` es, shuffled with ``generator`` (the loop's data generator, saved with its
    state) or in a fixed order when it is None (validation: every trial once). One session or a
    mix of sessions, on the CPU or a device: the loop does not care."""

    def __call__(self, generator: Optional[torch.Generator] = None) -> Iterable[Batch]: ...


@dataclasses.dataclass
class SplitBatches:
    """The batches of one session's split: ``batch_size`` trials each, the last one smaller."""

    data: TensorSplit
    batch_size: int

    def __call__(self, generator: Optional[torch.Generator] = None) -> Iterator[Batch]:
        return batches(self.data, self.batch_size, generator)


def batches(data: TensorSplit, batch_size: int, generator: Optional[torch.Generator] = None,
            drop_last: bool = False, device: Optional[torch.device] = None) -> Iterator[Batch]:
    """Batches in order, or shuffled with ``generator`` (a CPU generator: the same order on any
    device); the last batch may be smaller, or is left out with ``drop_last`` when there are
    more trials than ``batch_size``. ``device``: where batches go (default: the data's)."""
    n = data.n_trials
    index = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = index.to(data.encod.device)  # one copy per epoch, then slices of it
    stop = n - n % batch_size if drop_last and n > batch_size else n
    for start in range(0, stop, batch_size):
        yield _batch(data, order[start:start + batch_size], device, index[start:start + batch_size])


@dataclasses.dataclass
class SessionBatches:
    """The batches of several sessions' splits: each batch holds ``batch_size`` trials of one
    session (readins differ per session); the epoch's batches come in a random order.

    Training (a ``generator``): ``weights="trials"`` visits every trial of every session once
    per epoch, so sessions count in proportion to their trials; ``weights="equal"`` gives every
    session the same number of batches (the epoch's total stays that of "trials"): a small
    session goes round its trials more than once (a new permutation each round; a round's last
    batch may be smaller), a large session shows a random part of its trials. Validation (no generator): every trial of every
    session exactly once, session by session, in order. One session: as :class:`SplitBatches`.
    """

    data: list[TensorSplit]
    batch_size: int
    weights: str = "trials"
    drop_last: bool = False  # training: no ragged batch (a captured CUDA graph has fixed shapes)
    device: Optional[torch.device] = None  # where batches go when the data are kept on the host

    def n_batches(self) -> list[int]:
        """Batches per session in one training epoch."""
        own = [-(-d.n_trials // self.batch_size) if not self.drop_last or d.n_trials <= self.batch_size
               else d.n_trials // self.batch_size for d in self.data]
        if self.weights == "trials" or len(self.data) == 1:
            return own
        total, k = sum(own), len(self.data)
        return [total // k + (i < total % k) for i in range(k)]

    def __call__(self, generator: Optional[torch.Generator] = None) -> Iterator[Batch]:
        if len(self.data) == 1:
            return batches(self.data[0], self.batch_size, generator, generator is not None and self.drop_last,
                           self.device)
        if generator is None:
            return (b for d in self.data for b in batches(d, self.batch_size, device=self.device))
        return self._training(generator)

    def _training(self, generator: torch.Generator) -> Iterator[Batch]:
        plan = []  # (session, trial indices)
        for s, (d, count) in enumerate(zip(self.data, self.n_batches())):
            own = []
            size = min(self.batch_size, d.n_trials)
            stop = d.n_trials - d.n_trials % size if self.drop_last else d.n_trials
            while len(own) < count:  # rounds through the session: one permutation each
                index = torch.randperm(d.n_trials, generator=generator)
                order = index.to(d.encod.device)
                own += [(order[i:i + size], index[i:i + size]) for i in range(0, stop, size)]
            plan += [(s, idx) for idx in own[:count]]
        for j in torch.randperm(len(plan), generator=generator).tolist():
            s, (idx, index) = plan[j]
            yield _batch(self.data[s], idx, self.device, index)


def _batch(data: TensorSplit, idx: Tensor, device: Optional[torch.device], index: Tensor) -> Batch:
    """The trials ``idx`` (on the data's device) of ``data`` as a Batch on ``device``;
    ``Batch.index`` is ``index``, the same trials on the CPU (what augmentations read on the
    host without waiting for the device)."""
    move = (lambda t: t) if device is None or data.encod.device == device else \
        (lambda t: t.to(device, non_blocking=True))  # noqa: E731
    mask = move(data.mask[idx])
    return Batch(encod=move(data.encod[idx]), recon=move(data.recon[idx]), loss_mask=mask,
                 grad_mask=torch.ones_like(mask, dtype=torch.bool),
                 ext=move(data.ext[idx]) if data.ext is not None else None,
                 session=data.session, index=index)
