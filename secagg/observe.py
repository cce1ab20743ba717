"""Observations: what an observer can take from what it saw, in the attacker's terms.

The seam between a round and an attack. A protocol turns each frozen server view into
:class:`Observation` records (:meth:`secagg.protocol.Protocol.observe`), and the views
of servers that pool what they saw into more (:meth:`secagg.protocol.Protocol.collude`);
attacks consume observations and the model, never a protocol's private state, module
internals or configuration. This is the boundary the ``breaching`` framework draws
between what a user *shares* and the user's true data (the attacker only ever receives
the former), given a type.

An observation says who saw it (``observer``), what it is (``name``: the message, or
``aggregate``), whose data it depends on (``clients``), how the attacker reads it
(``kind``), the attacker's best candidate in *update space* (``vector``: the same space
as the clients' inputs to the protocol, gradients or weights; for an observation over
several clients, their mean update; None when the message carries too little to form
one), and the payload bytes (for tests of their distribution: for a ``ring`` reading only
the ring elements as they travel, so the message's framing and lengths do not count).

Kinds:

- ``plaintext``: floats of the update as sent;
- ``ring``: fixed-point elements of Z_2^k, decoded with the round's public codec
  (``frac_bits`` and ``ring_bits`` are configuration, never secret);
- ``ciphertext``: the protocol's own reading of a ciphertext in the update's shape (what
  an attacker without the key can make of it);
- ``bytes``: the payload bytes read as integers scaled into the protocol's public input
  range (:func:`bytes_as_update`);
- ``too-small``: fewer than one bit per parameter (a key, a seed, a list of ids);
- ``aggregate``: the revealed aggregate (a sum is divided by the number of clients in it:
  a sum of n mean gradients is n times the gradient of all their data);
- ``colluding``: an update recovered from pooled views.

This module depends on numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from secagg.encoding import FixedPoint, is_packed
from secagg.errors import ConfigError
from secagg.party import Received, Revealed, party_name
from secagg.wire import Payload, pack_bits, payload_bytes

ObservationKind = Literal["plaintext", "ring", "ciphertext", "bytes", "too-small", "aggregate", "colluding"]
KINDS: tuple[str, ...] = get_args(ObservationKind)
AGGREGATE = "aggregate"  # the kind and the name of a revealed aggregate's observation
COLLUDING = "colluding"  # the observer (and kind) of what pooled views give


@dataclass(frozen=True, eq=False)
class Observation:
    """One thing an observer saw, and the attacker's best candidate update made from it."""

    observer: str
    name: str
    clients: tuple[int, ...]
    kind: ObservationKind
    vector: np.ndarray | None
    payload: bytes = b""
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"observation kind: expected one of {KINDS}, got {self.kind!r}")
        if not all(isinstance(c, int) and c >= 0 for c in self.clients):
            raise ConfigError(f"observation clients: expected client indices, got {self.clients!r}")
        if self.vector is not None:
            vector = np.asarray(self.vector, dtype=np.float64)
            if vector.ndim != 1:
                raise ConfigError(f"observation vector: expected a flat vector, got shape {vector.shape}")
            object.__setattr__(self, "vector", vector)


@dataclass(frozen=True)
class Reading:
    """What an attacker makes of one payload: its kind, the candidate (or None), a note,
    and (``data``) the bytes a uniformity test should cover when not the whole payload."""

    kind: ObservationKind
    vector: np.ndarray | None
    note: str = ""
    data: bytes | None = None


def bytes_as_update(data: bytes, n_params: int, scale: float) -> np.ndarray:
    """Payload bytes read as little-endian unsigned integers (up to 4 bytes each) and
    scaled into [-scale, scale), laid out in the update's shape (repeated if short)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    width = int(min(4, max(1, raw.size // max(1, n_params))))
    usable = raw[: raw.size // width * width].reshape(-1, width).astype(np.float64)
    words = (usable * (256.0 ** np.arange(width))).sum(axis=1)
    if words.size == 0:
        return np.zeros(n_params)
    if words.size < n_params:
        words = np.resize(words, n_params)
    return (words[:n_params] / 256.0**width * 2.0 - 1.0) * scale


def read_bytes(data: bytes, n_params: int, *, scale: float) -> Reading:
    """The fallback reading: bytes as an update in [-scale, scale), or too small to be one."""
    if len(data) * 8 < n_params:  # fewer than one bit per parameter: a key, a seed, a list
        return Reading("too-small", None, f"{len(data)} bytes < one bit per parameter")
    return Reading("bytes", bytes_as_update(data, n_params, scale), f"payload bytes scaled to +-{scale:g}")


def read_payload(
    payload: Payload, n_params: int, *, codec: FixedPoint | None, bound: float | None
) -> Reading:
    """The default reading of a decoded payload.

    A float array of ``n_params`` values is the update in the clear; an unsigned array of
    ``n_params`` elements of the codec's ring is decoded with the public ``codec``;
    anything else is read as bytes scaled into the public input range ``bound`` (1 when
    the protocol has none).
    """
    arrays = payload.arrays()
    for field_name, values in arrays.items():
        if values.size == n_params and values.dtype.kind == "f":
            return Reading("plaintext", np.asarray(values, dtype=np.float64), f"float field {field_name}")
    if codec is not None:
        width = np.dtype(codec.dtype).itemsize
        for field_name, values in arrays.items():
            if values.size == n_params and values.dtype.kind == "u" and values.dtype.itemsize == width:
                return Reading(
                    "ring",
                    codec.decode(values),
                    f"{field_name} decoded with frac_bits={codec.frac_bits}",
                    ring_element_bytes(values, codec.ring_bits),
                )
    return read_bytes(payload.to_bytes(), n_params, scale=bound if bound is not None else 1.0)


def ring_element_bytes(values: np.ndarray, ring_bits: int) -> bytes:
    """Elements of Z_2^ring_bits as they travel: little-endian k/8 bytes each, or
    bit-packed when k is no whole dtype's width (masked, every byte is uniform)."""
    array = np.asarray(values)
    if is_packed(ring_bits):
        return pack_bits(array, ring_bits)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def message_observation(observer: str, received: Received, reading: Reading) -> Observation:
    """The observation of one received client message, read as ``reading`` says."""
    sender = received.header.sender
    return Observation(
        observer,
        f"{party_name(sender)} {type(received.payload).__name__}",
        (sender,),
        reading.kind,
        reading.vector,
        reading.data if reading.data is not None else payload_bytes(received.raw),
        reading.note,
    )


def aggregate_observation(observer: str, revealed: Revealed, aggregate_kind: str) -> Observation:
    """The revealed aggregate as a candidate: a sum divided by its number of clients."""
    included = tuple(int(c) for c in revealed.included)
    aggregate = np.asarray(revealed.aggregate, dtype=np.float64)
    if aggregate_kind == "sum":
        aggregate = aggregate / max(1, len(included))
    return Observation(
        observer,
        AGGREGATE,
        included,
        "aggregate",
        aggregate,
        note=f"revealed {aggregate_kind} of {len(included)} clients",
    )
