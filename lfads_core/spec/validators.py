"""attrs validators whose messages read ``<field>: must be ..., got <value>``.

They raise :class:`FieldError` so the spec converter can attach the full path of the field.
"""

from __future__ import annotations

import math


class FieldError(ValueError):
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
    def validate(_, attribute, value):
        if value is not None:
            _check(value >= bound and not _nan(value), attribute, value, f">= {bound}")
    return validate


def gt(bound):
    def validate(_, attribute, value):
        if value is not None:
            _check(value > bound and not _nan(value), attribute, value, f"> {bound}")
    return validate


def unit_interval(inclusive_high: bool = False):
    """0 <= value < 1 (or <= 1)."""
    def validate(_, attribute, value):
        ok = 0.0 <= value <= 1.0 if inclusive_high else 0.0 <= value < 1.0
        _check(ok and not _nan(value), attribute, value, "in [0, 1]" if inclusive_high else "in [0, 1)")
    return validate


def finite(_, attribute, value):
    _check(value is None or math.isfinite(value), attribute, value, "a finite number")


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)
