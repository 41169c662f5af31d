"""Member-epochs per second of the two population engines on the Lorenz spec: ``trials`` (the
members one after another, each its own model) and ``stacked`` (one model with a member
dimension), for populations of the sizes given; peak GPU memory on CUDA and the group size the
stacked engine would choose from the GPU's memory. On CUDA the trials engine is timed eagerly
(issue 11's baseline: the members one after another, eagerly) and with CUDA graphs (as it runs
there by default: graphs and compiled steps), and each stacked rate is given against both. The
compiled trials are timed last: after torch.compile has run in a process, stacked steps ran
slower on an H100 (P = 32: 26.6 and 26.3 member-epochs/s after it, 30.2 and 36.7 without it;
a stacked worker never compiles). Prints a table. ``--interleave R`` (CPU) instead alternates an
epoch of the trials members with an epoch of the stacked group, R rounds, and prints each
round's ratio: on a shared machine whose speed drifts over minutes, pairs taken seconds apart
compare the engines more fairly than two blocks of epochs. Run on a quiet machine:

    .venv/bin/python benchmarks/pbt_engine.py                       # CPU, population 4
    .venv/bin/python benchmarks/pbt_engine.py --interleave 6        # CPU: alternate the engines
    .venv/bin/python benchmarks/pbt_engine.py --device cuda --sizes 1,8,32,64,128
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="4", help="population sizes, comma-separated")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (after one untimed)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all CPUs)")
    p.add_argument("--graphs", default="auto", choices=["auto", "on", "off"], help="CUDA graphs")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="train.compile (the trials engine's steps; stacked steps run uncompiled)")
    p.add_argument("--interleave", type=int, default=0, metavar="R",
                   help="CPU: R rounds of one trials epoch and one stacked epoch, for the first size")
    p.add_argument("--trials-members", type=int, default=4,
                   help="members the trials engine is timed with (its rate does not depend on P)")
    args = p.parse_args(argv)
    import attrs
    import torch

    from lfads_core.assembly import load_data, set_threads
    from lfads_core.data.synth import make_lorenz, write_h5
    from lfads_core.device import use_graphs
    from lfads_core.pbt.members import build_member, train_member, train_stacked
    from lfads_core.spec.load import load_spec
    from lfads_core.train.stacked import StackedTrainer, group_size, member_memory

    threads = set_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    write_h5(make_lorenz(seed=0), tmp / "lorenz.h5")
    spec = load_spec(ROOT / "examples" / "lorenz.yaml",
                     [f"data.path={tmp / 'lorenz.h5'}", f"train.device={args.device}",
                      f"train.cuda_graphs={args.graphs}", f"train.compile={args.compile}"],
                     out=str(tmp / "run"))
    sessions = load_data(spec)
    cuda = args.device.startswith("cuda")
    sizes = [int(s) for s in args.sizes.split(",")]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def hp(m):  # distinct hyperparameters per member, as in a population
        return {"train.lr": 0.004 * (1 + 0.05 * m), "model.dropout_rate": 0.05 + 0.01 * (m % 5)}

    rows = []
    data: dict = {}  # one copy of the data for all members, as a worker keeps it
    if args.interleave:
        if cuda:
            p.error("--interleave is for the CPU")
        return interleaved(spec, sessions, sizes[0], args.interleave, hp, data, threads)
    graphs = use_graphs(spec.train.cuda_graphs, torch.device(args.device))

    def time_trials(graphs_setting: str, compile_setting: str) -> float:
        """trials: each member its own model, one after another; member-epochs per second."""
        own = attrs.evolve(spec, train=attrs.evolve(spec.train, cuda_graphs=graphs_setting,
                                                    compile=compile_setting))
        n = args.trials_members
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        members = [build_member(own, sessions, m, hp(m), data=data) for m in range(n)]
        for t in members:
            train_member(t, 1)
        sync()
        start = time.perf_counter()
        for t in members:
            train_member(t, args.epochs)
        sync()
        rate = n * args.epochs / (time.perf_counter() - start)
        del members
        gc.collect()  # trainers and their step graphs refer to each other: freed by the collector
        return rate

    # The baseline of issue 11: members one after another, eagerly (neither graphs nor compiled
    # steps); on CUDA with graphs also the trials engine as it runs there by default (graphs and,
    # with train.compile: auto, compiled steps per member).
    trials_rate = time_trials("off" if cuda else spec.train.cuda_graphs,
                              "off" if cuda else spec.train.compile)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    name = "trials, eager" if cuda else "trials"
    rows.append([name, args.trials_members, trials_rate, 1.0, float("nan"), peak])
    print(f"{name}: {trials_rate:.3f} member-epochs/s", flush=True)
    for size in sizes:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        trainers = [build_member(spec, sessions, m, hp(m), data=data) for m in range(size)]
        group = StackedTrainer(trainers, "member", log=print, graphs=graphs)
        group.check()
        train_stacked(group, 1)
        sync()
        start = time.perf_counter()
        train_stacked(group, args.epochs)
        sync()
        rate = size * args.epochs / (time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        rows.append(["stacked", size, rate, rate / trials_rate, float("nan"), peak])
        print(f"stacked, {size} members: {rate:.3f} member-epochs/s ({rate / trials_rate:.2f}x), "
              f"peak GPU {peak:.2f} GiB", flush=True)
        del group, trainers
        gc.collect()  # this size's graphs and data, before the next size is measured
    graphs_rate = float("nan")
    if graphs:
        graphs_rate = time_trials(spec.train.cuda_graphs, spec.train.compile)
        rows.insert(1, ["trials, graphs", args.trials_members, graphs_rate, graphs_rate / trials_rate,
                        1.0, torch.cuda.max_memory_allocated() / 2**30])
        for row in rows[2:]:
            row[4] = row[2] / graphs_rate
        print(f"trials, graphs: {graphs_rate:.3f} member-epochs/s", flush=True)
    print(f"Lorenz spec (examples/lorenz.yaml), batch {spec.data.batch_size} per member, device "
          f"{args.device}, {threads} torch threads, CUDA graphs {'on' if graphs else 'off'}"
          f"{'; trials, graphs: compiled steps too (train.compile: ' + spec.train.compile + ')' if graphs else ''}")
    print(f"{'engine':<15} {'members':>7} {'member-epochs/s':>16} {'vs ' + rows[0][0]:>16} "
          f"{'vs trials, graphs':>18} {'peak GPU GiB':>13}")
    for engine, size, rate, ratio, ratio_graphs, peak in rows:
        print(f"{engine:<15} {size:>7} {rate:>16.3f} {ratio:>15.2f}x {ratio_graphs:>17.2f}x {peak:>13.2f}")
    if cuda:
        per = member_memory(lambda: build_member(spec, sessions, 0, hp(0), data=data))
        free = torch.cuda.mem_get_info()[0]
        print(f"one member adds {per / 2**20:.0f} MiB per step; with {free / 2**30:.1f} GiB free a "
              f"worker would stack {group_size(10**6, per, free)} members")
    return 0


def interleaved(spec, sessions, size: int, rounds: int, hp, data: dict, threads: int) -> int:
    """Rounds of one epoch of ``size`` members trained one after another (trials) and one epoch of
    the same number stacked, alternating; member-epochs per second of each and their ratio."""
    import statistics

    from lfads_core.pbt.members import build_member, train_member, train_stacked
    from lfads_core.train.stacked import StackedTrainer

    trials = [build_member(spec, sessions, m, hp(m), data=data) for m in range(size)]
    group = StackedTrainer([build_member(spec, sessions, m, hp(m), data=data) for m in range(size)],
                           "member", log=print, graphs=False)
    group.check()

    def epoch_trials() -> float:
        start = time.perf_counter()
        for t in trials:
            train_member(t, 1)
        return size / (time.perf_counter() - start)

    def epoch_stacked() -> float:
        start = time.perf_counter()
        train_stacked(group, 1)
        return size / (time.perf_counter() - start)

    epoch_trials(), epoch_stacked()  # untimed: first-epoch work
    got = []
    for r in range(rounds):
        if r % 2 == 0:  # the order alternates too
            a, b = epoch_trials(), epoch_stacked()
        else:
            b, a = epoch_stacked(), epoch_trials()
        got.append((a, b))
        print(f"round {r + 1}: trials {a:.3f}, stacked {b:.3f} member-epochs/s ({b / a:.2f}x)", flush=True)
    ratios = sorted(b / a for a, b in got)
    print(f"Lorenz spec, population {size}, cpu, {threads} torch threads, {rounds} rounds: trials "
          f"{statistics.median(a for a, _ in got):.3f}, stacked {statistics.median(b for _, b in got):.3f} "
          f"member-epochs/s (medians); stacked / trials per round: median {statistics.median(ratios):.2f}x, "
          f"range {ratios[0]:.2f}-{ratios[-1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
