"""Negative binomial vs Poisson on over-dispersed synthetic spikes. Prints a markdown table.

The user's path through the CLI: ``lfads-run synth lorenz_overdispersed`` (Lorenz rates × a
per-bin gamma gain of shape R -> Poisson counts: negative binomial counts of size R given the
rates; lfads-spikes), then ``lfads-run examples/lorenz.yaml`` once per reconstruction
(``--set model.reconstruction.name=poisson`` / ``negative_binomial``), the same spec, data and
seeds otherwise. Reported from each run's summary.json, on the validation trials: bits/spike of
the posterior-averaged rates (against the recorded counts, Poisson likelihood, as the core
computes it for both), R² of the rates against the true Lorenz rates, R² of a linear read-out of
the latents, the best epoch, and the fitted over-dispersion 1/r (negative binomial only, mean
over neurons, last epoch of metrics.csv).

The claim under test: negative_binomial gives the higher validation bits/spike. (Both models
aim at the same mean; the negative binomial likelihood down-weights the large counts that the
gamma gain produces, whose weight the Poisson likelihood over-states.)

Run on a quiet machine (both runs, default sizes, about 3 s per epoch per run on 2 cores):

    .venv/bin/python benchmarks/nb_vs_poisson.py [--epochs 100] [--dispersion 2] [--train-seeds 0 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LFADS_RUN = [str(Path(sys.executable).with_name("lfads-run"))]
RECONSTRUCTIONS = ("poisson", "negative_binomial")


def run(cmd: list[str], env: dict) -> None:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")


def last_metric(run_dir: Path, name: str) -> float:
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1][name]) if rows and rows[-1].get(name) not in (None, "") else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100, help="train.max_epochs of each run (default 100)")
    p.add_argument("--dispersion", type=float, default=2.0,
                   help="gamma shape R of the data (negative binomial size; default 2)")
    p.add_argument("--base-rate-hz", type=float, default=None,
                   help="base rate of the Lorenz rates (default: the synth dataset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0], help="train.seed of the runs")
    p.add_argument("--n-conditions", type=int, default=None,
                   help="Lorenz conditions of the data (default: the synth dataset's; smaller for a smoke test)")
    p.add_argument("--trials-per-condition", type=int, default=None,
                   help="trials per condition (default: the synth dataset's)")
    p.add_argument("--out", default=str(ROOT / "runs" / "nb_vs_poisson"))
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra spec overrides for every run (repeatable)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LFADS_THREADS": str(args.threads), "MPLBACKEND": "Agg"}

    synth_opts = ["--dispersion", f"{args.dispersion:g}", "--seed", str(args.seed)]
    for flag, value in (("--base-rate-hz", args.base_rate_hz), ("--n-conditions", args.n_conditions),
                        ("--trials-per-condition", args.trials_per_condition)):
        if value is not None:
            synth_opts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    tag = "_".join(a.lstrip("-").replace("-", "") for a in synth_opts)
    data = out / f"overdispersed_{tag}.h5"
    if not data.exists():
        run([*LFADS_RUN, "synth", "lorenz_overdispersed", "--out", str(data), *synth_opts], env)

    rows = []
    for train_seed in args.train_seeds:
        for name in RECONSTRUCTIONS:
            run_dir = out / f"{name}_{tag}_e{args.epochs}_t{train_seed}"
            sets = [f"data.path={data}", f"train.max_epochs={args.epochs}",
                    f"model.reconstruction.name={name}", f"train.seed={train_seed}", *args.overrides]
            start = time.time()
            run([*LFADS_RUN, str(ROOT / "examples" / "lorenz.yaml"), "--out", str(run_dir), "--force",
                 *[a for s in sets for a in ("--set", s)]], env)
            minutes = (time.time() - start) / 60
            s = json.loads((run_dir / "summary.json").read_text())
            alpha = last_metric(run_dir, "valid_overdispersion") if name != "poisson" else float("nan")
            own = s.get("valid_nb_bits_per_spike", s["valid_bits_per_spike"])  # each model's likelihood
            rows.append((name, train_seed, s["valid_bits_per_spike"], own, s["valid_rate_r2"],
                         s.get("valid_latent_r2", float("nan")), s["best_epoch"], alpha, minutes))
            print(f"{name} (train seed {train_seed}): done in {minutes:.1f} min", flush=True)

    print()
    print(f"data: {data.name} (dispersion R = {args.dispersion:g}: true 1/r = {1 / args.dispersion:.3f}), "
          f"{args.epochs} epochs")
    print()
    print("bits/spike: gain over each channel's constant-rate Poisson null, per spike; 'rates' scores")
    print("the inferred rates with a Poisson likelihood (bits_per_spike), 'own' with the model's own")
    print("likelihood (nb_bits_per_spike for negative_binomial: the predictive distribution).")
    print()
    print("| reconstruction | train seed | valid bits/spike, rates | valid bits/spike, own | valid rate R² "
          "| valid latent R² | best epoch | fitted 1/r | minutes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, seed, bps, own, r2, lat, epoch, alpha, minutes in rows:
        fitted = "" if alpha != alpha else f"{alpha:.3f}"
        print(f"| {name} | {seed} | {bps:.4f} | {own:.4f} | {r2:.3f} | {lat:.3f} | {epoch} | {fitted} "
              f"| {minutes:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
