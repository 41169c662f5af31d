"""Dropout whose rate may be a 0-d tensor: a run whose training step is captured as a CUDA graph
passes ``dropout`` as a device tensor, so a new rate takes effect without capturing again.

On the CPU masks are drawn as 16-bit random integers, four from each 64-bit draw of the
generator: 2.3x faster than comparing ``torch.rand`` and 3x faster than ``bernoulli_`` (the
masks of one Lorenz training step hold some 4.5 million elements); the rate then resolves to a
multiple of 2^-16. Elsewhere (a GPU's generator is fast) they compare ``torch.rand``."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor


def uniform16(n: int) -> Tensor:
    """``n`` int16 uniform on [-32768, 32767] from the CPU generator: four from each 64-bit draw.
    Under ``torch.func.vmap`` (the stacked engine) torch before 2.13 has no rule for viewing a
    tensor as another dtype (seen with 2.11); there they are drawn as int16 directly (2x slower)."""
    words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    try:
        return words.view(torch.int16)[:n]
    except RuntimeError:
        return torch.randint(-32768, 32768, (n,), dtype=torch.int16)


def keep_mask(shape: tuple[int, ...], p: float | Tensor, like: Tensor) -> Tensor:
    """Scaled dropout mask of ``shape`` in ``like``'s dtype and device: 1/(1 − p) with probability
    1 − p, else 0. ``p`` is a float or a 0-d tensor (read on the device, never on the host)."""
    if like.device.type != "cpu":
        keep = torch.rand(shape, dtype=like.dtype, device=like.device) >= p
        return keep.to(like.dtype) / (1.0 - p)
    bits = uniform16(math.prod(shape)).view(shape)
    keep = bits >= p * 65536.0 - 32768.0
    return keep.to(like.dtype) / (1.0 - p)


def dropout_masks(shape: tuple[int, ...], p: float | Tensor, like: Tensor, active: bool
                  ) -> Optional[Tensor]:
    """Scaled dropout masks (:func:`keep_mask`) for a whole sequence at once, or None when off
    (not ``active``, or a float ``p`` of 0). A 0-d tensor ``p`` (a graph-captured step) always
    draws masks."""
    if not active or (not isinstance(p, Tensor) and p <= 0.0):
        return None
    return keep_mask(tuple(shape), p, like)


def dropout(x: Tensor, p: float | Tensor, training: bool) -> Tensor:
    """``F.dropout(x, p, training)``, with ``p`` a float or a 0-d tensor: each element kept with
    probability 1 − p and scaled by 1/(1 − p)."""
    mask = dropout_masks(tuple(x.shape), p, x, training)
    return x if mask is None else x * mask
