"""Adam over stacked weights: every tensor has a leading member dimension [P, ...] and every
member its own learning rate and step counts (``torch.optim`` takes one learning rate per
parameter group, not per slice of a tensor).

The arithmetic is that of ``torch.optim.Adam`` (L2-style ``weight_decay``, no amsgrad), member
by member: m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², p ← p − lr·m̂/(√v̂ + eps) with the bias
corrections of the parameter's own step count. As there, a parameter without a gradient in a
step (e.g. the readout of a session the batch is not from) is left alone, its step count
included. Only tensor arithmetic: no host reads, so a CUDA graph can capture it; the learning
rates and the ``active`` mask are device tensors.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def member_view(x: Tensor, like: Tensor) -> Tensor:
    """``x`` [P] shaped to broadcast over ``like`` [P, ...]."""
    return x.view(x.shape[0], *([1] * (like.dim() - 1)))


class StackedAdam:
    """``params``: name -> [P, ...] tensors (updated in place). State per parameter:
    ``exp_avg``, ``exp_avg_sq`` (like it) and ``steps`` [P] (its updates per member; float64:
    exact counts)."""

    def __init__(self, params: dict[str, Tensor], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.params = params
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        first = next(iter(params.values()))
        self.members = first.shape[0]
        self.exp_avg = {k: torch.zeros_like(p) for k, p in params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(p) for k, p in params.items()}
        self.steps = {k: torch.zeros(self.members, dtype=torch.float64, device=first.device)
                      for k in params}

    @torch.no_grad()
    def step(self, grads: dict[str, Optional[Tensor]], lr: Tensor, active: Optional[Tensor] = None) -> None:
        """One update of every member with ``lr`` [P]; members where ``active`` [P] (bool) is
        False keep their weights and state. Parameters without a gradient are left alone."""
        b1, b2 = self.betas
        inc = (torch.ones(self.members, dtype=torch.float64, device=lr.device) if active is None
               else active.to(torch.float64))
        lr = lr.to(torch.float64)
        for name, p in self.params.items():
            g = grads.get(name)
            if g is None:
                continue
            step = self.steps[name].add_(inc).clamp_min(1.0)
            bc1 = 1.0 - torch.pow(b1, step)
            bc2_sqrt = torch.sqrt(1.0 - torch.pow(b2, step))
            step_size = lr / bc1
            if self.weight_decay != 0.0:
                g = g.add(p, alpha=self.weight_decay)
            m = self.exp_avg[name].lerp(g, 1.0 - b1)
            v = self.exp_avg_sq[name].mul(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (v.sqrt() / member_view(bc2_sqrt.to(p.dtype), p)).add_(self.eps)
            new = p - member_view(step_size.to(p.dtype), p) * (m / denom)
            if active is None:
                self.exp_avg[name].copy_(m)
                self.exp_avg_sq[name].copy_(v)
                p.copy_(new)
            else:
                keep = member_view(active, p)
                self.exp_avg[name].copy_(torch.where(keep, m, self.exp_avg[name]))
                self.exp_avg_sq[name].copy_(torch.where(keep, v, self.exp_avg_sq[name]))
                p.copy_(torch.where(keep, new, p))


def clip_member_norms(grads: dict[str, Optional[Tensor]], max_norm: float) -> Tensor:
    """Each member's gradients scaled (in place) as ``torch.nn.utils.clip_grad_norm_`` scales
    one model's: by min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖ the 2-norm over all of the member's
    gradients. Returns the norms before clipping, [P]."""
    gs = [g for g in grads.values() if g is not None]
    sq = torch.stack([g.reshape(g.shape[0], -1).square().sum(1) for g in gs]).sum(0)
    norms = sq.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in gs:
        g.mul_(member_view(coef.to(g.dtype), g))
    return norms
