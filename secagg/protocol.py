"""The protocol interface and its registry.

A :class:`Protocol` turns clients' updates into parties (:meth:`Protocol.make_parties`),
names its stages, declares its precision and its :class:`ThreatModel`, and lists the
payload types its wire format knows. The round runner (:mod:`secagg.round`) does the
rest. Everything a consumer of a protocol needs is declared here, with a default, so
no consumer reaches into a protocol's module or configuration:

- what an observer can take from a view: :meth:`Protocol.observe` (each client message
  and the revealed aggregate as :class:`secagg.observe.Observation` records) and
  :meth:`Protocol.collude` (what servers that pool their views recover; none by default);
- the public fixed-point codec of a round (:meth:`Protocol.codec_for`) and the accepted
  input range (:attr:`Protocol.input_bound`, :meth:`Protocol.with_input_bound`,
  :meth:`Protocol.with_integer_inputs`);
- whether it is the unprotected baseline (:attr:`Protocol.is_baseline`);
- how a distributed runtime provisions its parties (:attr:`Protocol.provisioning`) and
  which secrets each server holds by design (:attr:`Protocol.server_secrets`).

A protocol is generic in its configuration (``Protocol[TwoServerConfig]``) so that
``self.config`` is typed. Protocols register by class (``registry.register(CKKS)``);
the registry refuses a name or a wire id already taken, and an unknown name is answered
with the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np

from secagg.encoding import FixedPoint, ring_for
from secagg.errors import ConfigError, UnknownProtocolError
from secagg.observe import Observation, Reading, aggregate_observation, message_observation, read_payload
from secagg.party import SERVER, Party, View, is_client
from secagg.state import LeafCodec, StateCodec
from secagg.wire import Payload

AggregateKind = Literal["sum", "weighted_mean"]
# How a distributed runtime (protocols.runtime.flower) gets a round's parties onto its nodes:
# "local": every node builds its own parties (no key material is shared between parties
#   made in make_parties); "dealer": one client-side node builds every party and hands each
#   client node its own, sealed; "server-b": the second server deals (its key never moves).
Provisioning = Literal["local", "dealer", "server-b"]
PROVISIONING_MODES: tuple[Provisioning, ...] = ("local", "dealer", "server-b")

C = TypeVar("C")
P = TypeVar("P", bound="Protocol[Any]")


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


class Protocol(Generic[C]):
    """Base of every protocol. Subclasses set the class attributes and two methods
    (:meth:`make_parties`, :meth:`precision`); the rest have defaults."""

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
    # The unprotected reference every other protocol is measured against.
    is_baseline: ClassVar[bool] = False
    # The config field that bounds |x| of every input (None: inputs are unbounded).
    input_bound_field: ClassVar[str | None] = None
    # The config field holding the fractional bits of its fixed-point codec (None: no such
    # codec, or none the configuration sets).
    frac_bits_field: ClassVar[str | None] = None
    # The config fields holding the ring width k of its Z_2^k codec and whether that codec
    # is modular (secagg.encoding): set together, or neither (no configurable ring).
    ring_bits_field: ClassVar[str | None] = None
    modular_field: ClassVar[str | None] = None
    provisioning: ClassVar[Provisioning] = "dealer"
    # Secret holdings each server has by design (by party id): anything else a server
    # declares secret breaks the holdings contract.
    server_secrets: ClassVar[Mapping[int, frozenset[str]]] = {}
    # What a party's state is made of beyond plain values and numpy, for a runtime that
    # keeps parties as bytes (secagg.state): the classes (parties, configs, records) and
    # the foreign key types with their byte codecs. Nothing else loads.
    state_types: ClassVar[tuple[type, ...]] = ()
    state_leaves: ClassVar[tuple[LeafCodec, ...]] = ()
    # Whether the protocol binds a round to its clients' model digests (secagg.binding):
    # it sends ModelBinding messages to a checker that refuses differing digests.
    supports_binding: ClassVar[bool] = False
    # Who can read the revealed aggregate, in words (None: the aggregate holder's name).
    aggregate_readers: ClassVar[str | None] = None
    # Config overrides under which a round and its observations cost what they cost under
    # any configuration of this protocol, except the setup (key generation): a probe that
    # projects those costs (secagg evaluate's observation probe) runs with them, so it does
    # not pay a key generation whose keys it throws away (cost_probe()).
    cost_probe_overrides: ClassVar[Mapping[str, Any]] = {}

    config: C

    def __init__(self, config: C | None = None, /, **overrides: Any) -> None:
        if config is None:
            config = self.Config(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)  # type: ignore[type-var]
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

    def bind(self, parties: Sequence[Party], bindings: Sequence[bytes]) -> None:
        """Bind the round to the clients' model digests: client i gets ``bindings[i]``, and
        every party with a ``binding_ledger`` (:class:`secagg.binding.BindingLedger`)
        starts requiring them. Only for protocols that declare ``supports_binding``."""
        if not self.supports_binding:
            raise ConfigError(f"{self.name}: this protocol does not bind rounds to model digests")
        for party in parties:
            if is_client(party.party_id):
                party.binding = bindings[party.party_id]
            ledger = getattr(party, "binding_ledger", None)
            if ledger is not None:
                ledger.required = True

    def precision(self, *, n_clients: int, value_range: float) -> float:
        """Declared max |aggregate - float64 reference| for this many clients and range."""
        raise NotImplementedError

    # -- public parameters ----------------------------------------------------------------

    def codec_for(self, n_clients: int) -> FixedPoint | None:
        """The public fixed-point codec of a round of ``n_clients`` (None: no ring encoding)."""
        return None

    @property
    def input_bound(self) -> float | None:
        """The largest |x| a client accepts (public configuration); None when unbounded."""
        if self.input_bound_field is None:
            return None
        return float(getattr(self.config, self.input_bound_field))

    def with_input_bound(self: P, bound: float) -> P:
        """This protocol with its input bound set to ``bound`` (itself when unbounded)."""
        if self.input_bound_field is None:
            return self
        return self._replaced({self.input_bound_field: float(bound)})

    def with_integer_inputs(self: P, bound: float, *, modulus_bits: int | None = None) -> P:
        """This protocol set up for inputs that are integers in [-bound, bound] (e.g. the
        ring integers of distributed DP): the input bound set and, where the protocol encodes
        fixed point, 0 fractional bits, so the integers travel exactly. Both change at once,
        so a bound that only fits with 0 fractional bits is accepted.

        ``modulus_bits``: the inputs are residues mod 2^modulus_bits whose consumer reduces
        the sum modulo it (distributed DP). Where the protocol has a configurable ring
        (``ring_bits_field``), it is set to the smallest width >= modulus_bits
        (:func:`secagg.encoding.ring_for`: modulus_bits itself from 8 to 32) and made
        modular, so the messages travel in that ring (2 bytes per value for 16 bits, 1.5
        bit-packed for 12) and the sum may wrap.
        """
        overrides: dict[str, Any] = {}
        if self.input_bound_field is not None:
            overrides[self.input_bound_field] = float(bound)
        if self.frac_bits_field is not None:
            overrides[self.frac_bits_field] = 0
        if modulus_bits is not None and self.ring_bits_field is not None:
            overrides[self.ring_bits_field] = ring_for(modulus_bits)
            if self.modular_field is not None:
                overrides[self.modular_field] = True
        if not overrides:
            return self
        return self._replaced(overrides)

    def cost_probe(self: P) -> P:
        """This protocol with :attr:`cost_probe_overrides` applied (itself when there are
        none): the same round and observation costs, a cheaper setup. Only for projecting
        costs; its keys are never for a round whose result is used."""
        if not self.cost_probe_overrides:
            return self
        return self._replaced(self.cost_probe_overrides)

    def _replaced(self: P, overrides: Mapping[str, Any]) -> P:
        """This protocol's class with ``overrides`` applied to a copy of its configuration."""
        return type(self)(dataclasses.replace(self.config, **overrides))  # type: ignore[type-var]

    def state_codec(self) -> StateCodec:
        """The codec that turns this protocol's parties into bytes and back (:mod:`secagg.state`)."""
        return StateCodec((RoundSpec, type(self.config), *self.state_types), self.state_leaves)

    # -- what observers take from views ---------------------------------------------------

    def observe(self, view: View, spec: RoundSpec) -> list[Observation]:
        """One observation per client message ``view`` received, and one for the revealed
        aggregate when the viewer holds it. Messages are read by :meth:`read_payload`."""
        found = [
            message_observation(view.name, received, self.read_payload(received.payload, spec))
            for received in view.received
            if is_client(received.header.sender)
        ]
        if view.revealed is not None:
            found.append(aggregate_observation(view.name, view.revealed, self.aggregate_kind))
        return found

    def read_payload(self, payload: Payload, spec: RoundSpec) -> Reading:
        """How an attacker reads one client payload as an update (override for ciphertexts)."""
        return read_payload(
            payload, spec.n_params, codec=self.codec_for(spec.n_clients), bound=self.input_bound
        )

    def collude(self, views: Mapping[int, View], spec: RoundSpec) -> list[Observation]:
        """What the servers whose ``views`` are given recover by pooling them (none known)."""
        return []

    def colluding_parties(self) -> tuple[int, ...]:
        """The parties whose views :meth:`collude` pools: the servers, unless the protocol's
        guarantee also rests on other parties (a decryption committee of clients)."""
        return self.server_ids

    # -- wire ----------------------------------------------------------------------------

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


def observe_round(protocol: Protocol[Any], views: Mapping[int, View], spec: RoundSpec) -> list[Observation]:
    """Every server's observations of its own view, then what the servers see pooled.

    ``views`` holds at least the servers' views (other parties' are ignored): the round
    -> observations step of the seam, for a round run by the router or by a transport.
    """
    servers = {sid: views[sid] for sid in protocol.server_ids if sid in views}
    found: list[Observation] = []
    for view in servers.values():
        found.extend(protocol.observe(view, spec))
    pooled = {pid: views[pid] for pid in protocol.colluding_parties() if pid in views}
    if len(pooled) >= 2:
        found.extend(protocol.collude(pooled, spec))
    return found


_REQUIRED = ("name", "wire_id", "stages", "late_dropout_stage", "threat_model", "payload_types", "Config")


class Registry:
    """Protocol classes by name; a reused name or wire id is refused, unknown names are
    answered with the list."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Protocol[Any]]] = {}

    def register(self, cls: type[Protocol[Any]]) -> None:
        """Register ``cls`` under ``cls.name``; its name and wire id must be new."""
        missing = [attribute for attribute in _REQUIRED if not hasattr(cls, attribute)]
        if missing:
            raise ConfigError(f"{cls.__name__}: a protocol must declare {missing}")
        if cls.name in self._classes:
            taken = self._classes[cls.name].__name__
            raise ConfigError(f"protocol {cls.name!r} is already registered to {taken}")
        for other in self._classes.values():
            if other.wire_id == cls.wire_id:
                raise ConfigError(
                    f"{cls.__name__} ({cls.name!r}): wire id {cls.wire_id} is already used by "
                    f"{other.__name__} ({other.name!r}); expected an unused one"
                )
        if cls.provisioning not in PROVISIONING_MODES:
            raise ConfigError(
                f"{cls.__name__}: provisioning must be one of {PROVISIONING_MODES}, got {cls.provisioning!r}"
            )
        self._classes[cls.name] = cls

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a protocol registered for a while, e.g. by a test)."""
        self.get(name)
        del self._classes[name]

    def get(self, name: str) -> type[Protocol[Any]]:
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownProtocolError(
                f"unknown protocol {name!r}; expected one of: {', '.join(self.available())}"
            ) from None

    def create(self, name: str, **config: Any) -> Protocol[Any]:
        return self.get(name)(**config)

    def available(self) -> list[str]:
        return list(self._classes)

    def items(self) -> Iterator[tuple[str, type[Protocol[Any]]]]:
        return iter(self._classes.items())
