"""The training step captured as CUDA graphs: one per session and batch shape (and one for each
validation batch shape), replayed.

A captured step (forward, loss, backward, clipping, Adam) runs as one graph launch instead of
thousands of small kernels. What it reads must stay where it was at capture: each batch is copied
into static input tensors; the hyperparameters that change between epochs are device tensors
changed in place (``Trainer.scales``, the learning rate, the dropout rate); the optimizer is
``capturable``. The first ``WARMUP`` steps of each graph run eagerly on a side stream (they are
real training steps), the next one is captured and every later one replayed. A step that cannot
be captured (e.g. a plugin component that reads a tensor on the host) falls back to eager
steps, with one warning.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..protocols import Batch

WARMUP = 3
FIELDS = ("encod", "recon", "loss_mask", "grad_mask", "ext", "score_mask")


def _shape(batch: Batch, training: bool) -> tuple:
    return (training, batch.session) + tuple(None if getattr(batch, f) is None else tuple(getattr(batch, f).shape)
                                    for f in FIELDS)


class _Graph:
    def __init__(self, example: Batch):
        self.static = Batch(**{f: None if getattr(example, f) is None else getattr(example, f).clone()
                               for f in FIELDS}, session=example.session)
        self.warm = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.out = None

    def run(self, batch: Batch, step: Callable, training: bool):
        for f in FIELDS:
            if getattr(batch, f) is not None:
                getattr(self.static, f).copy_(getattr(batch, f), non_blocking=True)
        if self.graph is None and self.warm < WARMUP:
            self.warm += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = step(self.static, training)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.out = step(self.static, training)
            self.graph = graph
        self.graph.replay()
        return self.out


class StepGraphs:
    """``step(batch, training)`` runs ``step_fn(batch, training)`` (returning tensors) through
    the graph of the batch's session and shape: a training step (forward, backward, optimizer)
    or a validation forward pass. Batches of a shape not seen before get a graph of their own."""

    def __init__(self, step_fn: Callable, log: Callable[[str], None] = print):
        self.step_fn, self.log = step_fn, log
        self.graphs: dict[tuple, _Graph] = {}
        self.failed: Optional[str] = None

    @property
    def captured(self) -> bool:
        return any(g.graph is not None for g in self.graphs.values())

    def reset(self) -> None:
        """Forget the graphs (captured again from the next steps)."""
        self.graphs.clear()

    def step(self, batch: Batch, training: bool = True):
        if self.failed:
            return self.step_fn(batch, training)
        key = _shape(batch, training)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = _Graph(batch)
        try:
            return graph.run(batch, self.step_fn, training)
        except Exception as exc:  # noqa: BLE001 - any capture failure: train eagerly instead
            self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self.graphs.clear()
            torch.cuda.synchronize()
            self.log(f"warning: the training step cannot be captured as a CUDA graph "
                     f"({self.failed}); training without graphs (train.cuda_graphs: off hides this)")
            return self.step_fn(batch, training)
