"""The LFADS GRU cell, single and stacked.

The reset gate multiplies the state *before* the recurrent matrix:
``n = tanh(W_x x + b_n + W_hn (r * h))``, ``h' = z * h + (1 - z) * n``, clipped to
``±clip``. Gate biases start at 1 for z and r, 0 for n; input weights ~ N(0, 1/fan_in),
recurrent weights ~ N(0, 1/H).

For speed the input projections of a whole sequence are one GEMM (:meth:`project`), and a
stack of K independent cells with the same sizes (e.g. the forward and backward directions of
two encoders) runs as one batched matmul per step. On the CPU whole sequences run in the fused
kernels of :mod:`.fused` (same math, hand-written backward).

Clipping is exact but cheap: ``h'`` is a convex combination of ``h`` and ``n`` with
``|n| < 1``, so once ``|h| <= clip`` (clip >= 1) every later state stays within ``±clip`` and
clamping it changes neither values nor gradients. :func:`clip_at` therefore clamps only the
first step (the initial state may be larger), and every step when clip < 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import fused
from . import steps as step_fns


def gru_step(x_zr: Tensor, x_n: Tensor, h: Tensor, w_hzr: Tensor, w_hn: Tensor, clip: float) -> Tensor:
    """One step. ``x_zr`` [..., B, 2H] and ``x_n`` [..., B, H] are projected inputs (bias
    included); ``h`` [..., B, H]; ``w_hzr`` [..., H, 2H]; ``w_hn`` [..., H, H]."""
    if h.dim() == 2:
        zr = torch.sigmoid(torch.addmm(x_zr, h, w_hzr))
    else:
        zr = torch.sigmoid(torch.baddbmm(x_zr, h, w_hzr))
    z, r = zr.chunk(2, dim=-1)
    rh = r * h
    n = torch.tanh(torch.addmm(x_n, rh, w_hn) if h.dim() == 2 else torch.baddbmm(x_n, rh, w_hn))
    h = torch.lerp(n, h, z)  # z * h + (1 - z) * n
    return h.clamp(-clip, clip) if clip > 0 else h


def clip_at(step: int, clip: float) -> float:
    """The clip to apply at ``step`` (0 = no clamp) for the same result as clamping every step."""
    return clip if (step == 0 or clip < 1.0) else 0.0


def gru_steps(x_zr, x_n, h: Tensor, w_hzr: Tensor, w_hn: Tensor, clip: float,
              compiled: bool = False) -> list[Tensor]:
    """The autograd path over a sequence: the states after each step of the per-step projected
    inputs ``x_zr``/``x_n`` (sequences of [..., B, 2H] / [..., B, H]) from ``h``, clamped as
    :func:`clip_at` says, or through the compiled step (:mod:`.steps`) when ``compiled``."""
    states = []
    for t, (a, b) in enumerate(zip(x_zr, x_n)):
        if compiled:
            h = step_fns.run(step_fns.gru_cell, a, b, h, w_hzr, w_hn, clip)
        else:
            h = gru_step(a, b, h, w_hzr, w_hn, clip_at(t, clip))
        states.append(h)
    return states


def _init_gru(w_x: Tensor, b: Tensor, w_hzr: Tensor, w_hn: Tensor, in_dim: int, hidden: int) -> None:
    with torch.no_grad():
        if in_dim > 0:
            w_x.normal_(0.0, 1.0 / math.sqrt(in_dim))
        w_hzr.normal_(0.0, 1.0 / math.sqrt(hidden))
        w_hn.normal_(0.0, 1.0 / math.sqrt(hidden))
        b.zero_()
        b[..., : 2 * hidden] = 1.0


class GRUCell(nn.Module):
    """LFADS GRU cell: ``in_dim`` -> ``hidden``. Inputs are projected with :meth:`project`."""

    def __init__(self, in_dim: int, hidden: int, clip: float = 5.0):
        super().__init__()
        self.in_dim, self.hidden, self.clip = in_dim, hidden, clip
        self.w_x = nn.Parameter(torch.empty(in_dim, 3 * hidden))
        self.b = nn.Parameter(torch.empty(3 * hidden))
        self.w_hzr = nn.Parameter(torch.empty(hidden, 2 * hidden))
        self.w_hn = nn.Parameter(torch.empty(hidden, hidden))
        _init_gru(self.w_x, self.b, self.w_hzr, self.w_hn, in_dim, hidden)

    def project(self, x: Tensor, rows: slice = slice(None)) -> tuple[Tensor, Tensor]:
        """Input projection with bias of ``x`` [..., in] through the input-weight rows ``rows``
        (a part of the cell's input), as separate (z/r [..., 2H], candidate [..., H]) parts:
        separate GEMMs avoid concatenating their gradients in the backward pass. The leading
        dimensions are folded into rows: under ``vmap`` (the stacked engine) ``matmul`` would
        broadcast the weight over them instead (a product and a weight gradient per time step)."""
        hd = self.hidden
        w = self.w_x[rows]
        lead = x.shape[:-1]
        flat = x.reshape(math.prod(lead), x.shape[-1])  # explicit: the input may have 0 features
        return (torch.addmm(self.b[: 2 * hd], flat, w[:, : 2 * hd]).view(*lead, 2 * hd),
                torch.addmm(self.b[2 * hd:], flat, w[:, 2 * hd:]).view(*lead, hd))

    def weights(self, rows: slice = slice(None)) -> tuple[Tensor, Tensor]:
        """Input weights of a part of the input: ([in_part, 2H], [in_part, H])."""
        w = self.w_x[rows]
        return w[:, : 2 * self.hidden], w[:, 2 * self.hidden:]

    def bias(self) -> tuple[Tensor, Tensor]:
        return self.b[: 2 * self.hidden], self.b[2 * self.hidden:]

    def step(self, x_zr: Tensor, x_n: Tensor, h: Tensor, t: int = 0) -> Tensor:
        """Projected input parts ``x_zr`` [B, 2H], ``x_n`` [B, H]; ``h`` [B, H] -> [B, H].
        ``t`` is the step index (see :func:`clip_at`)."""
        return gru_step(x_zr, x_n, h, self.w_hzr, self.w_hn, clip_at(t, self.clip))

    def recurrent_kernels(self) -> list[Tensor]:
        return [self.w_hzr, self.w_hn]


class StackedGRU(nn.Module):
    """K independent LFADS GRU cells of equal sizes run over K sequences at once."""

    compile_steps = False  # the autograd path's steps through torch.compile (:mod:`.steps`)

    def __init__(self, k: int, in_dim: int, hidden: int, clip: float = 5.0):
        super().__init__()
        self.k, self.in_dim, self.hidden, self.clip = k, in_dim, hidden, clip
        self.w_x = nn.Parameter(torch.empty(k, in_dim, 3 * hidden))
        self.b = nn.Parameter(torch.empty(k, 1, 3 * hidden))
        self.w_hzr = nn.Parameter(torch.empty(k, hidden, 2 * hidden))
        self.w_hn = nn.Parameter(torch.empty(k, hidden, hidden))
        _init_gru(self.w_x, self.b, self.w_hzr, self.w_hn, in_dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` [K, T, B, in_dim] (time-major) -> the states after each bin [K, T, B, H]."""
        k, steps, bsz, _ = x.shape
        hd = self.hidden
        flat = x.reshape(k, steps * bsz, self.in_dim)
        # One GEMM per gate group for the whole sequence, time-major so that each step's input
        # is a view. From a zero state |h| < 1 always, so clip >= 1 never binds (see clip_at).
        x_zr = torch.baddbmm(self.b[..., : 2 * hd], flat, self.w_x[..., : 2 * hd])
        x_n = torch.baddbmm(self.b[..., 2 * hd:], flat, self.w_x[..., 2 * hd:])
        x_zr, x_n = x_zr.view(k, steps, bsz, 2 * hd), x_n.view(k, steps, bsz, hd)
        h = x.new_zeros(k, bsz, hd)
        clip = self.clip if self.clip < 1 else 0.0
        if fused.usable(x):
            return fused.gru_sequence(x_zr, x_n, h, self.w_hzr, self.w_hn, clip)
        # unbind: the backward stacks the step gradients once
        states = gru_steps(x_zr.unbind(1), x_n.unbind(1), h, self.w_hzr, self.w_hn, clip,
                           self.compile_steps and step_fns.usable(x))
        return torch.stack(states, dim=1)

    def recurrent_kernels(self, i: int) -> list[Tensor]:
        return [self.w_hzr[i], self.w_hn[i]]
