"""The generation loop of population-based training, over any runner of members (no Ray, no
files: :mod:`.run` saves what :func:`run_generations` hands its ``on_generation`` callback).

Each generation every member trains (the first one ``burn_in_epochs`` more), then a binary
tournament pairs members: each loser takes its winner's weights and optimizer state and a
perturbed copy of its hyperparameters (:mod:`.explore`). A member that failed (its error is
reported) is a loser without a pair: it takes a clone of the generation's best member.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Callable, Optional

import numpy as np

from ..errors import TrainingError
from ..spec.schema import PbtSpec
from .explore import explore, should_stop, tournament


@dataclasses.dataclass
class Population:
    """The controller's state after a generation (saved for resume)."""

    hparams: dict[int, dict[str, float]]  # each member's current hyperparameters
    generation: int = 0  # generations completed
    rows: list = dataclasses.field(default_factory=list)  # pbt.csv rows
    best: list = dataclasses.field(default_factory=list)  # best fitness per generation
    rng_state: Optional[dict] = None
    done: bool = False
    last_fitness: dict = dataclasses.field(default_factory=dict)  # member -> fitness of the last generation


def run_generations(pbt: PbtSpec, runner, pop: Population, log: Callable[[str], None] = print,
                    on_generation: Callable[[Population], None] = lambda p: None) -> Population:
    """Generations until ``max_generations`` or the stopping rule; returns the population."""
    rng = np.random.default_rng(pbt.seed)
    if pop.rng_state is not None:
        rng.bit_generator.state = pop.rng_state
    space = pbt.search_space
    while not pop.done:
        g = pop.generation
        epochs = pbt.generation_epochs + (pbt.burn_in_epochs if g == 0 else 0)
        start = time.perf_counter()
        results = runner.train(epochs)
        fitness = {}
        for m in sorted(results):
            res = results[m]
            if res.get("warning"):
                log(res["warning"])
            if "error" in res:
                log(f"member {m} failed in generation {g + 1}: {res['error']}")
                fitness[m] = math.inf
            else:
                fitness[m] = res["fitness"] if math.isfinite(res["fitness"]) else math.inf
            pop.rows.append({"member": m, "generation": g + 1, "fitness": fitness[m],
                             "epoch": res["rows"][-1]["epoch"] if res.get("rows") else "",
                             **pop.hparams[m]})
        finite = [f for f in fitness.values() if math.isfinite(f)]
        if not finite:
            raise TrainingError(f"every member of the population failed in generation {g + 1} "
                                f"(the first: {next(iter(results.values())).get('error', 'non-finite fitness')})")
        best_m = min(fitness, key=lambda m: fitness[m])
        pop.best.append(fitness[best_m])
        pop.last_fitness = dict(fitness)
        pop.generation = g + 1
        stopped = should_stop(pop.best, pbt.stop_ratio, pbt.stop_generations)
        pop.done = pop.generation >= pbt.max_generations or stopped
        exploits = 0
        if not pop.done:
            # Failed members sit the tournament out (two of them paired would pass one's broken
            # or rebuilt state to the other) and each takes a clone of the best member.
            pairs = tournament({m: f for m, f in fitness.items() if math.isfinite(f)}, rng)
            pairs += [(best_m, m) for m in fitness if not math.isfinite(fitness[m])]
            for winner, loser in pairs:
                new = explore(pop.hparams[winner], space, rng)
                runner.adopt(loser, runner.state(winner), new)
                pop.hparams[loser] = new
                exploits += 1
        pop.rng_state = rng.bit_generator.state
        log(f"generation {pop.generation}/{pbt.max_generations}: best {fitness[best_m]:.5f} "
            f"(member {best_m})  median {statistics.median(finite):.5f}  {exploits} exploits  "
            f"{time.perf_counter() - start:.1f}s" + (f"  ({_why_stop(pbt, pop)})" if pop.done else ""))
        on_generation(pop)
    return pop


def _why_stop(pbt: PbtSpec, pop: Population) -> str:
    if pop.generation >= pbt.max_generations:
        return f"stopping: reached max_generations ({pbt.max_generations})"
    return (f"stopping: the best fitness improved by less than {pbt.stop_ratio:g} (relative) over "
            f"the last {pbt.stop_generations} generations (pbt.stop_ratio, pbt.stop_generations)")
