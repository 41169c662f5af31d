"""The spec: frozen attrs classes read from YAML (see docs/spec-reference.md).

A component field holds a :class:`Component`: the registered ``name`` and the structured
``config`` of that component's own ``Config`` class.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Union

import attrs

from .validators import FieldError, finite, ge, gt, matches, one_of, unit_interval, within


@attrs.frozen
class Component:
    """A selected component: registered name plus its structured config."""

    kind: ClassVar[str] = ""
    name: str
    config: Any


class ReadinSpec(Component):
    kind = "readin"


class EncoderSpec(Component):
    kind = "encoder"


class GeneratorSpec(Component):
    kind = "generator"


class ReadoutSpec(Component):
    kind = "readout"


class ReconstructionSpec(Component):
    kind = "reconstruction"


class PriorSpec(Component):
    kind = "prior"


class AugmentationSpec(Component):
    kind = "augmentation"


# Components a spec may leave out, with their default names.
DEFAULT_COMPONENTS = {
    "readin": "identity",
    "encoder": "bigru",
    "generator": "gru",
    "readout": "linear",
    "ic_prior": "normal",
    "co_prior": "ar_normal",
}


# data.path: one HDF5 file, a glob, or a list of files/globs (one file per session).
DataPath = Union[str, list[str]]


@attrs.frozen
class DataSpec:
    path: DataPath
    batch_size: int = attrs.field(default=128, validator=ge(1))
    bin_size_ms: Optional[float] = attrs.field(default=None, validator=gt(0))
    # Several sessions: "trials" visits every training trial once per epoch (sessions weighted
    # by their trial counts); "equal" gives every session the same number of batches per epoch.
    session_weights: str = attrs.field(default="trials", validator=one_of("trials", "equal"))
    # The HDF5 group that holds the arrays (the file's root when null).
    group: Optional[str] = None
    # Warnings about data that look wrong (swapped axes, rates stored as counts); false: silent.
    warn: bool = True


@attrs.frozen
class ModelSpec:
    readin: ReadinSpec
    encoder: EncoderSpec
    generator: GeneratorSpec
    readout: ReadoutSpec
    reconstruction: ReconstructionSpec
    ic_prior: PriorSpec
    co_prior: PriorSpec
    augmentations: list[AugmentationSpec] = attrs.Factory(list)
    dropout_rate: float = attrs.field(default=0.05, validator=unit_interval())


@attrs.frozen
class KLSpec:
    ic_scale: float = attrs.field(default=1e-6, validator=ge(0.0))
    co_scale: float = attrs.field(default=1e-6, validator=ge(0.0))
    ramp_epochs: int = attrs.field(default=50, validator=ge(0))


@attrs.frozen
class L2Spec:
    gen_scale: float = attrs.field(default=1e-4, validator=ge(0.0))
    con_scale: float = attrs.field(default=1e-4, validator=ge(0.0))
    ic_enc_scale: float = attrs.field(default=0.0, validator=ge(0.0))
    ci_enc_scale: float = attrs.field(default=0.0, validator=ge(0.0))
    ramp_epochs: int = attrs.field(default=50, validator=ge(0))


@attrs.frozen
class PlateauSpec:
    enabled: bool = False
    factor: float = attrs.field(default=0.95, validator=[gt(0.0), unit_interval()])
    patience: int = attrs.field(default=6, validator=ge(1))
    min_lr: float = attrs.field(default=1e-5, validator=gt(0.0))


@attrs.frozen
class EarlyStoppingSpec:
    enabled: bool = True
    patience: int = attrs.field(default=200, validator=ge(1))
    smoothing: float = attrs.field(default=0.7, validator=[gt(0.0), unit_interval(True)])


@attrs.frozen
class NanSpec:
    max_recoveries: int = attrs.field(default=3, validator=ge(0))
    lr_factor: float = attrs.field(default=0.5, validator=[gt(0.0), unit_interval()])


@attrs.frozen
class TrainSpec:
    max_epochs: int = attrs.field(default=300, validator=ge(1))
    lr: float = attrs.field(default=0.004, validator=gt(0.0))
    adam_eps: float = attrs.field(default=1e-8, validator=gt(0.0))
    weight_decay: float = attrs.field(default=0.0, validator=ge(0.0))
    grad_clip: float = attrs.field(default=200.0, validator=gt(0.0))
    loss_scale: float = attrs.field(default=1e4, validator=[gt(0.0), finite])
    kl: KLSpec = attrs.Factory(KLSpec)
    l2: L2Spec = attrs.Factory(L2Spec)
    lr_schedule: PlateauSpec = attrs.Factory(PlateauSpec)
    early_stopping: EarlyStoppingSpec = attrs.Factory(EarlyStoppingSpec)
    nan: NanSpec = attrs.Factory(NanSpec)
    seed: int = 0
    threads: Optional[int] = attrs.field(default=None, validator=ge(1))
    # auto: the first CUDA device when there is one, else the CPU; cpu; cuda; cuda:N.
    device: str = attrs.field(default="auto", validator=matches(r"auto|cpu|cuda|cuda:\d+",
                                                                 "auto, cpu, cuda or cuda:N"))
    # On CUDA, capture the training step once as a CUDA graph and replay it (auto/on), or not.
    cuda_graphs: str = attrs.field(default="auto", validator=one_of("auto", "on", "off"))
    # Run the recurrent steps of the autograd path through torch.compile (on), or not (off);
    # auto: on CUDA, not on the CPU (which has its fused kernels).
    compile: str = attrs.field(default="auto", validator=one_of("auto", "on", "off"))


@attrs.frozen
class SamplingSpec:
    num_samples: int = attrs.field(default=50, validator=ge(1))
    # Trial-samples per forward pass at most; null: as many as a memory budget allows.
    batch_size: Optional[int] = attrs.field(default=None, validator=ge(1))
    seed: int = 0
    plots: bool = True


@attrs.frozen
class DimensionSpec:
    """One hyperparameter of a PBT search space: its bounds, how initial values are drawn
    (``log``: log-uniform) and the explore step (values multiplied by 1 ± up to the weight)."""

    low: float = attrs.field(validator=finite)
    high: float = attrs.field(validator=finite)
    sample: str = attrs.field(default="uniform", validator=one_of("uniform", "log"))
    explore_weight: float = attrs.field(default=0.3, validator=within(0, 1, low_inclusive=False))

    def __attrs_post_init__(self):
        if not self.low < self.high:
            raise FieldError("high", f"must be above low ({self.low:g}), got {self.high:g}")
        if self.sample == "log" and self.low <= 0:
            raise FieldError("low", f"must be > 0 for sample: log, got {self.low:g}")


def default_search_space() -> dict[str, DimensionSpec]:
    """The published AutoLFADS ranges (Keshtkaran et al. 2022; REFERENCE.md §6), for the L2
    convention of the original (lfads_core.train.loop: the weighted sum over groups divided by
    the total number of penalised weights)."""
    d = DimensionSpec
    return {"train.lr": d(1e-5, 5e-3, "log", 0.3),
            "model.dropout_rate": d(0.0, 0.6, "uniform", 0.3),
            "train.kl.co_scale": d(1e-6, 1e-4, "log", 0.8),
            "train.kl.ic_scale": d(1e-6, 1e-3, "log", 0.8),
            "train.l2.gen_scale": d(1e-4, 1.0, "log", 0.8),
            "train.l2.con_scale": d(1e-4, 1.0, "log", 0.8)}


@attrs.frozen
class ResourcesSpec:
    cpu: float = attrs.field(default=1.0, validator=gt(0.0))
    gpu: float = attrs.field(default=0.0, validator=ge(0.0))


@attrs.frozen
class PbtSpec:
    """AutoLFADS (docs/autolfads.md): population-based training of the hyperparameters."""

    population: int = attrs.field(default=8, validator=ge(2))
    generation_epochs: int = attrs.field(default=25, validator=ge(1))
    burn_in_epochs: int = attrs.field(default=50, validator=ge(0))
    max_generations: int = attrs.field(default=50, validator=ge(1))
    resources: ResourcesSpec = attrs.Factory(ResourcesSpec)
    search_space: dict[str, DimensionSpec] = attrs.Factory(default_search_space)
    # Fitness (lower is better): the smoothed validation reconstruction, or the sample-validation
    # NLL of the last epoch (needs the sample_validation augmentation).
    fitness: str = attrs.field(default="valid", validator=one_of("valid", "sample_valid"))
    stop_ratio: float = attrs.field(default=5e-4, validator=ge(0.0))
    stop_generations: int = attrs.field(default=4, validator=ge(1))
    address: Optional[str] = None  # a Ray cluster (auto or HOST:PORT); null: an embedded one
    seed: int = attrs.field(default=0, validator=ge(0))  # numpy's generators take no negative seed
    # How a worker trains its members: stacked (one model with a member dimension, vmap) or
    # trials (one model after another); auto: stacked on CUDA, trials on the CPU
    # (docs/autolfads.md, "Engines").
    engine: str = attrs.field(default="auto", validator=one_of("auto", "stacked", "trials"))
    # Members trained as one stacked group; null: every member of the worker on the CPU, as
    # many as the GPU's memory holds on CUDA.
    members_per_worker: Optional[int] = attrs.field(default=None, validator=ge(1))
    # Stacked engine: each member its own batch order (member; one session only), or one order
    # for all (shared); auto: member with one session, shared with several.
    stacked_batches: str = attrs.field(default="auto", validator=one_of("auto", "member", "shared"))


@attrs.frozen
class Spec:
    data: DataSpec
    model: ModelSpec
    train: TrainSpec = attrs.Factory(TrainSpec)
    sampling: SamplingSpec = attrs.Factory(SamplingSpec)
    output: str = "runs/lfads"
    pbt: Optional[PbtSpec] = None
