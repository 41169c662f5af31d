"""Dropout whose rate may be a 0-d tensor: a run whose training step is captured as a CUDA graph
passes ``dropout`` as a device tensor, so a new rate takes effect without capturing again."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dropout(x: Tensor, p: float | Tensor, training: bool) -> Tensor:
    """``F.dropout(x, p, training)`` for a float ``p``; for a 0-d tensor ``p`` the same in tensor
    arithmetic (no host read of ``p``): each element kept with probability 1 − p, scaled 1/(1 − p)."""
    if not training:
        return x
    if isinstance(p, Tensor):
        keep = torch.rand_like(x) >= p
        return x * keep.to(x.dtype) / (1.0 - p)
    return F.dropout(x, p, True)
