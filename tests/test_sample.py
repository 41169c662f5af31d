"""Posterior sampling in passes: the pass size from a memory budget, and smaller passes after a
pass runs out of device memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lfads_core.data.batches import TensorSplit
from lfads_core.model.build import build_model
from lfads_core.model.lfads import LFADS, SessionShape
from lfads_core.output import sample
from lfads_core.output.sample import bytes_per_row, posterior_sample, rows_per_pass
from lfads_core.spec.load import spec_from_dict


def make(con_dim=5, co_dim=2) -> LFADS:
    """Encoders of 6, IC 4, generator 8, factors 3; 5 channels, 7 bins, Poisson."""
    spec = spec_from_dict({"data": {"path": "x"}, "model": {
        "encoder": {"name": "bigru", "ic_enc_dim": 6, "ci_enc_dim": 6, "ic_dim": 4},
        "generator": {"name": "gru", "gen_dim": 8, "con_dim": con_dim, "co_dim": co_dim, "fac_dim": 3},
        "reconstruction": {"name": "poisson"}}})
    torch.manual_seed(0)
    return build_model(spec.model, [SessionShape(n_in=5, n_out=5, t_in=7, t_out=7, ext_dim=0)])


def _split(model, n=9, seed=3) -> TensorSplit:
    s = model.sessions[0]
    gen = torch.Generator().manual_seed(seed)
    encod = torch.poisson(torch.full((n, s.t_in, s.n_in), 1.5), generator=gen)
    return TensorSplit(encod=encod, recon=encod, mask=torch.ones_like(encod))


def _forward_fails_above(monkeypatch, model, most: int) -> list[int]:
    """The model's forward raises torch's out-of-memory error for more than ``most`` trials;
    returns the trial counts it was called with."""
    calls, forward = [], model.forward

    def limited(encod, *args, **kwargs):
        calls.append(encod.shape[0])
        if encod.shape[0] > most:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return forward(encod, *args, **kwargs)

    monkeypatch.setattr(model, "forward", limited)
    return calls


def test_a_pass_out_of_memory_is_retried_with_half_the_trials(monkeypatch):
    model = make()
    data = _split(model)
    expect = posterior_sample(model, data, num_samples=4, rows=2 * 4, seed=5)
    calls = _forward_fails_above(monkeypatch, model, most=2)
    got = posterior_sample(model, data, num_samples=4, rows=8 * 4, seed=5)
    assert calls == [8, 4, 2, 2, 2, 2, 1]  # 8 and 4 failed; then passes of 2 to the end
    assert got.keys() == expect.keys()
    for k in expect:
        np.testing.assert_array_equal(got[k], expect[k], err_msg=k)  # a failed pass drew nothing


def test_passes_write_their_trials_in_order():
    """The posterior means (no sampling noise) of passes of 2 trials equal one pass's, trial by
    trial, in float32 arrays of all the trials."""
    model = make()
    data = _split(model)
    whole = posterior_sample(model, data, num_samples=4, rows=9 * 4, seed=5)
    passes = posterior_sample(model, data, num_samples=4, rows=2 * 4, seed=5)
    assert whole.keys() == passes.keys()
    for k, v in passes.items():
        assert v.dtype == np.float32 and v.shape == whole[k].shape and v.shape[0] == 9, k
    for k in ("ic_mean", "ic_std"):
        np.testing.assert_allclose(passes[k], whole[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert not np.allclose(passes["ic_mean"][:8], passes["ic_mean"][1:])


def test_out_of_memory_with_one_trial_a_pass_is_raised(monkeypatch):
    model = make()
    rng = torch.get_rng_state()
    _forward_fails_above(monkeypatch, model, most=0)
    with pytest.raises(torch.OutOfMemoryError):
        posterior_sample(model, _split(model), num_samples=4, rows=4 * 4, seed=5)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random state is given back


def test_rows_per_pass_is_the_budget_over_the_bytes_of_a_row(monkeypatch):
    model = make()
    per_row = bytes_per_row(model, 0)
    # gen 8, fac 3, co 2, con 5, 5 channels x 1 Poisson parameter, 7 bins, float32
    assert per_row == 4 * 7 * (2 * (8 + 3 + 3 * 2) + 3 * 5 + 2 * 5)
    monkeypatch.setattr(sample, "CPU_BUDGET", 100 * per_row + 7)
    assert rows_per_pass(model, 0) == 100
    assert rows_per_pass(model, 0, cap=30) == 30


def test_without_a_controller_a_row_holds_no_controller_terms():
    with_con, without = make(), make(con_dim=0, co_dim=0)
    assert bytes_per_row(with_con, 0) - bytes_per_row(without, 0) == 4 * 7 * (2 * 3 * 2 + 3 * 5)
