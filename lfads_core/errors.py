"""Exceptions of lfads. All are picklable (Ray ships them between processes).

Each carries a one-line, user-facing message. The CLI prints ``error: <message>`` and exits
with code 2 for every :class:`LfadsError`.
"""

from __future__ import annotations


class LfadsError(Exception):
    """Base class: a problem the user can fix (bad spec, data, plugin or run directory)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        return (type(self), (self.message,))

    def __str__(self) -> str:
        return self.message


class SpecError(LfadsError):
    """The spec (YAML, overrides or values) is invalid."""


class DataError(LfadsError):
    """A data file is missing, unreadable, or does not fit the model."""


class PluginError(LfadsError):
    """A component name is unknown, ambiguous, or its plugin failed to import."""


class RunDirError(LfadsError):
    """The output directory cannot be used for this run."""


class TrainingError(LfadsError):
    """Training cannot go on (for example repeated non-finite losses)."""
