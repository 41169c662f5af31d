"""Training and sampling speed for the spec of examples/lorenz.yaml on 960 + 240 trials x 100 bins
x 40 neurons (synthetic Lorenz). Prints a table; on CUDA eager and CUDA-graph figures side by
side. Run on a quiet machine:

    .venv/bin/python benchmarks/train_speed.py [--epochs 5] [--threads N] [--samples 50]
        [--device cpu|cuda|cuda:N] [--modes eager,graphs,compiled]

Modes: on CUDA ``eager`` (no graphs), ``graphs`` (CUDA graphs), ``compiled`` (graphs and the
recurrent steps through torch.compile, ``train.compile: on``); on the CPU ``autograd`` (the
autograd path), ``fused`` (the fused CPU kernels, the default there), ``compiled`` (the autograd
path with compiled steps instead of the fused kernels).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lfads_core.assembly import load_data, make_model, set_threads
from lfads_core.data.batches import to_tensors
from lfads_core.data.synth import make_lorenz, write_h5
from lfads_core.device import describe, resolve_device
from lfads_core.heap import hold_memory, release_memory
from lfads_core.model import fused
from lfads_core.model.steps import compile_steps
from lfads_core.output.sample import posterior_sample, rows_per_pass
from lfads_core.assembly import training_batches
from lfads_core.spec.load import load_spec
from lfads_core.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_now(device: torch.device) -> float:
    """MiB the run holds now: allocated GPU memory on CUDA, else the process's resident memory
    (after each epoch: nothing should grow from one epoch to the next)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(spec, sessions, device: torch.device, mode: str, epochs: int, samples: int) -> dict:
    graphs = mode in ("graphs", "compiled") and device.type == "cuda"
    fused.set_enabled(mode not in ("autograd", "compiled"))
    model, augs = make_model(spec, sessions)
    compile_steps(model, mode == "compiled")
    model.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train, valid = training_batches(spec, sessions, device, drop_last=graphs)
    trainer = Trainer(model, augs, train, valid, spec.train, log=print, graphs=graphs)
    times, held = [], []
    hold_memory()  # as lfads-run: training keeps its large blocks in the heap
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        trainer.run_epoch()
        sync(device)
        times.append(time.perf_counter() - start)
        held.append(memory_now(device))
    steps = sum(train.n_batches())
    later = times[1:] if len(times) > 1 else times  # the first epoch holds warm-up and capture
    model.dropout_rate = float(model.dropout_rate)
    del trainer, train, valid
    release_memory()  # and sampling gives them back
    sample_s = 0.0
    ds = sessions[0]
    for split in (ds.train, ds.valid):
        data = to_tensors(split)
        sync(device)
        start = time.perf_counter()
        posterior_sample(model, data, samples)
        sync(device)
        sample_s += time.perf_counter() - start
    out = {"epoch": statistics.median(later), "times": times, "steps": steps, "held": held,
           "sample": sample_s, "rows": rows_per_pass(model, 0)}
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--modes", default=None,
                   help="eager,graphs,compiled on CUDA (default: eager,graphs); autograd,fused,compiled "
                        "on the CPU (default: autograd,fused)")
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    device = resolve_device(args.device)
    modes = (args.modes or ("eager,graphs" if device.type == "cuda" else "autograd,fused")).split(",")
    if "fused" in modes and not fused.load():
        modes.remove("fused")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "lorenz.h5"
        write_h5(make_lorenz(seed=0), data)
        spec = load_spec(ROOT / "examples" / "lorenz.yaml", [f"data.path={data}"], out=tmp)
        sessions = load_data(spec)
    results = {}
    for m in modes:  # a line per mode as it finishes: a run stopped by a time limit keeps them
        results[m] = r = measure(spec, sessions, device, m, args.epochs, args.samples)
        peak = f", peak GPU memory {r['peak_gib']:.2f} GiB" if "peak_gib" in r else ""
        print(f"{m}: epoch median {r['epoch']:.3f} s (epochs {', '.join(f'{t:.2f}' for t in r['times'])}), "
              f"sampling {r['sample']:.2f} s{peak}", flush=True)
    n = sessions[0].train.n_trials
    rows = [("device", lambda r: describe(device) if device.type == "cuda" else f"cpu, {threads} threads"),
            ("epoch (train 960 + valid 240), median s", lambda r: f"{r['epoch']:.3f}"),
            ("epochs timed (the first: warm-up, capture)", lambda r: ", ".join(f"{t:.2f}" for t in r["times"])),
            (f"{'GPU memory allocated' if device.type == 'cuda' else 'resident memory'} after each epoch, MiB",
             lambda r: ", ".join(f"{m:.0f}" for m in r["held"])),
            ("training step, ms (epoch / steps, validation included)", lambda r: f"{1000 * r['epoch'] / r['steps']:.1f}"),
            ("training trials per second", lambda r: f"{n / r['epoch']:.0f}"),
            (f"posterior sampling, {args.samples} samples x 1200 trials, s", lambda r: f"{r['sample']:.2f}"),
            ("trial-samples per sampling pass", lambda r: f"{r['rows']}")]
    if device.type == "cuda":
        rows.append(("peak GPU memory, GiB", lambda r: f"{r['peak_gib']:.2f}"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  " + "  ".join(f"{m:>12}" for m in modes))
    for name, fn in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{fn(results[m]):>12}" for m in modes))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS of this process: {rss:.2f} GiB; torch {torch.__version__}, python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
