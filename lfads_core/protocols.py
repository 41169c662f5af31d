"""The component protocols of lfads, with tensor shapes.

Notation: B batch, T_e encoder bins, T_r reconstruction bins (T_r >= T_e), N_in input channels,
N channels to reconstruct, D readin output size, Z initial-condition size, U inferred-input size,
G generator size, F factors, P distribution parameters per channel, E external inputs.

A component is a class registered in the entry-point group ``lfads.<kind>``. It carries a frozen
attrs class ``Config`` (its spec parameters, with defaults and validators) and is built by the
model assembly with the keyword arguments listed on each protocol. Components are
``torch.nn.Module``s except augmentations.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional, Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclasses.dataclass
class Batch:
    """One batch of trials, as it flows from the data through augmentations to the loss.

    ``loss_mask`` weights each reconstructed element in the loss value (0 excludes it, e.g. NaN
    samples); ``grad_mask`` says which elements pass gradients (coordinated dropout turns off the
    elements the encoder saw). The reconstruction loss is
    ``sum(loss_mask * nll) / sum(loss_mask)`` with gradients only where ``grad_mask``.
    """

    encod: Tensor  # [B, T_e, N_in] model input (NaN-free after the data stage)
    recon: Tensor  # [B, T_r, N] targets (NaN replaced by 0 where loss_mask is 0)
    loss_mask: Tensor  # [B, T_r, N] float weights
    grad_mask: Tensor  # [B, T_r, N] bool
    ext: Optional[Tensor] = None  # [B, T_r, E] measured external inputs
    session: int = 0
    index: Optional[Tensor] = None  # [B] trial indices within the split, on the CPU
    score_mask: Optional[Tensor] = None  # [B, T_r, N] elements held out of training and scored (sample validation)

    def replace(self, **changes) -> "Batch":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class EncoderOutput:
    ic_mean: Tensor  # [B, Z]
    ic_std: Tensor  # [B, Z]
    ci: Optional[Tensor]  # [B, T_r, C_in] controller inputs (zero-padded past T_e), or None


@dataclasses.dataclass
class GeneratorOutput:
    factors: Tensor  # [B, T_r, F]
    gen_states: Tensor  # [B, T_r, G]
    gen_inputs: Optional[Tensor]  # [B, T_r, U] inferred inputs that drove the generator
    co_means: Optional[Tensor]  # [B, T_r, U] inferred-input posterior means
    co_stds: Optional[Tensor]  # [B, T_r, U] inferred-input posterior stds


@runtime_checkable
class Readin(Protocol):
    """Maps one session's channels to the shared encoder input. Built as ``cls(config, in_dim=N_in)``;
    exposes ``out_dim`` (D). ``forward(x [B, T, N_in]) -> [B, T, D]``."""

    out_dim: int

    def forward(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class Encoder(Protocol):
    """Built as ``cls(config, in_dim=D, want_ci=bool)``; exposes ``ic_dim`` (Z) and ``ci_dim``
    (0 without controller inputs). ``forward(x [B, T_e, D], recon_len=T_r, dropout=p)`` returns an
    :class:`EncoderOutput`. ``l2_groups()`` returns ``{group: [recurrent kernels]}``."""

    ic_dim: int
    ci_dim: int

    def forward(self, x: Tensor, recon_len: int, dropout: float) -> EncoderOutput: ...

    def l2_groups(self) -> dict[str, list[Tensor]]: ...


@runtime_checkable
class Generator(Protocol):
    """Built as ``cls(config, ic_dim=Z, ci_dim=C_in, ext_dim=E)``; exposes ``fac_dim`` (F) and
    ``co_dim`` (U; 0 when autonomous). The classmethod ``wants_controller_inputs(config)`` tells
    the assembly whether to build a controller-input encoder.
    ``forward(ic [B, Z], ci [B/R, T_r, C_in] | None, ext [B/R, T_r, E] | None, recon_len, sample,
    dropout, repeats=R)`` returns a :class:`GeneratorOutput` with B rows: each trial's ``ci`` and
    ``ext`` drive R consecutive rows of ``ic`` (R posterior samples; R = 1 in training)."""

    fac_dim: int
    co_dim: int

    def forward(self, ic: Tensor, ci: Optional[Tensor], ext: Optional[Tensor], recon_len: int,
                sample: bool, dropout: float, repeats: int = 1) -> GeneratorOutput: ...

    def l2_groups(self) -> dict[str, list[Tensor]]: ...


@runtime_checkable
class Readout(Protocol):
    """Built as ``cls(config, in_dim=F, out_dim=N*P)``. ``forward(f [B, T, F]) -> [B, T, N*P]``.
    Optional ``init_bias(bias [N, P])`` sets the output bias (the reconstruction's
    ``init_params`` of the training data's statistics, so training starts at the data's mean)."""

    def forward(self, factors: Tensor) -> Tensor: ...


@runtime_checkable
class Prior(Protocol):
    """Built as ``cls(config, shape=(Z,) or (U,))``. ``kl(mean, std)`` takes a diagonal Gaussian
    posterior with shape [B, Z] (initial condition) or [B, T, U] (inferred inputs) and returns
    KL(posterior || prior) summed over every non-batch dimension: [B]."""

    def kl(self, mean: Tensor, std: Tensor) -> Tensor: ...


@runtime_checkable
class Reconstruction(Protocol):
    """Observation model. Built as ``cls(config, n_channels=N)``; ``n_params`` is P.

    ``nll(params [B, T, N, P], data [B, T, N]) -> [B, T, N]`` is the per-element negative
    log-likelihood; ``mean(params) -> [B, T, N]`` the inferred signal in ``units`` (counts per
    bin for Poisson); ``penalty() -> scalar`` regularises its own learnable parameters;
    ``support`` describes accepted data and ``check_data(array [trials, T_r, N], NaN where
    unobserved) -> str | None`` returns the problem with a split's data, if any.
    ``init_params(stats: DataStats) -> [N, P]`` gives a readout bias from the training data's
    statistics. ``metrics`` names core metrics that apply; ``epoch_metrics`` and ``evaluate``
    add its own (see :class:`lfads_core.components.Reconstruction`, the base class to subclass).
    """

    n_params: int
    support: ClassVar[str]
    units: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]

    def nll(self, params: Tensor, data: Tensor) -> Tensor: ...

    def mean(self, params: Tensor) -> Tensor: ...

    def penalty(self) -> Tensor: ...

    def check_data(self, data) -> Optional[str]: ...

    def init_params(self, stats) -> Tensor: ...


@runtime_checkable
class Augmentation(Protocol):
    """Changes a :class:`Batch` before the forward pass and/or its loss masks after it.

    Built as ``cls(config)``. ``handles_nan`` tells the data check that NaN samples are fine.
    ``hyperparameters`` names the attributes the training loop may change between epochs
    (e.g. ``("rate",)``). ``check(sizes: DataSizes) -> str | None`` checks the config against
    the data. ``__call__(batch, ctx: AugmentContext) -> Batch``, with ``ctx.training``,
    ``ctx.epoch`` and ``ctx.generator`` (see :class:`lfads_core.components.Augmentation`).
    """

    handles_nan: ClassVar[bool]
    hyperparameters: ClassVar[tuple[str, ...]]

    def check(self, sizes) -> Optional[str]: ...

    def __call__(self, batch: Batch, ctx) -> Batch: ...


def zero() -> Tensor:
    return torch.zeros(())
