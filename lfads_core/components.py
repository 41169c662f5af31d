"""Base classes of the component kinds: subclass one to write a component.

Every registered component class subclasses the base of its kind (the registry checks this when
a spec selects it, with an error naming the distribution). What a kind must implement is an
abstract method: a class that misses one is reported by name when it is loaded. What is optional
has a documented default here. Shapes use the notation of :mod:`lfads_core.protocols`; the
``typing.Protocol`` classes there describe the same contracts for type checkers.

Each component class also carries ``Config``: a frozen attrs class of its spec parameters
(validators from :mod:`lfads_core.spec.validators`), and is built as ``cls(config, **sizes)``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, ClassVar, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .data.stats import DataStats
from .protocols import Batch, EncoderOutput, GeneratorOutput

__all__ = ["Readin", "Encoder", "Generator", "Readout", "Prior", "Reconstruction", "Augmentation",
           "AugmentContext", "DataSizes", "DataStats", "SessionData", "InitContext", "InitCache",
           "BASES"]


# -- data-dependent initialisation of readins and readouts -----------------------------------
@dataclasses.dataclass(frozen=True)
class SessionData:
    """One session's training data, for :meth:`Readin.init_from_data` and
    :meth:`Readout.init_from_data` (e.g. PCR initialisation of stitched models).

    ``name``: the session file's stem. ``encod`` [n, T_e, N_in] and ``recon`` [n, T_r, N]:
    float32, NaN where unobserved. ``cond`` [n] integer condition labels (the file's
    ``train_cond``), or None. ``stats``: per-channel statistics of ``recon``.
    """

    name: str
    encod: np.ndarray
    recon: np.ndarray
    cond: Optional[np.ndarray]
    stats: DataStats
    bin_size_ms: Optional[float] = None


class InitCache:
    """Results of data-dependent initialisation, kept across the starts of a run.

    ``get(key, compute)`` returns ``compute()`` (a dict of numpy arrays) the first time and the
    stored arrays afterwards. The core fills the cache from the run directory before the model is
    built and writes new entries there afterwards (``init/<key>.npz``), tagged with a fingerprint
    of the data files: entries of other data are ignored. Name keys after everything the result
    depends on besides the data (e.g. ``"pcr-k40-smooth2"``); letters, digits, ``.-_`` only.
    """

    def __init__(self, entries: Optional[dict[str, dict[str, np.ndarray]]] = None):
        self.entries: dict[str, dict[str, np.ndarray]] = dict(entries or {})
        self.new: set[str] = set()

    def get(self, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if not key or not all(ch.isalnum() or ch in ".-_" for ch in key):
            raise ValueError(f"InitCache key {key!r}: letters, digits and .-_ only")
        if key not in self.entries:
            self.entries[key] = {k: np.asarray(v) for k, v in compute().items()}
            self.new.add(key)
        return self.entries[key]


@dataclasses.dataclass(frozen=True)
class InitContext:
    """What :meth:`Readin.init_from_data` and :meth:`Readout.init_from_data` get: every
    session's training data, each session's reconstruction (after ``init_params``) and the
    run's :class:`InitCache`."""

    sessions: Sequence[SessionData]
    reconstructions: Sequence["Reconstruction"]
    cache: InitCache


class Readin(nn.Module, abc.ABC):
    """One session's channels -> the shared encoder input.

    Built as ``cls(config, in_dim=N_in)``; sets ``self.out_dim`` (D) in ``__init__``.
    """

    out_dim: int

    @abc.abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """``x`` [B, T, N_in] -> [B, T, D]."""

    @classmethod
    def init_from_data(cls, readins: Sequence["Readin"], ctx: InitContext) -> None:
        """Set the starting weights of every session's readin from the training data, once per
        run before training (a resumed run then loads its checkpoint). ``readins[i]`` belongs to
        ``ctx.sessions[i]``; all come at once because a shared space (PCR) needs every session.
        Default: nothing."""


class Encoder(nn.Module, abc.ABC):
    """Data -> initial-condition posterior and controller inputs.

    Built as ``cls(config, in_dim=D, want_ci=bool)``; sets ``self.ic_dim`` (Z) and
    ``self.ci_dim`` (C_in, 0 without controller inputs) in ``__init__``.
    """

    ic_dim: int
    ci_dim: int

    @abc.abstractmethod
    def forward(self, x: Tensor, recon_len: int, dropout: float) -> EncoderOutput:
        """``x`` [B, T_e, D] -> EncoderOutput(ic_mean [B, Z], ic_std [B, Z] (> 0),
        ci [B, T_r, C_in] zero-padded past T_e, or None when ``ci_dim`` is 0)."""

    def l2_groups(self) -> dict[str, list[Tensor]]:
        """``{group: [recurrent kernels]}`` penalised by ``train.l2.<group>_scale`` (groups
        ``ic_enc`` and ``ci_enc`` have a scale). Default: none."""
        return {}


class Generator(nn.Module, abc.ABC):
    """Initial condition (+ controller and external inputs) -> factors.

    Built as ``cls(config, ic_dim=Z, ci_dim=C_in, ext_dim=E)``; sets ``self.fac_dim`` (F) and
    ``self.co_dim`` (U, 0 when autonomous: then no co_prior is built).
    """

    fac_dim: int
    co_dim: int

    @classmethod
    def wants_controller_inputs(cls, config) -> bool:
        """Whether the encoder should build controller inputs for this config. Default: True."""
        return True

    @abc.abstractmethod
    def forward(self, ic: Tensor, ci: Optional[Tensor], ext: Optional[Tensor], recon_len: int,
                sample: bool, dropout: float, repeats: int = 1) -> GeneratorOutput:
        """``ic`` [B, Z]; ``ci`` [B/R, T_r, C_in] or None; ``ext`` [B/R, T_r, E] or None;
        ``repeats`` R: each trial's ``ci``/``ext`` row drives R consecutive rows of ``ic`` (R
        posterior samples; 1 in training). Returns GeneratorOutput with B rows: factors
        [B, T_r, F], gen_states [B, T_r, G], gen_inputs/co_means/co_stds [B, T_r, U] or None."""

    def l2_groups(self) -> dict[str, list[Tensor]]:
        """``{group: [recurrent kernels]}``; groups ``gen`` and ``con`` have a scale. Default: none."""
        return {}


class Readout(nn.Module, abc.ABC):
    """Factors -> distribution parameters. Built as ``cls(config, in_dim=F, out_dim=N*P)``."""

    @abc.abstractmethod
    def forward(self, factors: Tensor) -> Tensor:
        """``factors`` [B, T, F] -> [B, T, N*P] (viewed as [B, T, N, P]: element n*P + p)."""

    def init_bias(self, bias: Tensor) -> None:
        """Start the output at ``bias`` [N, P] (the reconstruction's ``init_params``). Default:
        ignored (the readout has no bias)."""

    @classmethod
    def init_from_data(cls, readouts: Sequence["Readout"], ctx: InitContext) -> None:
        """Like :meth:`Readin.init_from_data`, after the readins' and after ``init_bias``;
        ``ctx.reconstructions[i]`` is the reconstruction of ``readouts[i]`` (to map a start in
        data units into its parameters). Default: nothing."""


class Prior(nn.Module, abc.ABC):
    """Prior over the initial condition or the inferred inputs.

    Built as ``cls(config, shape=(Z,))`` as ``ic_prior`` or ``cls(config, shape=(U,))`` as
    ``co_prior``.
    """

    @abc.abstractmethod
    def kl(self, mean: Tensor, std: Tensor) -> Tensor:
        """KL(N(mean, std²) || prior) for a diagonal Gaussian posterior [B, Z] or [B, T_r, U],
        summed over every non-batch dimension: [B]."""


class Reconstruction(nn.Module, abc.ABC):
    """Observation model of the reconstructed data. Built as ``cls(config, n_channels=N)``.

    Class attributes to set: ``n_params`` (P, parameters per channel), ``support`` (what data it
    accepts, shown by ``lfads-run validate``), ``units`` (of :meth:`mean`: written to the output
    file, plots and summary), ``metrics`` (core metrics that apply to :meth:`mean`: only
    ``"bits_per_spike"`` today, for count models).
    """

    n_params: ClassVar[int]
    support: ClassVar[str] = "real values"
    units: ClassVar[str] = "data units"
    metrics: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def nll(self, params: Tensor, data: Tensor) -> Tensor:
        """Per-element negative log-likelihood: params [B, T, N, P], data [B, T, N] -> [B, T, N]
        (nats). Elements with loss mask 0 hold 0 in ``data`` and are ignored by the core."""

    @abc.abstractmethod
    def mean(self, params: Tensor) -> Tensor:
        """The inferred signal in :attr:`units`: params [B, T, N, P] -> [B, T, N]."""

    def penalty(self) -> Tensor:
        """Regulariser of the reconstruction's own learnable parameters, added to the loss and
        reported as ``train_penalty`` in metrics.csv: a 0-d tensor on the parameters' device
        (no host reads: on CUDA the training step may be captured as a graph). Default: 0 (a
        constant the core puts on the right device)."""
        return torch.zeros(())

    def check_data(self, data: np.ndarray) -> Optional[str]:
        """Problem with one split's reconstruction data, or None. ``data`` [trials, T_r, N]
        float32, NaN where unobserved (the core has checked NaN and inf). Return a phrase that
        completes ``FILE: train_recon_data <phrase> (model.reconstruction: NAME)``; name the
        channels when the problem is per channel. Default: any finite value is accepted."""
        return None

    def data_note(self, data: np.ndarray) -> Optional[str]:
        """Something the user should know about one split's data that is not an error (e.g. how
        many values a floor option changes), or None. Same ``data`` and phrase form as
        :meth:`check_data`; printed as ``note: FILE: KEY <phrase> ...`` by ``lfads-run validate``
        and at the start of a run. Default: none."""
        return None

    def init_params(self, stats: DataStats) -> Tensor:
        """Readout bias [N, P] for the start of training, from the training data's statistics
        (:class:`lfads_core.data.stats.DataStats`). May also set buffers of the reconstruction
        from the data (e.g. a per-channel threshold); they are saved with the model. Default:
        zeros."""
        return torch.zeros(stats.n_channels, self.n_params)

    def epoch_metrics(self, params: Tensor, data: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Extra per-batch metrics for metrics.csv (``train_<name>``, ``valid_<name>``), averaged
        over an epoch's trials: params [B, T, N, P], data and mask [B, T, N] (mask 0 where
        unobserved). Scalars. Default: none."""
        return {}

    def evaluate(self, mean: np.ndarray, data: np.ndarray) -> dict[str, float]:
        """Extra summary metrics of the posterior-averaged :meth:`mean` [trials, T_r, N] against
        the data [trials, T_r, N] (NaN where unobserved), written to summary.json as
        ``<split>_<name>``. Default: none."""
        return {}


@dataclasses.dataclass(frozen=True)
class AugmentContext:
    """What an augmentation knows besides the batch.

    ``training``: a training batch (True) or a validation batch (False). ``epoch``: the epoch
    being run, counted from 1. ``generator``: the augmentation's own ``torch.Generator``, seeded
    from ``train.seed`` and its place in the list, saved and restored with the training state:
    draw every random number from it (``torch.rand(shape, generator=ctx.generator)``) so a
    resumed run reproduces the same draws. It is a CPU generator whatever the device: draw on
    the CPU and move the result to the batch's device with :func:`lfads_core.to_device`
    (``to_device(torch.rand(shape, generator=ctx.generator), batch.encod.device)``: on a GPU
    it does not wait for the device), so a run draws the same augmentations on any device and
    resumes on another one.
    """

    training: bool
    epoch: int
    generator: torch.Generator


@dataclasses.dataclass(frozen=True)
class DataSizes:
    """The data's sizes, for :meth:`Augmentation.check`: bins and channels of the encoder input
    (T_e, N_in) and of the reconstruction (T_r, N), external inputs E, training trials."""

    t_in: int
    n_in: int
    t_out: int
    n_out: int
    ext_dim: int
    n_train: int


class Augmentation(abc.ABC):
    """Changes a :class:`Batch` before the forward pass (its input) and/or its loss masks.

    Built as ``cls(config)``; not an ``nn.Module`` (no learnable parameters). Runs, in list
    order, on every training batch and every validation batch; not at posterior sampling.

    ``handles_nan``: NaN samples in the data are acceptable with this augmentation.
    ``hyperparameters``: names of float attributes the training loop (and PBT) may set between
    epochs (spec path ``model.augmentations.<i>.<name>``); their values are saved with the
    training state and restored on resume.
    """

    handles_nan: ClassVar[bool] = False
    hyperparameters: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config):
        self.config = config
        for name in self.hyperparameters:
            setattr(self, name, float(getattr(config, name)))

    def check(self, sizes: DataSizes) -> Optional[str]:
        """Problem of this config with the data's sizes, or None, at ``lfads-run validate`` and
        the start of a run (e.g. a mask wider than the trials). Return a phrase that starts with
        the config field, e.g. ``"width: 50 bins is more than the trials' 40 encoder bins"``.
        Default: none."""
        return None

    @abc.abstractmethod
    def __call__(self, batch: Batch, ctx: AugmentContext) -> Batch:
        """The changed batch (``batch.replace(...)``; clone a mask before changing it). Shapes
        and dtypes of every field stay the same."""


BASES: dict[str, type] = {"readin": Readin, "encoder": Encoder, "generator": Generator,
                          "readout": Readout, "prior": Prior, "reconstruction": Reconstruction,
                          "augmentation": Augmentation}
