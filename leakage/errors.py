"""Typed errors of the leakage package.

Every error is a :class:`LeakageError`; each message says what was expected and what
arrived, so a caller can act on it without reading a traceback.
"""

from __future__ import annotations


class LeakageError(Exception):
    """Base class of every error raised by ``leakage``."""


class UnknownNameError(LeakageError, KeyError):
    """A model, attack or dataset name that is not registered."""

    def __init__(self, kind: str, name: str, valid: list[str] | tuple[str, ...]) -> None:
        self.kind = kind
        self.name = name
        self.valid = tuple(valid)
        super().__init__(f"unknown {kind} {name!r}; expected one of: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class ShapeMismatchError(LeakageError, ValueError):
    """A gradient, vector or image whose shape does not fit the model or the attack."""


class DatasetNotFoundError(LeakageError, FileNotFoundError):
    """A local dataset directory or file that is missing or incomplete."""


class DatasetFormatError(LeakageError, ValueError):
    """A dataset file that exists but does not have the expected layout."""


class AttackConfigError(LeakageError, ValueError):
    """An attack asked for something it cannot do (wrong model kind, bad option)."""


class DeviceError(LeakageError, RuntimeError):
    """A device that was asked for but is not available."""
