"""The protocol interface and its registry.

A :class:`Protocol` turns clients' updates into parties (:meth:`Protocol.make_parties`),
names its stages, declares its precision and its :class:`ThreatModel`, and lists the
payload types its wire format knows. The round runner (:mod:`secagg.round`) does the
rest. Protocols register under a name (``register("ckks", CKKS)``); the registry refuses
duplicates and an unknown name lists the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from secagg.errors import ConfigError, UnknownProtocolError
from secagg.party import SERVER, Party
from secagg.wire import Payload

AggregateKind = Literal["sum", "weighted_mean"]


@dataclass(frozen=True)
class ThreatModel:
    """Who holds what, what each server sees, and what breaks the protocol."""

    keys: str  # who holds which key
    server_sees: str  # what each server observes, per server
    collusion: str  # which coalition learns individual updates
    dropouts: str  # how many dropouts the round survives, and at which stages
    min_clients: int  # fewest client inputs in any aggregate the protocol reveals
    notes: str = ""


@dataclass(frozen=True)
class RoundSpec:
    """What every party may know about the round before it starts."""

    round_id: int
    n_clients: int
    n_params: int


class Protocol:
    """Base of every protocol. Subclasses set the class attributes and two methods."""

    name: ClassVar[str]
    wire_id: ClassVar[int]
    stages: ClassVar[tuple[str, ...]]
    # Stages whose work does not depend on the data (precomputation), reported apart.
    offline_stages: ClassVar[frozenset[str]] = frozenset()
    # Stages that turn the collected inputs into the revealed aggregate.
    finalize_stages: ClassVar[frozenset[str]] = frozenset()
    # The last stage a client may drop out before and still have sent its input
    # (the CLI's --drop uses it).
    late_dropout_stage: ClassVar[str]
    aggregate_kind: ClassVar[AggregateKind] = "sum"
    threat_model: ClassVar[ThreatModel]
    payload_types: ClassVar[tuple[type[Payload], ...]]
    server_ids: ClassVar[tuple[int, ...]] = (SERVER,)
    # The party whose output() is the round's aggregate.
    aggregate_holder: ClassVar[int] = SERVER
    # A one-line summary for `secagg protocols`.
    summary: ClassVar[str] = ""
    # A cheap but valid configuration for smoke runs (tests, `evaluate --quick`), e.g.
    # a 512-bit Paillier key. Never the default: defaults are the secure settings.
    fast_config: ClassVar[dict[str, Any]] = {}
    Config: ClassVar[type[Any]]

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        if config is None:
            config = self.Config(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        if not isinstance(config, self.Config):
            raise ConfigError(f"{self.name}: expected a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    def make_parties(
        self,
        updates: Sequence[np.ndarray],
        weights: Sequence[float] | None,
        spec: RoundSpec,
    ) -> list[Party]:
        """Every party of one round, keys provisioned; client i holds updates[i]."""
        raise NotImplementedError

    def precision(self, *, n_clients: int, value_range: float) -> float:
        """Declared max |aggregate - float64 reference| for this many clients and range."""
        raise NotImplementedError

    def payload_table(self) -> dict[int, type[Payload]]:
        table: dict[int, type[Payload]] = {}
        for payload_type in self.payload_types:
            if payload_type.msg_type in table:
                raise ConfigError(
                    f"{self.name}: message type {payload_type.msg_type} used by both "
                    f"{table[payload_type.msg_type].__name__} and {payload_type.__name__}"
                )
            table[payload_type.msg_type] = payload_type
        return table

    def message_name(self, msg_type: int) -> str:
        payload_type = self.payload_table().get(msg_type)
        return payload_type.__name__ if payload_type else f"type-{msg_type}"


class Registry:
    """Name -> protocol class; duplicates refused, unknown names answered with the list."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Protocol]] = {}

    def register(self, name: str, cls: type[Protocol]) -> None:
        if name in self._classes:
            raise ConfigError(f"protocol {name!r} is already registered to {self._classes[name].__name__}")
        self._classes[name] = cls

    def get(self, name: str) -> type[Protocol]:
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownProtocolError(
                f"unknown protocol {name!r}; expected one of: {', '.join(self.available())}"
            ) from None

    def create(self, name: str, **config: Any) -> Protocol:
        return self.get(name)(**config)

    def available(self) -> list[str]:
        return list(self._classes)

    def items(self) -> Iterator[tuple[str, type[Protocol]]]:
        return iter(self._classes.items())

    def as_mapping(self) -> Mapping[str, type[Protocol]]:
        return dict(self._classes)


def config_fields(cls: type[Protocol]) -> dict[str, Callable[..., Any] | None]:
    """Names of a protocol's config fields (the CLI uses them to route options)."""
    return {f.name: None for f in dataclasses.fields(cls.Config)}
