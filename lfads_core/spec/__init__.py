"""The spec: YAML -> frozen attrs classes (see docs/spec-reference.md)."""

from .load import apply_overrides, dump_spec, load_spec, parse_overrides, spec_to_dict
from .schema import Component, DataSpec, ModelSpec, SamplingSpec, Spec, TrainSpec

__all__ = ["Component", "DataSpec", "ModelSpec", "SamplingSpec", "Spec", "TrainSpec",
           "apply_overrides", "dump_spec", "load_spec", "parse_overrides", "spec_to_dict"]
