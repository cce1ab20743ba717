"""Protocols: one module per protocol, each a set of parties plus a config dataclass.

>>> import protocols
>>> "plaintext-fedavg" in protocols.available()
True
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from secagg.protocol import Protocol, Registry

_REGISTRY = Registry()

# Built-in protocol modules, imported in this order; each registers its names.
_BUILTIN = ("plaintext", "paillier", "ckks", "two_server", "pairwise")


def register(name: str, cls: type[Protocol]) -> None:
    """Register ``cls`` under ``name``; a name can be registered once."""
    _REGISTRY.register(name, cls)


def get(name: str) -> type[Protocol]:
    return _REGISTRY.get(name)


def create(name: str, **config: Any) -> Protocol:
    """An instance of the protocol ``name`` with ``config`` overriding its defaults."""
    return _REGISTRY.create(name, **config)


def available() -> list[str]:
    """Registered protocol names, in registration order."""
    return _REGISTRY.available()


def _load_builtins() -> None:
    for module in _BUILTIN:
        # A module not written yet is skipped; one that exists but fails to import is a bug.
        if importlib.util.find_spec(f"protocols.{module}") is not None:
            importlib.import_module(f"protocols.{module}")


_load_builtins()
