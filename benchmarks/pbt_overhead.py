"""Overhead of AutoLFADS on Ray: time per generation of a population against the same
member-epochs trained without Ray (the members one after another in this process, on the same
threads in all). Prints a table. Run on a quiet machine:

    .venv/bin/python benchmarks/pbt_overhead.py [--population 4] [--epochs 3] [--generations 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--population", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3, help="epochs per generation")
    p.add_argument("--generations", type=int, default=3)
    args = p.parse_args(argv)
    cpus = len(os.sched_getaffinity(0))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import attrs

    from lfads_core.assembly import load_data, set_threads
    from lfads_core.data.synth import make_lorenz, write_h5
    from lfads_core.pbt.controller import Population, run_generations
    from lfads_core.pbt.members import build_member, train_member
    from lfads_core.pbt.ray_runner import RayRunner
    from lfads_core.pbt.run import initial_hparams
    from lfads_core.spec.load import load_spec

    tmp = Path(tempfile.mkdtemp())
    write_h5(make_lorenz(seed=0), tmp / "lorenz.h5")
    spec = load_spec(ROOT / "examples" / "lorenz.yaml", [f"data.path={tmp / 'lorenz.h5'}"], out=str(tmp / "run"))
    pbt_raw = {"population": args.population, "generation_epochs": args.epochs, "burn_in_epochs": 0,
               "max_generations": args.generations, "resources": {"cpu": 1}, "stop_ratio": 0.0}
    from lfads_core.spec.convert import structure
    from lfads_core.spec.schema import PbtSpec

    spec = attrs.evolve(spec, pbt=structure(pbt_raw, PbtSpec))
    sessions = load_data(spec)
    hparams = initial_hparams(spec)
    workers = min(args.population, cpus)

    # Without Ray: every member-epoch in this process, one thread per member as on Ray; the
    # wall time that many workers would take is the total divided by the workers.
    set_threads(1)
    members = {m: build_member(spec, sessions, m, hparams[m]) for m in hparams}
    plain = []
    for _ in range(args.generations):
        start = time.perf_counter()
        for tr in members.values():
            train_member(tr, args.epochs)
        plain.append((time.perf_counter() - start) / workers)

    # On Ray: the same population, one worker per CPU, 1 thread each.
    times = []
    runner = RayRunner(spec, sessions, None, log=lambda s: None)
    runner.create(hparams)
    pop = Population(hparams=dict(hparams))
    last = [time.perf_counter()]

    def mark(_):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    run_generations(spec.pbt, runner, pop, log=lambda s: None, on_generation=mark)
    runner.close()
    ray_s, plain_s = statistics.median(times[1:] or times), statistics.median(plain[1:] or plain)
    rows = [("population, epochs per generation", f"{args.population}, {args.epochs}"),
            ("workers (1 CPU, 1 thread each)", f"{workers}"),
            ("seconds per generation, without Ray (member-epochs / workers)", f"{plain_s:.2f}"),
            ("seconds per generation, on Ray (train, tournament, exploits, state)", f"{ray_s:.2f}"),
            ("overhead", f"{100 * (ray_s / plain_s - 1):+.1f} %")]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
