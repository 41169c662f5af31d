"""Posterior sampling: many samples of each trial in one batched forward pass."""

from __future__ import annotations

import numpy as np
import torch

from ..data.batches import TensorSplit
from ..model.lfads import LFADS

FIELDS = ("output_params", "factors", "gen_states", "gen_inputs", "ic_mean", "ic_std",
          "co_means", "co_stds")


@torch.inference_mode()
def posterior_sample(model: LFADS, data: TensorSplit, num_samples: int, rows_per_pass: int = 2048,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Average over ``num_samples`` posterior samples per trial.

    Returns numpy arrays: ``output_params`` [n, T_r, N] (the reconstruction's mean, e.g.
    counts per bin), ``factors`` [n, T_r, F], ``gen_states`` [n, T_r, G], ``gen_inputs``,
    ``co_means``, ``co_stds`` [n, T_r, U] (absent without a controller), ``ic_mean``,
    ``ic_std`` [n, Z]. Each pass holds up to ``rows_per_pass`` trial-samples; the encoder runs
    once per trial.
    """
    model.eval()
    rng_state = torch.get_rng_state()
    torch.manual_seed(seed)
    per_pass = max(1, rows_per_pass // num_samples)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in FIELDS}
    try:
        for start in range(0, data.n_trials, per_pass):
            sl = slice(start, start + per_pass)
            ext = data.ext[sl] if data.ext is not None else None
            out = model(data.encod[sl], session=data.session, ext=ext, sample=True, n_samples=num_samples)
            n = out.ic_mean.shape[0] // num_samples
            mean = lambda x: x.view(n, num_samples, *x.shape[1:]).mean(dim=1).numpy()  # noqa: E731
            parts["output_params"].append(mean(model.means(out, data.session)))
            parts["factors"].append(mean(out.factors))
            parts["gen_states"].append(mean(out.gen_states))
            parts["ic_mean"].append(out.ic_mean[::num_samples].numpy())
            parts["ic_std"].append(out.ic_std[::num_samples].numpy())
            if out.co_means is not None:
                parts["gen_inputs"].append(mean(out.gen_inputs))
                parts["co_means"].append(mean(out.co_means))
                parts["co_stds"].append(mean(out.co_stds))
    finally:
        torch.set_rng_state(rng_state)
    return {k: np.concatenate(v).astype(np.float32) for k, v in parts.items() if v}
