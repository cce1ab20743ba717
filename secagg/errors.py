"""Typed errors of secagg: one base, one class per way a round can go wrong.

Every message says what was expected and what arrived, so that a user reading a
traceback from a ten-client round knows which client, which stage and which number.
Errors never carry secret material (keys, seeds, plaintext updates) in their text.
"""

from __future__ import annotations


class SecAggError(Exception):
    """Base of every error secagg raises on purpose."""


class ConfigError(SecAggError, ValueError):
    """A configuration value is out of its valid range."""


class EncodingOverflowError(SecAggError, OverflowError):
    """Values cannot be encoded, or their sum would wrap around the ring or a slot."""


class WireFormatError(SecAggError):
    """Bytes off the wire are truncated, oversized, corrupted or of an unknown type."""


class ProtocolStateError(SecAggError):
    """A message arrived at the wrong stage, twice, for another round or from an unknown party."""


class NotEnoughClientsError(SecAggError):
    """Fewer clients than the protocol's threshold or minimum survived; nothing is revealed."""


class KeyMismatchError(SecAggError):
    """Parties used different keys (a ciphertext under a foreign public key, say)."""


class IntegrityError(SecAggError):
    """An authenticated payload failed its check (an AES-GCM tag, a MAC)."""


class UnknownProtocolError(SecAggError, KeyError):
    """A protocol name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the plain message
        return str(self.args[0]) if self.args else ""


class ModelBindingError(SecAggError):
    """Clients trained on different models (their model digests differ, or one is missing):
    the protocol refuses to reveal the aggregate (:mod:`secagg.binding`)."""
