"""A run's results: posterior samples of every split from the best checkpoint, the output file,
plots and summary.json; ``lfads-run sample`` does this again for a finished run."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import yaml

from .. import hooks
from ..assembly import load_data, make_model, nan_allowed, set_threads
from ..data.batches import to_tensors
from ..data.h5 import Dataset, check_support
from ..data.sessions import fingerprint, is_multisession
from ..device import resolve_device
from ..errors import DataError, RunDirError
from ..model.lfads import LFADS
from ..rundir import SPEC_FILE, read_init_cache
from ..spec.load import spec_from_dict
from ..spec.schema import Spec
from ..train.checkpoint import atomic_write_text, load_checkpoint
from ..heap import release_memory
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


def output_name(spec: Spec, ds: Dataset) -> str:
    """``lfads_output.h5`` for one data file; ``lfads_output_<file stem>.h5`` per session when
    ``data.path`` is a glob or a list."""
    return f"lfads_output_{ds.name}.h5" if is_multisession(spec.data.path) else OUTPUT_FILE


def write_outputs(run_dir: Path, spec: Spec, sessions: Sequence[Dataset], model: LFADS,
                  log: Callable[[str], None] = print) -> dict:
    """Posterior-sample every split of every session from the best checkpoint; write the output
    file(s), plots and ``summary.json`` (several sessions: each session's metrics under
    ``sessions`` and a table ``sessions.csv``). Returns the summary."""
    epoch = load_best(run_dir, model)
    release_memory()
    smp = spec.sampling
    start = time.perf_counter()
    units = model.reconstructions[0].units
    summary: dict = {"best_epoch": epoch, "num_samples": smp.num_samples, "units": units}
    multi = is_multisession(spec.data.path)
    per_session = {}
    for i, ds in enumerate(sessions):
        results, metrics = _sample_session(model, ds, i, smp)
        name = output_name(spec, ds)
        write_output(run_dir / name, results, _inds(ds),
                     {"num_samples": smp.num_samples, "bin_size_ms": ds.bin_size_ms,
                      "output_params_units": units, "reconstruction": spec.model.reconstruction.name,
                      "best_epoch": epoch, "data_path": ds.path, "session": ds.name}, units=units)
        if smp.plots:
            _plots(run_dir, ds, results, units, suffix=f"_{ds.name}" if multi else "")
        per_session[ds.name] = {"file": name, "n_channels": ds.shape[1],
                                **{f"{k}_trials": v.n_trials for k, v in ds.splits.items()}, **metrics}
    if multi:
        summary["sessions"] = per_session
        _write_table(run_dir / "sessions.csv", per_session)
    else:
        summary.update({k: v for k, v in per_session[sessions[0].name].items()
                        if isinstance(v, float)})
    summary["sampling_seconds"] = time.perf_counter() - start
    _plot_training(run_dir, smp.plots)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    hooks.hook().lfads_run_end(run_dir=run_dir, summary=summary)
    files = ", ".join(str(run_dir / output_name(spec, ds)) for ds in sessions) if not multi \
        else f"{len(sessions)} files {run_dir / 'lfads_output_<session>.h5'}"
    log(f"wrote {files} ({smp.num_samples} posterior samples, best epoch {epoch}, "
        f"{summary['sampling_seconds']:.1f}s)")
    if multi:
        log(session_table(per_session))
    else:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in summary.items()
                          if k not in ("best_epoch", "num_samples", "sampling_seconds", "units")
                          and isinstance(v, float))
        if shown:
            log(shown)
    return summary


def _sample_session(model: LFADS, ds: Dataset, session: int, smp) -> tuple[dict, dict]:
    """Posterior averages of every split of one session, and its metrics."""
    from .. import metrics

    recon = model.reconstructions[session]
    results, summary = {}, {}
    for name, split in ds.splits.items():
        results[name] = posterior = posterior_sample(model, to_tensors(split, session),
                                                     smp.num_samples, smp.batch_size, smp.seed)
        release_memory()
        mean = posterior["output_params"]
        summary.update(split_metrics(name, mean, split, recon, ds.shape))
        if split.recon is not None:
            for key, value in recon.evaluate(mean, split.recon).items():
                summary[f"{name}_{key}"] = float(value)
    train = ds.splits["train"]
    if train.latents is not None:  # synthetic data: a linear read-out of the true latents
        for name, split in ds.splits.items():
            if split.latents is not None:
                summary[f"{name}_latent_r2"] = metrics.latent_r2(
                    results["train"]["factors"], train.latents, results[name]["factors"], split.latents)
    return results, summary


def split_metrics(name: str, mean: np.ndarray, split, recon, shape: tuple) -> dict[str, float]:
    """The summary metrics of one split (docs/metrics.md): ``rate_r2`` (pooled over neurons,
    variance-weighted) and ``rate_r2_neuron_mean`` against the truth; the reconstruction's
    metrics (``bits_per_spike`` for counts); for counts with held-out neurons (recon channels
    beyond the encoder's: the last N - N_in) or forward-prediction bins (T_r > T_e), the Neural
    Latents Benchmark's ``co_bps``, ``fp_bps`` and ``heldin_bps``."""
    from .. import metrics

    out = {}
    if split.truth is not None:
        out[f"{name}_rate_r2"] = metrics.rate_r2(split.truth, mean)
        out[f"{name}_rate_r2_neuron_mean"] = metrics.rate_r2_neuron_mean(split.truth, mean)
    if split.recon is None:
        return out
    for metric in recon.metrics:
        out[f"{name}_{metric}"] = metrics.APPLICABLE[metric](mean, split.recon)
    n_in, n_out, t_in, t_out, _ = shape
    if "bits_per_spike" in recon.metrics and (n_out > n_in or t_out > t_in):
        parts = metrics.nlb_bps(mean, split.recon, n_heldout=max(0, n_out - n_in), t_in=t_in)
        out.update({f"{name}_{k}": float(v) for k, v in parts.items()})
    return out


def _inds(ds: Dataset) -> dict[str, np.ndarray]:
    return {name: split.inds if split.inds is not None else np.arange(split.n_trials)
            for name, split in ds.splits.items()}


def session_table(per_session: dict) -> str:
    """Every session's metrics as aligned text columns."""
    cols = ["session", "n_channels", "train_trials", "valid_trials"]
    for row in per_session.values():
        cols += [k for k, v in row.items() if isinstance(v, float) and k not in cols]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = [[name] + [fmt(row.get(c, "")) for c in cols[1:]] for name, row in per_session.items()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _write_table(path: Path, per_session: dict) -> None:
    cols = ["session"]
    for row in per_session.values():
        cols += [k for k in row if k not in cols]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    for name, row in per_session.items():
        writer.writerow({"session": name, **{k: (f"{v:.6g}" if isinstance(v, float) else v)
                                             for k, v in row.items()}})
    atomic_write_text(path, buf.getvalue())


def _plots(run_dir: Path, ds: Dataset, results: dict, units: str, suffix: str = "") -> None:
    from . import plots

    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    valid, res = ds.valid, results["valid"]
    numbers = _inds(ds)["valid"]
    plots.plot_rates(out / f"rates{suffix}.png", valid.recon, res["output_params"], truth=valid.truth,
                     bin_ms=ds.bin_size_ms, units=units, split="valid", trial_numbers=numbers)
    plots.plot_factors(out / f"factors{suffix}.png", res["factors"], cond=valid.cond, split="valid",
                       trial_numbers=numbers, bin_ms=ds.bin_size_ms)


def _plot_training(run_dir: Path, enabled: bool) -> None:
    from . import plots

    metrics_csv = run_dir / "metrics.csv"
    if enabled and metrics_csv.exists():
        (run_dir / "plots").mkdir(exist_ok=True)
        with open(metrics_csv) as f:
            plots.plot_training_curves(run_dir / "plots" / "training.png", list(csv.DictReader(f)))


def sample(run_dir: str | os.PathLike, num_samples: Optional[int] = None,
           log: Callable[[str], None] = print, device: str = "auto") -> dict:
    """``lfads-run sample RUN_DIR``: posterior-sample again from the best checkpoint, on
    ``device`` (``auto``: a GPU when there is one; checkpoints of any device load)."""
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
    sessions = load_data(spec)
    model, _ = make_model(spec, sessions, read_init_cache(run_dir, fingerprint([d.path for d in sessions])))
    model.to(resolve_device(device, "--device"))
    return write_outputs(run_dir, spec, sessions, model, log)


def sample_other(run_dir: str | os.PathLike, data_path: str, splits: Optional[Sequence[str]] = None,
                 session: Optional[str] = None, out: Optional[str] = None,
                 num_samples: Optional[int] = None, device: str = "auto",
                 log: Callable[[str], None] = print) -> Path:
    """``lfads-run sample RUN_DIR --data FILE [--split S]``: posterior-sample the trials of
    another data file (new trials of a session the run was trained on) with the run's best
    weights. Writes ``RUN_DIR/samples_<file stem>.h5`` (or ``out``) with the keys of the output
    file for each split; prints the metrics that apply when the file has targets or truth."""
    from ..api import load_run
    from ..data.h5 import load_dataset

    run = load_run(run_dir, device=device)
    ds = load_dataset(data_path, training=False)
    names = list(splits) if splits else list(ds.splits)
    for name in names:
        if name not in ds.splits:
            raise DataError(f"{data_path}: no split '{name}' (it has: {', '.join(ds.splits)}; "
                            f"the keys are {{split}}_encod_data)")
    if session is None and len(run.sessions) > 1:
        raise DataError(f"--session: the run has sessions {', '.join(run.sessions)}; say which one "
                        f"{data_path} belongs to")
    which = session if session is not None else 0
    if session is not None and session not in run.sessions:
        raise DataError(f"--session {session}: the run has no such session (its sessions: "
                        f"{', '.join(run.sessions)})")
    _check_new_trials(run, Dataset(ds.path, {k: ds.splits[k] for k in names}), run._session(which))
    n = num_samples or run.spec.sampling.num_samples
    results, inds, shown = {}, {}, []
    for name in names:
        split = ds.splits[name]
        res = run.infer(split.encod, num_samples=n, session=which, ext=split.ext, seed=run.spec.sampling.seed)
        results[name] = {"output_params": res.rates, "factors": res.factors, "gen_states": res.gen_states,
                         "ic_mean": res.ic_mean, "ic_std": res.ic_std,
                         **({"gen_inputs": res.inputs, "co_means": res.co_means, "co_stds": res.co_stds}
                            if res.inputs is not None else {})}
        inds[name] = split.inds if split.inds is not None else np.arange(split.n_trials)
        if split.recon is None or split.recon.shape == res.rates.shape:
            recon = run.model.reconstructions[run._session(which)]
            shown += [f"{k} {v:.4f}" for k, v in split_metrics(name, res.rates, split, recon, ds.shape).items()]
    target = Path(out) if out else Path(run_dir) / f"samples_{Path(data_path).stem}.h5"
    units = run.model.reconstructions[run._session(which)].units
    write_output(target, results, inds, {"num_samples": n, "bin_size_ms": ds.bin_size_ms,
                                         "output_params_units": units, "best_epoch": run.best_epoch,
                                         "data_path": os.path.abspath(data_path), "run_dir": os.path.abspath(run_dir),
                                         "session": run.sessions[run._session(which)]}, units=units)
    log(f"wrote {target} ({', '.join(names)}; {n} posterior samples, best epoch {run.best_epoch})"
        + (f"\n{'  '.join(shown)}" if shown else ""))
    return target


def _check_new_trials(run, ds, session: int) -> None:
    """The trials of ``ds`` fit the run's model (sizes, external inputs) and its data checks
    (NaN, infinite values, the reconstruction's support of any targets), one-line errors naming
    the file and key."""
    shape, name = run.shapes[session], run.sessions[session]
    for split in ds.splits.values():
        key = f"{split.name}_encod_data"
        if split.encod.shape[1:] != (shape.t_in, shape.n_in):
            raise DataError(f"{ds.path}: {key} is {split.encod.shape[1]} bins x {split.encod.shape[2]} "
                            f"channels per trial; the run's model (session {name}) takes "
                            f"{shape.t_in} bins x {shape.n_in} channels")
        ext = split.ext.shape[-1] if split.ext is not None else 0
        if ext != shape.ext_dim or (split.ext is not None and split.ext.shape[1] != shape.t_out):
            want = (f"[trials, {shape.t_out}, {shape.ext_dim}]" if shape.ext_dim
                    else "absent: the run's model takes no external inputs")
            got = f"shape {tuple(split.ext.shape)}" if split.ext is not None else "absent"
            raise DataError(f"{ds.path}: {split.name}_ext_input must be {want}, got {got}")
    targets = {k: s for k, s in ds.splits.items()
               if s.recon is None or s.recon.shape[1:] == (shape.t_out, shape.n_out)}
    check_support(Dataset(ds.path, targets), run.model.reconstructions[session], nan_allowed(run.spec),
                  run.spec.model.reconstruction.name)
