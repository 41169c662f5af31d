"""The LFADS GRU cell (REFERENCE.md §1) against a written-out implementation of its equations.

z = σ(W_xz x + b_z + W_hz h), r = σ(W_xr x + b_r + W_hr h),
n = tanh(W_xn x + b_n + W_hn (r ⊙ h))      (reset *before* the recurrent matrix),
h' = clip(z ⊙ h + (1 − z) ⊙ n, ±clip).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lfads_core.model.gru import GRUCell, StackedGRU

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def reference_step(x, h, w_x, b, w_hzr, w_hn, clip):
    """One LFADS GRU step, written out gate by gate. Column order of w_x/b: [z | r | n]."""
    hd = h.shape[-1]
    w_xz, w_xr, w_xn = w_x[:, :hd], w_x[:, hd:2 * hd], w_x[:, 2 * hd:]
    b_z, b_r, b_n = b[:hd], b[hd:2 * hd], b[2 * hd:]
    w_hz, w_hr = w_hzr[:, :hd], w_hzr[:, hd:]
    z = torch.sigmoid(x @ w_xz + b_z + h @ w_hz)
    r = torch.sigmoid(x @ w_xr + b_r + h @ w_hr)
    n = torch.tanh(x @ w_xn + b_n + (r * h) @ w_hn)
    out = z * h + (1.0 - z) * n
    if clip > 0:
        out = torch.clamp(out, -clip, clip)
    return out


def torch_variant_step(x, h, w_x, b, w_hzr, w_hn):
    """torch.nn.GRU's variant: reset *after* the recurrent matrix (r ⊙ (W_hn h))."""
    hd = h.shape[-1]
    z = torch.sigmoid(x @ w_x[:, :hd] + b[:hd] + h @ w_hzr[:, :hd])
    r = torch.sigmoid(x @ w_x[:, hd:2 * hd] + b[hd:2 * hd] + h @ w_hzr[:, hd:])
    n = torch.tanh(x @ w_x[:, 2 * hd:] + b[2 * hd:] + r * (h @ w_hn))
    return z * h + (1.0 - z) * n


def random_cell(in_dim, hidden, clip, seed, scale=1.0):
    torch.manual_seed(seed)
    cell = GRUCell(in_dim, hidden, clip).double()
    with torch.no_grad():  # randomise the biases too, so every term matters
        cell.b.copy_(torch.randn_like(cell.b))
        for p in (cell.w_x, cell.w_hzr, cell.w_hn):
            p.mul_(scale)
    return cell


def cell_step(cell: GRUCell, x, h):
    x_zr, x_n = cell.project(x)
    return cell.step(x_zr, x_n, h)


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 7), st.integers(1, 4), st.sampled_from([0.0, 0.5, 5.0]),
       st.integers(0, 10_000), st.floats(0.5, 3.0))
def test_step_matches_reference(in_dim, hidden, bsz, clip, seed, scale):
    cell = random_cell(in_dim, hidden, clip, seed, scale)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(bsz, in_dim, generator=gen, dtype=torch.float64) * 2
    h = torch.randn(bsz, hidden, generator=gen, dtype=torch.float64)
    got = cell_step(cell, x, h)
    want = reference_step(x, h, cell.w_x, cell.b, cell.w_hzr, cell.w_hn, clip)
    assert got.shape == (bsz, hidden)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_step_is_not_the_torch_nn_gru_variant():
    # The test above would be meaningless if the two variants coincided for these weights.
    cell = random_cell(3, 5, 0.0, seed=0, scale=2.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    h = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    got = cell_step(cell, x, h)
    other = torch_variant_step(x, h, cell.w_x, cell.b, cell.w_hzr, cell.w_hn)
    assert (got - other).abs().max() > 1e-3


def test_sequence_matches_reference_and_grads():
    cell = random_cell(4, 6, 5.0, seed=3)
    gen = torch.Generator().manual_seed(3)
    xs = torch.randn(2, 7, 4, generator=gen, dtype=torch.float64)
    h = torch.zeros(2, 6, dtype=torch.float64)
    h_ref = h.clone()
    for t in range(7):
        h = cell_step(cell, xs[:, t], h)
        h_ref = reference_step(xs[:, t], h_ref, cell.w_x, cell.b, cell.w_hzr, cell.w_hn, 5.0)
    torch.testing.assert_close(h, h_ref)
    grads = torch.autograd.grad(h.sum(), list(cell.parameters()))
    grads_ref = torch.autograd.grad(h_ref.sum(), list(cell.parameters()))
    for g, gr in zip(grads, grads_ref):
        torch.testing.assert_close(g, gr)


def test_zero_input_cell():
    # in_dim 0 (e.g. an autonomous generator without external inputs): only the bias drives it.
    cell = random_cell(0, 4, 5.0, seed=5)
    h = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x = torch.zeros(3, 0, dtype=torch.float64)
    got = cell_step(cell, x, h)
    want = reference_step(x, h, cell.w_x, cell.b, cell.w_hzr, cell.w_hn, 5.0)
    torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------- #
# StackedGRU == K separate cells
# --------------------------------------------------------------------------- #


def run_stack(stack, x):
    """StackedGRU takes time-major input [K, T, B, in] and returns states [K, T, B, H]:
    this gives them batch-major, [K, B, T, in] -> [K, B, T, H]."""
    return stack(x.transpose(1, 2)).transpose(1, 2)


@pytest.mark.parametrize("k,in_dim,hidden,clip", [(1, 3, 4, 5.0), (2, 5, 3, 5.0), (4, 2, 6, 0.7), (3, 4, 5, 0.0)])
def test_stacked_equals_separate_cells(k, in_dim, hidden, clip):
    torch.manual_seed(k)
    stack = StackedGRU(k, in_dim, hidden, clip).double()
    with torch.no_grad():
        stack.b.copy_(torch.randn_like(stack.b))
        stack.w_x.mul_(2.0)
    bsz, steps = 3, 6
    x = torch.randn(k, bsz, steps, in_dim, dtype=torch.float64) * 2
    states = run_stack(stack, x)
    assert states.shape == (k, bsz, steps, hidden)
    for i in range(k):
        cell = GRUCell(in_dim, hidden, clip).double()
        with torch.no_grad():
            cell.w_x.copy_(stack.w_x[i])
            cell.b.copy_(stack.b[i, 0])
            cell.w_hzr.copy_(stack.w_hzr[i])
            cell.w_hn.copy_(stack.w_hn[i])
        h = torch.zeros(bsz, hidden, dtype=torch.float64)
        for t in range(steps):
            h = cell_step(cell, x[i, :, t], h)
            torch.testing.assert_close(states[i, :, t], h, rtol=1e-10, atol=1e-10)
        # and the written-out reference, for good measure
        h_ref = torch.zeros(bsz, hidden, dtype=torch.float64)
        for t in range(steps):
            h_ref = reference_step(x[i, :, t], h_ref, stack.w_x[i], stack.b[i, 0], stack.w_hzr[i],
                                   stack.w_hn[i], clip)
        torch.testing.assert_close(states[i, :, -1], h_ref, rtol=1e-10, atol=1e-10)


def test_stacked_directions_are_independent():
    torch.manual_seed(0)
    stack = StackedGRU(3, 2, 4)
    x = torch.randn(3, 2, 5, 2)
    base = run_stack(stack, x)
    x2 = x.clone()
    x2[1] += 1.0
    moved = run_stack(stack, x2)
    torch.testing.assert_close(moved[0], base[0])
    torch.testing.assert_close(moved[2], base[2])
    assert (moved[1] - base[1]).abs().max() > 1e-4


def test_stacked_gradients_match_separate_cells():
    torch.manual_seed(1)
    stack = StackedGRU(2, 3, 4).double()
    x = torch.randn(2, 2, 5, 3, dtype=torch.float64)
    run_stack(stack, x).sum().backward()
    for i in range(2):
        cell = GRUCell(3, 4).double()
        with torch.no_grad():
            cell.w_x.copy_(stack.w_x[i])
            cell.b.copy_(stack.b[i, 0])
            cell.w_hzr.copy_(stack.w_hzr[i])
            cell.w_hn.copy_(stack.w_hn[i])
        h = torch.zeros(2, 4, dtype=torch.float64)
        total = 0.0
        for t in range(5):
            h = cell_step(cell, x[i, :, t], h)
            total = total + h.sum()
        total.backward()
        torch.testing.assert_close(stack.w_hn.grad[i], cell.w_hn.grad)
        torch.testing.assert_close(stack.w_hzr.grad[i], cell.w_hzr.grad)
        torch.testing.assert_close(stack.w_x.grad[i], cell.w_x.grad)
        torch.testing.assert_close(stack.b.grad[i, 0], cell.b.grad)


# --------------------------------------------------------------------------- #
# Clip and init
# --------------------------------------------------------------------------- #


def test_clip_bounds_state_from_large_previous_state():
    cell = random_cell(2, 5, 5.0, seed=7)
    with torch.no_grad():
        cell.b[:5] = 10.0  # z ≈ 1: the state is retained, so an out-of-range state stays large
        cell.w_hzr.zero_()  # (the gates must not see the huge state)
    h = torch.full((3, 5), 50.0, dtype=torch.float64)
    h[1] = -50.0
    out = cell_step(cell, torch.zeros(3, 2, dtype=torch.float64), h)
    assert out.abs().max() <= 5.0
    assert torch.isclose(out.abs(), torch.tensor(5.0, dtype=torch.float64)).all()


@pytest.mark.parametrize("clip", [0.2, 0.5])
def test_clip_bounds_state_over_a_sequence(clip):
    torch.manual_seed(0)
    stack = StackedGRU(2, 3, 8, clip)
    with torch.no_grad():
        stack.w_x.mul_(20.0)
    states = run_stack(stack, torch.randn(2, 4, 30, 3) * 5)
    assert states.abs().max() <= clip + 1e-7
    assert states.abs().max() >= clip - 1e-6  # the clip was active

    unclipped = StackedGRU(2, 3, 8, 0.0)
    unclipped.load_state_dict(stack.state_dict())
    assert run_stack(unclipped, torch.randn(2, 4, 30, 3) * 5).abs().max() > clip


def test_no_clip_when_zero():
    cell = random_cell(1, 3, 0.0, seed=8)
    with torch.no_grad():
        cell.b[:3] = 20.0
        cell.w_hzr.zero_()
    h = torch.full((1, 3), 40.0, dtype=torch.float64)
    out = cell_step(cell, torch.zeros(1, 1, dtype=torch.float64), h)
    assert out.min() > 39.0


@pytest.mark.parametrize("make", [lambda: GRUCell(7, 5), lambda: StackedGRU(3, 7, 5)])
def test_init_biases(make):
    torch.manual_seed(0)
    m = make()
    b = m.b.detach().reshape(-1, 15)
    assert torch.equal(b[:, :10], torch.ones_like(b[:, :10]))  # z and r gates start at 1
    assert torch.equal(b[:, 10:], torch.zeros_like(b[:, 10:]))  # candidate at 0


def test_init_weight_scales():
    torch.manual_seed(0)
    in_dim, hidden = 50, 80
    cell = GRUCell(in_dim, hidden)
    assert cell.w_x.shape == (in_dim, 3 * hidden)
    assert cell.w_hzr.shape == (hidden, 2 * hidden) and cell.w_hn.shape == (hidden, hidden)
    assert float(cell.w_x.detach().std()) == pytest.approx(1 / math.sqrt(in_dim), rel=0.05)
    assert float(cell.w_hzr.detach().std()) == pytest.approx(1 / math.sqrt(hidden), rel=0.05)
    assert float(cell.w_hn.detach().std()) == pytest.approx(1 / math.sqrt(hidden), rel=0.05)
    assert abs(float(cell.w_x.detach().mean())) < 0.01
    assert cell.recurrent_kernels()[0] is cell.w_hzr and cell.recurrent_kernels()[1] is cell.w_hn


def test_stacked_recurrent_kernels_are_views():
    stack = StackedGRU(2, 3, 4)
    ks = stack.recurrent_kernels(1)
    assert torch.equal(ks[0], stack.w_hzr[1]) and torch.equal(ks[1], stack.w_hn[1])
    assert ks[0].requires_grad  # L2 on them reaches the parameter
    (ks[0].square().sum()).backward()
    assert stack.w_hzr.grad[0].abs().sum() == 0 and stack.w_hzr.grad[1].abs().sum() > 0


@pytest.mark.parametrize("clip", [1.0, 2.5, 5.0])
def test_clamping_only_the_first_step_is_exact(clip):
    """clip_at: clamping the first step only gives the same states and gradients as clamping
    every step, also from an initial state far outside ±clip."""
    from lfads_core.model.gru import clip_at, gru_step

    torch.manual_seed(3)
    hidden, bsz, steps = 6, 4, 12
    cell = GRUCell(3, hidden, clip).double()
    xs = torch.randn(steps, bsz, 3, dtype=torch.float64) * 3
    h0 = torch.randn(bsz, hidden, dtype=torch.float64) * 4 * clip

    def run(every_step: bool):
        cell.zero_grad()
        h = h0.clone().requires_grad_()
        out, state = [], h
        for t in range(steps):
            x_zr, x_n = cell.project(xs[t])
            c = clip if every_step else clip_at(t, clip)
            state = gru_step(x_zr, x_n, state, cell.w_hzr, cell.w_hn, c)
            out.append(state)
        out = torch.stack(out)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        return out.detach(), h.grad.clone(), cell.w_hn.grad.clone()

    for a, b in zip(run(True), run(False)):
        assert torch.allclose(a, b, atol=1e-12)
    assert run(True)[0].abs().max() <= clip + 1e-12
