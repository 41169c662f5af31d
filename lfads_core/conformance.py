"""Conformance checks of components: outputs of the documented shapes, and nothing else.

Three uses:

- :func:`check_model` runs one tiny batch of real trials through an assembled model, component by
  component (``lfads-run validate`` and the start of every run), so a component that breaks its
  contract is named, with its distribution, before anything is written;
- :func:`component_problems` builds one component class alone at small sizes and checks it
  (``lfads-run plugins --check``);
- :func:`assert_conforms` is the same for a plugin's own tests::

      from lfads_core.conformance import assert_conforms
      def test_my_prior_conforms():
          assert_conforms("prior", StudentTPrior)

Every problem is one line: ``<what>: <method> returned ..., expected ...``.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .components import AugmentContext, DataSizes
from .data.stats import DataStats
from .errors import PluginError
from .protocols import Batch, EncoderOutput, GeneratorOutput

__all__ = ["ComponentError", "check_model", "component_problems", "assert_conforms"]


# Names of metrics.csv columns (after train_/valid_) a reconstruction's epoch metric may not take.
RESERVED_METRICS = {"loss", "recon", "kl_ic", "kl_co", "penalty", "l2", "recon_smooth"}


class ComponentError(PluginError):
    """A component broke its contract (wrong output type or shape, or it raised)."""


class Checker:
    """Calls a component's methods and checks their outputs; problems name ``who``."""

    def __init__(self, who: str):
        self.who = who

    def fail(self, text: str):
        raise ComponentError(f"{self.who}: {text}")

    def call(self, method: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ComponentError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a component is reported
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.fail(f"{method} raised {type(exc).__name__}: {text}")

    def tensor(self, method: str, value, shape: Sequence[Optional[int]], what: str,
               finite: bool = True) -> Tensor:
        if not isinstance(value, Tensor):
            self.fail(f"{method} returned {type(value).__name__}, expected a tensor {_fmt(shape)} ({what})")
        if value.dim() != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
            self.fail(f"{method} returned shape {_fmt(value.shape)}, expected {_fmt(shape)} ({what})")
        if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            self.fail(f"{method} returned non-finite values ({what})")
        return value

    def int_attr(self, obj, name: str, low: int) -> int:
        value = getattr(obj, name, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            self.fail(f"{name} must be an integer >= {low} set in __init__, got {value!r}")
        return value


def _fmt(shape) -> str:
    return "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"


# -- one component, given its inputs -------------------------------------------------------
def check_readin(c: Checker, readin, x: Tensor) -> Tensor:
    d = c.int_attr(readin, "out_dim", 1)
    return c.tensor("forward", c.call("forward", readin, x), (*x.shape[:2], d), "[B, T, D]")


def check_encoder(c: Checker, encoder, x: Tensor, recon_len: int, dropout: float) -> EncoderOutput:
    z, ci_dim = c.int_attr(encoder, "ic_dim", 1), c.int_attr(encoder, "ci_dim", 0)
    out = c.call("forward", encoder, x, recon_len=recon_len, dropout=dropout)
    if not isinstance(out, EncoderOutput):
        c.fail(f"forward returned {type(out).__name__}, expected lfads_core.EncoderOutput")
    b = x.shape[0]
    c.tensor("forward", out.ic_mean, (b, z), "ic_mean [B, Z]")
    std = c.tensor("forward", out.ic_std, (b, z), "ic_std [B, Z]")
    if not bool((std > 0).all()):
        c.fail("forward returned ic_std with values <= 0 (a standard deviation, not a log-variance)")
    if ci_dim == 0 and out.ci is not None:
        c.fail("forward returned controller inputs ci although ci_dim is 0")
    if ci_dim > 0:
        c.tensor("forward", out.ci, (b, recon_len, ci_dim), "ci [B, T_r, C_in]")
    _check_l2_groups(c, encoder)
    return out


def check_generator(c: Checker, generator, ic: Tensor, ci: Optional[Tensor], ext: Optional[Tensor],
                    recon_len: int, dropout: float, repeats: int = 1) -> GeneratorOutput:
    f, u = c.int_attr(generator, "fac_dim", 1), c.int_attr(generator, "co_dim", 0)
    out = c.call("forward", generator, ic, ci, ext, recon_len=recon_len, sample=True,
                 dropout=dropout, repeats=repeats)
    if not isinstance(out, GeneratorOutput):
        c.fail(f"forward returned {type(out).__name__}, expected lfads_core.GeneratorOutput")
    b = ic.shape[0]
    rows = f" with repeats={repeats}" if repeats > 1 else ""
    c.tensor("forward", out.factors, (b, recon_len, f), f"factors [B, T_r, F]{rows}")
    c.tensor("forward", out.gen_states, (b, recon_len, None), f"gen_states [B, T_r, G]{rows}")
    if u > 0:
        for name in ("gen_inputs", "co_means", "co_stds"):
            c.tensor("forward", getattr(out, name), (b, recon_len, u), f"{name} [B, T_r, U]{rows}")
    _check_l2_groups(c, generator)
    return out


def _check_l2_groups(c: Checker, module) -> None:
    groups = c.call("l2_groups", module.l2_groups)
    if not isinstance(groups, dict) or not all(
            isinstance(k, str) and isinstance(v, (list, tuple)) and all(isinstance(t, Tensor) for t in v)
            for k, v in groups.items()):
        c.fail("l2_groups returned something other than {group: [tensors]}")


def check_readout(c: Checker, readout, factors: Tensor, out_dim: int) -> Tensor:
    return c.tensor("forward", c.call("forward", readout, factors), (*factors.shape[:2], out_dim),
                    "[B, T, N*P]")


def check_prior(c: Checker, prior, mean: Tensor, std: Tensor) -> Tensor:
    what = "KL summed over every non-batch dimension: [B]"
    kl = c.tensor("kl", c.call("kl", prior.kl, mean, std), (mean.shape[0],), what)
    again = c.call("kl", prior.kl, mean, std)
    deterministic = isinstance(again, Tensor) and torch.equal(again, kl)  # not a Monte Carlo estimate
    if deterministic and bool((kl < -1e-3 * (1 + kl.abs())).any()):
        c.fail(f"kl returned negative values (min {float(kl.min()):.4g}); a KL divergence is >= 0")
    return kl


def check_reconstruction(c: Checker, recon, params: Tensor, data: Tensor,
                         mask: Optional[Tensor] = None) -> None:
    shape = tuple(data.shape)
    mask = torch.ones_like(data) if mask is None else mask
    nll = c.tensor("nll", c.call("nll", recon.nll, params, data), shape, "per-element NLL [B, T, N]",
                   finite=False)
    if not bool(torch.isfinite(nll[mask > 0]).all()):
        c.fail("nll returned non-finite values for observed data (is the data in the "
               "reconstruction's support?)")
    c.tensor("mean", c.call("mean", recon.mean, params), shape, "[B, T, N]")
    penalty = c.call("penalty", recon.penalty)
    if not isinstance(penalty, Tensor) or penalty.numel() != 1:
        c.fail(f"penalty returned {_describe(penalty)}, expected a scalar tensor")
    extra = c.call("epoch_metrics", recon.epoch_metrics, params, data, mask)
    if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) and v.numel() == 1
                                              for k, v in extra.items()):
        c.fail(f"epoch_metrics returned {_describe(extra)}, expected {{name: scalar tensor}}")
    taken = sorted(set(extra) & RESERVED_METRICS)
    if taken:
        c.fail(f"epoch_metrics names {taken} are columns of metrics.csv already; choose other names")
    for name in ("units", "support"):
        if not isinstance(getattr(recon, name, None), str):
            c.fail(f"{name} must be a string, got {getattr(recon, name, None)!r}")
    from . import metrics as core_metrics

    unknown = [m for m in getattr(recon, "metrics", ()) if m not in core_metrics.APPLICABLE]
    if unknown:
        c.fail(f"metrics names unknown core metrics {unknown} (known: {', '.join(core_metrics.APPLICABLE)})")


def check_init_params(c: Checker, recon, stats: DataStats, n: int) -> Tensor:
    bias = c.call("init_params", recon.init_params, stats)
    return c.tensor("init_params", bias, (n, recon.n_params), "readout bias [N, P]")


def check_augmentation(c: Checker, aug, batch: Batch, epoch: int = 1) -> Batch:
    """Both modes; the output keeps every shape and dtype, and its random draws come from
    ``ctx.generator`` only (the same seed gives the same batch whatever the global RNG)."""
    out = batch
    for training in (True, False):
        results = []
        for global_seed in (1, 2):
            torch.manual_seed(global_seed)
            ctx = AugmentContext(training=training, epoch=epoch, generator=torch.Generator().manual_seed(7))
            results.append(_augment_once(c, aug, batch, ctx))
        a, b = results
        for name in ("encod", "recon", "loss_mask", "grad_mask"):
            if not torch.equal(getattr(a, name), getattr(b, name)):
                c.fail(f"__call__ (training={training}) gives different {name} for the same "
                       f"ctx.generator seed: draw random numbers from ctx.generator, not the global "
                       f"torch RNG (a resumed run must reproduce them)")
        if training:
            out = a
    return out


def _augment_once(c: Checker, aug, batch: Batch, ctx: AugmentContext) -> Batch:
    mode = f"training={ctx.training}"
    out = c.call("__call__", aug, batch, ctx)
    if not isinstance(out, Batch):
        c.fail(f"__call__ ({mode}) returned {type(out).__name__}, expected a Batch (batch.replace(...))")
    for name in ("encod", "recon", "loss_mask", "grad_mask", "ext"):
        before, after = getattr(batch, name), getattr(out, name)
        if before is None:
            continue
        if not isinstance(after, Tensor) or after.shape != before.shape:
            c.fail(f"__call__ ({mode}) changed the shape of {name}: {_fmt(before.shape)} -> "
                   f"{_fmt(getattr(after, 'shape', ()))}")
        if after.dtype != before.dtype:
            c.fail(f"__call__ ({mode}) changed the dtype of {name}: {before.dtype} -> {after.dtype}")
    if not bool(torch.isfinite(out.encod).all()):
        c.fail(f"__call__ ({mode}) left non-finite values in encod (the model input)")
    return out


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {_fmt(value.shape)}"
    return type(value).__name__


# -- a whole model on real trials ----------------------------------------------------------
def check_model(model, augmentations: Sequence, batch: Batch, who: dict[str, str],
                sizes: DataSizes) -> None:
    """One tiny batch of real trials through every component, with checked outputs, then the
    loss and its backward pass. ``who`` maps ``readin``, ``encoder``, ``generator``, ``readout``,
    ``reconstruction``, ``ic_prior``, ``co_prior``, ``augmentations.<i>`` to how errors name the
    component (``prior 'x' from dist 1.0``). Raises :class:`ComponentError`; leaves the model's
    training mode, gradients and the global RNG as they were."""
    rng = torch.get_rng_state()
    mode = model.training
    try:
        for i, aug in enumerate(augmentations):
            c = Checker(f"model.augmentations.{i}: {who[f'augmentations.{i}']}")
            problem = c.call("check", aug.check, sizes)
            if problem is not None and not isinstance(problem, str):
                c.fail(f"check returned {_describe(problem)}, expected a string or None")
            batch = check_augmentation(c, aug, batch)
        _check_model_forward(model, batch, who)
    finally:
        model.train(mode)
        model.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)


def _check_model_forward(model, batch: Batch, who: dict[str, str]) -> None:
    session = batch.session
    shape = model.sessions[session]
    model.train(True)
    p = float(model.dropout_rate)
    with torch.no_grad():
        y = check_readin(Checker(f"model.readin: {who['readin']}"), model.readins[session], batch.encod)
        enc = check_encoder(Checker(f"model.encoder: {who['encoder']}"), model.encoder, y, shape.t_out, p)
        c = Checker(f"model.generator: {who['generator']}")
        gen = check_generator(c, model.generator, enc.ic_mean, enc.ci, batch.ext, shape.t_out, p)
        rep = enc.ic_mean.repeat_interleave(2, dim=0)
        check_generator(c, model.generator, rep, enc.ci, batch.ext, shape.t_out, p, repeats=2)
        recon = model.reconstructions[session]
        n_out = shape.n_out * recon.n_params
        raw = check_readout(Checker(f"model.readout: {who['readout']}"), model.readouts[session],
                            gen.factors, n_out)
        params = raw.view(*raw.shape[:-1], shape.n_out, recon.n_params)
        check_reconstruction(Checker(f"model.reconstruction: {who['reconstruction']}"), recon,
                             params, batch.recon, batch.loss_mask)
        check_prior(Checker(f"model.ic_prior: {who['ic_prior']}"), model.ic_prior, enc.ic_mean, enc.ic_std)
        if model.co_prior is not None and gen.co_means is not None:
            check_prior(Checker(f"model.co_prior: {who['co_prior']}"), model.co_prior,
                        gen.co_means, gen.co_stds)
    c = Checker("model")
    out = c.call("forward", model, batch.encod, session=session, ext=batch.ext, sample=True)
    terms = c.call("losses", model.losses, out, batch)
    total = sum(v.reshape(()) for v in terms.values())
    if not bool(torch.isfinite(total)):
        bad = [k for k, v in terms.items() if not bool(torch.isfinite(v).all())]
        c.fail(f"the loss of a first batch is not finite ({', '.join(bad)}); check the data's support "
               f"and the reconstruction's init_params")
    c.call("backward", total.backward)


# -- one component class alone -------------------------------------------------------------
_B, _T, _N, _Z, _U, _F, _CI, _E = 3, 6, 4, 3, 2, 5, 4, 2


def component_problems(kind: str, cls: type, config: Any = None) -> list[str]:
    """Problems of a component class built alone at small sizes (empty list: it conforms).
    ``config`` defaults to ``cls.Config()``; the class checks of the registry come first."""
    from .registry import class_problems

    problems = class_problems(kind, cls)
    if problems:
        return problems
    if config is None:
        try:
            config = cls.Config()
        except Exception as exc:  # noqa: BLE001
            return [f"cannot build {cls.__name__}.Config() with its defaults to check it "
                    f"({type(exc).__name__}: {exc}); pass a config"]
    c = Checker(cls.__name__)
    rng = torch.get_rng_state()
    torch.manual_seed(0)
    try:
        _CHECKS[kind](c, cls, config)
    except ComponentError as exc:
        return [str(exc)]
    finally:
        torch.set_rng_state(rng)
    return []


def assert_conforms(kind: str, cls: type, config: Any = None) -> None:
    """``AssertionError`` listing the problems of :func:`component_problems`, for tests."""
    problems = component_problems(kind, cls, config)
    assert not problems, "; ".join(problems)


def _alone_readin(c, cls, config):
    check_readin(c, c.call("__init__", cls, config, in_dim=_N), torch.randn(_B, _T, _N))


def _alone_encoder(c, cls, config):
    for want_ci in (True, False):
        enc = c.call("__init__", cls, config, in_dim=_N, want_ci=want_ci)
        for dropout in (0.0, 0.3):
            enc.train(dropout > 0)
            check_encoder(c, enc, torch.randn(_B, _T, _N), _T + 2, dropout)


def _alone_generator(c, cls, config):
    want = bool(c.call("wants_controller_inputs", cls.wants_controller_inputs, config))
    for ext_dim in (0, _E):
        ci_dim = _CI if want else 0
        gen = c.call("__init__", cls, config, ic_dim=_Z, ci_dim=ci_dim, ext_dim=ext_dim)
        ci = torch.randn(_B, _T, ci_dim) if ci_dim else None
        ext = torch.randn(_B, _T, ext_dim) if ext_dim else None
        check_generator(c, gen, torch.randn(_B, _Z), ci, ext, _T, 0.1)
        check_generator(c, gen, torch.randn(2 * _B, _Z), ci, ext, _T, 0.1, repeats=2)


def _alone_readout(c, cls, config):
    readout = c.call("__init__", cls, config, in_dim=_F, out_dim=_N * 2)
    check_readout(c, readout, torch.randn(_B, _T, _F), _N * 2)
    c.call("init_bias", readout.init_bias, torch.zeros(_N, 2))


def _alone_prior(c, cls, config):
    prior = c.call("__init__", cls, config, shape=(_Z,))
    check_prior(c, prior, torch.randn(_B, _Z), torch.rand(_B, _Z) + 0.1)
    prior = c.call("__init__", cls, config, shape=(_U,))
    check_prior(c, prior, torch.randn(_B, _T, _U), torch.rand(_B, _T, _U) + 0.1)


def _alone_reconstruction(c, cls, config):
    recon = c.call("__init__", cls, config, n_channels=_N)
    data = np.abs(np.random.default_rng(0).normal(2.0, 1.0, size=(8, _T, _N))).round().astype(np.float32)
    stats = DataStats.from_array(data)
    check_init_params(c, recon, stats, _N)
    params = torch.randn(_B, _T, _N, recon.n_params) * 0.3
    target = c.tensor("mean", c.call("mean", recon.mean, params), (_B, _T, _N), "[B, T, N]").detach()
    check_reconstruction(c, recon, params, target)
    problem = c.call("check_data", recon.check_data, data)
    if problem is not None and not isinstance(problem, str):
        c.fail(f"check_data returned {_describe(problem)}, expected a string or None")
    extra = c.call("evaluate", recon.evaluate, target.numpy(), data[:_B])
    if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, (int, float))
                                              and not isinstance(v, bool) for k, v in extra.items()):
        c.fail(f"evaluate returned {_describe(extra)}, expected {{name: float}}")


def _alone_augmentation(c, cls, config):
    aug = c.call("__init__", cls, config)
    for name in getattr(aug, "hyperparameters", ()):
        value = getattr(aug, name, None)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            c.fail(f"hyperparameter '{name}' must be a float attribute, got {value!r}")
    sizes = DataSizes(t_in=_T, n_in=_N, t_out=_T, n_out=_N, ext_dim=0, n_train=_B)
    problem = c.call("check", aug.check, sizes)
    if problem is not None and not isinstance(problem, str):
        c.fail(f"check returned {_describe(problem)}, expected a string or None")
    x = torch.poisson(torch.full((_B, _T, _N), 2.0))
    batch = Batch(encod=x.clone(), recon=x.clone(), loss_mask=torch.ones_like(x),
                  grad_mask=torch.ones_like(x, dtype=torch.bool), index=torch.arange(_B))
    check_augmentation(c, aug, batch)


_CHECKS = {"readin": _alone_readin, "encoder": _alone_encoder, "generator": _alone_generator,
           "readout": _alone_readout, "prior": _alone_prior, "reconstruction": _alone_reconstruction,
           "augmentation": _alone_augmentation}
