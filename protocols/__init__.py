"""Protocols: one module per protocol, each a set of parties plus a config dataclass.

The registry below is the one place a protocol is named: a new protocol is its own
module plus one entry in :data:`BUILTIN` (or a :func:`register` call for one that lives
elsewhere, a test's for instance). Protocol modules do not register themselves.

>>> import protocols
>>> "plaintext-fedavg" in protocols.available()
True
"""

from __future__ import annotations

from typing import Any

from protocols.ckks import CKKS
from protocols.paillier import PaillierNaive, PaillierPacked
from protocols.paillier_threshold import PaillierNaiveThreshold, PaillierThreshold
from protocols.pairwise import PairwiseMasking
from protocols.plaintext import PlaintextFedAvg, PlaintextFedSGD
from protocols.two_server import TwoServer
from secagg.errors import UnknownProtocolError
from secagg.protocol import Protocol, Registry

# The built-in protocols, in the order `secagg protocols` lists them.
BUILTIN: tuple[type[Protocol[Any]], ...] = (
    PlaintextFedSGD,
    PlaintextFedAvg,
    PaillierPacked,
    PaillierNaive,
    PaillierThreshold,
    PaillierNaiveThreshold,
    CKKS,
    TwoServer,
    PairwiseMasking,
)

_REGISTRY = Registry()
for _cls in BUILTIN:
    _REGISTRY.register(_cls)


def register(cls: type[Protocol[Any]]) -> None:
    """Register ``cls`` under ``cls.name``; a name, and a wire id, can be registered once."""
    _REGISTRY.register(cls)


def unregister(name: str) -> None:
    """Remove a protocol registered with :func:`register` (a test's, for instance)."""
    _REGISTRY.unregister(name)


def get(name: str) -> type[Protocol[Any]]:
    return _REGISTRY.get(name)


def create(name: str, **config: Any) -> Protocol[Any]:
    """An instance of the protocol ``name`` with ``config`` overriding its defaults."""
    return _REGISTRY.create(name, **config)


def baseline(aggregate_kind: str = "sum") -> str:
    """The registered unprotected baseline (:attr:`secagg.protocol.Protocol.is_baseline`)
    whose aggregate is ``aggregate_kind``: what every other protocol is measured against."""
    for name, cls in _REGISTRY.items():
        if cls.is_baseline and cls.aggregate_kind == aggregate_kind:
            return name
    raise UnknownProtocolError(f"no baseline protocol with a {aggregate_kind!r} aggregate is registered")


def available() -> list[str]:
    """Registered protocol names, in registration order."""
    return _REGISTRY.available()
