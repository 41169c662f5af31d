"""lfads-core: LFADS and AutoLFADS in PyTorch, a minimal core extended through plugins.

For users of a trained run (:mod:`lfads_core.api`)::

    import lfads_core as lfads
    run = lfads.load_run("runs/lorenz")      # a Run: .spec, .metrics, .summary, .sessions
    out = run.infer(x, num_samples=50)       # x [trials, T_e, N_in] numpy -> an Inference
    out.rates, out.factors, out.inputs       # [trials, T_r, N], [trials, T_r, F], [trials, T_r, U]

The public API for plugin authors (docs/writing-plugins.md), imported lazily so that
``import lfads_core`` stays light:

- component base classes: :class:`Readin`, :class:`Encoder`, :class:`Generator`,
  :class:`Readout`, :class:`Prior`, :class:`Reconstruction`, :class:`Augmentation`;
- what flows through them: :class:`Batch`, :class:`EncoderOutput`, :class:`GeneratorOutput`,
  :class:`AugmentContext`, :class:`DataSizes`, :class:`DataStats`;
- :func:`dropout` for encoders and generators (its rate may be a device tensor on a GPU);
  :func:`to_device` for what augmentations draw on the CPU (copied to a GPU without waiting);
- config validators: :mod:`lfads_core.spec.validators`; run and CLI hooks:
  :data:`hookimpl`, :class:`Command`, :class:`SynthDataset`, and the argparse types :func:`positive_int` and
  :func:`positive_float` for their options (:mod:`lfads_core.hooks`);
- synthetic data to build on: :func:`make_lorenz` (Poisson spikes, true rates and latents);
- the conformance checks a plugin's tests call: :mod:`lfads_core.conformance` (``assert_conforms``);
- data-dependent initialisation of readins/readouts (``init_from_data``): :class:`SessionData`,
  :class:`InitContext`, :class:`InitCache`; for a plugin's own commands: :func:`load_spec` (a
  spec file, validated) and :func:`load_session_data` (its sessions' training data).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Readin": "components", "Encoder": "components", "Generator": "components",
    "Readout": "components", "Prior": "components", "Reconstruction": "components",
    "Augmentation": "components", "AugmentContext": "components", "DataSizes": "components",
    "DataStats": "data.stats", "Batch": "protocols", "EncoderOutput": "protocols",
    "GeneratorOutput": "protocols", "hookimpl": "hooks", "Command": "hooks",
    "SynthDataset": "hooks", "make_lorenz": "data.synth", "positive_int": "hooks",
    "positive_float": "hooks", "SessionData": "components", "InitContext": "components",
    "InitCache": "components", "load_spec": "spec.load", "load_session_data": "assembly",
    "dropout": "model.dropout", "to_device": "device", "load_run": "api", "Run": "api",
    "Inference": "api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lfads_core' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + __all__)
