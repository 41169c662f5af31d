"""A run's results: posterior samples of every split from the best checkpoint, the output file,
plots and summary.json; ``lfads-run sample`` does this again for a finished run."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import yaml

from .. import hooks
from ..assembly import load_data, make_model, set_threads
from ..data.batches import to_tensors
from ..data.h5 import Dataset
from ..errors import RunDirError
from ..model.lfads import LFADS
from ..rundir import SPEC_FILE
from ..spec.load import spec_from_dict
from ..spec.schema import Spec
from ..train.checkpoint import atomic_write_text, load_checkpoint
from .sample import posterior_sample
from .write import write_output

OUTPUT_FILE = "lfads_output.h5"


def load_best(run_dir: Path, model: LFADS) -> int:
    """Load the best checkpoint's weights (the last ones if there is no best). Returns its epoch
    (counted from 1)."""
    best = run_dir / "checkpoints" / "best.pt"
    if best.exists():
        state = load_checkpoint(best)
        model.load_state_dict(state["model"])
        return int(state["epoch"])
    last = run_dir / "checkpoints" / "last.pt"
    if not last.exists():
        raise RunDirError(f"{run_dir}: no checkpoint to sample from (train first)")
    state = load_checkpoint(last)
    model.load_state_dict(state["trainer"]["model"])
    return int(state["trainer"]["epoch"])


def write_outputs(run_dir: Path, spec: Spec, ds: Dataset, model: LFADS,
                  log: Callable[[str], None] = print) -> dict:
    """Posterior-sample every split from the best checkpoint; write the output file, plots and
    ``summary.json``. Returns the summary."""
    from .. import metrics

    epoch = load_best(run_dir, model)
    smp = spec.sampling
    start = time.perf_counter()
    results, inds, summary = {}, {}, {"best_epoch": epoch, "num_samples": smp.num_samples}
    recon = model.reconstructions[0]
    units = recon.units
    summary["units"] = units
    for name, split in ds.splits.items():
        results[name] = posterior = posterior_sample(model, to_tensors(split), smp.num_samples,
                                                     smp.batch_size, smp.seed)
        inds[name] = split.inds if split.inds is not None else np.arange(split.n_trials)
        mean = posterior["output_params"]
        if split.truth is not None:
            summary[f"{name}_rate_r2"] = metrics.r2_score(split.truth, mean)
        if split.recon is not None:
            for metric in recon.metrics:
                summary[f"{name}_{metric}"] = metrics.APPLICABLE[metric](mean, split.recon)
            for key, value in recon.evaluate(mean, split.recon).items():
                summary[f"{name}_{key}"] = float(value)
    train = ds.splits["train"]
    if train.latents is not None:  # synthetic data: a linear read-out of the true latents
        for name, split in ds.splits.items():
            if split.latents is not None:
                summary[f"{name}_latent_r2"] = metrics.latent_r2(
                    results["train"]["factors"], train.latents, results[name]["factors"], split.latents)
    summary["sampling_seconds"] = time.perf_counter() - start
    recon_name = spec.model.reconstruction.name
    write_output(run_dir / OUTPUT_FILE, results, inds,
                 {"num_samples": smp.num_samples, "bin_size_ms": ds.bin_size_ms,
                  "output_params_units": units, "reconstruction": recon_name,
                  "best_epoch": epoch, "data_path": ds.path}, units=units)
    if smp.plots:
        _plots(run_dir, ds, results, units)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    hooks.hook().lfads_run_end(run_dir=run_dir, summary=summary)
    skip = ("best_epoch", "num_samples", "sampling_seconds", "units")
    shown = "  ".join(f"{k} {v:.4f}" for k, v in summary.items()
                      if k not in skip and isinstance(v, float))
    log(f"wrote {run_dir / OUTPUT_FILE} ({smp.num_samples} posterior samples, best epoch {epoch}, "
        f"{summary['sampling_seconds']:.1f}s)" + (f"\n{shown}" if shown else ""))
    return summary


def _plots(run_dir: Path, ds: Dataset, results: dict, units: str) -> None:
    from . import plots

    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    valid, res = ds.valid, results["valid"]
    plots.plot_rates(out / "rates.png", valid.recon, res["output_params"], truth=valid.truth,
                     bin_ms=ds.bin_size_ms, units=units)
    plots.plot_factors(out / "factors.png", res["factors"])
    metrics_csv = run_dir / "metrics.csv"
    if metrics_csv.exists():
        with open(metrics_csv) as f:
            plots.plot_training_curves(out / "training.png", list(csv.DictReader(f)))


def sample(run_dir: str | os.PathLike, num_samples: Optional[int] = None,
           log: Callable[[str], None] = print) -> dict:
    """``lfads-run sample RUN_DIR``: posterior-sample again from the best checkpoint."""
    run_dir = Path(run_dir)
    saved = run_dir / SPEC_FILE
    if not saved.exists():
        raise RunDirError(f"{run_dir}: not a run directory (no {SPEC_FILE})")
    try:
        raw = yaml.safe_load(saved.read_text())
    except yaml.YAMLError:
        raise RunDirError(f"{saved}: unreadable spec") from None
    if num_samples is not None:
        raw.setdefault("sampling", {})["num_samples"] = num_samples
    spec = spec_from_dict(raw, source=str(saved))
    set_threads(spec.train.threads)
    ds = load_data(spec)
    model, _ = make_model(spec, ds)
    return write_outputs(run_dir, spec, ds, model, log)
