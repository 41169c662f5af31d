"""attrs validators whose messages read ``<field>: must be ..., got <value>``.

Use them in the ``Config`` of a component (and in the spec classes)::

    @attrs.frozen
    class LaplaceConfig:
        scale: float = attrs.field(default=1.0, validator=gt(0.0))
        rate: float = attrs.field(default=0.1, validator=within(0.0, 1.0, high_inclusive=False))
        mode: str = attrs.field(default="mean", validator=one_of("mean", "median"))

They raise :class:`FieldError`, so the spec converter reports the full path of the field
(``model.ic_prior.scale: must be > 0.0, got -1.0``). The converter runs the validators of
every field and reports every failing one, one line each. A validator of your own may raise
:class:`FieldError` (or any ``ValueError``) the same way.
"""

from __future__ import annotations

import difflib
import math
import re

__all__ = ["FieldError", "ge", "gt", "within", "one_of", "matches", "unit_interval", "finite"]


class FieldError(ValueError):
    """A field's value is invalid: ``field`` names it, ``message`` says what was expected
    (``must be >= 1, got 0``). The spec converter prefixes the path of the field's class."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):
        return (type(self), (self.field, self.message))


def _check(cond: bool, attribute, value, expected: str) -> None:
    if not cond:
        raise FieldError(attribute.name, f"must be {expected}, got {value!r}")


def ge(bound):
    """``value >= bound`` and finite; ``None`` passes, NaN and ±inf fail."""
    def validate(_, attribute, value):
        if value is not None:
            _check(value >= bound and not _nan(value), attribute, value, f">= {bound}")
            _check(not _inf(value), attribute, value, f"a finite number >= {bound}")
    return validate


def gt(bound):
    """``value > bound`` and finite; ``None`` passes, NaN and ±inf fail."""
    def validate(_, attribute, value):
        if value is not None:
            _check(value > bound and not _nan(value), attribute, value, f"> {bound}")
            _check(not _inf(value), attribute, value, f"a finite number > {bound}")
    return validate


def within(low, high, *, low_inclusive: bool = True, high_inclusive: bool = True):
    """``low <= value <= high`` (each bound inclusive unless told otherwise); ``None`` passes,
    NaN fails. The message shows the interval: ``must be in [0.0, 1.0), got 1.5``.

    ``within(0.0, 1.0)`` is [0, 1], ``within(0.0, 1.0, high_inclusive=False)`` is [0, 1),
    ``within(0, 10, low_inclusive=False)`` is (0, 10].
    """
    if low > high:
        raise ValueError(f"within: low ({low!r}) must not exceed high ({high!r})")
    interval = f"{'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"

    def validate(_, attribute, value):
        if value is None:
            return
        above = value >= low if low_inclusive else value > low
        below = value <= high if high_inclusive else value < high
        _check(above and below and not _nan(value), attribute, value, f"in {interval}")
    return validate


def one_of(*choices):
    """``value in choices``; the message lists them and suggests the closest string:
    ``must be one of 'mean', 'median', got 'medain'; did you mean 'median'?``."""
    if not choices:
        raise ValueError("one_of: give at least one choice")
    listed = ", ".join(repr(c) for c in choices)

    def validate(_, attribute, value):
        if any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
            return
        message = f"must be one of {listed}, got {value!r}"
        if isinstance(value, str):
            strings = [c for c in choices if isinstance(c, str)]
            close = difflib.get_close_matches(value, strings, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
        raise FieldError(attribute.name, message)
    return validate


def matches(pattern: str, expected: str):
    """A string matching the regular expression ``pattern`` in full; the message says
    ``expected`` (e.g. ``must be auto, cpu, cuda or cuda:N, got 'gpu'``)."""
    compiled = re.compile(pattern)

    def validate(_, attribute, value):
        if not (isinstance(value, str) and compiled.fullmatch(value)):
            raise FieldError(attribute.name, f"must be {expected}, got {value!r}")
    return validate


def unit_interval(inclusive_high: bool = False):
    """0 <= value < 1 (or <= 1 with ``inclusive_high``): ``within(0, 1, ...)``. Message
    ``in [0, 1)``."""
    return within(0, 1, high_inclusive=inclusive_high)


def finite(_, attribute, value):
    """Not NaN nor ±inf; ``None`` passes."""
    _check(value is None or math.isfinite(value), attribute, value, "a finite number")


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _inf(value) -> bool:
    return isinstance(value, float) and math.isinf(value)
