"""Schedules of the training loop: linear ramps, exponential smoothing, reduce-on-plateau."""

from __future__ import annotations

import math
from typing import Optional


def ramp(epoch: int, ramp_epochs: int) -> float:
    """Linear ramp from 0 at epoch 0 to 1 at ``ramp_epochs`` (1 throughout when 0)."""
    if ramp_epochs <= 0:
        return 1.0
    return min(1.0, epoch / ramp_epochs)


def smooth(previous: Optional[float], value: float, weight_new: float) -> float:
    """Exponential smoothing: ``(1 - w) * previous + w * value`` (the value itself at first)."""
    if previous is None or not math.isfinite(previous):
        return value
    return (1.0 - weight_new) * previous + weight_new * value


def plateau_step(lr: float, best: float, value: float, bad: int, factor: float, patience: int,
                 min_lr: float) -> tuple[float, float, int]:
    """Reduce-on-plateau: returns (lr, best, bad epochs) after one epoch with ``value``."""
    if value < best:
        return lr, value, 0
    bad += 1
    if bad >= patience:
        return max(min_lr, lr * factor), best, 0
    return lr, best, bad
