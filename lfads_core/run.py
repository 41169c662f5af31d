"""Running a spec, top-down: check the spec's data and model (:mod:`.assembly`), prepare the run
directory (:mod:`.rundir`), train with checkpoints, resume and progress (:mod:`.train.loop` does
the training itself and knows no files), then write the results (:mod:`.output.results`). The
loop and the model hold no I/O; this module and those it calls do."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import hooks, interrupt
from .assembly import (check_components, data_sizes, load_data, make_model,
                       session_shape, set_threads, training_batches)
from .data.h5 import Dataset
from .data.sessions import fingerprint
from .device import describe, resolve_device, use_compile, use_graphs
from .errors import DataError
from .heap import hold_memory, release_memory
from .model import fused
from .model.lfads import LFADS
from .output.results import OUTPUT_FILE, load_best, sample, write_outputs
from .rundir import (SPEC_FILE, prepare_run_dir, read_init_cache, write_init_cache,
                     write_metrics)
from .spec.schema import Spec
from .train.checkpoint import load_checkpoint, save_checkpoint
from .train.loop import Trainer, uncovered_l2_groups

__all__ = ["train", "Progress", "check_components", "data_sizes", "load_data", "make_model",
           "session_shape", "set_threads", "OUTPUT_FILE", "load_best", "sample", "write_outputs",
           "SPEC_FILE", "prepare_run_dir", "write_metrics", "training_batches"]


# -- progress ------------------------------------------------------------------------------
class Progress:
    """A tqdm bar on a terminal; otherwise one line per epoch on stdout."""

    def __init__(self, total: int, initial: int):
        self.seconds: list[float] = []
        self.tty = sys.stderr.isatty()
        self.bar = None
        if self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True)

    def update(self, row: dict, total: int) -> None:
        self.seconds.append(row["seconds"])
        left = total - row["epoch"]
        recent = self.seconds[-10:]
        eta = _duration(left * sum(recent) / len(recent)) if left > 0 else "0s"
        text = (f"train {row['train_recon']:.4f}  valid {row['valid_recon']:.4f}  "
                f"smooth {row['valid_recon_smooth']:.4f}  kl_ic {row['train_kl_ic']:.3g}  "
                f"kl_co {row['train_kl_co']:.3g}  lr {row['lr']:.2g}  left ~{eta}")
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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# -- training ------------------------------------------------------------------------------
def train(spec: Spec, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Train (or resume) the run of ``spec``, then sample and write outputs. Returns the run dir."""
    threads = set_threads(spec.train.threads)
    hooks.hook()  # a misspelt hook in a hook plugin is an error before anything is written
    sessions = load_data(spec)
    print_ = fingerprint([ds.path for ds in sessions])
    cache = read_init_cache(Path(spec.output), print_)
    device = resolve_device(spec.train.device)
    model, augs = make_model(spec, sessions, cache, device)
    check_components(spec, sessions, model, augs)
    run_dir = prepare_run_dir(spec, force, log)
    write_init_cache(run_dir, cache, print_)
    ckpt_dir = run_dir / "checkpoints"
    model.to(device)
    graphs = use_graphs(spec.train.cuda_graphs, device)
    train_src, valid_src = training_batches(spec, sessions, device, drop_last=graphs)
    trainer = Trainer(model, augs, train_src, valid_src, spec.train, log=log, graphs=graphs)
    names = [ds.name for ds in sessions]
    last = ckpt_dir / "last.pt"
    if last.exists():
        state = load_checkpoint(last)
        check_resume(state, model, names, run_dir, spec)
        trainer.load_state_dict(state["trainer"])
        log(f"resuming {run_dir} at epoch {trainer.epoch}")
    # On the CPU the fused kernels, where they run, take the place of compiled steps.
    compiled = use_compile(spec.train.compile, device) and (
        device.type == "cuda" or not fused.usable(torch.zeros(())))
    where = (f"{describe(device)}{', CUDA graphs' if graphs else ''}"
             f"{', compiled steps (the first epoch compiles them)' if compiled else ''}"
             if device.type == "cuda" else f"cpu, {threads} thread{'s' if threads != 1 else ''}{', compiled steps' if compiled else ''}")
    log(f"training on {_trials(sessions, 'train')}, validating on {_trials(sessions, 'valid')} "
        f"({where}); run dir {run_dir}")
    for problem in hooks.load_errors():
        log(f"warning: {problem}")
    for group in uncovered_l2_groups(model):
        log(f"warning: a component declares the L2 group '{group}' that no train.l2 scale "
            f"covers (gen, con, ic_enc, ci_enc): its weights are not penalised")
    for ds in sessions:
        for note in ds.notes:
            log(note if note.startswith("warning: ") else f"note: {note}")
    progress = Progress(spec.train.max_epochs, trainer.epoch)

    def on_epoch_end(tr: Trainer, row: dict) -> None:
        state = {"trainer": tr.state_dict(), "sessions": [vars(s) for s in tr.model.sessions],
                 "session_names": names}
        if row["is_best"]:
            save_checkpoint(ckpt_dir / "best.pt", {"model": tr.model.state_dict(), "epoch": row["epoch"],
                                                   "valid_recon_smooth": row["valid_recon_smooth"]})
        save_checkpoint(last, state)
        write_metrics(run_dir / "metrics.csv", tr.history)
        progress.update(row, spec.train.max_epochs)
        hooks.hook().lfads_epoch_end(run_dir=run_dir, epoch=row["epoch"], metrics=row)
        interrupt.check()  # a Ctrl-C that Python swallowed (lfads_core.interrupt)

    trainer.log = progress.write
    hold_memory()
    try:
        trainer.fit(on_epoch_end)
    finally:
        progress.close()
    interrupt.check()
    if trainer.stop_reason:
        log(f"stopped: {trainer.stop_reason}; best epoch {trainer.best_epoch}")
    del trainer, train_src, valid_src  # the training data's device memory, before sampling
    release_memory()
    model.dropout_rate = float(model.dropout_rate)
    write_outputs(run_dir, spec, sessions, model, log)
    return run_dir


def check_resume(state: dict, model: LFADS, names: list[str], run_dir: Path, spec: Spec) -> None:
    """The checkpoint must be of the same sessions, with the same sizes."""
    saved_names = state.get("session_names", names)
    if saved_names != names:
        raise DataError(f"data.path: the sessions {', '.join(names)} differ from the "
                        f"checkpoint's {', '.join(saved_names)} in {run_dir}; use another --out")
    shapes = [vars(s) for s in model.sessions]
    if state.get("sessions") != shapes:
        for name, old, new in zip(names, state.get("sessions") or [], shapes):
            if old != new:
                raise DataError(f"{spec.data.path if len(names) == 1 else name}: data sizes {new} "
                                f"differ from the checkpoint's {old} in {run_dir}")
        raise DataError(f"{spec.data.path}: data sizes differ from the checkpoint's in {run_dir}")


def _trials(sessions: Sequence[Dataset], split: str) -> str:
    n = [ds.splits[split].n_trials for ds in sessions]
    if len(n) == 1:
        return f"{n[0]} trials"
    return f"{sum(n)} trials of {len(n)} sessions ({', '.join(map(str, n))})"
