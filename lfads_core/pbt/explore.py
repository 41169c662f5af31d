"""The pure logic of population-based training (REFERENCE.md §6), without Ray or torch.

Hyperparameters are ``{spec path: value}``; a search space is ``{spec path: Dimension}``. Fitness
is lower-is-better (the smoothed validation reconstruction); NaN or inf fitness loses.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from ..spec.schema import DimensionSpec as Dimension

MAX_TRIES = 1000  # resampling of an explore step before falling back to the nearest bound


def sample_initial(space: Mapping[str, Dimension], rng: np.random.Generator) -> dict[str, float]:
    """A member's starting values: uniform in [low, high], or log-uniform for ``sample: log``."""
    out = {}
    for path, d in space.items():
        if d.sample == "log":
            out[path] = float(math.exp(rng.uniform(math.log(d.low), math.log(d.high))))
        else:
            out[path] = float(rng.uniform(d.low, d.high))
    return out


def perturb(value: float, d: Dimension, rng: np.random.Generator) -> float:
    """``value · (1 + u)``, ``u`` uniform in ±[0.002·w, w] (w = ``explore_weight``), drawn again
    until the result lies in [low, high] (after ``MAX_TRIES`` draws: the nearest bound)."""
    w = d.explore_weight
    for _ in range(MAX_TRIES):
        u = rng.uniform(0.002 * w, w) * (1.0 if rng.random() < 0.5 else -1.0)
        new = value * (1.0 + u)
        if d.low <= new <= d.high:
            return float(new)
    return float(min(max(value, d.low), d.high))


def explore(hparams: Mapping[str, float], space: Mapping[str, Dimension],
            rng: np.random.Generator) -> dict[str, float]:
    """Every dimension of the search space perturbed; other values kept."""
    out = dict(hparams)
    for path, d in space.items():
        out[path] = perturb(float(hparams[path]), d, rng)
    return out


def _rank(f: float) -> float:
    return f if math.isfinite(f) else math.inf


def tournament(fitness: Mapping[int, float], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Binary tournament: members paired at random (with an odd population one sits out);
    in each pair the lower fitness wins. Returns ``(winner, loser)`` pairs; a tie goes to the
    member listed first in the random pairing."""
    members = list(fitness)
    order = [members[i] for i in rng.permutation(len(members))]
    pairs = []
    for a, b in zip(order[0::2], order[1::2]):
        pairs.append((a, b) if _rank(fitness[a]) <= _rank(fitness[b]) else (b, a))
    return pairs


def should_stop(best_by_generation: Sequence[float], ratio: float, generations: int) -> bool:
    """The population's best fitness improved by less than ``ratio`` (relative) over the last
    ``generations`` generations."""
    if len(best_by_generation) <= generations:
        return False
    then, now = best_by_generation[-1 - generations], best_by_generation[-1]
    if not (math.isfinite(then) and math.isfinite(now)):
        return False
    return (then - now) < ratio * abs(then)
