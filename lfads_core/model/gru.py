"""The LFADS GRU cell, single and stacked.

The reset gate multiplies the state *before* the recurrent matrix:
``n = tanh(W_x x + b_n + W_hn (r * h))``, ``h' = z * h + (1 - z) * n``, clipped to
``±clip``. Gate biases start at 1 for z and r, 0 for n; input weights ~ N(0, 1/fan_in),
recurrent weights ~ N(0, 1/H).

For speed the input projections of a whole sequence are one GEMM (:meth:`project`), and a
stack of K independent cells with the same sizes (e.g. the forward and backward directions of
two encoders) runs as one batched matmul per step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


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

    def project(self, x: Tensor) -> Tensor:
        """Input projection with bias: [..., in_dim] -> [..., 3H]."""
        if self.in_dim == 0:
            return self.b.expand(*x.shape[:-1], 3 * self.hidden)
        return torch.matmul(x, self.w_x) + self.b

    def split(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """Projected input [..., 3H] -> (z/r part [..., 2H], candidate part [..., H])."""
        return xp.split([2 * self.hidden, self.hidden], dim=-1)

    def step(self, x_zr: Tensor, x_n: Tensor, h: Tensor) -> Tensor:
        """Projected input parts ``x_zr`` [B, 2H], ``x_n`` [B, H]; ``h`` [B, H] -> [B, H]."""
        return gru_step(x_zr, x_n, h, self.w_hzr, self.w_hn, self.clip)

    def recurrent_kernels(self) -> list[Tensor]:
        return [self.w_hzr, self.w_hn]


class StackedGRU(nn.Module):
    """K independent LFADS GRU cells of equal sizes run over K sequences at once."""

    def __init__(self, k: int, in_dim: int, hidden: int, clip: float = 5.0):
        super().__init__()
        self.k, self.in_dim, self.hidden, self.clip = k, in_dim, hidden, clip
        self.w_x = nn.Parameter(torch.empty(k, in_dim, 3 * hidden))
        self.b = nn.Parameter(torch.empty(k, 1, 3 * hidden))
        self.w_hzr = nn.Parameter(torch.empty(k, hidden, 2 * hidden))
        self.w_hn = nn.Parameter(torch.empty(k, hidden, hidden))
        _init_gru(self.w_x, self.b, self.w_hzr, self.w_hn, in_dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` [K, B, T, in_dim] -> states [K, B, T, H] (state after reading each bin)."""
        k, bsz, steps, _ = x.shape
        hd = self.hidden
        xp = torch.baddbmm(self.b, x.reshape(k, bsz * steps, self.in_dim), self.w_x)
        xp = xp.view(k, bsz, steps, 3 * hd).permute(2, 0, 1, 3).contiguous()  # [T, K, B, 3H]
        # unbind (not indexing): its backward stacks the step gradients once instead of
        # filling a full-size zero tensor per step.
        x_zr, x_n = (part.unbind(0) for part in xp.split([2 * hd, hd], dim=-1))
        h = x.new_zeros(k, bsz, hd)
        states = []
        for t in range(steps):
            h = gru_step(x_zr[t], x_n[t], h, self.w_hzr, self.w_hn, self.clip)
            states.append(h)
        return torch.stack(states, dim=2)

    def recurrent_kernels(self, i: int) -> list[Tensor]:
        return [self.w_hzr[i], self.w_hn[i]]
