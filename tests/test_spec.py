"""In-process tests of the spec: YAML -> frozen attrs classes, ``--set`` overrides, defaults,
relative paths, round trips, and :class:`SpecError` messages with one line per problem naming the
field path and what was expected (every problem of a spec at once); the ``within``/``one_of``
validators. Also: every exception of :mod:`lfads_core.errors` survives pickling."""

from __future__ import annotations

import copy
import inspect
import math
import pickle
import re
from pathlib import Path
from typing import Optional

import attrs
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lfads_core import errors, registry
from lfads_core.errors import SpecError
from lfads_core.spec.load import (apply_overrides, dump_spec, load_spec, parse_overrides, read_yaml,
                                  spec_from_dict, spec_to_dict)
from lfads_core.spec.schema import DEFAULT_COMPONENTS, SamplingSpec, Spec, TrainSpec, default_search_space
from lfads_core.spec.convert import structure
from lfads_core.spec.validators import FieldError, finite, ge, gt, one_of, unit_interval, within

REPO = Path(__file__).resolve().parents[1]
LORENZ_YAML = REPO / "examples" / "lorenz.yaml"

# A small, valid raw spec (no data file is needed to structure a spec).
BASE = {
    "data": {"path": "data/small.h5", "batch_size": 16},
    "model": {
        "encoder": {"name": "bigru", "ic_enc_dim": 8, "ci_enc_dim": 4, "ic_dim": 4, "ci_lag": 1},
        "generator": {"name": "gru", "gen_dim": 8, "con_dim": 4, "co_dim": 2, "fac_dim": 4},
        "reconstruction": {"name": "poisson"},
        "ic_prior": {"name": "normal", "variance": 0.1},
        "augmentations": [{"name": "coordinated_dropout", "rate": 0.1}],
    },
    "train": {"max_epochs": 2},
}

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def raw_with(*sets: tuple[str, object]) -> dict:
    """BASE with ``(dotted.path, value)`` pairs set (through apply_overrides, as ``--set`` does)."""
    return apply_overrides(BASE, [(path.split("."), value) for path, value in sets])


def spec_error(raw: dict) -> str:
    """The message of the SpecError raised by structuring ``raw``; checks it is one line."""
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw)
    return one_line(info.value)


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg.strip(), "empty error message"
    assert len(msg.splitlines()) == 1 and "\n" not in msg, f"not one line: {msg!r}"
    assert "Traceback" not in msg
    return msg


def names_path(msg: str, path: str) -> bool:
    """The message names ``path`` (list items may read ``a.0.b`` or ``a[0].b``)."""
    bracketed = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", path)
    return path in msg or bracketed in msg


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------- #
# Valid specs, defaults
# --------------------------------------------------------------------------------------- #
def test_base_spec_structures():
    spec = spec_from_dict(BASE)
    assert isinstance(spec, Spec)
    assert spec.model.generator.name == "gru"
    assert spec.model.generator.config.gen_dim == 8
    assert spec.model.augmentations[0].config.rate == 0.1
    assert spec.train.max_epochs == 2
    assert spec.data.batch_size == 16


def test_spec_from_dict_does_not_mutate_its_input():
    raw = copy.deepcopy(BASE)
    spec_from_dict(raw)
    assert raw == BASE


def test_defaults_filled_for_omitted_components():
    raw = {"data": {"path": "x.h5"}, "model": {"reconstruction": {"name": "poisson"}}}
    spec = spec_from_dict(raw)
    for key, name in DEFAULT_COMPONENTS.items():
        comp = getattr(spec.model, key)
        assert comp.name == name, key
        assert comp.config == registry.load(comp.kind, name).Config(), key
    assert spec.model.augmentations == []
    assert spec.train == TrainSpec()
    assert spec.sampling == SamplingSpec()
    assert spec.output == "runs/lfads"


def test_component_given_as_bare_name():
    spec = spec_from_dict(raw_with(("model.reconstruction", "poisson")))
    assert spec.model.reconstruction.name == "poisson"


def test_int_accepted_for_float_fields():
    spec = spec_from_dict(raw_with(("train.lr", 1), ("model.ic_prior.variance", 2)))
    assert spec.train.lr == 1.0 and isinstance(spec.train.lr, float)
    assert isinstance(spec.model.ic_prior.config.variance, float)


def test_lorenz_example_loads():
    spec = load_spec(LORENZ_YAML)
    assert spec.model.reconstruction.name == "poisson"
    assert spec.data.path == str((LORENZ_YAML.parent / "data" / "lorenz.h5").resolve())


# --------------------------------------------------------------------------------------- #
# Wrong types
# --------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("path, value, expected", [
    ("model.generator.gen_dim", "64", "expected an integer"),
    ("model.generator.gen_dim", 1.5, "expected an integer"),
    ("model.generator.gen_dim", 64.0, "expected an integer"),
    ("model.generator.gen_dim", True, "expected an integer"),
    ("model.generator.gen_dim", None, "expected an integer"),
    ("model.generator.gen_dim", [64], "expected an integer"),
    ("model.encoder.ci_lag", "1", "expected an integer"),
    ("data.batch_size", "16", "expected an integer"),
    ("train.max_epochs", False, "expected an integer"),
    ("train.threads", "2", "expected an integer"),
    ("train.lr", "0.001", "expected a number"),
    ("train.lr", True, "expected a number"),
    ("model.dropout_rate", "0.1", "expected a number"),
    ("model.augmentations.0.rate", "0.2", "expected a number"),
    ("model.ic_prior.variance", {"a": 1}, "expected a number"),
    ("data.path", 5, "expected a file path, a glob"),
    ("output", 3.5, "expected a string"),
    ("sampling.plots", "yes", "true or false"),
    ("sampling.plots", 1, "true or false"),
    ("train.early_stopping.enabled", 0, "true or false"),
])
def test_wrong_type_is_a_one_line_error_with_path(path, value, expected):
    msg = spec_error(raw_with((path, value)))
    assert names_path(msg, path), msg
    assert expected in msg, msg


INT_FIELDS = ["model.generator.gen_dim", "model.generator.fac_dim", "model.encoder.ic_dim",
              "model.encoder.ci_lag", "data.batch_size", "train.max_epochs", "train.seed",
              "train.kl.ramp_epochs", "sampling.num_samples", "train.threads"]

not_an_int = st.one_of(
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@SETTINGS
@given(path=st.sampled_from(INT_FIELDS), value=not_an_int)
def test_any_non_int_for_an_int_field_is_rejected(path, value):
    if path == "train.threads" and value is None:
        return  # Optional
    msg = spec_error(raw_with((path, value)))
    assert names_path(msg, path), msg
    assert "expected an integer" in msg, msg


@SETTINGS
@given(path=st.sampled_from(["train.lr", "model.dropout_rate", "model.ic_prior.variance",
                             "train.kl.ic_scale", "model.augmentations.0.rate"]),
       value=st.one_of(st.text(max_size=12), st.booleans(), st.none(),
                       st.lists(st.floats(), max_size=2)))
def test_any_non_number_for_a_float_field_is_rejected(path, value):
    msg = spec_error(raw_with((path, value)))
    assert names_path(msg, path), msg
    assert "expected a number" in msg, msg


@SETTINGS
@given(value=st.integers(min_value=1, max_value=10_000))
def test_valid_ints_are_accepted(value):
    spec = spec_from_dict(raw_with(("model.generator.gen_dim", value), ("train.seed", value)))
    assert spec.model.generator.config.gen_dim == value
    assert type(spec.model.generator.config.gen_dim) is int


@pytest.mark.parametrize("value", [{}, {"a": 1}, "coordinated_dropout"])
def test_list_field_rejects_a_non_list(value):
    msg = spec_error(raw_with(("model.augmentations", value)))
    assert "model.augmentations" in msg and "list" in msg, msg


@pytest.mark.parametrize("path, value", [("data", 5), ("data", None), ("model", []),
                                         ("train", 3), ("sampling", []), ("train.kl", "x")])
def test_section_that_is_not_a_mapping(path, value):
    msg = spec_error(raw_with((path, value)))
    assert names_path(msg, path) and "expected a mapping" in msg, msg


@pytest.mark.parametrize("path, value", [("data", 5), ("model", []), ("train", 3)])
def test_section_that_is_not_a_mapping_is_still_one_line(path, value):
    msg = spec_error(raw_with((path, value)))
    assert msg.startswith(f"spec: {path}"), msg


@pytest.mark.parametrize("path", ["model.generator", "model.reconstruction",
                                  "model.augmentations.0"])
@pytest.mark.parametrize("value", [5, None, [1]])
def test_component_that_is_not_a_mapping(path, value):
    msg = spec_error(raw_with((path, value)))
    assert names_path(msg, path) and "mapping with a 'name' key" in msg, msg


def test_component_name_of_wrong_type():
    msg = spec_error(raw_with(("model.generator.name", 5)))
    assert "model.generator" in msg and "expected a string" in msg, msg


# --------------------------------------------------------------------------------------- #
# Out-of-range values
# --------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("path, value, expected", [
    ("model.generator.gen_dim", -1, ">= 1"),
    ("model.generator.gen_dim", 0, ">= 1"),
    ("model.generator.fac_dim", -40, ">= 1"),
    ("model.encoder.ic_dim", -4, ">= 1"),
    ("model.encoder.ci_lag", -1, ">= 0"),
    ("data.batch_size", 0, ">= 1"),
    ("train.max_epochs", 0, ">= 1"),
    ("train.lr", 0.0, "> 0"),
    ("train.lr", -0.1, "> 0"),
    ("train.lr", math.nan, "> 0"),
    ("train.kl.ramp_epochs", -1, ">= 0"),
    ("train.kl.ic_scale", -1e-6, ">= 0"),
    ("model.dropout_rate", 1.0, "in [0, 1)"),
    ("model.dropout_rate", -0.1, "in [0, 1)"),
    ("model.augmentations.0.rate", 1.0, "in [0, 1)"),
    ("model.augmentations.0.rate", 1.5, "in [0, 1)"),
    ("train.early_stopping.smoothing", 1.5, "in [0, 1]"),
    ("model.ic_prior.variance", -1.0, "> 0"),
    ("sampling.num_samples", 0, ">= 1"),
    ("data.bin_size_ms", -10, "> 0"),
    ("train.loss_scale", math.inf, "finite"),
    ("train.lr", math.inf, "a finite number > 0"),
    ("train.grad_clip", math.inf, "a finite number > 0"),
    ("train.kl.ic_scale", math.inf, "a finite number >= 0"),
    ("train.l2.gen_scale", -math.inf, ">= 0"),
    ("model.ic_prior.variance", math.inf, "a finite number > 0"),
])
def test_out_of_range_is_a_one_line_error_with_path(path, value, expected):
    msg = spec_error(raw_with((path, value)))
    assert names_path(msg, path), msg
    assert "must be" in msg and expected in msg, msg
    assert repr(value) in msg or str(float(value)) in msg, msg  # shows what it got


@SETTINGS
@given(path=st.sampled_from(["model.generator.gen_dim", "model.generator.fac_dim",
                             "model.encoder.ic_enc_dim", "model.encoder.ic_dim", "data.batch_size",
                             "sampling.num_samples"]),
       value=st.integers(max_value=0))
def test_non_positive_dims_are_rejected(path, value):
    msg = spec_error(raw_with((path, value)))
    assert names_path(msg, path) and "must be >= 1" in msg, msg


@SETTINGS
@given(value=st.one_of(st.floats(min_value=1.0), st.floats(max_value=-1e-12)))
def test_rates_outside_unit_interval_are_rejected(value):
    msg = spec_error(raw_with(("model.augmentations.0.rate", value)))
    assert names_path(msg, "model.augmentations.0.rate") and "must be in [0, 1)" in msg, msg


# --------------------------------------------------------------------------------------- #
# Every problem at once, one line each
# --------------------------------------------------------------------------------------- #
def spec_problems(raw: dict, source: str = "spec") -> list[str]:
    """The lines of the SpecError raised by structuring ``raw``, each ``source: path: problem``."""
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw, source=source)
    msg = str(info.value)
    assert "Traceback" not in msg and "more problem" not in msg, msg
    lines = msg.split("\n")
    assert lines == msg.splitlines() and all(line.strip() for line in lines), msg
    assert all(line.startswith(f"{source}: ") for line in lines), msg
    return [line.removeprefix(f"{source}: ") for line in lines]


def test_every_problem_is_reported_one_line_each_in_field_order():
    problems = spec_problems(raw_with(
        ("train.lr", -0.1), ("train.max_epochs", 0),  # two bad fields of one section
        ("model.encoder.ic_dimm", 3),  # a bad key of a component
        ("data.batch_size", "16"),  # a bad type in another section
        ("train.kl.ic_scale", -1.0),  # a nested class
        ("model.generator.gen_dim", 0), ("model.generator.fac_dim", -1),  # two in one component
        ("model.augmentations.0.rate", 1.5),  # a list item
    ), source="my.yaml")
    assert problems == [
        "data.batch_size: expected an integer, got str '16'",
        "model.encoder.ic_dimm: unknown key (expected one of: ic_enc_dim, ci_enc_dim, ic_dim, "
        "ci_lag, ic_enc_seq_len, ic_post_var_min, cell_clip), did you mean 'ic_dim'?",
        "model.generator.gen_dim: must be >= 1, got 0",
        "model.generator.fac_dim: must be >= 1, got -1",
        "model.augmentations.0.rate: must be in [0, 1), got 1.5",
        "train.max_epochs: must be >= 1, got 0",
        "train.lr: must be > 0.0, got -0.1",
        "train.kl.ic_scale: must be >= 0.0, got -1.0",
    ], problems


def test_problems_of_every_kind_are_listed_together():
    raw = raw_with(("model.generator.gen_dim", "8"), ("model.generator.co_dim", -1),
                   ("model.reconstruction.name", "poison"), ("train.kl", "x"),
                   ("train.l2.gen_scale", -1.0), ("trian", 1), ("sampling.plots", 1))
    del raw["data"]["path"]
    problems = spec_problems(raw)
    paths = [line.split(": ", 1)[0] for line in problems]
    assert paths == ["data.path", "model.generator.gen_dim", "model.generator.co_dim",
                     "model.reconstruction", "train.kl", "train.l2.gen_scale", "sampling.plots",
                     "trian"], problems
    assert problems[0] == "data.path: required field missing"
    assert "did you mean 'poisson'" in problems[3] and "did you mean 'train'" in problems[-1]


@SETTINGS
@given(bad=st.lists(st.sampled_from(["train.lr", "train.adam_eps", "train.grad_clip",
                                     "train.kl.co_scale", "model.generator.cell_clip",
                                     "model.dropout_rate", "sampling.num_samples"]),
                    min_size=1, max_size=7, unique=True))
def test_each_bad_field_is_one_line(bad):
    problems = spec_problems(raw_with(*[(path, -5) for path in bad]))
    assert sorted(line.split(": ", 1)[0] for line in problems) == sorted(bad), problems
    assert all("must be" in line and "got -5" in line for line in problems), problems


def test_problems_message_pickles_whole():
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw_with(("train.lr", 0.0), ("data.batch_size", 0)))
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is SpecError and str(back) == str(info.value)
    assert len(str(back).splitlines()) == 2


def test_cattrs_transform_error_keeps_paths():
    import cattrs

    from lfads_core.spec.convert import CONVERTER, error_lines
    with pytest.raises(cattrs.ClassValidationError) as info:
        CONVERTER.structure({"lr": 0.0, "kl": {"ramp_epochs": -1}, "nan": {"lr_factor": 2}},
                            TrainSpec)
    assert [m.rsplit(" @ ", 1)[1] for m in cattrs.transform_error(info.value)] == [
        "$.lr", "$.kl.ramp_epochs", "$.nan.lr_factor"]
    assert error_lines(info.value) == ["lr: must be > 0.0, got 0.0",
                                       "kl.ramp_epochs: must be >= 0, got -1",
                                       "nan.lr_factor: must be in [0, 1), got 2.0"]


# Plugin-style configs (string annotations, as under ``from __future__ import annotations``).
@attrs.frozen
class _Inner:
    a: "int" = attrs.field(default=1, validator=ge(0))
    b: "float" = attrs.field(default=0.5, validator=within(0.0, 1.0, high_inclusive=False))


@attrs.frozen
class _Outer:
    inner: "_Inner" = attrs.Factory(_Inner)
    items: "list[_Inner]" = attrs.Factory(list)
    mode: "str" = attrs.field(default="mean", validator=one_of("mean", "median"))
    lo: "int" = 0
    hi: "int" = attrs.field(default=10)
    threads: "Optional[int]" = attrs.field(default=None, validator=ge(1))

    @hi.validator
    def _hi_above_lo(self, attribute, value):
        if value < self.lo:
            raise ValueError(f"must be >= lo ({self.lo}), got {value}")

    def __attrs_post_init__(self):
        if self.lo == 13:
            raise FieldError("lo", "13 is not allowed")


def outer_problems(raw: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        structure(raw, _Outer, source="cfg")
    return str(info.value).splitlines()


def test_nested_class_errors_keep_their_full_paths():
    assert structure({"inner": {"a": 2}, "items": [{}, {"b": 0.25}]}, _Outer) == _Outer(
        inner=_Inner(a=2), items=[_Inner(), _Inner(b=0.25)])
    assert outer_problems({"inner": {"a": -1, "b": 1.0, "c": 0},
                           "items": [{"a": 0}, {"a": -2, "b": "x"}, 3],
                           "mode": "medain", "lo": 3, "hi": 2, "threads": 0}) == [
        "cfg: inner.a: must be >= 0, got -1",
        "cfg: inner.b: must be in [0.0, 1.0), got 1.0",
        "cfg: inner.c: unknown key (expected one of: a, b)",
        "cfg: items.1.a: must be >= 0, got -2",
        "cfg: items.1.b: expected a number, got str 'x'",
        "cfg: items.2: expected a mapping, got int 3",
        "cfg: mode: must be one of 'mean', 'median', got 'medain'; did you mean 'median'?",
        "cfg: hi: must be >= lo (3), got 2",
        "cfg: threads: must be >= 1, got 0",
    ]


def test_validator_reading_a_broken_field_adds_no_spurious_line():
    assert outer_problems({"lo": "x", "hi": 2}) == ["cfg: lo: expected an integer, got str 'x'"]


def test_post_init_error_is_reported_with_its_path():
    assert outer_problems({"lo": 13, "hi": 20}) == ["cfg: lo: 13 is not allowed"]
    assert outer_problems({"lo": 13, "hi": 2}) == ["cfg: hi: must be >= lo (13), got 2"]


def test_validators_run_once_per_field():
    calls = []

    def counting(_, attribute, value):
        calls.append((attribute.name, value))

    @attrs.frozen
    class Counted:
        x: int = attrs.field(default=0, validator=counting)
        y: int = attrs.field(default=1, validator=counting)

    counted = structure({"x": 3}, Counted)
    assert (counted.x, counted.y) == (3, 1)
    assert calls == [("x", 3), ("y", 1)]  # defaults are validated too, as attrs does


# --------------------------------------------------------------------------------------- #
# Validators: within, one_of
# --------------------------------------------------------------------------------------- #
@attrs.define
class _Rate:
    rate: float = 0.0


_FIELD = attrs.fields(_Rate).rate  # what attrs passes a validator


def check(validator, value) -> str | None:
    """None when ``validator`` accepts ``value``, else the FieldError message."""
    try:
        validator(None, _FIELD, value)
    except FieldError as exc:
        assert exc.field == "rate" and str(exc) == f"rate: {exc.message}"
        return exc.message
    return None


@pytest.mark.parametrize("kwargs, value, message", [
    ({}, 1.5, "must be in [0.0, 1.0], got 1.5"),
    ({}, -0.5, "must be in [0.0, 1.0], got -0.5"),
    ({"high_inclusive": False}, 1.0, "must be in [0.0, 1.0), got 1.0"),
    ({"low_inclusive": False}, 0.0, "must be in (0.0, 1.0], got 0.0"),
    ({"low_inclusive": False, "high_inclusive": False}, 1.0, "must be in (0.0, 1.0), got 1.0"),
    ({}, math.nan, "must be in [0.0, 1.0], got nan"),
    ({}, math.inf, "must be in [0.0, 1.0], got inf"),
    ({}, 0.0, None), ({}, 1.0, None), ({}, 0.5, None), ({}, None, None), ({}, 1, None),
    ({"high_inclusive": False}, 0.0, None), ({"low_inclusive": False}, 1.0, None),
])
def test_within_messages(kwargs, value, message):
    assert check(within(0.0, 1.0, **kwargs), value) == message


def test_within_int_bounds_and_bad_bounds():
    assert check(within(1, 10), 11) == "must be in [1, 10], got 11"
    assert check(within(1, 10), 10) is None
    with pytest.raises(ValueError):
        within(2, 1)


@SETTINGS
@given(low=st.floats(-1e6, 1e6), width=st.floats(0, 1e6), low_inc=st.booleans(),
       high_inc=st.booleans(),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**7, 10**7)))
def test_within_accepts_exactly_the_interval(low, width, low_inc, high_inc, value):
    high = low + width
    inside = ((low <= value) if low_inc else (low < value)) and \
             ((value <= high) if high_inc else (value < high))
    message = check(within(low, high, low_inclusive=low_inc, high_inclusive=high_inc), value)
    assert (message is None) == inside, (low, high, low_inc, high_inc, value, message)
    if message is not None:
        brackets = ("[" if low_inc else "(") + f"{low}, {high}" + ("]" if high_inc else ")")
        assert message == f"must be in {brackets}, got {value!r}"


@pytest.mark.parametrize("value, message", [
    ("d", "must be one of 'a', 'b', 'c', got 'd'"),
    ("medain", "must be one of 'mean', 'median', 'max', got 'medain'; did you mean 'median'?"),
    (3, "must be one of 'mean', 'median', 'max', got 3"),
    ("mean", None), ("max", None),
])
def test_one_of_messages(value, message):
    choices = ("a", "b", "c") if value == "d" else ("mean", "median", "max")
    assert check(one_of(*choices), value) == message


def test_one_of_is_strict_about_booleans():
    assert check(one_of(0, 1), True) == "must be one of 0, 1, got True"
    assert check(one_of(0, 1), 1) is None
    with pytest.raises(ValueError):
        one_of()


def test_old_validators_still_work():
    assert check(ge(1), 0) == "must be >= 1, got 0" and check(ge(1), None) is None
    assert check(gt(0.0), math.nan) == "must be > 0.0, got nan"
    assert check(unit_interval(), 1.0) == "must be in [0, 1), got 1.0"
    assert check(unit_interval(True), 1.0) is None
    assert check(finite, math.inf) == "must be a finite number, got inf"


# --------------------------------------------------------------------------------------- #
# Unknown keys and component names, missing fields
# --------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("path, suggestion", [
    ("model.generator.gen_dimm", "gen_dim"),
    ("model.encoder.ic_enc_dims", "ic_enc_dim"),
    ("data.batch_sise", "batch_size"),
    ("trian", "train"),
    ("train.kl.ramp_epoch", "ramp_epochs"),
    ("model.augmentations.0.rat", "rate"),
    ("model.dropout", "dropout_rate"),
])
def test_misspelt_key_names_the_key_and_suggests(path, suggestion):
    msg = spec_error(raw_with((path, 3)))
    assert names_path(msg, path), msg
    assert "unknown key" in msg and f"did you mean '{suggestion}'" in msg, msg


def test_unknown_key_lists_the_allowed_keys():
    msg = spec_error(raw_with(("model.generator.bogus_field", 1)))
    assert "model.generator.bogus_field" in msg
    for allowed in ("gen_dim", "con_dim", "co_dim", "fac_dim"):
        assert allowed in msg


@pytest.mark.parametrize("path, kind, bad, good", [
    ("model.reconstruction.name", "reconstruction", "poison", "poisson"),
    ("model.generator.name", "generator", "gur", "gru"),
    ("model.ic_prior.name", "prior", "normall", "normal"),
    ("model.augmentations.0.name", "augmentation", "coordinated_dropuot", "coordinated_dropout"),
])
def test_unknown_component_lists_installed_and_suggests(path, kind, bad, good):
    raw = raw_with((path, bad))
    if path == "model.ic_prior.name":
        raw["model"]["ic_prior"] = {"name": bad}
    msg = spec_error(raw)
    assert names_path(msg, path.rsplit(".", 1)[0]), msg
    assert f"'{bad}'" in msg and f"did you mean '{good}'" in msg, msg
    for name in registry.names(kind):
        assert name in msg, f"installed {kind} {name} not listed: {msg}"


def test_unknown_component_without_close_match_lists_installed():
    msg = spec_error(raw_with(("model.reconstruction.name", "zzzzzz")))
    assert "installed" in msg and "poisson" in msg and "gaussian" in msg, msg


def test_component_without_name():
    msg = spec_error(raw_with(("model.reconstruction", {"scale": 3})))
    assert "model.reconstruction" in msg and "name" in msg and "poisson" in msg, msg


@pytest.mark.parametrize("raw, path", [
    ({"model": {"reconstruction": "poisson"}}, "data"),
    ({"data": {"path": "x"}}, "model"),
    ({"data": {"path": "x"}, "model": {}}, "model.reconstruction"),
    ({"data": {}, "model": {"reconstruction": "poisson"}}, "data.path"),
])
def test_missing_required_field_names_its_path(raw, path):
    msg = spec_error(raw)
    assert msg.startswith(f"spec: {path}: required field missing"), msg


@pytest.mark.parametrize("raw, path", [
    ({"data": {"path": "x"}, "model": {}}, "model.reconstruction"),
    ({"data": {}, "model": {"reconstruction": "poisson"}}, "data.path"),
])
def test_missing_required_field_is_one_line(raw, path):
    msg = spec_error(raw)
    assert path in msg and "required field missing" in msg, msg


# --------------------------------------------------------------------------------------- #
# Reading files
# --------------------------------------------------------------------------------------- #
def test_yaml_syntax_error(tmp_path):
    path = write(tmp_path / "broken.yaml", "data: {path: x\nmodel: [\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    msg = one_line(info.value)
    assert str(path) in msg and "YAML syntax error" in msg and "line 2" in msg, msg


def test_yaml_tab_indentation_error(tmp_path):
    path = write(tmp_path / "tabs.yaml", "data:\n  path: x\n\tmodel: 3\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "line 3" in one_line(info.value)


@pytest.mark.parametrize("text, got", [("", "the spec file is empty"), ("# only a comment\n", "the spec file is empty"),
                                       ("- 1\n- 2\n", "got list"), ("3\n", "got int")])
def test_spec_file_not_a_mapping(tmp_path, text, got):
    path = write(tmp_path / "s.yaml", text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    msg = one_line(info.value)
    assert str(path) in msg and "mapping" in msg and got in msg, msg


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yaml")
    msg = one_line(info.value)
    assert "nope.yaml" in msg and "not found" in msg


def test_spec_path_is_a_directory(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert str(tmp_path) in one_line(info.value)


def test_error_from_a_file_names_the_file(tmp_path):
    path = write(tmp_path / "spec.yaml", yaml.safe_dump(raw_with(("model.generator.gen_dim", -2))))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    msg = one_line(info.value)
    assert str(path) in msg and "model.generator.gen_dim: must be >= 1, got -2" in msg, msg


# --------------------------------------------------------------------------------------- #
# --set overrides
# --------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("text, value", [
    ("3", 3), ("0.5", 0.5), ("1.0e-3", 0.001), ("-2", -2), ("true", True), ("false", False),
    ("null", None), ("~", None), ("", None), ("abc", "abc"), ("'3'", "3"), ('"64"', "64"),
    ("[1, 2]", [1, 2]), ("{name: normal, variance: 0.2}", {"name": "normal", "variance": 0.2}),
    ("a=b", "a=b"), (".inf", math.inf),
])
def test_parse_overrides_values(text, value):
    [(path, parsed)] = parse_overrides([f"train.kl.x={text}"])
    assert path == ["train", "kl", "x"]
    assert parsed == value and type(parsed) is type(value)


def test_parse_overrides_exponent_without_dot():
    [(_, value)] = parse_overrides(["train.lr=1e-3"])
    assert value == 0.001


def test_exponent_without_dot_in_a_spec_file(tmp_path):
    text = yaml.safe_dump(BASE).replace("max_epochs: 2", "max_epochs: 2\n  lr: 1e-3\n  adam_eps: 1E-7")
    spec = load_spec(write(tmp_path / "spec.yaml", text))
    assert spec.train.lr == 0.001 and spec.train.adam_eps == 1e-7


def test_component_with_a_default_but_without_name_gets_the_default():
    spec = spec_from_dict(raw_with(("model.encoder", {"ic_dim": 3})))
    assert spec.model.encoder.name == DEFAULT_COMPONENTS["encoder"]
    assert spec.model.encoder.config.ic_dim == 3


@SETTINGS
@given(value=st.one_of(st.integers(), st.booleans(),
                       st.floats(allow_nan=False, allow_infinity=False).map(lambda x: x + 0.5)))
def test_parse_overrides_round_trips_yaml_scalars(value):
    [(_, parsed)] = parse_overrides([f"a.b={yaml.safe_dump(value).splitlines()[0]}"])
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("item", ["noequals", "=3", " =3"])
def test_parse_overrides_bad_syntax(item):
    with pytest.raises(SpecError) as info:
        parse_overrides([item])
    msg = one_line(info.value)
    assert "KEY=VALUE" in msg and "--set" in msg


def test_parse_overrides_bad_yaml_value():
    with pytest.raises(SpecError) as info:
        parse_overrides(["train.lr=[1, 2"])
    assert "train.lr" in one_line(info.value)


def test_apply_overrides_nested_and_new_keys():
    raw = apply_overrides(BASE, parse_overrides(["model.generator.gen_dim=32", "train.kl.ramp_epochs=0",
                                                 "sampling.num_samples=7"]))
    assert raw["model"]["generator"]["gen_dim"] == 32
    assert raw["train"]["kl"] == {"ramp_epochs": 0}
    assert raw["sampling"] == {"num_samples": 7}
    assert BASE["model"]["generator"]["gen_dim"] == 8 and "kl" not in BASE["train"]  # copy


def test_apply_overrides_list_index():
    raw = apply_overrides(BASE, parse_overrides(["model.augmentations.0.rate=0.2"]))
    assert raw["model"]["augmentations"][0] == {"name": "coordinated_dropout", "rate": 0.2}
    spec = spec_from_dict(raw)
    assert spec.model.augmentations[0].config.rate == 0.2


def test_apply_overrides_later_wins():
    raw = apply_overrides(BASE, parse_overrides(["train.lr=0.1", "train.lr=0.2"]))
    assert raw["train"]["lr"] == 0.2


@pytest.mark.parametrize("item", ["model.augmentations.1.rate=0.2", "model.augmentations.x.rate=0.2"])
def test_apply_overrides_bad_list_index(item):
    with pytest.raises(SpecError) as info:
        apply_overrides(BASE, parse_overrides([item]))
    msg = one_line(info.value)
    assert "model.augmentations" in msg and "list" in msg, msg


def test_apply_overrides_through_a_scalar():
    with pytest.raises(SpecError) as info:
        apply_overrides(BASE, parse_overrides(["model.generator.gen_dim.x=3"]))
    msg = one_line(info.value)
    assert "model.generator.gen_dim" in msg and "not a mapping" in msg, msg


def test_load_spec_with_overrides(tmp_path):
    path = write(tmp_path / "spec.yaml", yaml.safe_dump(BASE))
    spec = load_spec(path, ["model.augmentations.0.rate=0.2", "model.generator.gen_dim=16",
                            "train.kl.ramp_epochs=0", "model.ic_prior={name: normal, variance: 0.3}"])
    assert spec.model.augmentations[0].config.rate == 0.2
    assert spec.model.generator.config.gen_dim == 16
    assert spec.train.kl.ramp_epochs == 0
    assert spec.model.ic_prior.config.variance == 0.3


def test_overrides_are_validated(tmp_path):
    path = write(tmp_path / "spec.yaml", yaml.safe_dump(BASE))
    with pytest.raises(SpecError) as info:
        load_spec(path, ["model.augmentations.0.rate=1.0"])
    msg = one_line(info.value)
    assert names_path(msg, "model.augmentations.0.rate") and "in [0, 1)" in msg, msg
    with pytest.raises(SpecError) as info:
        load_spec(path, ["model.generator.gen_dim='64'"])
    assert "model.generator.gen_dim: expected an integer, got str '64'" in one_line(info.value)


def test_override_replaces_a_component(tmp_path):
    path = write(tmp_path / "spec.yaml", yaml.safe_dump(BASE))
    spec = load_spec(path, ["model.reconstruction.name=gaussian"])
    assert spec.model.reconstruction.name == "gaussian"


def test_override_param_of_an_omitted_component(tmp_path):
    raw = copy.deepcopy(BASE)
    del raw["model"]["ic_prior"]
    path = write(tmp_path / "spec.yaml", yaml.safe_dump(raw))
    spec = load_spec(path, ["model.ic_prior.variance=0.2"])
    assert spec.model.ic_prior.name == "normal" and spec.model.ic_prior.config.variance == 0.2


def test_override_list_item_of_a_missing_list(tmp_path):
    raw = copy.deepcopy(BASE)
    del raw["model"]["augmentations"]
    path = write(tmp_path / "spec.yaml", yaml.safe_dump(raw))
    with pytest.raises(SpecError) as info:
        load_spec(path, ["model.augmentations.0.rate=0.2"])
    msg = one_line(info.value).replace(str(path), "SPEC")
    assert "unknown augmentation" not in msg, msg
    assert "model.augmentations" in msg and "list" in msg, msg


# --------------------------------------------------------------------------------------- #
# Paths and --out
# --------------------------------------------------------------------------------------- #
def test_relative_paths_resolve_against_the_spec_folder(tmp_path, monkeypatch):
    raw = copy.deepcopy(BASE)
    raw["data"]["path"] = "../data/x.h5"
    raw["output"] = "runs/a"
    path = write(tmp_path / "specs" / "spec.yaml", yaml.safe_dump(raw))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(Path("..") / "specs" / "spec.yaml")
    assert spec.data.path == str((tmp_path / "data" / "x.h5").resolve())
    assert spec.output == str((tmp_path / "specs" / "runs" / "a").resolve())


def test_absolute_paths_are_kept(tmp_path):
    raw = copy.deepcopy(BASE)
    raw["data"]["path"] = str(tmp_path / "abs.h5")
    raw["output"] = str(tmp_path / "out")
    spec = load_spec(write(tmp_path / "s" / "spec.yaml", yaml.safe_dump(raw)))
    assert spec.data.path == str(tmp_path / "abs.h5")
    assert spec.output == str(tmp_path / "out")


def test_relative_path_override_resolves_against_the_spec_folder(tmp_path):
    path = write(tmp_path / "s" / "spec.yaml", yaml.safe_dump(BASE))
    spec = load_spec(path, ["data.path=other.h5"])
    assert spec.data.path == str((tmp_path / "s" / "other.h5").resolve())


def test_out_overrides_output_and_resolves_against_cwd(tmp_path, monkeypatch):
    raw = copy.deepcopy(BASE)
    raw["output"] = "runs/a"
    path = write(tmp_path / "s" / "spec.yaml", yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert load_spec(path, out="mine").output == str(tmp_path / "mine")
    assert load_spec(path, out=str(tmp_path / "x" / "y")).output == str(tmp_path / "x" / "y")
    assert load_spec(path).output == str(tmp_path / "s" / "runs" / "a")


# --------------------------------------------------------------------------------------- #
# Round trips
# --------------------------------------------------------------------------------------- #
def test_dump_load_round_trip_lorenz(tmp_path):
    spec = load_spec(LORENZ_YAML)
    text = dump_spec(spec)
    assert spec_from_dict(yaml.safe_load(text)) == spec
    again = load_spec(write(tmp_path / "elsewhere" / "resolved.yaml", text))
    assert again == spec
    assert dump_spec(again) == text


def test_dumped_spec_names_every_component():
    raw = yaml.safe_load(dump_spec(spec_from_dict(BASE)))
    for key in DEFAULT_COMPONENTS:
        assert isinstance(raw["model"][key]["name"], str)
    assert raw["model"]["augmentations"] == [{"name": "coordinated_dropout", "rate": 0.1}]
    assert raw["model"]["generator"]["gen_dim"] == 8
    assert spec_to_dict(spec_from_dict(BASE)) == raw


@SETTINGS
@given(gen_dim=st.integers(1, 512), rate=st.floats(0.0, 0.99), lr=st.floats(1e-6, 1.0),
       n_aug=st.integers(0, 2), plots=st.booleans(), bin_ms=st.one_of(st.none(), st.floats(0.1, 50)))
def test_round_trip_random_specs(gen_dim, rate, lr, n_aug, plots, bin_ms):
    raw = raw_with(("model.generator.gen_dim", gen_dim), ("train.lr", lr),
                   ("sampling.plots", plots), ("data.bin_size_ms", bin_ms),
                   ("model.augmentations", [{"name": "coordinated_dropout", "rate": rate}] * n_aug))
    spec = spec_from_dict(raw)
    assert spec_from_dict(yaml.safe_load(dump_spec(spec))) == spec


def test_spec_is_frozen_and_hashable_parts():
    spec = spec_from_dict(BASE)
    with pytest.raises(Exception):
        spec.train.lr = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------------------- #
# Exceptions pickle
# --------------------------------------------------------------------------------------- #
ERROR_CLASSES = sorted(
    (cls for _, cls in inspect.getmembers(errors, inspect.isclass)
     if issubclass(cls, BaseException) and cls.__module__ == errors.__name__),
    key=lambda c: c.__name__)


def test_errors_module_has_the_expected_classes():
    names = {c.__name__ for c in ERROR_CLASSES}
    assert {"LfadsError", "SpecError", "DataError", "PluginError", "RunDirError",
            "TrainingError"} <= names


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_error_pickles(cls, protocol):
    exc = cls("model.generator.gen_dim: must be >= 1, got 0")
    back = pickle.loads(pickle.dumps(exc, protocol=protocol))
    assert type(back) is cls
    assert str(back) == str(exc)
    assert back.args == exc.args
    assert getattr(back, "message", None) == getattr(exc, "message", None)
    if issubclass(cls, errors.LfadsError):
        assert isinstance(back, errors.LfadsError)


def test_raised_spec_error_pickles():
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw_with(("model.generator.gen_dim", "64")))
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is SpecError and str(back) == str(info.value)


def test_field_error_pickles():
    exc = FieldError("gen_dim", "must be >= 1, got 0")
    back = pickle.loads(pickle.dumps(exc))
    assert (back.field, back.message, str(back)) == (exc.field, exc.message, str(exc))


def test_on_off_yes_no_are_strings_as_in_yaml_1_2(tmp_path):
    """``train.cuda_graphs: off`` and ``train.compile: on`` are the strings the fields expect
    (YAML 1.1 would read them as booleans); only true/false are booleans."""
    path = tmp_path / "spec.yaml"
    raw = copy.deepcopy(BASE)
    raw["train"] = {"cuda_graphs": "off", "compile": "on"}
    path.write_text(yaml.safe_dump(raw).replace("'off'", "off").replace("'on'", "on"))
    assert "cuda_graphs: off" in path.read_text()
    spec = load_spec(path)
    assert (spec.train.cuda_graphs, spec.train.compile) == ("off", "on")
    assert load_spec(path, ["train.cuda_graphs=on", "sampling.plots=false"]).train.cuda_graphs == "on"
    with pytest.raises(SpecError, match=r"sampling.plots: expected true or false, got str 'yes'"):
        load_spec(path, ["sampling.plots=yes"])


def test_a_key_given_twice_is_an_error_with_its_lines(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("data:\n  path: x.h5\n  batch_size: 64\n  batch_size: 32\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == (f"{path}: YAML syntax error at line 4, column 3: duplicate key "
                               "'batch_size' (first at line 3)")


def test_a_negative_list_index_in_set_is_named():
    with pytest.raises(SpecError, match=r"model.augmentations has no list item -1"):
        spec_from_dict(apply_overrides({"data": {"path": "x.h5"}, "model": {}},
                                       parse_overrides(["model.augmentations.-1.rate=0.2"])))


def test_a_parameter_of_a_component_without_parameters_says_so():
    msg = spec_error({"data": {"path": "x.h5"}, "model": {"reconstruction": {"name": "poisson", "foo": 1}}})
    assert msg.endswith("model.reconstruction.foo: unknown key (no parameters here besides name)"), msg


def test_yaml_anchors_and_merge_keys_still_work(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("small: &small {gen_dim: 16, fac_dim: 4}\ndata: {path: x.h5}\n"
                    "model:\n  generator:\n    name: gru\n    <<: *small\n    fac_dim: 8\n")
    raw = read_yaml(path)
    assert raw["model"]["generator"] == {"name": "gru", "gen_dim": 16, "fac_dim": 8}


def test_override_a_search_space_entry(tmp_path):
    """Search-space keys are dotted paths: --set reaches a field of an entry, a whole entry, and
    changes the default space when the spec has none; errors name the entry as a dotted path."""
    path = write(tmp_path / "spec.yaml", yaml.safe_dump(BASE))
    spec = load_spec(path, ["pbt.search_space.train.lr.low=1e-4",
                            "pbt.search_space.model.augmentations.0.rate={low: 0.1, high: 0.5}"])
    space = spec.pbt.search_space
    assert space["train.lr"].low == 1e-4 and space["train.lr"].high == default_search_space()["train.lr"].high
    assert space["model.augmentations.0.rate"].high == 0.5
    assert set(space) == set(default_search_space()) | {"model.augmentations.0.rate"}
    with pytest.raises(SpecError) as info:
        load_spec(path, ["pbt.search_space.train.lr.hi=3"])
    assert one_line(info.value).endswith("pbt.search_space.train.lr.hi: unknown key (expected one of: "
                                         "low, high, sample, explore_weight), did you mean 'high'?")
    with pytest.raises(SpecError) as info:
        load_spec(path, ["pbt.search_space.train.lr.low=-1"])
    assert "pbt.search_space.train.lr.low: must be > 0 for sample: log, got -1" in one_line(info.value)
    raw = dict(copy.deepcopy(BASE), pbt={"search_space": {"train.lr": {"low": 1e-4, "high": 1e-2}}})
    spec = load_spec(write(tmp_path / "own.yaml", yaml.safe_dump(raw)), ["pbt.search_space.train.lr.high=0.02"])
    assert set(spec.pbt.search_space) == {"train.lr"} and spec.pbt.search_space["train.lr"].high == 0.02
