"""Running a spec: prepare the run directory, train with checkpoints and resume, sample, write
outputs. This is the glue between the spec, data, model, training loop and outputs; it holds
the file I/O so the loop and the model need none."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import yaml

from . import hooks, registry
from .components import DataSizes
from .conformance import check_model
from .data.batches import batches, to_tensors
from .data.h5 import Dataset, check_support, load_dataset
from .data.stats import DataStats
from .errors import DataError, RunDirError
from .model.build import build_augmentations, build_model
from .model.lfads import LFADS, SessionShape
from .output.sample import posterior_sample
from .output.write import write_output
from .spec.load import dump_spec, spec_from_dict, spec_to_dict
from .spec.schema import Spec
from .train.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from .train.loop import Trainer

SPEC_FILE = "spec.yaml"
OUTPUT_FILE = "lfads_output.h5"
# Spec fields that may differ when a run is resumed.
RESUMABLE = {("output",), ("train", "max_epochs"), ("train", "threads"), ("sampling",),
             ("train", "early_stopping", "patience")}


def set_threads(threads: Optional[int]) -> int:
    """torch threads: the spec's ``train.threads``, else the CPUs this process may use."""
    if threads is None:
        env = os.environ.get("LFADS_THREADS") or os.environ.get("OMP_NUM_THREADS")
        threads = int(env) if env and env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


# -- data ----------------------------------------------------------------------------------
def session_shape(ds: Dataset) -> SessionShape:
    n_in, n_out, t_in, t_out, ext = ds.shape
    return SessionShape(n_in=n_in, n_out=n_out, t_in=t_in, t_out=t_out, ext_dim=ext)


def load_data(spec: Spec) -> Dataset:
    """Load the data file and check it against the spec's model (support, NaN, sizes)."""
    ds = load_dataset(spec.data.path)
    if spec.data.bin_size_ms is not None:
        ds.bin_size_ms = spec.data.bin_size_ms
    model = spec.model
    recon_cls = registry.load("reconstruction", model.reconstruction.name)
    recon = recon_cls(model.reconstruction.config, n_channels=ds.shape[1])
    allow_nan = any(getattr(registry.load("augmentation", a.name), "handles_nan", False)
                    for a in model.augmentations)
    ds.notes = check_support(ds, recon, allow_nan, model.reconstruction.name)
    t_in = ds.shape[2]
    enc = model.encoder.config
    for field in ("ci_lag", "ic_enc_seq_len"):
        value = getattr(enc, field, None)
        if value is not None and value >= t_in + (field == "ic_enc_seq_len"):
            raise DataError(f"model.encoder.{field}: {value} does not fit the data's {t_in} "
                            f"encoder bins ({spec.data.path})")
    sizes = data_sizes(ds)
    for i, aug in enumerate(model.augmentations):
        cls = registry.load("augmentation", aug.name)
        problem = cls.check(cls(aug.config), sizes)
        if problem:
            raise DataError(f"model.augmentations.{i} ({aug.name}): {problem} ({spec.data.path})")
    return ds


def data_sizes(ds: Dataset) -> DataSizes:
    n_in, n_out, t_in, t_out, ext = ds.shape
    return DataSizes(t_in=t_in, n_in=n_in, t_out=t_out, n_out=n_out, ext_dim=ext,
                     n_train=ds.train.n_trials)


def make_model(spec: Spec, ds: Dataset) -> tuple[LFADS, list]:
    """The model (readout biases from the training data's statistics) and the augmentations."""
    torch.manual_seed(spec.train.seed)
    model = build_model(spec.model, [session_shape(ds)], [DataStats.from_array(ds.train.recon)])
    return model, build_augmentations(spec.model)


def check_components(spec: Spec, ds: Dataset, model: LFADS, augs: list) -> None:
    """A few training trials through every component with checked output shapes, then the loss
    and its gradients: a component that breaks its contract is a one-line error naming it."""
    m = spec.model
    who = {key: registry.lookup(getattr(m, key).kind, getattr(m, key).name).who
           for key in ("readin", "encoder", "generator", "readout", "reconstruction", "ic_prior",
                       "co_prior")}
    who.update({f"augmentations.{i}": registry.lookup("augmentation", a.name).who
                for i, a in enumerate(m.augmentations)})
    batch = next(batches(to_tensors(ds.train), min(3, ds.train.n_trials)))
    check_model(model, augs, batch, who, data_sizes(ds))


# -- run directory -------------------------------------------------------------------------
def _strip(d: dict, paths=RESUMABLE) -> dict:
    d = json.loads(json.dumps(d))
    for path in paths:
        node = d
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return d


def _first_difference(a, b, prefix="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{prefix}{i}.")
    return f"{prefix.rstrip('.')}: {a!r} -> {b!r}"


def prepare_run_dir(spec: Spec, force: bool, log: Callable[[str], None]) -> Path:
    """Create the run directory, or check that it holds a run of the same spec (resume).
    With ``force`` a run of another spec is moved aside, never deleted."""
    run_dir = Path(spec.output)
    saved = run_dir / SPEC_FILE
    if saved.exists():
        try:
            old = yaml.safe_load(saved.read_text())
        except yaml.YAMLError:
            old = None
        new = spec_to_dict(spec)
        if not isinstance(old, dict) or _strip(old) != _strip(new):
            if not force:
                diff = _first_difference(_strip(old), _strip(new)) if isinstance(old, dict) else "unreadable"
                raise RunDirError(f"{run_dir} holds a run of a different spec ({diff}); use another "
                                  f"--out or --force to move the old run aside and start over")
            stamp = time.strftime('%Y%m%d-%H%M%S')
            aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
            n = 1
            while aside.exists():
                n += 1
                aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}")
            shutil.move(str(run_dir), aside)
            log(f"moved the previous run to {aside}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"output {run_dir}: cannot create the run directory "
                          f"({exc.strerror or exc})") from None
    for stale in run_dir.glob(".*.tmp"):  # left by a write that was killed
        stale.unlink()
    atomic_write_text(run_dir / SPEC_FILE, dump_spec(spec))
    return run_dir


def write_metrics(path: Path, history: list[dict]) -> None:
    if not history:
        return
    keys = list(history[0])
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


# -- progress ------------------------------------------------------------------------------
class Progress:
    """A tqdm bar on a terminal; otherwise one line per epoch on stdout."""

    def __init__(self, total: int, initial: int):
        self.tty = sys.stderr.isatty()
        self.bar = None
        if self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True)

    def update(self, row: dict, total: int) -> None:
        text = (f"train {row['train_recon']:.4f}  valid {row['valid_recon']:.4f}  "
                f"smooth {row['valid_recon_smooth']:.4f}  lr {row['lr']:.2g}")
        if self.bar is not None:
            self.bar.total = total
            self.bar.set_postfix_str(text + ("  *" if row["is_best"] else ""), refresh=False)
            self.bar.update(1)
        else:
            print(f"epoch {row['epoch']}/{total}  {text}  {row['seconds']:.2f}s"
                  + ("  best" if row["is_best"] else ""), flush=True)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- training ------------------------------------------------------------------------------
def train(spec: Spec, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Train (or resume) the run of ``spec``, then sample and write outputs. Returns the run dir."""
    threads = set_threads(spec.train.threads)
    hooks.hook()  # a misspelt hook in a hook plugin is an error before anything is written
    ds = load_data(spec)
    model, augs = make_model(spec, ds)
    check_components(spec, ds, model, augs)
    run_dir = prepare_run_dir(spec, force, log)
    ckpt_dir = run_dir / "checkpoints"
    trainer = Trainer(model, augs, to_tensors(ds.train), to_tensors(ds.valid), spec.train,
                      spec.data.batch_size, log=log)
    last = ckpt_dir / "last.pt"
    if last.exists():
        state = load_checkpoint(last)
        if state.get("sessions") != [vars(s) for s in model.sessions]:
            raise DataError(f"{spec.data.path}: data sizes {vars(model.sessions[0])} differ from the "
                            f"checkpoint's {state.get('sessions')} in {run_dir}")
        trainer.load_state_dict(state["trainer"])
        log(f"resuming {run_dir} at epoch {trainer.epoch}")
    n_train, n_valid = ds.train.n_trials, ds.valid.n_trials
    log(f"training on {n_train} trials, validating on {n_valid} ({threads} threads); run dir {run_dir}")
    for problem in hooks.load_errors():
        log(f"warning: {problem}")
    for note in ds.notes:
        log(f"note: {note}")
    progress = Progress(spec.train.max_epochs, trainer.epoch)

    def on_epoch_end(tr: Trainer, row: dict) -> None:
        state = {"trainer": tr.state_dict(), "sessions": [vars(s) for s in tr.model.sessions]}
        if row["is_best"]:
            save_checkpoint(ckpt_dir / "best.pt", {"model": tr.model.state_dict(), "epoch": row["epoch"],
                                                   "valid_recon_smooth": row["valid_recon_smooth"]})
        save_checkpoint(last, state)
        write_metrics(run_dir / "metrics.csv", tr.history)
        progress.update(row, spec.train.max_epochs)
        hooks.hook().lfads_epoch_end(run_dir=run_dir, epoch=row["epoch"], metrics=row)

    trainer.log = progress.write
    try:
        trainer.fit(on_epoch_end)
    finally:
        progress.close()
    if trainer.stop_reason:
        log(f"stopped: {trainer.stop_reason}; best epoch {trainer.best_epoch}")
    write_outputs(run_dir, spec, ds, model, log)
    return run_dir


# -- outputs -------------------------------------------------------------------------------
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
    from . import metrics

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
    from .output import plots

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
