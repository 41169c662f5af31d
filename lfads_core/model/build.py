"""Build an :class:`LFADS` model from the spec's model section and the data's shapes."""

from __future__ import annotations

from typing import Optional, Sequence


from .. import registry
from ..conformance import Checker, check_init_params
from ..data.stats import DataStats
from ..errors import SpecError
from ..spec.schema import ModelSpec
from .lfads import LFADS, SessionShape


def build_model(spec: ModelSpec, sessions: Sequence[SessionShape],
                stats: Optional[Sequence[DataStats]] = None) -> LFADS:
    """Components are loaded by name from the registries. ``stats`` (one per session, of the
    training data) go to each reconstruction's ``init_params``, whose result starts the
    readout's bias (e.g. at the data's per-channel mean)."""
    cls = lambda comp: registry.load(comp.kind, comp.name)  # noqa: E731
    first = sessions[0]
    readins = [cls(spec.readin)(spec.readin.config, in_dim=s.n_in) for s in sessions]
    dims = {r.out_dim for r in readins}
    if len(dims) != 1:
        raise SpecError(f"model.readin: {spec.readin.name} gives the sessions different sizes "
                        f"{sorted(dims)}; sessions with different channel counts need a readin "
                        f"to one size, e.g. readin: {{name: multisession, dim: 40}} (pip install "
                        f"plugins/lfads_multisession)")
    gen_cls = cls(spec.generator)
    want_ci = bool(getattr(gen_cls, "wants_controller_inputs", lambda c: True)(spec.generator.config))
    encoder = cls(spec.encoder)(spec.encoder.config, in_dim=dims.pop(), want_ci=want_ci)
    generator = gen_cls(spec.generator.config, ic_dim=encoder.ic_dim, ci_dim=encoder.ci_dim,
                        ext_dim=first.ext_dim)
    recons = [cls(spec.reconstruction)(spec.reconstruction.config, n_channels=s.n_out) for s in sessions]
    readouts = [cls(spec.readout)(spec.readout.config, in_dim=generator.fac_dim,
                                  out_dim=s.n_out * r.n_params) for s, r in zip(sessions, recons)]
    if stats is not None:
        who = registry.lookup("reconstruction", spec.reconstruction.name).who
        for readout, recon, st, s in zip(readouts, recons, stats, sessions):
            readout.init_bias(check_init_params(Checker(f"model.reconstruction: {who}"), recon, st, s.n_out))
    ic_prior = cls(spec.ic_prior)(spec.ic_prior.config, shape=(encoder.ic_dim,))
    co_prior = None
    if generator.co_dim > 0:
        co_prior = cls(spec.co_prior)(spec.co_prior.config, shape=(generator.co_dim,))
    return LFADS(readins, encoder, generator, readouts, recons, ic_prior, co_prior, sessions,
                 spec.dropout_rate)


def build_augmentations(spec: ModelSpec) -> list:
    return [registry.load(a.kind, a.name)(a.config) for a in spec.augmentations]
