"""Quality of lfads-emg on synthetic EMG with ground truth. Prints a table.

``lfads-run synth emg`` (Lorenz latents with per-trial start jitter and tempo -> softplus muscle
means -> gamma noise), then ``lfads-run examples/emg.yaml`` (gamma + temporal_shift + coordinated
dropout). Reported on the validation trials, R² of each estimate of the true means (per muscle,
averaged):

- lfads (gamma): the posterior-averaged inferred means (summary.json ``valid_rate_r2``);
- the best Gaussian smoothing of each trial along time (the width chosen on the validation
  trials themselves: an oracle choice that favours the baseline);
- the condition average of the training trials' data.

Run on a quiet machine:

    .venv/bin/python benchmarks/emg_quality.py [--epochs 150] [--set model.augmentations=[]]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calcium_quality import SIGMAS, r2, smooth  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LFADS_RUN = [str(Path(sys.executable).with_name("lfads-run"))]


def condition_average(data: h5py.File) -> np.ndarray:
    """The valid trials' estimate from the mean of the training trials of the same condition."""
    train, cond = data["train_recon_data"][()], data["train_cond"][()]
    means = {c: train[cond == c].mean(axis=0) for c in np.unique(cond)}
    return np.stack([means[c] for c in data["valid_cond"][()]])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--out", default=str(ROOT / "runs" / "emg_quality"))
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra spec overrides for the run (repeatable)")
    p.add_argument("--name", default="gamma", help="name of the run folder and table row")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LFADS_THREADS": str(args.threads), "MPLBACKEND": "Agg"}
    data = out / f"emg_s{args.seed}.h5"
    if not data.exists():
        subprocess.run([*LFADS_RUN, "synth", "emg", "--out", str(data), "--seed", str(args.seed)],
                       env=env, check=True, capture_output=True)
    with h5py.File(data) as f:
        valid, truth = f["valid_recon_data"][()], f["valid_truth"][()]
        cond_r2 = r2(truth, condition_average(f))
    scores = {s: r2(truth, smooth(valid, s)) for s in SIGMAS}
    best = max(scores, key=scores.get)
    run_dir = out / f"run_{args.name}_s{args.seed}"
    sets = [f"data.path={data}", f"train.max_epochs={args.epochs}", *args.overrides]
    start = time.time()
    res = subprocess.run([*LFADS_RUN, str(ROOT / "examples" / "emg.yaml"), "--out", str(run_dir),
                          "--force", *[a for s in sets for a in ("--set", s)]],
                         env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(res.stdout[-2000:] + res.stderr[-2000:])
    summary = json.loads((run_dir / "summary.json").read_text())
    print("| estimate of the true means (valid trials) | R² |")
    print("|---|---|")
    print(f"| lfads, {args.name} ({args.epochs} epochs, best {summary['best_epoch']}, "
          f"{(time.time() - start) / 60:.1f} min) | {summary['valid_rate_r2']:.3f} |")
    print(f"| best Gaussian smoothing (σ = {best:g} bins) | {scores[best]:.3f} |")
    print(f"| condition average of the training trials | {cond_r2:.3f} |")
    print(f"| latent read-out from the factors (lfads) | {summary.get('valid_latent_r2', float('nan')):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
