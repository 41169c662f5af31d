"""Dropout masks (lfads_core/model/dropout.py): drawn as 16-bit random integers, so check their
statistics, scaling and dtype for a float rate and for a 0-d tensor rate (CUDA graphs)."""

from __future__ import annotations

import math

import pytest
import torch

from lfads_core.model.dropout import dropout, keep_mask


@pytest.mark.parametrize("p", [0.05, 0.3, 0.6, torch.tensor(0.3), torch.tensor(0.05, dtype=torch.float64)])
def test_keep_mask_keeps_one_minus_p_and_scales(p):
    torch.manual_seed(0)
    shape = (400, 250, 3)
    mask = keep_mask(shape, p, torch.zeros((), dtype=torch.float32))
    rate = float(p)
    assert mask.shape == shape and mask.dtype == torch.float32
    kept = (mask > 0).double().mean().item()
    n = math.prod(shape)
    assert abs(kept - (1 - rate)) < 5 * math.sqrt(rate * (1 - rate) / n)  # 5 standard errors
    values = torch.unique(mask)
    torch.testing.assert_close(values, torch.tensor([0.0, 1 / (1 - rate)]))
    assert abs(mask.double().mean().item() - 1.0) < 5 * math.sqrt(rate / (1 - rate) / n)


def test_keep_mask_odd_sizes_and_independent_elements():
    torch.manual_seed(1)
    mask = keep_mask((7, 5), 0.5, torch.zeros((), dtype=torch.float64))
    assert mask.shape == (7, 5) and mask.dtype == torch.float64
    big = keep_mask((200001,), 0.5, torch.zeros(())) > 0
    # neighbouring elements come from the same 64-bit word: they must still be independent
    both = (big[:-1] & big[1:]).double().mean().item()
    assert abs(both - 0.25) < 0.01
    assert keep_mask((3,), 0.5, torch.zeros(())).shape == (3,)


def test_dropout_off_and_on():
    x = torch.ones(1000, 100)
    assert dropout(x, 0.3, False) is x
    assert dropout(x, 0.0, True) is x
    y = dropout(x, 0.3, True)
    assert abs((y > 0).double().mean().item() - 0.7) < 0.01
    z = dropout(x, torch.tensor(0.3), True)  # tensor rate: no host read, masks always drawn
    assert abs((z > 0).double().mean().item() - 0.7) < 0.01


@pytest.mark.parametrize("dtype_view", ["works", "refused"])
def test_masks_under_vmap_differ_per_member_also_where_a_dtype_view_is_refused(monkeypatch, dtype_view):
    """The stacked engine draws each member's masks under ``vmap(randomness="different")`` with
    a per-member rate. torch 2.11 refuses a dtype view there (seen on the GPU machine):
    ``RuntimeError: Batching rule not implemented for aten::view.dtype``; the masks must still be
    drawn, at each member's rate."""
    if dtype_view == "refused":
        view = torch.Tensor.view

        def no_dtype_view(self, *args, **kwargs):
            if args and isinstance(args[0], torch.dtype):
                raise RuntimeError("Batching rule not implemented for aten::view.dtype")
            return view(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "view", no_dtype_view)
    torch.manual_seed(2)
    rates = torch.tensor([0.1, 0.5, 0.5])
    masks = torch.func.vmap(lambda p, x: keep_mask((300, 200), p, x), randomness="different")(
        rates, torch.zeros(3, 1))
    kept = (masks > 0).double().mean(dim=(1, 2))
    torch.testing.assert_close(kept, 1 - rates.double(), atol=0.01, rtol=0)
    assert not torch.equal(masks[1], masks[2])
