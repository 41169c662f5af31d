"""Posterior sampling speed by pass size: 50 samples of each of the 960 + 240 trials of the Lorenz
benchmark data (the spec of examples/lorenz.yaml; its weights untrained, which does not change
the work), each split sampled in passes of at most R trial-samples, for several R. ``auto`` is
what lfads-run uses (``lfads_core.output.sample.rows_per_pass``). Prints a table: the first
timing after the allocator's cache was emptied (as after training, which gives its memory back
before sampling) and the median of the next ones, and on CUDA the peak GPU memory. Run on a
quiet machine:

    .venv/bin/python benchmarks/sample_speed.py [--device cuda] [--rows auto,16384,32768,65536] [--profile] [--ab-pageable]

``--ab-pageable`` then times the automatic pass size with the results copied to the host as
before they went through pinned memory (a blocking copy into pageable memory), alternating with
today's copies, and prints both medians and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import lfads_core.output.sample as sample_module
from lfads_core.assembly import load_data, make_model, set_threads
from lfads_core.data.batches import to_tensors
from lfads_core.data.synth import make_lorenz, write_h5
from lfads_core.device import describe, resolve_device
from lfads_core.output.sample import posterior_sample, rows_per_pass
from lfads_core.spec.load import load_spec

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", default="auto,16384,32768,65536", help="trial-samples per pass, comma-separated")
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3, help="timings after the first, per pass size")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--profile", action="store_true",
                   help="then profile one sampling of both splits at the automatic pass size: the "
                        "operations taking the most time (on CUDA: GPU time)")
    p.add_argument("--ab-pageable", action="store_true",
                   help="then time the automatic pass size with blocking copies into pageable "
                        "memory against today's copies, alternating, 2 x repeats each")
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    device = resolve_device(args.device, "--device")
    cuda = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        write_h5(make_lorenz(seed=0), Path(tmp) / "lorenz.h5")
        spec = load_spec(ROOT / "examples" / "lorenz.yaml", [f"data.path={Path(tmp) / 'lorenz.h5'}"], out=tmp)
        sessions = load_data(spec)
    model, _ = make_model(spec, sessions, device=device)
    model.to(device)
    splits = [to_tensors(sessions[0].train), to_tensors(sessions[0].valid)]

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def sample_all(rows: int) -> float:
        sync()
        start = time.perf_counter()
        for split in splits:
            posterior_sample(model, split, args.samples, rows=rows)
        sync()
        return time.perf_counter() - start

    table = []
    for spec_rows in args.rows.split(","):
        rows = rows_per_pass(model, 0) if spec_rows == "auto" else int(spec_rows)
        per_pass = max(1, rows // args.samples)
        passes = sum(-(-s.n_trials // per_pass) for s in splits)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        cold = sample_all(rows)
        warm = statistics.median(sample_all(rows) for _ in range(args.repeats))
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
        table.append((spec_rows, rows, passes, cold, warm, peak))
        print(f"rows {spec_rows} ({rows}): {passes} passes, first {cold:.3f} s, then {warm:.3f} s, "
              f"peak GPU {peak:.2f} GiB", flush=True)
    where = describe(device) if cuda else f"cpu, {threads} threads"
    print(f"posterior sampling, {args.samples} samples x (960 + 240) Lorenz trials, {where}, "
          f"torch {torch.__version__}")
    print(f"{'rows per pass':>14} {'passes':>7} {'first s':>8} {'median s':>9} {'peak GPU GiB':>13}")
    for name, rows, passes, cold, warm, peak in table:
        label = f"{rows} (auto)" if name == "auto" else str(rows)
        print(f"{label:>14} {passes:>7} {cold:>8.3f} {warm:>9.3f} {peak:>13.2f}")
    if args.ab_pageable:
        ab_pageable(lambda: sample_all(rows_per_pass(model, 0)), 2 * args.repeats)
    if args.profile:
        profile(lambda: sample_all(rows_per_pass(model, 0)), cuda)
    return 0


def ab_pageable(run, repeats: int) -> None:
    """Today's copies to the host against blocking copies into pageable memory (the code before
    the pinned copies), alternating in one process."""
    today = sample_module._to_host
    pageable = lambda x: x.to(torch.float32).cpu()  # noqa: E731
    times = {"pinned": [], "pageable": []}
    run()
    for _ in range(repeats):
        for name, fn in (("pageable", pageable), ("pinned", today)):
            sample_module._to_host = fn
            try:
                times[name].append(run())
            finally:
                sample_module._to_host = today
    a, b = (statistics.median(times[k]) for k in ("pageable", "pinned"))
    print(f"copies to the host, automatic pass size, median of {repeats}: pageable {a:.3f} s, "
          f"pinned {b:.3f} s, ratio {a / b:.2f}x")


def profile(run, cuda: bool, top: int = 20) -> None:
    """Where a sampling's time goes: operations by total time (GPU time on CUDA), the number of
    calls (kernel launches on CUDA) and the wall time of the profiled run."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        wall = run()
    events = prof.key_averages()
    key = "device_time_total" if cuda else "self_cpu_time_total"
    print(f"profile of one sampling (wall {wall:.3f} s, profiler on), by {key}:")
    print(events.table(sort_by=key, row_limit=top))


if __name__ == "__main__":
    sys.exit(main())
