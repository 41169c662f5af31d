"""AutoLFADS from a spec with a ``pbt:`` section, top-down: the same checks as a single run
(data, model, components, search space) before anything is written; the run directory; the
population (resumed at the last completed generation when ``pbt/state.pt`` is there); after each
generation ``pbt.csv`` and the state; at the end the best member as a single run: its checkpoint,
``metrics.csv``, ``best_spec.yaml`` (runnable alone), outputs, plots, ``pbt.png``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import yaml

from .. import interrupt
from ..assembly import check_components, load_data, make_model, set_threads
from ..output.results import write_outputs
from ..rundir import prepare_run_dir, write_metrics
from ..spec.load import spec_to_dict
from ..spec.schema import Spec
from ..train.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from .controller import Population, run_generations
from .explore import sample_initial
from .members import check_search_space, member_seed
from .runners import describe_engine

STATE = "pbt/state.pt"


def initial_hparams(spec: Spec) -> dict[int, dict[str, float]]:
    """Each member's start: the spec's values, the search space's drawn (seeded by pbt.seed)."""
    rng = np.random.default_rng(spec.pbt.seed)
    return {m: sample_initial(spec.pbt.search_space, rng) for m in range(spec.pbt.population)}


def best_spec(spec: Spec, hparams: dict[str, float], member: Optional[int] = None,
              epochs: Optional[int] = None) -> dict:
    """The spec of a single run with a member's hyperparameters (the pbt section removed); with
    ``member``, also its seed (:func:`~.members.member_seed`) and an output folder of its own,
    ``best_member`` inside the population's, so that ``lfads-run best_spec.yaml`` trains it
    anew without touching the population's run; with ``epochs``, as many epochs as it trained
    (``train.max_epochs``)."""
    raw = spec_to_dict(spec)
    raw.pop("pbt", None)
    if member is not None:
        raw["train"]["seed"] = member_seed(spec, member)
        raw["output"] = str(Path(spec.output) / "best_member")
    if epochs is not None:
        raw["train"]["max_epochs"] = max(1, int(epochs))
    for path, value in hparams.items():
        node = raw
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[keys[-1]] = float(value)
    return raw


def train_pbt(spec: Spec, force: bool = False, log: Callable[[str], None] = print,
              source: str = "spec") -> Path:
    """AutoLFADS from ``spec``; ``source`` (the spec file) names it in errors."""
    # With Ray the driver itself trains nothing; pbt.address: local trains every member here.
    set_threads(spec.train.threads if spec.pbt.address == "local" else 1)
    check_search_space(spec, source=source)
    if spec.pbt.address != "local":
        from .ray_runner import preflight
        preflight(spec, source=source)
    sessions = load_data(spec)
    model, augs = make_model(spec, sessions)
    check_components(spec, sessions, model, augs)
    run_dir = prepare_run_dir(spec, force, log)
    state_path = run_dir / STATE
    pbt = spec.pbt
    saved = load_checkpoint(state_path) if state_path.exists() else None
    if saved is not None:
        pop = Population(**saved["population"])
        # pbt.max_generations may have been raised: go on (unless the stopping rule holds).
        from .explore import should_stop
        pop.done = (pop.generation >= pbt.max_generations
                    or should_stop(pop.best, pbt.stop_ratio, pbt.stop_generations))
    else:
        pop = Population(hparams=initial_hparams(spec))
    log(f"AutoLFADS: population {pbt.population}, {pbt.generation_epochs} epochs per generation "
        f"after {pbt.burn_in_epochs} of burn-in, at most {pbt.max_generations} generations; "
        f"engine {describe_engine(spec)}; run dir {run_dir}")
    if pop.done:  # a finished population: its saved states are all the outputs need (no Ray)
        log(f"the population in {run_dir} finished after generation {pop.generation}")
        best = min(pop.last_fitness, key=lambda m: pop.last_fitness[m])
        state = saved["members"][best]
    else:
        pop, state, best = _train_population(spec, sessions, pop, saved, run_dir, log)
    log(f"best member {best}: fitness {pop.last_fitness[best]:.5f} after {pop.generation} generations")
    return _write_best(run_dir, spec, sessions, best, state, pop, log)


def _train_population(spec: Spec, sessions, pop: Population, saved: Optional[dict], run_dir: Path,
                      log: Callable[[str], None]) -> tuple[Population, dict, int]:
    """The generations still to run, on the runner ``pbt.address`` names; the population, the
    best member's state and its number."""
    pbt, state_path = spec.pbt, run_dir / STATE
    if pbt.address == "local":
        from .runners import LocalRunner
        runner = LocalRunner(spec, sessions, log)
    else:
        from .ray_runner import RayRunner
        runner = RayRunner(spec, sessions, pbt.address, log)
    try:
        if saved is not None:
            runner.restore(saved["members"])
            log(f"resuming the population in {run_dir} after generation {pop.generation}")
        else:
            runner.create(pop.hparams)

        def on_generation(p: Population) -> None:
            members = {m: runner.state(m) for m in sorted(p.hparams)}
            save_checkpoint(state_path, {"population": dataclasses.asdict(p), "members": members})
            _write_pbt_csv(run_dir / "pbt.csv", p.rows)
            interrupt.check()  # a Ctrl-C that Python swallowed (lfads_core.interrupt)

        pop = run_generations(pbt, runner, pop, log, on_generation)
        best = min(pop.last_fitness, key=lambda m: pop.last_fitness[m])
        return pop, runner.state(best), best
    finally:
        runner.close()


def _write_pbt_csv(path: Path, rows: list[dict]) -> None:
    write_metrics(path, rows, first=("member", "generation", "fitness", "epoch"))


def _write_best(run_dir: Path, spec: Spec, sessions, best: int, state: dict, pop: Population,
                log: Callable[[str], None]) -> Path:
    """The best member as a single run: checkpoints, metrics.csv, best_spec.yaml, outputs."""
    from ..spec.load import spec_from_dict

    raw = best_spec(spec, state["hparams"], best, state["epoch"])
    atomic_write_text(run_dir / "best_spec.yaml", yaml.safe_dump(raw, sort_keys=False))
    single = spec_from_dict(raw, source=str(run_dir / "best_spec.yaml"))
    model, _ = make_model(single, sessions)
    ckpt = run_dir / "checkpoints"
    save_checkpoint(ckpt / "last.pt", {"trainer": state, "sessions": [vars(s) for s in model.sessions],
                                        "session_names": [ds.name for ds in sessions]})
    save_checkpoint(ckpt / "best.pt", {"model": state["model"], "epoch": state["epoch"],
                                        "valid_recon_smooth": state["smoothed"], "member": best})
    write_metrics(run_dir / "metrics.csv", state["history"])
    if spec.sampling.plots:
        _plot_pbt(run_dir / "plots" / "pbt.png", pop.rows, spec.pbt.search_space)
    write_outputs(run_dir, single, sessions, model, log)
    return run_dir


def _plot_pbt(path: Path, rows: list[dict], space: dict) -> None:
    """Fitness and every tuned hyperparameter over generations, one line per member (named in
    a legend up to 16 members); log axes for the log-sampled hyperparameters."""
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    keys = ["fitness"] + list(space)
    fig = Figure(figsize=(4.2 * min(len(keys), 4), 3.2 * math.ceil(len(keys) / 4)))
    members = sorted({r["member"] for r in rows})
    for i, key in enumerate(keys):
        ax = fig.add_subplot(math.ceil(len(keys) / 4), min(len(keys), 4), i + 1)
        for m in members:
            pts = [(r["generation"], r[key]) for r in rows if r["member"] == m and math.isfinite(r[key])]
            if pts:
                ax.plot(*zip(*pts), marker=".", lw=1, alpha=0.8, label=f"member {m}")
        ax.set_xlabel("generation")
        ax.set_ylabel(key if key != "fitness" else "fitness (smoothed valid NLL, nats)")
        if key != "fitness" and space[key].sample == "log":
            ax.set_yscale("log")
        if key == "fitness" and len(members) <= 16:
            ax.legend(fontsize=6, ncol=2)
        ax.set_title(key, fontsize=9)
    fig.suptitle(f"population of {len(members)}: one line per member (exploits jump to the winner's values)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
