"""Quality of lfads-calcium on synthetic two-photon data with ground truth. Prints a table.

For each frame size K (1: every bin observed; 2: half the samples NaN; 3: two thirds NaN), the
user's path through the CLI: ``lfads-run synth calcium --frame-bins K`` (Lorenz-driven spikes ->
AR(1) calcium + noise -> OASIS events), then ``lfads-run examples/calcium.yaml`` (zig + sbtt +
coordinated dropout). Reported on the validation trials:

- zig: R² of the inferred mean (expected event amplitude per bin) against the truth, at every
  bin (observed or not), and R² of a linear read-out of the Lorenz latents from the factors
  (fitted on the training trials);
- baseline: the events smoothed with a Gaussian kernel along time (normalised convolution over
  the observed samples), at the width that gives the best validation R² (an oracle choice that
  favours the baseline).

Run on a quiet machine (about 3 s per epoch per run on 2 cores):

    .venv/bin/python benchmarks/calcium_quality.py [--epochs 150] [--frame-bins 1 2 3]
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

ROOT = Path(__file__).resolve().parents[1]
LFADS_RUN = [str(Path(sys.executable).with_name("lfads-run"))]
SIGMAS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0)


def r2(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean over channels of 1 − SS_res/SS_tot over trials and bins."""
    t = truth.reshape(-1, truth.shape[-1]).astype(np.float64)
    p = pred.reshape(-1, pred.shape[-1]).astype(np.float64)
    ss_res = ((t - p) ** 2).sum(0)
    ss_tot = ((t - t.mean(0)) ** 2).sum(0)
    keep = ss_tot > 0
    return float(np.mean(1 - ss_res[keep] / ss_tot[keep]))


def r2_affine(truth: np.ndarray, pred: np.ndarray) -> float:
    """:func:`r2` after the best per-channel affine map of ``pred`` onto ``truth`` (an oracle
    calibration: it forgives any error of scale or offset, e.g. events in other units)."""
    t = truth.reshape(-1, truth.shape[-1]).astype(np.float64)
    p = pred.reshape(-1, pred.shape[-1]).astype(np.float64)
    fitted = np.empty_like(t)
    for n in range(t.shape[1]):
        design = np.stack([p[:, n], np.ones(len(p))], axis=1)
        w, *_ = np.linalg.lstsq(design, t[:, n], rcond=None)
        fitted[:, n] = design @ w
    return r2(t, fitted)


def smooth(events: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along time of [trials, T, N], NaN = unobserved (normalised
    convolution: sum of weighted observed values / sum of their weights)."""
    seen = np.isfinite(events)
    x = np.where(seen, events, 0.0)
    half = int(np.ceil(4 * sigma))
    lags = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (lags / sigma) ** 2)
    t = events.shape[1]
    num = np.zeros_like(x, dtype=np.float64)
    den = np.zeros_like(x, dtype=np.float64)
    for lag, w in zip(lags, kernel):
        lo, hi = max(0, lag), min(t, t + lag)
        if hi <= lo:
            continue
        num[:, lo - lag:hi - lag] += w * x[:, lo:hi]
        den[:, lo - lag:hi - lag] += w * seen[:, lo:hi]
    # The smoothed events estimate the expected event per observed sample; K-bin frames hold the
    # events of K bins, which the truth also sums, so no rescaling is needed.
    return num / np.maximum(den, 1e-12)


def run(cmd: list[str], env: dict) -> None:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--frame-bins", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--out", default=str(ROOT / "runs" / "calcium_quality"))
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra spec overrides for the runs (repeatable)")
    p.add_argument("--reuse", action="store_true",
                   help="report a run that already has a summary.json instead of training again")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LFADS_THREADS": str(args.threads), "MPLBACKEND": "Agg"}
    rows = []
    for k in args.frame_bins:
        data = out / f"calcium_k{k}_s{args.seed}.h5"
        if not data.exists():
            run([*LFADS_RUN, "synth", "calcium", "--out", str(data), "--frame-bins", str(k),
                 "--seed", str(args.seed)], env)
        with h5py.File(data) as f:
            events, truth = f["valid_recon_data"][()], f["valid_truth"][()]
            rates = f["valid_truth_rates"][()]
        missing = float(np.isnan(events).mean())
        scores = {s: (r2(truth, smooth(events, s)), r2_affine(truth, smooth(events, s))) for s in SIGMAS}
        best = max(scores, key=lambda s: scores[s][0])
        best_affine = max(scores, key=lambda s: scores[s][1])
        run_dir = out / f"run_k{k}_s{args.seed}"
        sets = [f"data.path={data}", f"train.max_epochs={args.epochs}", *args.overrides]
        start = time.time()
        if not (args.reuse and (run_dir / "summary.json").exists()):
            run([*LFADS_RUN, str(ROOT / "examples" / "calcium.yaml"), "--out", str(run_dir), "--force",
                 *[a for s in sets for a in ("--set", s)]], env)
        minutes = (time.time() - start) / 60
        summary = json.loads((run_dir / "summary.json").read_text())
        with h5py.File(run_dir / "lfads_output.h5") as f:
            inferred = f["valid_output_params"][()]
        rows.append((k, missing, best, scores[best][0], best_affine, scores[best_affine][1],
                     summary["valid_rate_r2"], r2_affine(rates, inferred),
                     summary.get("valid_latent_r2", float("nan")), summary["best_epoch"], minutes))
        print(f"K={k}: done in {minutes:.1f} min", flush=True)
    print()
    print("R² on the validation trials against the truth (expected event amplitude per bin), and")
    print("(affine) after the best per-channel affine calibration; zig vs the true spike rates per bin.")
    print()
    print("| frame bins | missing | smoothing R² (σ) | smoothing R², affine (σ) | zig R² | zig R² vs rates, affine "
          "| latent R² | best epoch | minutes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, missing, sigma, sm, sigma_a, sm_a, z, zr, lat, epoch, minutes in rows:
        print(f"| {k} | {missing:.0%} | {sm:.3f} ({sigma:g}) | {sm_a:.3f} ({sigma_a:g}) | {z:.3f} | {zr:.3f} "
              f"| {lat:.3f} | {epoch} | {minutes:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
