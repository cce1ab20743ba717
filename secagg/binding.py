"""Model binding: a client's round is bound to the digest of the exact model it trained on.

A server that deviates can send each client a different model (model inconsistency,
Pasquini et al. CCS 2022: every client but the target gets a model whose update is zero,
so the secure sum *is* the target's update). Binding closes that: each client derives
:func:`model_digest` of the model it received (every parameter's bytes, the architecture's
description, the round) and hands it to its protocol; the protocol refuses to reveal an
aggregate over clients whose digests differ (:class:`secagg.errors.ModelBindingError`,
nothing revealed). It cannot stop an attack that sends everyone the *same* malicious
model (an imprint layer, trap weights): that is what client-side vetting is for.

The shared pieces every protocol uses:

- :class:`ModelBinding`, the wire message a client sends the party the protocol trusts to
  check (server B in two-server, the key holder in Paillier/CKKS, each decryptor of a
  threshold committee, the server in plaintext and secagg);
- :class:`BindingLedger`, the checker's record: it takes the bindings out of an inbox and
  :meth:`BindingLedger.require` refuses unless every included client sent one and all
  are equal;
- :func:`bound_label`, which mixes a binding into a PRF label, so that secagg's pairwise
  masks of clients that trained on different models do not cancel even when the server
  skips its explicit check.

An unbound round (no bindings given) sends nothing more and derives every label as before,
so it costs exactly what it did. Depends on hashlib and numpy only.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from secagg.errors import ConfigError, ModelBindingError, WireFormatError
from secagg.party import Inbound, party_name
from secagg.wire import Payload, Reader, Writer

DIGEST_BYTES = 32
BINDING_MSG_TYPE = 200  # reserved in every protocol's payload table
_DOMAIN = b"secagg/model-binding/v1"


def model_digest(arrays: Sequence[np.ndarray], *, architecture: str, round_id: int) -> bytes:
    """SHA-256 over a domain tag, the round, the architecture's description and every
    parameter array (dtype, shape and little-endian bytes, in order).

    >>> a = [np.zeros(3, dtype=np.float32)]
    >>> model_digest(a, architecture="m", round_id=1) == model_digest(a, architecture="m", round_id=2)
    False
    """
    if not 0 <= round_id < 2**32:
        raise ConfigError(f"round_id must be in [0, 2^32), got {round_id}")
    h = hashlib.sha256(_DOMAIN)
    h.update(struct.pack(">I", round_id))
    described = architecture.encode("utf-8")
    h.update(struct.pack(">Q", len(described)) + described)
    h.update(struct.pack(">Q", len(arrays)))
    for array in arrays:
        values = np.ascontiguousarray(array)
        values = values.astype(values.dtype.newbyteorder("<"), copy=False)
        dtype = values.dtype.str.encode("ascii")
        h.update(struct.pack(">B", len(dtype)) + dtype)
        h.update(struct.pack(">B", values.ndim) + b"".join(struct.pack(">Q", s) for s in values.shape))
        h.update(values.tobytes())
    return h.digest()


def check_digest(binding: bytes, *, what: str) -> bytes:
    """``binding`` if it is a digest of :data:`DIGEST_BYTES` bytes, else a typed error."""
    if not isinstance(binding, bytes | bytearray) or len(binding) != DIGEST_BYTES:
        size = len(binding) if isinstance(binding, bytes | bytearray) else type(binding).__name__
        raise ConfigError(f"{what}: expected a {DIGEST_BYTES}-byte model digest, got {size}")
    return bytes(binding)


def bound_label(label: bytes, binding: bytes) -> bytes:
    """``label`` with ``binding`` appended (length-prefixed); ``label`` itself when unbound."""
    if not binding:
        return label
    return label + b"|model:" + struct.pack(">B", len(binding)) + binding


@dataclass(frozen=True)
class ModelBinding(Payload):
    """A client's model digest, sent to the party that checks before revealing.

    Layout: 32 raw bytes.
    """

    msg_type: ClassVar[int] = BINDING_MSG_TYPE
    digest: bytes

    def to_bytes(self) -> bytes:
        return Writer().raw(check_digest(self.digest, what="ModelBinding")).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> ModelBinding:
        if len(data) != DIGEST_BYTES:
            raise WireFormatError(
                f"ModelBinding: expected a {DIGEST_BYTES}-byte digest, got {len(data)} bytes"
            )
        reader = Reader(data, "ModelBinding")
        digest = reader.raw(DIGEST_BYTES, "digest")
        reader.done()
        return cls(digest)


class BindingLedger:
    """The checking party's record of the bindings clients sent it.

    ``required``: whether this round is bound (set by :meth:`secagg.protocol.Protocol.bind`;
    False leaves the party as it was). ``checker`` names the party in errors.
    """

    def __init__(self, checker: str) -> None:
        self.checker = checker
        self.required = False
        self.bindings: dict[int, bytes] = {}

    def take(self, inbox: Iterable[Inbound]) -> list[Inbound]:
        """Record every :class:`ModelBinding` of ``inbox``; return the other messages."""
        rest = []
        for message in inbox:
            if isinstance(message.payload, ModelBinding):
                sender = message.header.sender
                if sender in self.bindings and self.bindings[sender] != message.payload.digest:
                    raise ModelBindingError(
                        f"{self.checker}: {party_name(sender)} sent two different model digests"
                    )
                self.bindings[sender] = message.payload.digest
            else:
                rest.append(message)
        return rest

    def require(self, clients: Iterable[int]) -> bytes | None:
        """The one digest every client in ``clients`` trained on (None when unbound);
        :class:`ModelBindingError` when one sent none or two differ, before anything is
        revealed."""
        if not self.required:
            return None
        members = sorted(set(int(c) for c in clients))
        missing = [c for c in members if c not in self.bindings]
        if missing:
            raise ModelBindingError(
                f"{self.checker}: expected a model digest from every included client; "
                f"none from {[party_name(c) for c in missing]}"
            )
        groups: dict[bytes, list[int]] = {}
        for client in members:
            groups.setdefault(self.bindings[client], []).append(client)
        if len(groups) > 1:
            described = "; ".join(
                f"{digest.hex()[:12]}: {len(group)} client(s) {group[:8]}" for digest, group in groups.items()
            )
            raise ModelBindingError(
                f"{self.checker}: expected every included client to have trained on one model; "
                f"got {len(groups)} different model digests ({described}); refusing to reveal the aggregate"
            )
        return next(iter(groups)) if groups else None


def binding_message(binding: bytes) -> ModelBinding:
    return ModelBinding(check_digest(binding, what="binding"))


def validate_bindings(bindings: Sequence[bytes], n_clients: int) -> list[bytes]:
    """One digest per client, each :data:`DIGEST_BYTES` bytes."""
    if len(bindings) != n_clients:
        raise ConfigError(f"expected one model digest per client ({n_clients}), got {len(bindings)}")
    return [check_digest(b, what=f"client {i} binding") for i, b in enumerate(bindings)]


def as_mapping(bindings: Mapping[int, bytes] | Sequence[bytes]) -> dict[int, bytes]:
    if isinstance(bindings, Mapping):
        return dict(bindings)
    return dict(enumerate(bindings))
