"""What crosses Flower for a secagg round: wire bytes, their accounting, signed sealed setup.

This module never imports ``flwr``: it is the part of the Flower integration that the
in-process router shares, so that a round run through Flower and the same round run
through :func:`secagg.round.run_round` report the same bytes and refuse the same messages.

- :class:`WireLedger` is the router's :class:`secagg.router.Ledger` (bytes per party,
  one transcript entry per delivery) plus Flower's own framing (protobuf records),
  reported apart (``flower_bytes_up``/``flower_bytes_down``), never mixed in. Delivery
  checks are the router's :class:`secagg.router.DeliveryChecks`, on whichever side a
  party lives.
- :func:`dump_state` / :func:`load_state`: parties as bytes in the protocol's declared
  layout (:meth:`secagg.protocol.Protocol.state_codec`, :mod:`secagg.state`): nothing
  is pickled, and loading builds only the types the protocol declares. A node keeps its
  parties in its Flower ``Context.state`` this way (another worker process may serve its
  next message), and the dealer's parties cross the network this way.
- Provisioning is authenticated end to end (Bonawitz et al. 2017, the malicious-server
  variant: every key a party encrypts to is signed under a key it pinned out of band).
  A node signs the provisioning key it advertises with its Ed25519 identity key
  (:func:`sign_provision_key`), which the dealer pins; the dealer verifies before it
  seals anything (:func:`verify_provision_key`), seals each client's party to that key
  (:mod:`secagg.sealing`) and signs what it deals (:func:`sign_dealt`) under its own
  key, which every node pins; a node verifies that signature before it opens anything
  (:func:`verify_dealt`). A server that swaps a key, or re-seals a party it opened,
  meets :class:`secagg.errors.IntegrityError` and learns no secret.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from secagg import sealing, signing
from secagg.errors import IntegrityError, WireFormatError
from secagg.party import Holding, Party, party_name
from secagg.protocol import Protocol
from secagg.router import DeliveryChecks, Ledger, Refused
from secagg.wire import Reader, Writer, decode_header

__all__ = [
    "DeliveryChecks",
    "Refused",
    "WireLedger",
    "dump_parties",
    "dump_state",
    "load_parties",
    "load_state",
    "route_header",
]


@dataclass
class WireLedger(Ledger):
    """The router's ledger, plus the size of Flower's messages that carried the wire bytes."""

    flower_bytes_up: int = 0
    flower_bytes_down: int = 0


def route_header(raw: bytes, *, expected_sender: Iterable[int]) -> tuple[int, int]:
    """(sender, recipient) of a message a node handed the server, checked.

    The server reads only the header (and the CRC) of what it relays; a node may only
    send as a party it hosts, which Flower's node identity lets the server enforce.
    """
    header = decode_header(raw)
    allowed = set(expected_sender)
    if header.sender not in allowed:
        raise Refused(
            f"expected a sender among {sorted(party_name(p) for p in allowed)}, "
            f"got {party_name(header.sender)}"
        )
    return header.sender, header.recipient


# -- party state as bytes ------------------------------------------------------------

_UPDATE_REF = "secagg-update"


def update_ref(client: int) -> str:
    return f"{_UPDATE_REF}-{client}"


def dump_state(
    protocol: Protocol[Any], state: object, *, placeholders: Mapping[int, str] | None = None
) -> tuple[bytes, set[str]]:
    """Parties (and plain bookkeeping) as bytes in ``protocol``'s declared layout, and the
    placeholders (``id(array) -> name``, :func:`update_ref`) they refer to."""
    return protocol.state_codec().dump(state, placeholders=placeholders)


def load_state(
    protocol: Protocol[Any],
    data: bytes,
    *,
    references: Mapping[str, np.ndarray] | None = None,
    what: str = "party state",
) -> tuple[Any, set[str]]:
    """State from :func:`dump_state` bytes with references replaced; and which were used.

    Hostile bytes raise :class:`secagg.errors.WireFormatError` and build nothing the
    protocol did not declare.
    """
    return protocol.state_codec().load(data, references=references, what=what)


def dump_parties(protocol: Protocol[Any], parties: Mapping[int, Party]) -> bytes:
    """Server-side parties as bytes (they must not refer to any client's update)."""
    data, referenced = dump_state(protocol, dict(parties))
    if referenced:
        raise IntegrityError(f"server-side parties refer to client updates {sorted(referenced)}")
    return data


def load_parties(protocol: Protocol[Any], data: bytes) -> dict[int, Party]:
    parties, _ = load_state(protocol, data, what="server parties")
    if not isinstance(parties, dict) or not all(
        isinstance(pid, int) and isinstance(p, Party) for pid, p in parties.items()
    ):
        raise WireFormatError(f"server parties: expected a dict of parties, got {type(parties).__name__}")
    return parties


# -- node state ---------------------------------------------------------------------

NODE_MAGIC = b"SGND"
NODE_VERSION = 1


@dataclass
class NodeState:
    """What a client node keeps between Flower messages (never sent anywhere).

    Layout (:func:`dump_node`): ``b"SGND" | u8 version | u32 partition | u64 round + 1 |
    u8 has update | array update | f64 weight | blob provisioning private key | blob
    parties (``secagg.state``) | u32 n, (u32 sender, u32 recipient, u16 type, u32 round)*
    seen | u32 n, u32* known``.
    """

    partition: int
    round_id: int = -1
    update: np.ndarray | None = None
    weight: float = 1.0
    provision_private: bytes = b""
    parties: dict[int, Party] = field(default_factory=dict)
    seen: set[tuple[int, int, int, int]] = field(default_factory=set)
    known: frozenset[int] = frozenset()


def dump_node(protocol: Protocol[Any], state: NodeState) -> bytes:
    writer = Writer().raw(NODE_MAGIC).u8(NODE_VERSION).u32(state.partition).u64(state.round_id + 1)
    writer.u8(state.update is not None)
    if state.update is not None:
        writer.array(np.asarray(state.update, dtype="<f8"))
    writer.f64(state.weight).blob(state.provision_private)
    writer.blob(dump_state(protocol, dict(state.parties))[0])
    writer.u32(len(state.seen))
    for sender, recipient, msg_type, round_id in sorted(state.seen):
        writer.u32(sender).u32(recipient).u16(msg_type).u32(round_id)
    writer.u32(len(state.known))
    for pid in sorted(state.known):
        writer.u32(pid)
    return writer.to_bytes()


def load_node(protocol: Protocol[Any], data: bytes) -> NodeState:
    """Inverse of :func:`dump_node`; malformed bytes raise WireFormatError."""
    reader = Reader(data, "node state")
    magic = reader.raw(len(NODE_MAGIC), "magic")
    if magic != NODE_MAGIC:
        raise WireFormatError(f"node state: expected magic {NODE_MAGIC!r}, got {magic!r}")
    version = reader.u8("version")
    if version != NODE_VERSION:
        raise WireFormatError(f"node state: expected version {NODE_VERSION}, got {version}")
    state = NodeState(partition=reader.u32("partition"), round_id=reader.u64("round") - 1)
    if reader.u8("has update"):
        state.update = reader.array("update", dtype="<f8").copy()
    state.weight = reader.f64("weight")
    state.provision_private = reader.blob("provisioning key", 64)
    parties, _ = load_state(protocol, reader.blob("parties"), what="node parties")
    if not isinstance(parties, dict) or not all(
        isinstance(pid, int) and isinstance(p, Party) for pid, p in parties.items()
    ):
        raise WireFormatError("node state: expected a dict of parties")
    state.parties = parties
    count = reader.u32("seen count")
    if count * 14 > len(data):
        raise WireFormatError(f"node state: {count} seen entries in {len(data)} bytes")
    state.seen = {
        (reader.u32("sender"), reader.u32("recipient"), reader.u16("type"), reader.u32("round"))
        for _ in range(count)
    }
    count = reader.u32("known count")
    if count * 4 > len(data):
        raise WireFormatError(f"node state: {count} known parties in {len(data)} bytes")
    state.known = frozenset(reader.u32("party") for _ in range(count))
    reader.done()
    return state


# -- authenticated provisioning --------------------------------------------------------

KEY_CONTEXT = b"secagg/flower/provision-key/v1"
DEALT_CONTEXT = b"secagg/flower/dealt/v1"
SERVER_PARTIES_CONTEXT = b"secagg/flower/server-parties/v1"


def seal_context(round_id: int, party_id: int) -> bytes:
    """Associated data binding a sealed setup to its round and party."""
    return struct.pack(">II", round_id, party_id)


def new_provisioning_key() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair for one round's provisioning: (private raw, public raw)."""
    return sealing.generate_keypair()


def _key_message(round_id: int, partition: int, public: bytes) -> bytes:
    return Writer().u32(round_id).u32(partition).blob(public).to_bytes()


def sign_provision_key(identity_private: bytes, round_id: int, partition: int, public: bytes) -> bytes:
    """A node's signature over the provisioning key it advertises for ``round_id``."""
    return signing.sign(identity_private, _key_message(round_id, partition, public), context=KEY_CONTEXT)


def verify_provision_key(
    identity_public: bytes, round_id: int, partition: int, public: bytes, signature: bytes
) -> None:
    """Raise IntegrityError unless node ``partition`` signed ``public`` for ``round_id``."""
    signing.verify(
        identity_public,
        _key_message(round_id, partition, public),
        signature,
        context=KEY_CONTEXT,
        what=f"provisioning key of node {partition}",
    )


def _dealt_message(round_id: int, party_id: int, sealed: bytes, known: Sequence[int]) -> bytes:
    writer = Writer().u32(round_id).u32(party_id).blob(sealed).u32(len(known))
    for pid in known:
        writer.u32(pid)
    return writer.to_bytes()


def sign_dealt(
    dealer_private: bytes, round_id: int, party_id: int, sealed: bytes, known: Sequence[int]
) -> bytes:
    """The dealer's signature over one sealed party and the round's party list."""
    return signing.sign(
        dealer_private, _dealt_message(round_id, party_id, sealed, known), context=DEALT_CONTEXT
    )


def verify_dealt(
    dealer_public: bytes, round_id: int, party_id: int, sealed: bytes, known: Sequence[int], signature: bytes
) -> None:
    signing.verify(
        dealer_public,
        _dealt_message(round_id, party_id, sealed, known),
        signature,
        context=DEALT_CONTEXT,
        what=f"dealt party of {party_name(party_id)}",
    )


def sign_server_parties(dealer_private: bytes, round_id: int, blob: bytes) -> bytes:
    return signing.sign(
        dealer_private, Writer().u32(round_id).blob(blob).to_bytes(), context=SERVER_PARTIES_CONTEXT
    )


def verify_server_parties(dealer_public: bytes, round_id: int, blob: bytes, signature: bytes) -> None:
    signing.verify(
        dealer_public,
        Writer().u32(round_id).blob(blob).to_bytes(),
        signature,
        context=SERVER_PARTIES_CONTEXT,
        what="server parties from the dealer",
    )


def seal(plaintext: bytes, *, recipient_public: bytes, context: bytes) -> bytes:
    """The dealer's party for one node, sealed to its (verified) provisioning key."""
    return sealing.seal(recipient_public, plaintext, context)


def open_sealed(sealed: bytes, *, recipient_private: bytes, context: bytes) -> bytes:
    """Inverse of :func:`seal`; a tampered, forged or misaddressed blob raises IntegrityError."""
    try:
        return sealing.open_sealed(recipient_private, sealed, context, what="dealt party")
    except WireFormatError as exc:
        raise IntegrityError(str(exc)) from None


def secret_holdings(holdings: Iterable[Holding]) -> list[str]:
    """Names of the holdings their party declared secret (:class:`secagg.party.Holding`).

    A protocol's own server-side secrets (two-server's B opening the seeds addressed to
    it) show up too; callers check them against the protocol's ``server_secrets``.
    """
    return [item.name for item in holdings if item.secret]
