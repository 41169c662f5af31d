"""Fused CPU kernels for the recurrences (``lfads_cpu.cpp``), with hand-written backward passes.

On a CPU the LFADS step is bound by the cost of some 50 small tensor operations per time bin,
forward and backward, not by arithmetic. The C++ kernels run the whole time loop of the encoder
GRUs and of the decoder (controller -> inferred input -> generator -> factors) with one loop per
step for the elementwise work and oneDNN's brgemm or torch's BLAS for the matrix products; the
weight gradients are one matrix product over all steps.

They are compiled on first use with torch's extension loader (a C++ compiler and ninja are
needed; the result is cached in a folder per source version, by default under
``~/.cache/torch_extensions``, ``TORCH_EXTENSIONS_DIR`` moves it). Where they cannot be built,
or with ``LFADS_FUSED_CPU=0``, or on a GPU, the model runs its autograd path (the same math;
the tests compare both). Under ``torch.func.vmap`` (the stacked PBT engine) the vmapped
dimension is folded into the kernels' leading stack dimension.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

_SOURCE = Path(__file__).with_name("lfads_cpu.cpp")
# OpenMP: the batch shares go to torch's intra-op threads (the extension links the libgomp.so.1
# torch has loaded, so torch.set_num_threads governs both). Where the compiler has no OpenMP
# (Apple's clang) the kernels are built without it and run each sequence on one thread.
_BUILDS = ((["-O3", "-fopenmp"], ["-fopenmp"]), (["-O3"], []))
_state: dict = {"loaded": None, "enabled": True}


def load() -> bool:
    """Build (once per source version and machine) and load the kernels; False where that fails
    (one warning) or ``LFADS_FUSED_CPU=0``."""
    if _state["loaded"] is None:
        _state["loaded"] = False
        if os.environ.get("LFADS_FUSED_CPU", "1") != "0":
            reason = ""
            for cflags, ldflags in _BUILDS:
                try:
                    _build(cflags, ldflags)
                    _register_vmap()
                    _state["loaded"] = True
                    break
                except Exception as err:  # no compiler, no headers, no OpenMP, ...
                    reason = _reason(err)
            else:
                warnings.warn(f"lfads: the fused CPU kernels could not be built ({reason[:200]}); "
                              f"using the slower autograd path", RuntimeWarning, stacklevel=3)
    return _state["loaded"]


def _build(cflags: list[str], ldflags: list[str]) -> None:
    from torch.utils.cpp_extension import load as build

    where = build_dir(flags=(cflags, ldflags))
    _clear_stale_lock(where)
    if not (where / "lfads_cpu.so").exists():
        print("lfads: compiling the fused CPU kernels (once per version, ~15 s)",
              file=sys.stderr, flush=True)
    # Copies: torch appends its own flags to the lists it is given (the folder's key would change).
    build(name="lfads_cpu", sources=[str(_SOURCE)], is_python_module=False, extra_cflags=list(cflags),
          extra_ldflags=list(ldflags), build_directory=str(where), verbose=False)


def _reason(err: Exception) -> str:
    """The telling line of a failed build (the compiler's error, a missing program) rather
    than torch's header or ninja's last words."""
    lines = [ln.strip() for ln in str(err).strip().splitlines()] or [type(err).__name__]
    telling = re.compile(r"error|not found|no such file|required", re.IGNORECASE)
    return next((ln for ln in lines[1:] if telling.search(ln) and not ln.startswith("ninja:")),
                lines[0] if len(lines) == 1 else lines[-1])


def build_dir(create: bool = True, flags=_BUILDS[0]) -> Path:
    """Where the kernels are built: a folder per source file (its place and contents), compiler
    flags, torch and Python, so that two checkouts (or versions) never rebuild each other's
    library (torch's build file names the source's path: a shared folder was rebuilt whenever
    the other checkout loaded it)."""
    key = hashlib.sha1()
    for part in (str(_SOURCE.resolve()).encode(), _SOURCE.read_bytes(), repr(tuple(flags)).encode(),
                 torch.__version__.encode(), sys.version.encode()):
        key.update(part)
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    path = Path(root) / f"lfads_cpu_{key.hexdigest()[:16]}"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def status() -> str:
    """One phrase for ``lfads-run validate``, without building anything."""
    if os.environ.get("LFADS_FUSED_CPU", "1") == "0":
        return "off (LFADS_FUSED_CPU=0)"
    if _state["loaded"] is not None:
        return "on" if _state["loaded"] else "unavailable (the autograd path runs)"
    if any((build_dir(create=False, flags=f) / "lfads_cpu.so").exists() for f in _BUILDS):
        return "built"
    return "compiled on first use (needs a C++ compiler and ninja)"


def _clear_stale_lock(where: Path, max_age_s: float = 600.0) -> None:
    """A build killed outright (kill -9) leaves torch's lock file behind, and every later build
    would wait on it for ever: one older than any build takes is removed."""
    lock = where / "lock"
    try:
        if time.time() - lock.stat().st_mtime > max_age_s:
            lock.unlink()
    except FileNotFoundError:
        pass


def usable(x: Tensor) -> bool:
    """Whether the fused kernels run for tensors like ``x`` (CPU, float32/float64)."""
    return (_state["enabled"] and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64) and load())


def set_enabled(flag: bool) -> bool:
    """Use the fused kernels where they can run (True, the default) or always the autograd path
    (False; for comparisons). Returns the previous setting."""
    previous, _state["enabled"] = _state["enabled"], bool(flag)
    return previous


def _needs_grad(*xs) -> bool:
    """Whether autograd may need the backward. Under vmap a tensor does not tell whether the
    tensor it wraps requires grad (it says False), so there any grad-enabled call does."""
    if not torch.is_grad_enabled():
        return False
    return any(isinstance(x, Tensor) and (x.requires_grad or _batched(x)) for x in xs)


def _batched(x: Tensor) -> bool:
    check = getattr(torch._C._functorch, "is_batchedtensor", None)  # no public equivalent
    return True if check is None else bool(check(x))


# ------------------------------------------------------------------------------------------- #
# GRU over a sequence
# ------------------------------------------------------------------------------------------- #


class _GRUSequence(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x_zr, x_n, h0, w_hzr, w_hn, clip):
        return tuple(torch.ops.lfads_cpu.gru_seq_fwd(x_zr, x_n, h0, w_hzr, w_hn, clip, True))

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, _, h0, w_hzr, w_hn, clip = inputs
        hs, zr, n, rh, keep = output
        ctx.mark_non_differentiable(zr, n, rh, keep)
        ctx.set_materialize_grads(False)  # no zero gradients for the saved tensors
        ctx.save_for_backward(hs, zr, n, rh, keep, h0, w_hzr, w_hn)
        ctx.clip = clip

    @staticmethod
    def backward(ctx, d_hs, *_):
        hs, zr, n, rh, keep, h0, w_hzr, w_hn = ctx.saved_tensors
        if d_hs is None:
            d_hs = torch.zeros_like(hs)
        d_zr, d_n, d_h0, d_whzr, d_whn = torch.ops.lfads_cpu.gru_seq_bwd(
            d_hs, hs, zr, n, rh, keep, h0, w_hzr, w_hn, ctx.clip)
        return d_zr, d_n, d_h0, d_whzr, d_whn, None


def gru_sequence(x_zr: Tensor, x_n: Tensor, h0: Tensor, w_hzr: Tensor, w_hn: Tensor,
                 clip: float) -> Tensor:
    """S independent LFADS GRUs over whole sequences: projected inputs ``x_zr`` [S, T, B, 2H] and
    ``x_n`` [S, T, B, H] (bias included), initial states ``h0`` [S, B, H], recurrent weights
    ``w_hzr`` [S, H, 2H], ``w_hn`` [S, H, H] -> states [S, T, B, H]. Clamping to ±``clip``
    follows :func:`.gru.clip_at`."""
    if _needs_grad(x_zr, x_n, h0, w_hzr, w_hn):
        return _GRUSequence.apply(x_zr, x_n, h0, w_hzr, w_hn, float(clip))[0]
    return torch.ops.lfads_cpu.gru_seq_fwd(x_zr, x_n, h0, w_hzr, w_hn, float(clip), False)[0]


# ------------------------------------------------------------------------------------------- #
# The decoder loop
# ------------------------------------------------------------------------------------------- #


class _Decoder(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(n_seq, n_init, eps, fmask, gmask, var_min, clip_c, clip_g, *tensors):
        seq, init, w = tensors[:n_seq], tensors[n_seq:n_seq + n_init], tensors[n_seq + n_init:]
        return tuple(torch.ops.lfads_cpu.decoder_fwd(seq, init, w, eps, fmask, gmask, var_min,
                                                     clip_c, clip_g, True))

    @staticmethod
    def setup_context(ctx, inputs, output):
        n_seq, n_init, eps, fmask, gmask, var_min, clip_c, clip_g, *tensors = inputs
        ctx.mark_non_differentiable(*output[5:])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*output, *tensors[n_seq:], eps, fmask, gmask)
        ctx.meta = (n_seq, n_init, len(output), var_min, clip_c, clip_g)

    @staticmethod
    def backward(ctx, *grads):
        n_seq, n_init, n_out, var_min, clip_c, clip_g = ctx.meta
        saved = ctx.saved_tensors
        out, init, w = saved[:n_out], saved[n_out:n_out + n_init], saved[n_out + n_init:-3]
        eps, fmask, gmask = saved[-3:]
        grads = [torch.zeros_like(o) if d is None else d for d, o in zip(grads[:5], out)]
        got = torch.ops.lfads_cpu.decoder_bwd(grads, list(out), list(init), list(w),
                                              eps, fmask, gmask, var_min, clip_c, clip_g)
        return (None,) * 8 + tuple(got)


def decoder(seq: list[Tensor], init: list[Tensor], w: list[Tensor], eps: Optional[Tensor],
            fmask: Optional[Tensor], gmask: Optional[Tensor], var_min: float, clip_c: float,
            clip_g: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The decoder loop for S stacked models. ``seq``: the controller's and generator's projected
    inputs (c_zr [S, T, B, 2C], c_n [S, T, B, C], g_zr [S, T, B, 2G], g_n [S, T, B, G]);
    ``init``: g0 [S, B, G], f0 [S, B, F], c0 [S, B, C]; ``w``: w_fzr [S, F, 2C], w_fn [S, F, C],
    controller w_hzr [S, C, 2C], w_hn [S, C, C], to_co weight [S, C, 2U] and bias [S, 1, 2U],
    w_uzr [S, U, 2G], w_un [S, U, G], generator w_hzr [S, G, 2G], w_hn [S, G, G], factor weights
    [S, G, F]; ``eps`` [S, T, B, U] when sampling; dropout masks ``fmask`` [S, T, B, F] (applied to
    f_{t-1} before the controller) and ``gmask`` [S, T, B, G] (applied to g_t before the factors).
    Returns factors, generator states, inferred inputs u, their posterior means and stds."""
    tensors = (*seq, *init, *w)
    if _needs_grad(*tensors):
        out = _Decoder.apply(len(seq), len(init), eps, fmask, gmask, float(var_min), float(clip_c),
                             float(clip_g), *tensors)
    else:
        out = torch.ops.lfads_cpu.decoder_fwd(list(seq), list(init), list(w), eps, fmask, gmask,
                                              float(var_min), float(clip_c), float(clip_g), False)
    return tuple(out[:5])


# ------------------------------------------------------------------------------------------- #
# vmap: fold the vmapped dimension into the stack dimension S
# ------------------------------------------------------------------------------------------- #


def _fold(x, bdim, size: int):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [_fold(t, d, size) for t, d in zip(x, bdim)]
    x = x.movedim(bdim, 0) if bdim is not None else x.unsqueeze(0).expand(size, *x.shape)
    return x.reshape(size * x.shape[1], *x.shape[2:])


def _unfold(outs, size: int):
    outs = [o.reshape(size, o.shape[0] // size, *o.shape[1:]) for o in outs]
    return outs, [0] * len(outs)


def _folding(op):
    def rule(info, in_dims, *args):
        folded = [_fold(a, d, info.batch_size) if isinstance(a, (Tensor, list, tuple)) or a is None
                  else a for a, d in zip(args, in_dims)]
        with torch.no_grad():  # gradients: the autograd.Functions above, vmapped
            return _unfold(op(*folded), info.batch_size)
    return rule


def _register_vmap() -> None:
    for name in ("gru_seq_fwd", "gru_seq_bwd", "decoder_fwd", "decoder_bwd"):
        op = getattr(torch.ops.lfads_cpu, name)
        torch.library.register_vmap(f"lfads_cpu::{name}", _folding(op.default))
