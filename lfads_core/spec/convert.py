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
from cattrs.errors import (AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError,
                           IterableValidationError)

from .. import registry
from ..errors import PluginError, SpecError
from .schema import Component, DataPath
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
    """Structure hook of an attrs class that reports every problem of the mapping at once.

    Each field is structured on its own (a structuring error, a missing required field and an
    unknown key are each one problem), then every field's validator runs on its value (each
    failure is one problem); only when there is none is the instance built, with validators
    disabled so they do not run twice. Problems are raised together as cattrs'
    ``ClassValidationError`` with an ``AttributeValidationNote`` per field, in field order
    (unknown keys last), so :func:`error_lines` and ``cattrs.transform_error`` give their paths.
    """
    try:
        attrs.resolve_types(cls)  # string annotations (``from __future__ import annotations``)
        unresolved = None
    except Exception as exc:  # noqa: BLE001 - reported when the class is structured
        unresolved = (f"cannot read the field types of {cls.__qualname__} "
                      f"({type(exc).__name__}: {exc})")
    fields = attrs.fields(cls)
    init_fields = [f for f in fields if f.init]
    allowed = {f.name for f in init_fields}
    handlers: dict[str, Any] = {}

    def handler(f):
        if f.name not in handlers:
            handlers[f.name] = converter.get_structure_hook(f.type)
        return handlers[f.name]

    def hook(value, _):
        if unresolved:
            raise SpecError(unresolved)
        if not isinstance(value, dict):
            raise _TypeMismatch("a mapping", value)
        structured: dict[str, Any] = {}
        failed: dict[str, list[Exception]] = {}
        for f in init_fields:
            if f.name not in value:
                if f.default is attrs.NOTHING:
                    failed[f.name] = [KeyError(f.name)]
                continue
            try:
                structured[f.name] = handler(f)(value[f.name], f.type)
            except Exception as exc:  # noqa: BLE001 - every problem becomes one line
                failed[f.name] = [exc]
        _validate(cls, fields, structured, failed)
        errors = [_noted(exc, cls, _note_name(exc, f), f.type)
                  for f in fields for exc in failed.get(f.name, ())]
        unknown = set(value) - allowed
        if unknown:
            errors.append(ForbiddenExtraKeysError("", cls, unknown))
        if errors:
            raise ClassValidationError(f"While structuring {cls.__qualname__}", errors, cls)
        try:
            with attrs.validators.disabled():
                return cls(**{f.alias: structured[f.name]
                              for f in init_fields if f.name in structured})
        except Exception as exc:  # noqa: BLE001 - e.g. __attrs_post_init__: path of the class
            raise ClassValidationError(f"While structuring {cls.__qualname__}", [exc],
                                       cls) from None
    return hook


def _validate(cls, fields, structured: dict, failed: dict) -> None:
    """Run the validator of every field that has a value (structured, or its default) and add
    each failure to ``failed``. Validators get a stand-in instance holding the field values
    (converters applied), as attrs would give them the instance being built."""
    shadow = object.__new__(cls)
    values = {}
    for f in fields:
        if f.name in failed:
            continue
        try:
            if f.name in structured:
                v = _convert(f, structured[f.name], shadow)
            elif f.default is attrs.NOTHING:
                continue
            elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
                v = f.default.factory(shadow) if f.default.takes_self else f.default.factory()
            else:
                v = f.default
            object.__setattr__(shadow, f.name, v)
            values[f.name] = v
        except Exception as exc:  # noqa: BLE001 - a converter failed: a problem of the field
            failed[f.name] = [exc]
    for f in fields:
        if f.validator is None or f.name not in values:
            continue
        try:
            f.validator(shadow, f, values[f.name])
        except AttributeError as exc:
            if len(values) == len(fields):
                failed.setdefault(f.name, []).append(exc)
            # else it read a field without a value, whose own problem is already reported
        except Exception as exc:  # noqa: BLE001 - FieldError, ValueError, or a validator's bug
            failed.setdefault(f.name, []).append(exc)


def _convert(f, value, shadow):
    conv = f.converter
    if conv is None:
        return value
    if isinstance(conv, attrs.Converter):
        args = [value] + ([shadow] if conv.takes_self else []) + ([f] if conv.takes_field else [])
        return conv.converter(*args)
    return conv(value)


def _note_name(exc: BaseException, f) -> str:
    # A validator's FieldError names its field (normally the validated one).
    return exc.field if isinstance(exc, FieldError) else f.name


def _noted(exc: Exception, cls, name: str, tp) -> Exception:
    note = AttributeValidationNote(f"Structuring class {cls.__qualname__} @ attribute {name}",
                                   name, tp)
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]
    return exc


def _structure_data_path(value, _):
    """``data.path``: a string, or a non-empty list of strings."""
    if isinstance(value, str):
        if not value:
            raise _TypeMismatch("a file path, a glob or a list of them", value)
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise _TypeMismatch("a file path, a glob (data/*.h5) or a non-empty list of file paths", value)


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
    conv.register_structure_hook(DataPath, _structure_data_path)
    conv.register_structure_hook_factory(attrs.has, _strict_class)
    conv.register_structure_hook_factory(lambda t: typing.get_origin(t) is list, _strict_list)
    is_component = lambda t: isinstance(t, type) and issubclass(t, Component)  # noqa: E731
    conv.register_structure_hook_func(is_component, _structure_component(conv))
    conv.register_unstructure_hook_func(is_component, _unstructure_component(conv))
    return conv


CONVERTER = make_converter()


def _format(exc: BaseException, _type) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        allowed = [f.name for f in attrs.fields(exc.cl) if f.init]
        parts = []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f", did you mean '{close[0]}'?" if close else ""
            expected = f"expected one of: {', '.join(allowed)}" if allowed else "no parameters here besides name"
            parts.append(f"\x00{key}\x00unknown key ({expected}){hint}")
        return "\x01".join(parts)
    if isinstance(exc, FieldError):
        if any(type(note) is AttributeValidationNote for note in getattr(exc, "__notes__", ())):
            return exc.message  # a validator's failure: the note already put the field in the path
        return f"\x00{exc.field}\x00{exc.message}"  # e.g. from __attrs_post_init__
    if isinstance(exc, KeyError):  # cattrs already put the field in the path
        return "required field missing"
    if isinstance(exc, (PluginError, SpecError, _TypeMismatch)):
        return str(exc)
    if isinstance(exc, TypeError) and "required positional argument" in str(exc):
        missing = str(exc).rsplit(":", 1)[-1].strip().strip("'")
        return f"\x00{missing}\x00required field missing"
    if isinstance(exc, (AttributeError, TypeError, ValueError)):
        got = re.match(r"'(\w+)' object has no attribute 'items'", str(exc))
        if got:
            return f"expected a mapping (key: value lines), got a {got.group(1)}"
        return f"expected a mapping, got {exc}" if "items" in str(exc) else str(exc)
    return f"{type(exc).__name__}: {exc}"


def error_lines(exc: BaseException) -> list[str]:
    """Flatten a cattrs error tree into ``path: message`` lines, one per problem."""
    lines = []
    for raw in cattrs.transform_error(exc, path="$", format_exception=_format):
        message, _, path = raw.rpartition(" @ ")
        # list items as in --set paths: model.augmentations.0.rate
        path = re.sub(r"\[(\d+)\]", r".\1", path).removeprefix("$").removeprefix(".")
        path = re.sub(r"\['([^']*)'\]", r".\1", path)  # mapping keys: pbt.search_space.train.lr
        for part in message.split("\x01"):
            if part.startswith("\x00"):
                _, field, text = part.split("\x00", 2)
                full = f"{path}.{field}" if path else field
                lines.append(f"{full}: {_one_line(text)}")
            else:
                lines.append(f"{path or 'spec'}: {_one_line(part)}")
    return lines


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


def structure(raw: dict, cls: type, source: str = "spec"):
    """Structure a raw mapping into ``cls``, or raise one SpecError listing every problem.

    The message has one line per problem, ``{source}: {path}: {problem}``, in the order of the
    fields of ``cls`` (unknown keys after the fields of their section);
    ``str(exc).splitlines()`` gives the problems.
    """
    try:
        return CONVERTER.structure(raw, cls)
    except (ClassValidationError, IterableValidationError) as exc:
        lines = error_lines(exc)
    except (PluginError, SpecError, _TypeMismatch) as exc:
        lines = [_one_line(str(exc))]
    raise SpecError("\n".join(f"{source}: {line}" for line in lines)) from None


def unstructure(obj) -> dict:
    return CONVERTER.unstructure(obj)
