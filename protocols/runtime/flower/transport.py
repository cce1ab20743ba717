"""What crosses Flower for a secagg round: wire bytes, their accounting, sealed setup.

This module never imports ``flwr``: it is the part of the Flower integration that the
in-process router shares, so that a round run through Flower and the same round run
through :func:`secagg.round.run_round` report the same bytes.

- :class:`WireLedger` counts every protocol message exactly as :class:`secagg.router.Router`
  does: the length of the bytes :func:`secagg.wire.encode_message` produced, added to the
  sender's ``bytes_sent`` when sent and to the recipient's ``bytes_received`` when
  delivered, with one :class:`secagg.router.TranscriptEntry` per delivery. Flower's own
  framing (protobuf records, gRPC) is reported apart (``flower_bytes``), never mixed in.
- :class:`InboundChecker` applies the router's delivery checks (header and CRC, protocol,
  round, recipient, known sender, one message per sender/recipient/type per round) on
  whichever side a party lives, so a refused message never reaches a party in Flower
  either.
- :func:`dump_parties` / :func:`load_parties` keep a node's parties in its Flower
  ``Context.state`` between messages. Ray may run a node's next message in another
  worker process, so the state must travel as bytes; it never leaves the node. Key
  objects that do not pickle (X25519/Ed25519 keys, TenSEAL contexts) become their raw
  serialisation, and loading resolves only project classes, numpy and key types (no
  arbitrary callables), because the dealer's setup comes from another machine.
- :func:`seal` / :func:`open_sealed`: the provisioning channel from the dealer node to
  one client node through the server (X25519 + HKDF-SHA256 + AES-256-GCM), so the server
  relays a client's key material without being able to read it.
"""

from __future__ import annotations

import io
import os
import pickle  # noqa: S403 - only a node's own state, or the dealer's sealed (authenticated) setup
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import ConfigError, IntegrityError, SecAggError
from secagg.party import Holding, Inbound, Party, party_name
from secagg.protocol import Protocol
from secagg.round import Costs
from secagg.router import TranscriptEntry
from secagg.wire import HEADER_BYTES, decode_header, decode_message


@dataclass
class WireLedger:
    """Bytes and transcript of one round, counted like the in-process router."""

    protocol: Protocol
    transcript: list[TranscriptEntry] = field(default_factory=list)
    bytes_sent: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    bytes_received: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    # Flower's framing of the messages that carried the wire bytes (protobuf size), by node role.
    flower_bytes_up: int = 0
    flower_bytes_down: int = 0

    def sent(self, sender: int, raw: bytes) -> None:
        self.bytes_sent[sender] += len(raw)

    def delivered(
        self, stage: str, recipient: int, raw: bytes, *, accepted: bool, note: str = "", count: bool = True
    ) -> None:
        """Record a delivery; ``count=False`` for a recipient that dropped out (no bytes reach it)."""
        if count:
            self.bytes_received[recipient] += len(raw)
        sender = int.from_bytes(raw[14:18], "big") if len(raw) >= HEADER_BYTES else -1
        msg_type = int.from_bytes(raw[8:10], "big") if len(raw) >= HEADER_BYTES else -1
        self.transcript.append(
            TranscriptEntry(
                stage=stage,
                sender=sender,
                recipient=recipient,
                msg_type=msg_type,
                message=self.protocol.message_name(msg_type) if msg_type >= 0 else "?",
                nbytes=len(raw),
                delivered=accepted,
                note=note,
            )
        )

    def costs(self, *, n_clients: int, n_params: int, seconds: Mapping[int, Mapping[str, float]]) -> Costs:
        """The round's :class:`secagg.round.Costs`, comparable with ``run_round``'s."""
        return Costs(
            seconds={pid: dict(per) for pid, per in seconds.items()},
            bytes_sent=dict(self.bytes_sent),
            bytes_received=dict(self.bytes_received),
            n_clients=n_clients,
            n_params=n_params,
            offline_stages=self.protocol.offline_stages,
            finalize_stages=self.protocol.finalize_stages,
            server_ids=self.protocol.server_ids,
        )


class Refused(SecAggError):
    """A message the receiving side must not hand to its party (the router's refusals)."""


@dataclass
class InboundChecker:
    """The router's delivery checks for the parties one side (a node or the server) hosts.

    ``seen`` holds (sender, recipient, type, round) of every delivered message; a client
    node keeps it in its state so a replay is refused across Flower messages too.
    """

    protocol: Protocol
    round_id: int
    known: frozenset[int]
    seen: set[tuple[int, int, int, int]] = field(default_factory=set)

    def accept(self, raw: bytes, recipient: int) -> Inbound:
        """Decode ``raw`` for ``recipient`` or raise :class:`Refused` saying why."""
        try:
            header, payload = decode_message(
                raw, self.protocol.payload_table(), protocol_id=self.protocol.wire_id
            )
        except SecAggError as exc:
            raise Refused(str(exc)) from exc
        if header.round_id != self.round_id:
            raise Refused(
                f"expected round {self.round_id}, got round {header.round_id} (replay from another round)"
            )
        if header.recipient != recipient:
            raise Refused(
                f"addressed to {party_name(header.recipient)}, delivered to {party_name(recipient)}"
            )
        if header.sender not in self.known or header.sender == recipient:
            raise Refused(f"unknown sender {party_name(header.sender)}")
        key = (header.sender, header.recipient, header.msg_type, header.round_id)
        if key in self.seen:
            raise Refused(
                f"duplicate {self.protocol.message_name(header.msg_type)} from "
                f"{party_name(header.sender)} in round {header.round_id} (replay)"
            )
        self.seen.add(key)
        return Inbound(header, payload)


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


def _x25519_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def _x25519_public(raw: bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(raw)


def _ed25519_private(raw: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(raw)


def _ed25519_public(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def _tenseal_context(data: bytes) -> Any:
    # The party's own module (protocols/ckks.py) imported tenseal before its state loads.
    return sys.modules["tenseal"].context_from(data)


def _tenseal_ckks_vector(context: Any, data: bytes) -> Any:
    return sys.modules["tenseal"].ckks_vector_from(context, data)


class _PartyPickler(pickle.Pickler):
    """Pickles parties, turning key objects that do not pickle into their raw bytes.

    ``placeholders`` (id -> name) are arrays written as references instead of values:
    the dealer's client parties hold a stand-in for the client's update, which the
    client node replaces with its real update when it loads the party.
    """

    def __init__(self, file: io.BytesIO, placeholders: Mapping[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._placeholders = placeholders
        self.referenced: set[str] = set()

    def persistent_id(self, obj: Any) -> str | None:
        name = self._placeholders.get(id(obj)) if isinstance(obj, np.ndarray) else None
        if name is not None:
            self.referenced.add(name)
        return name

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, X25519PrivateKey):
            return _x25519_private, (obj.private_bytes_raw(),)
        if isinstance(obj, X25519PublicKey):
            return _x25519_public, (obj.public_bytes_raw(),)
        if isinstance(obj, Ed25519PrivateKey):
            return _ed25519_private, (obj.private_bytes_raw(),)
        if isinstance(obj, Ed25519PublicKey):
            return _ed25519_public, (obj.public_bytes_raw(),)
        module = type(obj).__module__ or ""
        if module.startswith("tenseal"):
            kind = type(obj).__name__
            if kind == "Context":
                # Save exactly the keys the context has: TenSEAL crashes asked for one it lacks.
                data = obj.serialize(
                    save_public_key=bool(obj.has_public_key()),
                    save_secret_key=bool(obj.has_secret_key()),
                    save_galois_keys=bool(obj.has_galois_keys()),
                    save_relin_keys=bool(obj.has_relin_keys()),
                )
                return _tenseal_context, (data,)
            if kind == "CKKSVector":
                return _tenseal_ckks_vector, (obj.context(), obj.serialize())
            raise ConfigError(
                f"cannot keep a tenseal {kind} in a node's state; expected Context or CKKSVector"
            )
        return NotImplemented


_NUMPY_NAMES = frozenset({"dtype", "ndarray", "_frombuffer", "_reconstruct", "scalar"})
_OTHER_NAMES = {
    "phe.paillier": frozenset({"PaillierPublicKey", "PaillierPrivateKey", "EncryptedNumber"}),
    "gmpy2": frozenset({"mpz", "from_binary"}),
    "gmpy2.gmpy2": frozenset({"mpz", "from_binary"}),
    "builtins": frozenset({"set", "frozenset", "bytearray", "complex", "slice", "range"}),
    "collections": frozenset({"OrderedDict", "defaultdict", "deque"}),
}
_LOADERS = frozenset(
    {
        "_x25519_private",
        "_x25519_public",
        "_ed25519_private",
        "_ed25519_public",
        "_tenseal_context",
        "_tenseal_ckks_vector",
    }
)


class _PartyUnpickler(pickle.Unpickler):
    """Loads party state, resolving only the globals party state is made of.

    The dealer's setup crosses the network (sealed and authenticated, but from another
    machine), so loading it must not be able to call arbitrary functions: only classes
    of this project, numpy arrays and dtypes, phe/gmpy2 numbers, a few containers, and
    this module's key loaders resolve; anything else raises IntegrityError.
    """

    def __init__(self, file: io.BytesIO, references: Mapping[str, np.ndarray]) -> None:
        super().__init__(file)
        self._references = references
        self.loaded: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        root = module.split(".")[0]
        # Decide on the names before importing anything they point at.
        if not (
            (module == __name__ and name in _LOADERS)
            or root in ("protocols", "secagg", "numpy")
            or name in _OTHER_NAMES.get(module, ())
        ):
            raise IntegrityError(f"party state: expected project, numpy or key types, got {module}.{name}")
        found = super().find_class(module, name)
        if root in ("protocols", "secagg") and module != __name__ and not isinstance(found, type):
            raise IntegrityError(f"party state: expected a class, got the function {module}.{name}")
        if root == "numpy" and not (
            name in _NUMPY_NAMES or (isinstance(found, type) and issubclass(found, np.generic))
        ):
            raise IntegrityError(f"party state: expected numpy arrays or scalars, got {module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        if pid not in self._references:
            raise IntegrityError(f"party state refers to {pid!r}; expected one of {sorted(self._references)}")
        self.loaded.add(pid)
        return self._references[pid]


def update_ref(client: int) -> str:
    return f"{_UPDATE_REF}-{client}"


def dump_state(state: object, *, placeholders: Mapping[int, str] | None = None) -> tuple[bytes, set[str]]:
    """A node's state (its parties and bookkeeping) as bytes, and the placeholders it refers to.

    ``placeholders`` maps ``id(array)`` to a reference name (:func:`update_ref`).
    """
    buffer = io.BytesIO()
    pickler = _PartyPickler(buffer, placeholders or {})
    try:
        pickler.dump(state)
    except (TypeError, pickle.PicklingError, AttributeError) as exc:
        raise ConfigError(
            f"cannot keep party state in Flower node state: expected picklable parties "
            f"(or key objects this module knows), got {exc}"
        ) from exc
    return buffer.getvalue(), pickler.referenced


def load_state(data: bytes, *, references: Mapping[str, np.ndarray] | None = None) -> tuple[Any, set[str]]:
    """State from :func:`dump_state` bytes with references replaced; and which were used."""
    unpickler = _PartyUnpickler(io.BytesIO(data), references or {})
    state = unpickler.load()
    return state, unpickler.loaded


def dump_parties(parties: Mapping[int, Party]) -> bytes:
    """Server-side parties as bytes (they must not refer to any client's update)."""
    data, referenced = dump_state(dict(parties))
    if referenced:
        raise IntegrityError(f"server-side parties refer to client updates {sorted(referenced)}")
    return data


def load_parties(data: bytes) -> dict[int, Party]:
    parties, _ = load_state(data)
    if not isinstance(parties, dict) or not all(isinstance(p, Party) for p in parties.values()):
        raise IntegrityError(f"expected a dict of parties, got {type(parties).__name__}")
    return parties


# -- the dealer's sealed provisioning channel -----------------------------------------

_SEAL_INFO = b"secagg/flower/provision/v1"


def new_provisioning_key() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair for one round's provisioning: (private raw, public raw)."""
    key = X25519PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def _channel_key(private: X25519PrivateKey, peer: bytes, context: bytes) -> bytes:
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO + context).derive(shared)


def seal(plaintext: bytes, *, recipient_public: bytes, context: bytes) -> bytes:
    """Ephemeral X25519 public key (32) | nonce (12) | AES-256-GCM ciphertext and tag.

    ``context`` (round and party id) is bound as associated data, so a sealed setup
    cannot be replayed to another party or round.
    """
    ephemeral = X25519PrivateKey.generate()
    key = _channel_key(ephemeral, recipient_public, context)
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext, context)
    return ephemeral.public_key().public_bytes_raw() + nonce + sealed


def open_sealed(sealed: bytes, *, recipient_private: bytes, context: bytes) -> bytes:
    """Inverse of :func:`seal`; a tampered or misaddressed blob raises IntegrityError."""
    if len(sealed) < 32 + 12 + 16:
        raise IntegrityError(f"sealed setup: expected at least 60 bytes, got {len(sealed)}")
    private = X25519PrivateKey.from_private_bytes(recipient_private)
    key = _channel_key(private, sealed[:32], context)
    try:
        return AESGCM(key).decrypt(sealed[32:44], sealed[44:], context)
    except InvalidTag:
        raise IntegrityError(
            "sealed setup: authentication failed (tampered, or not for this party/round)"
        ) from None


def secret_holdings(holdings: Iterable[Holding]) -> list[str]:
    """Names of the holdings their party declared secret (:class:`secagg.party.Holding`).

    A protocol's own server-side secrets (two-server's B opening the seeds addressed to
    it) show up too; callers check them against the protocol's ``server_secrets``.
    """
    return [item.name for item in holdings if item.secret]
