"""Training and sampling speed for the spec of examples/lorenz.yaml on 960 + 240 trials x 100 bins
x 40 neurons (synthetic Lorenz). Prints a table. Run on a quiet machine:

    .venv/bin/python benchmarks/train_speed.py [--epochs 5] [--threads N] [--samples 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lfads_core.data.batches import to_tensors
from lfads_core.data.h5 import load_dataset
from lfads_core.data.synth import make_lorenz, write_h5
from lfads_core.output.sample import posterior_sample
from lfads_core.assembly import make_model, set_threads
from lfads_core.spec.load import load_spec
from lfads_core.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--samples", type=int, default=50)
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "lorenz.h5"
        write_h5(make_lorenz(seed=0), data)
        spec = load_spec(ROOT / "examples" / "lorenz.yaml", [f"data.path={data}"], out=tmp)
        ds = load_dataset(str(data))
    model, augs = make_model(spec, ds)
    train, valid = to_tensors(ds.train), to_tensors(ds.valid)
    trainer = Trainer(model, augs, train, valid, spec.train, spec.data.batch_size, log=lambda s: None)
    times = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        trainer.run_epoch()
        times.append(time.perf_counter() - start)
    epoch_s = statistics.median(times)
    sample_s = 0.0
    for split in (train, valid):
        start = time.perf_counter()
        posterior_sample(model, split, args.samples, spec.sampling.batch_size)
        sample_s += time.perf_counter() - start
    n = train.n_trials
    rows = [("torch threads", f"{threads}"),
            ("epoch (train 960 + valid 240), median s", f"{epoch_s:.2f}"),
            ("epochs timed", f"{args.epochs} ({', '.join(f'{t:.2f}' for t in times)})"),
            ("training trials per second", f"{n / epoch_s:.0f}"),
            (f"posterior sampling, {args.samples} samples x 1200 trials, s", f"{sample_s:.1f}")]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  -----")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
