"""One recurrent step as one function, for ``torch.compile`` (``train.compile: on``).

On a GPU the model is bound by kernel launches: the autograd path runs some 30 small kernels per
time bin forward and more backward. Compiled, a step's elementwise work between its matrix
products fuses into a few kernels, and each GRU gate is one product over its stacked input and
recurrent weights (``[input | h] @ [[W_x]; [W_h]]``). The math is that of :mod:`.gru` and
:mod:`.generator` (the tests compare them); the clamp to ±clip is applied at every step, which
gives the same values and gradients as clamping only where it can bind (:func:`.gru.clip_at`).

Compiling happens on the first call of each function (and again for new shapes, gradient modes,
up to :data:`VARIANTS` of each function); where it fails
(no Triton for the GPU, no C++ compiler, an unsupported torch) one warning is printed and the
same functions run uncompiled. The CPU has the fused kernels of :mod:`.fused` instead; under
``vmap`` (the stacked engine) the steps run uncompiled.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Optional

import torch
from torch import Tensor


def _clamp(h: Tensor, clip: float) -> Tensor:
    return h.clamp(-clip, clip) if clip > 0 else h


def _gate(x_zr: Tensor, x_n: Tensor, inp: Optional[Tensor], h: Tensor, w1: Tensor, w2: Tensor,
          clip: float) -> Tensor:
    """GRU update from projected inputs ``x_zr``/``x_n``, the step's extra input ``inp`` (None:
    none) and the state ``h``; ``w1`` = [[W_x,zr]; [W_h,zr]], ``w2`` = [[W_x,n]; [W_h,n]]."""
    cat = (lambda a: a) if inp is None else (lambda a: torch.cat([inp, a], dim=-1))
    zr = torch.sigmoid(x_zr + torch.matmul(cat(h), w1))
    z, r = zr.chunk(2, dim=-1)
    n = torch.tanh(x_n + torch.matmul(cat(r * h), w2))
    return _clamp(torch.lerp(n, h, z), clip)


def gru_cell(x_zr: Tensor, x_n: Tensor, h: Tensor, w_hzr: Tensor, w_hn: Tensor,
             clip: float) -> Tensor:
    """One step of (a stack of) LFADS GRUs: ``x_zr`` [..., B, 2H], ``x_n`` [..., B, H] projected
    inputs with bias, ``h`` [..., B, H], ``w_hzr`` [..., H, 2H], ``w_hn`` [..., H, H]."""
    return _gate(x_zr, x_n, None, h, w_hzr, w_hn, clip)


def decoder_step(c_zr: Tensor, c_n: Tensor, g_zr: Tensor, g_n: Tensor, f: Tensor,
                 fmask: Optional[Tensor], c: Tensor, g: Tensor, eps: Optional[Tensor],
                 gmask: Optional[Tensor], w1c: Tensor, w2c: Tensor, w_co: Tensor, b_co: Tensor,
                 w1g: Tensor, w2g: Tensor, w_f: Tensor, var_min: float, clip_c: float,
                 clip_g: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One decoder step: controller on [f_{t-1} * fmask | ci_t] (its ci part projected in
    ``c_zr``/``c_n``), inferred input u ~ N(mean, std) (its mean without ``eps``), generator
    on [u | ext_t] (ext part in ``g_zr``/``g_n``), factors of g_t * gmask. ``w1c`` = [[W_f,zr];
    [W_c,zr]], ``w2c`` likewise for n; ``w1g``/``w2g`` the generator's [[W_u]; [W_g]].
    Returns (f_t, g_t, c_t, u_t, mean_t, std_t)."""
    fd = f if fmask is None else f * fmask
    c = _gate(c_zr, c_n, fd, c, w1c, w2c, clip_c)
    mean, logvar = torch.addmm(b_co, c, w_co).chunk(2, dim=-1)
    std = torch.sqrt(torch.exp(logvar) + var_min)
    u = mean if eps is None else mean + std * eps
    g = _gate(g_zr, g_n, u, g, w1g, w2g, clip_g)
    f = torch.matmul(g if gmask is None else g * gmask, w_f)
    return f, g, c, u, mean, std


_compiled: dict[Callable, Callable] = {}
_failed: dict[Callable, str] = {}


#: Compiled variants one step function may have. A model's steps meet many: state with and
#: without gradient (the first step's), training and validation (grad mode), every GRU size and
#: batch size (a ragged last batch). torch's default of 8 per function was exceeded by a small
#: model with two encoder sizes on the GPU machine, and then that step ran uncompiled.
VARIANTS = 64


def _prepare() -> None:
    """Before the first compile: allow :data:`VARIANTS`, and silence the compiler's advice to
    use TF32 for float32 matrix products (printed at the first compile on every recent GPU):
    lfads keeps float32 products, whose results match the CPU's."""
    warnings.filterwarnings("ignore", message="TensorFloat32 tensor cores for float32 matrix "
                            "multiplication available but not enabled", category=UserWarning)
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # torch >= 2.7 / before
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), VARIANTS))
            return


def run(fn: Callable, *args):
    """``fn(*args)`` through its ``torch.compile`` d version; uncompiled (after one warning)
    once compiling it failed."""
    if fn in _failed:
        return fn(*args)
    if fn not in _compiled:
        _prepare()
        _compiled[fn] = torch.compile(fn, fullgraph=True)
    try:
        return _compiled[fn](*args)
    except torch.OutOfMemoryError:
        raise  # the step itself, not compiling it: the caller's problem as without compile
    except Exception as err:  # noqa: BLE001 - no Triton, no compiler, ...: run it as it is
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise  # the capture of a CUDA graph failed, not compiling: graphs.StepGraphs decides
        lines = str(err).strip().splitlines()
        _failed[fn] = f"{type(err).__name__}: {lines[0][:200] if lines else ''}"
        warnings.warn(f"lfads: train.compile: compiling {fn.__name__} failed ({_failed[fn]}); "
                      f"running it uncompiled", RuntimeWarning, stacklevel=2)
        return fn(*args)


@contextlib.contextmanager
def uncompiled(model: torch.nn.Module):
    """The steps of ``model`` uncompiled inside the block, as they were after it. Posterior
    sampling runs so: its passes are batch sizes (and an inference mode) training never saw, and
    compiling each would take longer than the pass."""
    switched = _switchable(model)
    before = [m.compile_steps for m in switched]
    try:
        for m in switched:
            m.compile_steps = False
        yield model
    finally:
        for m, on in zip(switched, before):
            m.compile_steps = on


def compile_steps(model: torch.nn.Module, on: bool) -> None:
    """Switch the compiled steps of every component of ``model`` that has them (the core's GRU
    generator and stacked encoder GRUs: a ``compile_steps`` class attribute) on or off."""
    for module in _switchable(model):
        module.compile_steps = on


def _switchable(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of ``model`` whose class declares ``compile_steps``."""
    return [m for m in model.modules() if hasattr(type(m), "compile_steps")]


def usable(x: Tensor) -> bool:
    """Whether compiled steps may run for tensors like ``x`` (not under vmap or grad of
    torch.func, whose wrapped tensors the compiled functions are not traced for)."""
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return not (check is not None and check(x))
