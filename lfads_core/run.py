"""Running a spec, top-down: check the spec's data and model (:mod:`.assembly`), prepare the run
directory (:mod:`.rundir`), train with checkpoints, resume and progress (:mod:`.train.loop` does
the training itself and knows no files), then write the results (:mod:`.output.results`). The
loop and the model hold no I/O; this module and those it calls do."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from . import hooks
from .assembly import (check_components, data_sizes, load_data, make_model,
                       session_shape, set_threads)
from .data.batches import to_tensors
from .errors import DataError
from .output.results import OUTPUT_FILE, load_best, sample, write_outputs
from .rundir import SPEC_FILE, prepare_run_dir, write_metrics
from .spec.schema import Spec
from .train.checkpoint import load_checkpoint, save_checkpoint
from .train.loop import Trainer

__all__ = ["train", "Progress", "check_components", "data_sizes", "load_data", "make_model",
           "session_shape", "set_threads", "OUTPUT_FILE", "load_best", "sample", "write_outputs",
           "SPEC_FILE", "prepare_run_dir", "write_metrics"]


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
