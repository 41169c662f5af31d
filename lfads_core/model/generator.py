"""Generator ``gru``: the LFADS decoder (generator GRU, optional controller, factors)."""

from __future__ import annotations

import math
from typing import Optional

import attrs
import torch
from torch import Tensor, nn

from ..components import Generator
from ..protocols import GeneratorOutput
from ..spec.validators import ge
from . import fused
from . import steps as step_fns
from .dropout import dropout_masks
from .gru import GRUCell, gru_steps


@attrs.frozen
class GRUGeneratorConfig:
    gen_dim: int = attrs.field(default=100, validator=ge(1))
    con_dim: int = attrs.field(default=64, validator=ge(0))
    co_dim: int = attrs.field(default=4, validator=ge(0))
    fac_dim: int = attrs.field(default=40, validator=ge(1))
    cell_clip: float = attrs.field(default=5.0, validator=ge(0.0))
    co_post_var_min: float = attrs.field(default=1e-4, validator=ge(0.0))


def _normal_(w: Tensor, fan_in: int) -> None:
    with torch.no_grad():
        w.normal_(0.0, 1.0 / math.sqrt(max(fan_in, 1)))


def _drop(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    return x if mask is None else x * mask


class GRUGenerator(Generator):
    """g_0 = Linear(dropout(z_ic)); each step t:
    c_t = GRU_con(dropout([ci_t ; f_{t-1}]), c_{t-1}); (mean, logvar) = Linear(c_t);
    u_t ~ N(mean, exp(logvar) + co_post_var_min) when sampling, else its mean;
    g_t = GRU_gen([u_t ; ext_t], g_{t-1}); f_t = W_f dropout(g_t), rows of W_f of unit norm.

    The controller exists when con_dim, co_dim and the encoder's ci_dim are all > 0; otherwise
    the generator is autonomous apart from the measured external inputs ``ext``.

    Speed: everything that does not depend on the recurrence (the encoder part of the
    controller input, external inputs, biases, dropout masks, sampling noise) is computed for
    all steps at once before the loop; on the CPU the loop runs in the fused kernels of
    :mod:`.fused` (same math, hand-written backward).
    """

    Config = GRUGeneratorConfig
    compile_steps = False  # the autograd path's steps through torch.compile (:mod:`.steps`)

    @classmethod
    def wants_controller_inputs(cls, config: GRUGeneratorConfig) -> bool:
        return config.con_dim > 0 and config.co_dim > 0

    def __init__(self, config: GRUGeneratorConfig, ic_dim: int, ci_dim: int = 0, ext_dim: int = 0):
        super().__init__()
        self.config = config
        self.ext_dim = ext_dim
        self.use_con = self.wants_controller_inputs(config) and ci_dim > 0
        self.co_dim = config.co_dim if self.use_con else 0
        self.fac_dim = config.fac_dim
        gen, fac = config.gen_dim, config.fac_dim
        self.ic_to_g0 = nn.Linear(ic_dim, gen)
        _normal_(self.ic_to_g0.weight, ic_dim)
        nn.init.zeros_(self.ic_to_g0.bias)
        self.gen = GRUCell(self.co_dim + ext_dim, gen, config.cell_clip)
        self.w_fac = nn.Parameter(torch.empty(fac, gen))
        _normal_(self.w_fac, gen)
        if self.use_con:
            con = config.con_dim
            self.con = GRUCell(ci_dim + fac, con, config.cell_clip)
            self.con_h0 = nn.Parameter(torch.zeros(con))
            self.to_co = nn.Linear(con, 2 * self.co_dim)
            _normal_(self.to_co.weight, con)
            nn.init.zeros_(self.to_co.bias)

    def factor_weights(self) -> Tensor:
        """W_f^T with unit-norm rows of W_f: [G, F]."""
        return (self.w_fac / self.w_fac.norm(dim=1, keepdim=True)).t()

    def forward(self, ic: Tensor, ci: Optional[Tensor], ext: Optional[Tensor], recon_len: int,
                sample: bool, dropout: float | Tensor, repeats: int = 1) -> GeneratorOutput:
        """``ic`` [B, Z]; ``ci`` [B / repeats, T_r, C_in] or None; ``ext`` [B / repeats, T_r, E]
        or None. With ``repeats`` > 1 each trial's ``ci``/``ext`` drive ``repeats`` consecutive
        rows of ``ic`` (posterior samples); their projections are computed once per trial."""
        train = self.training
        rep = (lambda x: x) if repeats == 1 else (lambda x: x.repeat_interleave(repeats, dim=1))
        steps, bsz = recon_len, ic.shape[0]
        g = self.ic_to_g0(_drop(ic, dropout_masks(ic.shape, dropout, ic, train)))
        w_f = self.factor_weights()
        gen, co = self.gen, self.co_dim
        gen_dim = self.config.gen_dim
        # Generator input that does not depend on the loop (external inputs and bias), time-major.
        if ext is not None and self.ext_dim > 0:
            g_zr, g_n = (rep(p) for p in gen.project(ext.transpose(0, 1), slice(co, None)))
        else:
            g_zr, g_n = (b.expand(steps, bsz, -1) for b in gen.bias())
        g_masks = dropout_masks((steps, bsz, gen_dim), dropout, ic, train)
        use_fused = fused.usable(ic)
        if not self.use_con:
            if use_fused:
                gen_states = fused.gru_sequence(g_zr[None], g_n[None], g[None], gen.w_hzr[None],
                                                gen.w_hn[None], gen.clip)[0].transpose(0, 1)
            else:
                # per-step views; unbind has a cheap backward
                states = gru_steps(g_zr.unbind(0), g_n.unbind(0), g, gen.w_hzr, gen.w_hn, gen.clip,
                                   self.compile_steps and step_fns.usable(ic))
                gen_states = torch.stack(states, dim=1)
            drop = None if g_masks is None else g_masks.transpose(0, 1)
            factors = torch.matmul(_drop(gen_states, drop), w_f)
            return GeneratorOutput(factors, gen_states, None, None, None)

        con = self.con
        cin = ci.shape[-1]
        ci_drop = _drop(ci, dropout_masks(ci.shape, dropout, ci, train))
        # Encoder part of the controller input, all steps at once, time-major [T_r, B, 2C | C].
        c_zr, c_n = (rep(p) for p in con.project(ci_drop.transpose(0, 1), slice(None, cin)))
        w_f_zr, w_f_n = con.weights(slice(cin, None))
        w_gen_u_zr, w_gen_u_n = gen.weights(slice(None, co))
        f_masks = dropout_masks((steps + 1, bsz, self.fac_dim), dropout, ic, train)
        eps = torch.randn(steps, bsz, co, dtype=ic.dtype, device=ic.device) if sample else None
        var_min = self.config.co_post_var_min
        c = self.con_h0.expand(bsz, -1)
        f = torch.matmul(_drop(g, None if g_masks is None else dropout_masks(g.shape, dropout, g, True)), w_f)
        if use_fused:
            one = lambda x: None if x is None else x[None]  # noqa: E731  (stack dimension S = 1)
            out = fused.decoder(
                [c_zr[None], c_n[None], g_zr[None], g_n[None]], [g[None], f[None], c[None]],
                [w[None] for w in (w_f_zr, w_f_n, con.w_hzr, con.w_hn, self.to_co.weight.t(),
                                   self.to_co.bias.view(1, -1), w_gen_u_zr, w_gen_u_n, gen.w_hzr,
                                   gen.w_hn, w_f)],
                one(eps), None if f_masks is None else f_masks[None, :steps], one(g_masks),
                var_min, con.clip, gen.clip)
            fs, gs, us, means, stds = (x[0].transpose(0, 1) for x in out)
            return GeneratorOutput(fs, gs, us, means, stds)
        c_zr, c_n, g_zr, g_n = (x.unbind(0) for x in (c_zr, c_n, g_zr, g_n))  # per-step views
        eps = eps.unbind(0) if sample else None
        gs, fs, means, stds, us = [], [], [], [], []
        compiled = self.compile_steps and step_fns.usable(ic)
        if compiled:  # each gate one product over [input | state] (steps.decoder_step)
            w = (torch.cat([w_f_zr, con.w_hzr]), torch.cat([w_f_n, con.w_hn]), self.to_co.weight.t(),
                 self.to_co.bias, torch.cat([w_gen_u_zr, gen.w_hzr]), torch.cat([w_gen_u_n, gen.w_hn]),
                 w_f, var_min, con.clip, gen.clip)
            c = c.contiguous()  # as every later state is: one compiled graph for all steps
        for t in range(steps):
            if compiled:
                f, g, c, u, mean, std = step_fns.run(
                    step_fns.decoder_step, c_zr[t], c_n[t], g_zr[t], g_n[t], f,
                    None if f_masks is None else f_masks[t], c, g, eps[t] if sample else None,
                    None if g_masks is None else g_masks[t], *w)
            else:
                fd = f if f_masks is None else f * f_masks[t]
                c = con.step(torch.addmm(c_zr[t], fd, w_f_zr), torch.addmm(c_n[t], fd, w_f_n), c, t)
                mean, logvar = self.to_co(c).chunk(2, dim=-1)
                std = torch.sqrt(torch.exp(logvar) + var_min)
                u = torch.addcmul(mean, std, eps[t]) if sample else mean
                g = gen.step(torch.addmm(g_zr[t], u, w_gen_u_zr), torch.addmm(g_n[t], u, w_gen_u_n), g, t)
                f = torch.matmul(g if g_masks is None else g * g_masks[t], w_f)
            gs.append(g)
            fs.append(f)
            means.append(mean)
            stds.append(std)
            us.append(u)
        stack = lambda xs: torch.stack(xs, dim=1)  # noqa: E731
        return GeneratorOutput(stack(fs), stack(gs), stack(us), stack(means), stack(stds))

    def l2_groups(self) -> dict[str, list[Tensor]]:
        groups = {"gen": self.gen.recurrent_kernels()}
        if self.use_con:
            groups["con"] = self.con.recurrent_kernels()
        return groups
