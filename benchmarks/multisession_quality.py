"""Stitched LFADS across sessions vs one session alone, on synthetic Lorenz sessions. Prints a table.

``lfads-run synth lorenz --sessions 3`` writes three sessions of one Lorenz system, each with its
own neurons (40, 30, 20) and 70% of the conditions. Then:

- stitched: ``examples/multisession.yaml`` (multisession readin/readout with PCR initialisation)
  on all sessions;
- alone: ``examples/lorenz.yaml`` (identity readin, linear readout) on one session's file.

Reported: each session's held-out (valid) rate R² against the true rates (summary.json), and the
latent R² (linear read-out of the true Lorenz state from the factors).

    .venv/bin/python benchmarks/multisession_quality.py [--epochs 150] [--alone smallest|all]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LFADS_RUN = [str(Path(sys.executable).with_name("lfads-run"))]


def run(cmd: list[str], env: dict, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as f:
        res = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic sessions")
    p.add_argument("--alone", choices=("smallest", "all"), default="smallest",
                   help="which sessions also get a model of their own")
    p.add_argument("--out", default=str(ROOT / "runs" / "multisession_quality"))
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra spec overrides for the stitched run (repeatable)")
    args = p.parse_args(argv)
    out = Path(args.out)
    data = out / f"sessions_s{args.seed}"
    env = {**os.environ, "LFADS_THREADS": str(args.threads), "MPLBACKEND": "Agg"}
    if not data.exists():
        subprocess.run([*LFADS_RUN, "synth", "lorenz", "--sessions", "3", "--out", str(data),
                        "--seed", str(args.seed)], check=True, env=env, stdout=subprocess.DEVNULL)
    files = sorted(data.glob("*.h5"))
    common = ["--set", f"train.max_epochs={args.epochs}", "--force"]
    stitched = out / "stitched"
    t_stitched = run([*LFADS_RUN, str(ROOT / "examples" / "multisession.yaml"), "--out", str(stitched),
                      "--set", f"data.path={data}/*.h5", *common,
                      *[x for o in args.overrides for x in ("--set", o)]], env, out / "stitched.log")
    summary = json.loads((stitched / "summary.json").read_text())["sessions"]
    import h5py

    sizes = {f.stem: h5py.File(f, "r")["train_recon_data"].shape[2] for f in files}
    alone_names = [min(sizes, key=sizes.get)] if args.alone == "smallest" else list(sizes)
    alone, seconds = {}, {}
    for name in alone_names:
        run_dir = out / f"alone_{name}"
        seconds[name] = run([*LFADS_RUN, str(ROOT / "examples" / "lorenz.yaml"), "--out", str(run_dir),
                             "--set", f"data.path={data / (name + '.h5')}", *common], env,
                            out / f"alone_{name}.log")
        alone[name] = json.loads((run_dir / "summary.json").read_text())
    print(f"{args.epochs} epochs, data seed {args.seed}; stitched run {t_stitched:.0f} s")
    print(f"{'session':<10} {'neurons':>7} {'stitched R2':>12} {'alone R2':>9} "
          f"{'stitched latent R2':>19} {'alone latent R2':>16}")
    for name in sizes:
        s = summary[name]
        a = alone.get(name, {})
        fmt = lambda d, k: f"{d[k]:.3f}" if k in d else "-"  # noqa: E731
        print(f"{name:<10} {sizes[name]:>7} {fmt(s, 'valid_rate_r2'):>12} {fmt(a, 'valid_rate_r2'):>9} "
              f"{fmt(s, 'valid_latent_r2'):>19} {fmt(a, 'valid_latent_r2'):>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
