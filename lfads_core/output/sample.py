"""Posterior sampling: many samples of each trial in one batched forward pass, on the model's
device, in passes sized to a memory budget."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..data.batches import TensorSplit
from ..model.lfads import LFADS
from ..model.steps import uncompiled

FIELDS = ("output_params", "factors", "gen_states", "gen_inputs", "ic_mean", "ic_std",
          "co_means", "co_stds")
CPU_BUDGET = 256 * 2**20  # bytes of activations per pass on the CPU
GPU_FRACTION = 0.4  # of the device's free memory per pass


def bytes_per_row(model: LFADS, session: int) -> int:
    """Rough activation bytes of one trial-sample in a sampling pass (float32): the per-step
    states the model keeps ([T_r, ...] of generator, controller, factors, inputs, outputs) with
    a factor for what a step holds while it runs."""
    shape = model.sessions[session]
    gen = model.generator
    per_step = (3 * getattr(getattr(gen, "config", None), "gen_dim", 100)
                + 3 * getattr(getattr(gen, "config", None), "con_dim", 64)
                + 3 * gen.fac_dim + 8 * gen.co_dim
                + 3 * shape.n_out * model.reconstructions[session].n_params)
    return 4 * 2 * shape.t_out * per_step


def rows_per_pass(model: LFADS, session: int, cap: Optional[int] = None) -> int:
    """Trial-samples per forward pass: what fits the budget (``CPU_BUDGET`` on the CPU, a part
    of the free memory on a GPU), at most ``cap`` (``sampling.batch_size``) when given."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(GPU_FRACTION * free)
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
    pass. The samples are drawn on the model's device, seeded with ``seed`` (a CPU and a GPU
    draw different samples of the same posterior). The recurrent steps run uncompiled
    (``train.compile`` is for training).
    """
    model.eval()
    device = next(model.parameters()).device
    rows = rows or rows_per_pass(model, data.session)
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    torch.manual_seed(seed)
    per_pass = max(1, rows // num_samples)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in FIELDS}
    try:
        with uncompiled(model):  # its shapes are new to the compiled steps (steps.uncompiled)
            for start in range(0, data.n_trials, per_pass):
                sl = slice(start, start + per_pass)
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
                del out
                for k, v in got.items():
                    parts[k].append(v.float().cpu().numpy())
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)
    return {k: np.concatenate(v).astype(np.float32) for k, v in parts.items() if v}
