"""Posterior sampling: many samples of each trial in one batched forward pass, on the model's
device, in passes sized to a memory budget."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..data.batches import TensorSplit
from ..model.lfads import LFADS
from ..model.steps import uncompiled

CPU_BUDGET = 96 * 2**20  # bytes of activations per pass on the CPU
GPU_FRACTION = 0.4  # of the device's free memory (and the allocator's unused cache) per pass


def bytes_per_row(model: LFADS, session: int) -> int:
    """Activation bytes of one trial-sample in a sampling pass (float32): per step, what the
    pass keeps until its results are averaged (generator states, factors and the controller's
    outputs, twice: the steps' list and its stacked copy; the encoder's controller-input
    projections repeated per sample; the reconstruction's parameters and means). Measured on
    the Lorenz spec on the CPU: 160 KiB a row; this gives 225 KiB."""
    shape = model.sessions[session]
    gen = model.generator
    config = getattr(gen, "config", None)
    con = getattr(config, "con_dim", 64) if getattr(gen, "use_con", True) else 0
    per_step = (2 * (getattr(config, "gen_dim", 100) + gen.fac_dim + 3 * gen.co_dim) + 3 * con
                + 2 * shape.n_out * model.reconstructions[session].n_params)
    return 4 * shape.t_out * per_step


def rows_per_pass(model: LFADS, session: int, cap: Optional[int] = None) -> int:
    """Trial-samples per forward pass: what fits the budget (``CPU_BUDGET`` on the CPU, a part
    of the free memory on a GPU, counting what torch's allocator holds unused), at most ``cap``
    (``sampling.batch_size``) when given."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        budget = int(GPU_FRACTION * (free + cached))
    else:
        budget = CPU_BUDGET
    rows = max(1, budget // bytes_per_row(model, session))
    return min(rows, cap) if cap else rows


@torch.inference_mode()
def posterior_sample(model: LFADS, data: TensorSplit, num_samples: int,
                     rows: Optional[int] = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Average over ``num_samples`` posterior samples per trial.

    Returns numpy arrays: ``output_params`` [n, T_r, N] (the reconstruction's mean, e.g.
    counts per bin), ``factors`` [n, T_r, F], ``gen_states`` [n, T_r, G], ``gen_inputs``,
    ``co_means``, ``co_stds`` [n, T_r, U] (absent without a controller), ``ic_mean``,
    ``ic_std`` [n, Z]. Each pass holds up to ``rows`` trial-samples (default
    :func:`rows_per_pass`); the encoder runs once per trial; results go to the host once per
    pass, into the arrays returned (on CUDA through pinned memory, without waiting: a pass's
    results are stored while the next pass runs). A pass that runs out of memory
    (``torch.OutOfMemoryError``) is run again with half its trials, and later passes keep the
    smaller size; with one trial a pass, the error is raised. The samples are drawn on the
    model's device, seeded with ``seed`` (a CPU and a GPU draw different samples of the same
    posterior). The recurrent steps run uncompiled (``train.compile`` is for training).
    """
    model.eval()
    device = next(model.parameters()).device
    rows = rows or rows_per_pass(model, data.session)
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    torch.manual_seed(seed)
    per_pass = max(1, min(rows // num_samples, data.n_trials))
    out: dict[str, np.ndarray] = {}
    queued: Optional[_Copies] = None  # the last pass's results on their way to the host
    try:
        with uncompiled(model):  # its shapes are new to the compiled steps (steps.uncompiled)
            start = 0
            while start < data.n_trials:
                try:
                    got = _one_pass(model, data, slice(start, start + per_pass), num_samples, device)
                except torch.OutOfMemoryError:  # the estimate was short: smaller passes from here
                    if per_pass == 1:
                        raise
                    got = None
                if got is None:  # after the except block: the error no longer holds the pass's tensors
                    per_pass //= 2
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                if queued is not None:
                    queued.store(out, data.n_trials)
                queued = _Copies(got, start)
                start += per_pass
        if queued is not None:
            queued.store(out, data.n_trials)
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)
    return out


class _Copies:
    """One pass's results on their way to the host. From a GPU they are copied into pinned
    memory and the copies are only queued; ``store`` waits for them alone (not for work queued
    after them) and writes them into the output arrays. A copy into pageable memory waits for
    the device: profiled on an H100, the 16 such copies of a Lorenz sampling (92 MB) took
    61 ms, 38 % of its GPU time."""

    def __init__(self, got: dict[str, torch.Tensor], start: int):
        self.start = start
        self.event = None
        self.host = {k: _to_host(v) for k, v in got.items()}
        device = next(iter(got.values())).device
        if device.type == "cuda":
            self.event = torch.cuda.Event()
            self.event.record(torch.cuda.current_stream(device))

    def store(self, out: dict[str, np.ndarray], n_trials: int) -> None:
        if self.event is not None:
            self.event.synchronize()
        for k, h in self.host.items():
            a = h.numpy()
            if k not in out:
                out[k] = np.empty((n_trials, *a.shape[1:]), np.float32)
            out[k][self.start:self.start + a.shape[0]] = a
        self.host = {}


def _to_host(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 on the host; from a GPU into pinned memory, the copy only queued."""
    if x.device.type != "cuda":
        return x.to(torch.float32).cpu()
    host = torch.empty(x.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(x, non_blocking=True)
    return host


def _one_pass(model: LFADS, data: TensorSplit, sl: slice, num_samples: int,
              device: torch.device) -> dict[str, torch.Tensor]:
    """Averages over the samples of the trials ``sl`` of ``data`` (on ``device``)."""
    encod = data.encod[sl].to(device, non_blocking=True)
    ext = data.ext[sl].to(device, non_blocking=True) if data.ext is not None else None
    out = model(encod, session=data.session, ext=ext, sample=True, n_samples=num_samples)
    n = out.ic_mean.shape[0] // num_samples
    mean = lambda x: x.view(n, num_samples, *x.shape[1:]).mean(dim=1)  # noqa: E731
    got = {"output_params": mean(model.means(out, data.session)),
           "factors": mean(out.factors), "gen_states": mean(out.gen_states),
           "ic_mean": out.ic_mean[::num_samples], "ic_std": out.ic_std[::num_samples]}
    if out.co_means is not None:
        got.update(gen_inputs=mean(out.gen_inputs), co_means=mean(out.co_means),
                   co_stds=mean(out.co_stds))
    return got
