"""One cattrs converter for the spec: strict scalar types, unknown keys rejected, components
resolved through the registry, and errors formatted as ``path.to.field: what was expected``."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn

from .. import registry
from ..errors import PluginError, SpecError
from .schema import Component
from .validators import FieldError

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


class _TypeMismatch(TypeError):
    def __init__(self, expected: str, value: Any):
        super().__init__(f"expected {expected}, got {_describe(value)}")


def _describe(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return f"{type(value).__name__} {value!r}" if value is not None else "nothing (null)"


def _strict(tp: type):
    def hook(value, _):
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if type(value) is not tp and not (tp is float and isinstance(value, float)):
            raise _TypeMismatch(_TYPE_NAMES[tp], value)
        return value
    return hook


def _strict_list(tp, converter: cattrs.Converter):
    inner = list_structure_factory(tp, converter)

    def hook(value, _):
        if not isinstance(value, list):
            raise _TypeMismatch("a list", value)
        return inner(value, tp)
    return hook


def _strict_class(cls, converter: cattrs.Converter):
    inner = make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True)

    def hook(value, _):
        if not isinstance(value, dict):
            raise _TypeMismatch("a mapping", value)
        return inner(value, cls)
    return hook


def _structure_component(converter: cattrs.Converter):
    def hook(value, cls):
        kind = cls.kind
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise _TypeMismatch(f"a mapping with a 'name' key selecting {_article(kind)} {kind}", value)
        if "name" not in value:
            raise SpecError(f"missing 'name' (installed {kind}s: {', '.join(registry.names(kind))})")
        name = value["name"]
        if not isinstance(name, str):
            raise _TypeMismatch("a string", name)
        component = registry.load(kind, name)
        params = {k: v for k, v in value.items() if k != "name"}
        config = converter.structure(params, component.Config)
        return cls(name=name, config=config)
    return hook


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _unstructure_component(converter: cattrs.Converter):
    def hook(component: Component) -> dict:
        return {"name": component.name, **converter.unstructure(component.config)}
    return hook


def make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for tp in (int, float, str, bool):
        conv.register_structure_hook(tp, _strict(tp))
    conv.register_structure_hook_factory(attrs.has, _strict_class)
    conv.register_structure_hook_factory(lambda t: typing.get_origin(t) is list, _strict_list)
    is_component = lambda t: isinstance(t, type) and issubclass(t, Component)  # noqa: E731
    conv.register_structure_hook_func(is_component, _structure_component(conv))
    conv.register_unstructure_hook_func(is_component, _unstructure_component(conv))
    return conv


CONVERTER = make_converter()


def _format(exc: BaseException, _type) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        allowed = [f.name for f in attrs.fields(exc.cl)]
        parts = []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f", did you mean '{close[0]}'?" if close else ""
            parts.append(f"\x00{key}\x00unknown key (expected one of: {', '.join(allowed)}){hint}")
        return "\x01".join(parts)
    if isinstance(exc, FieldError):
        return f"\x00{exc.field}\x00{exc.message}"
    if isinstance(exc, KeyError):  # cattrs already put the field in the path
        return "required field missing"
    if isinstance(exc, (PluginError, SpecError, _TypeMismatch)):
        return str(exc)
    if isinstance(exc, TypeError) and "required positional argument" in str(exc):
        missing = str(exc).rsplit(":", 1)[-1].strip().strip("'")
        return f"\x00{missing}\x00required field missing"
    if isinstance(exc, (AttributeError, TypeError, ValueError)):
        return f"expected a mapping, got {exc}" if "items" in str(exc) else str(exc)
    return f"{type(exc).__name__}: {exc}"


def error_lines(exc: BaseException) -> list[str]:
    """Flatten a cattrs error tree into ``path: message`` lines."""
    lines = []
    for raw in cattrs.transform_error(exc, path="$", format_exception=_format):
        message, _, path = raw.rpartition(" @ ")
        # list items as in --set paths: model.augmentations.0.rate
        path = re.sub(r"\[(\d+)\]", r".\1", path).removeprefix("$").removeprefix(".")
        for part in message.split("\x01"):
            if part.startswith("\x00"):
                _, field, text = part.split("\x00", 2)
                full = f"{path}.{field}" if path else field
                lines.append(f"{full}: {text}")
            else:
                lines.append(f"{path or 'spec'}: {part}")
    return lines


def structure(raw: dict, cls: type, source: str = "spec"):
    """Structure a raw mapping into ``cls``; raise a one-line SpecError on any problem."""
    try:
        return CONVERTER.structure(raw, cls)
    except (ClassValidationError, IterableValidationError) as exc:
        lines = error_lines(exc)
    except (PluginError, SpecError, _TypeMismatch) as exc:
        lines = [str(exc)]
    first = lines[0]
    more = f" (and {len(lines) - 1} more problem{'s' if len(lines) > 2 else ''})" if len(lines) > 1 else ""
    raise SpecError(f"{source}: {first}{more}")


def unstructure(obj) -> dict:
    return CONVERTER.unstructure(obj)
