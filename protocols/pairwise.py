"""Single-server secure aggregation by pairwise masking with dropout recovery.

Follows Bonawitz et al. 2017 (Practical Secure Aggregation for Privacy-Preserving
Machine Learning, CCS), with its malicious-server variant as an option
(``active_security=True``: signed key advertisements under pinned long-term identity
keys and the consistency-check round), and the SecAgg+ option of Bell et al. 2020
(Secure Single-Server Aggregation with (Poly)Logarithmic Overhead, CCS): each client
masks with k neighbours on a random k-regular (Harary) graph instead of with every other
client.

Rounds (one stage each, the server's stages in between route messages)::

    advertise           client i -> server: two X25519 public keys, c_i (encrypting
                        shares) and s_i (agreeing pairwise mask seeds); with active
                        security an Ed25519 signature over them, the session and the round
    broadcast_keys      server -> client i: the keys of i's share group G(i) (i and its
                        neighbours; everyone for the full graph), with their signatures
    share_keys          client i checks the keys against the graph it derives itself
                        (:func:`graph_seed_for`) and, with active security, the signatures
                        under the pinned identity keys; needs |U1 in G(i)| >= t; draws a
                        self-mask seed b_i, Shamir-shares b_i and its s-secret
                        t-of-|G(i)| (secagg.shamir), encrypts each share pair to its
                        holder j with AES-256-GCM under HKDF(X25519(c_i, c_j)) bound to
                        (round, i, j), sends them all with a commitment H(b_i)
    route_shares        server -> client j: the ciphertexts addressed to j
    masked_input        client i needs shares from at least t - 1 peers (|U2| >= t),
                        else sends nothing; y_i = x_i + PRG(b_i) + sum_{j>i} PRG(s_ij)
                        - sum_{j<i} PRG(s_ij) mod 2^k over those peers; PRG =
                        secagg.prf.expand, labels bound to round and ids
    collect_masked      server sums the y_i (aggregation); with active security sends
                        every survivor the list U3
    consistency_check   (active security) client i checks U3 (itself in it, at least t
                        of its group, only members it holds shares of) and signs it
    collect_signatures  server sends each survivor (each signer, with active security)
                        the survivors and dropped clients among its share group, with the
                        signatures over U3 of the signers in its group
    unmasking           client i checks the request (at least t survivors of its group;
                        with active security, at least t valid signatures from its group
                        over the U3 it signed, and the request agrees with that U3), then
                        sends b-shares of survivors and s-shares of dropped clients, never
                        both for one client (ProtocolStateError)
    reconstruct         server reconstructs b_j of survivors and s_j of dropped clients
                        (secagg.shamir.reconstruct, range-checked, then checked against
                        the commitment and the public key), removes their masks, checks
                        the minimum and reveals the sum

Fixed point: x_i is encoded as rint(x * 2^f) in Z_2^k (k = 8..32 or 64, 32 by
default; f planned from clip and the number of clients unless set), so the revealed sum
is exact mod 2^k and decodes to within n * 2^-(f+1) of the float sum (``precision()``).
Masks are words of the AES-CTR stream (uniform mod 2^k, nothing rejected), so the
masked vector is k/8 bytes per parameter: 2 in Z_2^16, 1.5 in Z_2^12 (bit-packed; a
width that is no whole dtype is held in the next uint dtype and reduced mod 2^k). A
smaller ring leaves less room: the planned f drops (100 clients of |x| <= 1 get 8
fractional bits in Z_2^16), and a set f that overflows is refused before the round
(:class:`EncodingOverflowError`, saying what fits). ``modular=True`` is for inputs that
are residues whose decoder reduces modulo the ring itself (distributed DP in Z_2^bits):
no client budget, the sum is revealed mod 2^k.

Threat model:

- Keys: every client holds two fresh X25519 key pairs per round and a fresh self-mask
  seed b_i (and, with active security, a long-term Ed25519 identity key whose
  verification key every party pinned out of band); the server holds only public keys
  until it reconstructs, at the end, the b_j of survivors and the s-secrets of clients
  that dropped before their masked input.
- The server sees public keys, AES-GCM ciphertexts of shares (it routes them but holds
  no c-secret), masked vectors that are uniform in Z_2^k one by one, and at the end
  fewer than t shares of any secret it must not have: for no client does it receive
  both t b-shares and t s-shares, because each client answers one request only,
  refuses to give both shares of one client, and t > g/2 (g the group size; a lower t
  needs ``insecure_allow_low_threshold=True``).
- A server that deviates: every check Bonawitz et al. ask of a client is made by the
  client (|U1|, |U2|, |U3| >= t within its share group), so withholding routed shares or
  unmasking requests ends in NotEnoughClientsError, never in a client masked by its self
  mask alone. The neighbour graph is derived by every client from the session, the round
  and the client count (:func:`graph_seed_for`): the server cannot grind it (a seed the
  server picks, or a hash of the keys it chooses to forward, can be ground). Without
  active security the server can still substitute public keys (it relays them
  unauthenticated) and so read a client's shares: the default is secure against an
  honest-but-curious server only. With ``active_security=True`` keys are signed under
  pinned identity keys (a swapped or replayed key fails with IntegrityError) and a
  client answers only a request consistent with a U3 that t members of its group signed.
- Collusion: the server together with t - 1 clients of a share group learns nothing
  individual; t clients of G(i) colluding with the server learn x_i. A server lying
  about dropouts with c colluding clients in a group needs t <= (g + c) / 2 to obtain
  both share kinds of one client; the default t = floor(2g/3) + 1 holds up to
  c < g/3.
- Dropouts: any client may drop at any stage; the round completes while every share
  group keeps at least t live members at each stage, else NotEnoughClientsError and
  nothing is revealed.
- Minimum clients: the revealed sum holds at least max(min_clients, t) inputs
  (min_clients = 2 by default); below that NotEnoughClientsError.

Costs: upload k/8 bytes per parameter (2 for k = 16, 4 for k = 32) plus about 140 bytes per
member of the share group (a 92-byte encrypted share pair and a 40-byte unmasking share
each, 65 bytes of keys and a 32-byte commitment once; active security adds 128 bytes of
signatures); the client expands one PRG stream per neighbour plus its self mask,
whole-array, in place (:func:`apply_masks`). The server also sees H(b_i), a SHA-256
commitment that lets it check the b_i it rebuilds (b_i is 256 uniform bits: the hash
reveals nothing useful).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocols.pairwise_sizing import (
    DEFAULT_CORRUPT,
    DEFAULT_DROPOUT,
    DEFAULT_FAILURE_BITS,
    Sizing,
    size_secaggplus,
)
from secagg.binding import BindingLedger, ModelBinding, binding_message, bound_label
from secagg.encoding import FixedPoint, is_packed, reduce, ring_dtype
from secagg.errors import (
    ConfigError,
    IntegrityError,
    KeyMismatchError,
    NotEnoughClientsError,
    ProtocolStateError,
    SecAggError,
    WireFormatError,
)
from secagg.party import SERVER, Envelope, Holding, Inbound, Party, Revealed, party_name
from secagg.prf import domain, expand, random_seed, stream
from secagg.protocol import Protocol, RoundSpec, ThreatModel
from secagg.sealing import generate_keypair, public_key, shared_key
from secagg.shamir import PRIME, limbs_per_secret, limbs_to_secret, reconstruct, share_secrets
from secagg.signing import SIGNATURE_BYTES, generate_signing_keypair, sign, verification_key, verify
from secagg.wire import Payload, Reader, Writer

WIRE_ID = 40
KEY_BYTES = 32
SECRET_BYTES = 32
LIMBS = limbs_per_secret(SECRET_BYTES)  # 9 field elements per 32-byte secret
SHARE_PLAINTEXT_BYTES = 2 * 4 * LIMBS  # b-share and s-share, uint32 limbs
GCM_TAG_BYTES = 16
SHARE_CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + GCM_TAG_BYTES
# The element dtypes a masked input may carry: one per ring width.
_NONCE = bytes(12)  # every share key encrypts exactly one message (see _share_key)
MAX_SESSION_BYTES = 256
AUTO = "auto"  # neighbours sized from Bell et al.'s bounds at the round's client count


# ---------------------------------------------------------------- configuration


def _flag(value: object, name: str) -> bool:
    # The CLI's --set hands strings; anything but an explicit yes/no is refused.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"{name}: expected True or False, got {value!r}")


def _optional_int(value: object, name: str) -> int | None:
    # The CLI's --set hands strings for fields whose default is None.
    if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
        return None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer or None, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name}: expected an integer or None, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class PairwiseConfig:
    """Configuration of ``secagg`` pairwise masking.

    ``ring_bits`` k (8..32 or 64); ``clip`` the accepted |x|; ``frac_bits`` None plans
    the most fractional bits the bit budget allows for the round's client count;
    ``modular`` the inputs are residues whose sum is wanted mod 2^k (no client budget);
    ``threshold`` t of the Shamir sharing within a share group (None: floor(2g/3) + 1,
    g the group size; t <= g/2 is refused unless ``insecure_allow_low_threshold``);
    ``neighbours`` k of SecAgg+ (even, >= 2; None: full graph; ``"auto"``: k and t sized
    for the round's client count from Bell et al.'s bounds by
    :func:`protocols.pairwise_sizing.size_secaggplus`, given ``dropout_rate`` (each client
    drops independently with this probability), ``corrupt_fraction`` (clients colluding
    with the server) and the failure targets 2^-``privacy_bits`` and
    2^-``correctness_bits``; a client count no k can serve is refused with a
    :class:`ConfigError` saying what would work); ``min_clients`` fewest
    inputs in a revealed sum (never below t); ``session`` a public string fixed when the
    clients enrol, bound into the neighbour graph and every signature; ``active_security``
    Bonawitz et al.'s malicious-server variant (signed keys, consistency check).
    """

    ring_bits: int = 32
    clip: float = 1.0
    frac_bits: int | None = None
    threshold: int | None = None
    neighbours: int | str | None = None
    min_clients: int = 2
    session: str = ""
    active_security: bool = False
    insecure_allow_low_threshold: bool = False
    dropout_rate: float = DEFAULT_DROPOUT
    corrupt_fraction: float = DEFAULT_CORRUPT
    privacy_bits: int = DEFAULT_FAILURE_BITS
    correctness_bits: int = DEFAULT_FAILURE_BITS
    modular: bool = False

    def __post_init__(self) -> None:
        for name in ("active_security", "insecure_allow_low_threshold", "modular"):
            object.__setattr__(self, name, _flag(getattr(self, name), name))
        if not isinstance(self.session, str) or len(self.session.encode("utf-8")) > MAX_SESSION_BYTES:
            raise ConfigError(
                f"session: expected a string of at most {MAX_SESSION_BYTES} utf-8 bytes, got {self.session!r}"
            )
        if isinstance(self.neighbours, str) and self.neighbours.lower() == AUTO:
            object.__setattr__(self, "neighbours", AUTO)
            if self.threshold is not None:
                raise ConfigError(
                    "neighbours='auto' sizes the threshold too: expected threshold None, "
                    f"got {self.threshold!r}"
                )
        else:
            object.__setattr__(self, "neighbours", _optional_int(self.neighbours, "neighbours"))
        for name in ("frac_bits", "threshold"):
            object.__setattr__(self, name, _optional_int(getattr(self, name), name))
        for name in ("dropout_rate", "corrupt_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"{name}: expected a number in [0, 1), got {value!r}")
        for name in ("privacy_bits", "correctness_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 128:
                raise ConfigError(f"{name}: expected an integer in [1, 128], got {value!r}")
        ring_dtype(self.ring_bits)  # one of RING_BITS, else ConfigError
        if not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"clip must be a finite number > 0, got {self.clip!r}")
        if self.frac_bits is not None:
            self.codec(1)  # validates frac_bits against the ring and clip
        if self.threshold is not None and self.threshold < 2:
            raise ConfigError(
                f"threshold must be >= 2 (t = 1 hands a secret to one holder), got {self.threshold}"
            )
        if isinstance(self.neighbours, int) and (self.neighbours < 2 or self.neighbours % 2):
            raise ConfigError(f"neighbours must be an even number >= 2 or None, got {self.neighbours}")
        if not isinstance(self.min_clients, int) or self.min_clients < 1:
            raise ConfigError(f"min_clients must be an int >= 1, got {self.min_clients!r}")

    def codec(self, n_clients: int) -> FixedPoint:
        if self.frac_bits is None:
            return FixedPoint.plan(
                clip=self.clip, n_clients=n_clients, ring_bits=self.ring_bits, modular=self.modular
            )
        return FixedPoint(
            ring_bits=self.ring_bits, frac_bits=self.frac_bits, clip=self.clip, modular=self.modular
        )

    def sizing(self, n_clients: int) -> Sizing:
        """k and t for ``n_clients`` from Bell et al.'s bounds (``neighbours='auto'``)."""
        return size_secaggplus(
            n_clients=n_clients,
            dropout=self.dropout_rate,
            corrupt=self.corrupt_fraction,
            privacy_bits=self.privacy_bits,
            correctness_bits=self.correctness_bits,
        )

    def neighbours_for(self, n_clients: int) -> int | None:
        """k for ``n_clients`` (None: the full graph)."""
        if self.neighbours == AUTO:
            return self.sizing(n_clients).neighbours
        return self.neighbours  # type: ignore[return-value]

    def uses_graph(self, n_clients: int) -> bool:
        """True when the SecAgg+ neighbour graph is sparser than the full graph."""
        k = self.neighbours_for(n_clients)
        return k is not None and k < n_clients - 1

    def group_size(self, n_clients: int) -> int:
        """g: the clients that hold shares of one client's secrets (itself included)."""
        if self.uses_graph(n_clients):
            return int(self.neighbours_for(n_clients)) + 1  # type: ignore[arg-type]
        return n_clients

    def threshold_for(self, n_clients: int) -> int:
        group = self.group_size(n_clients)
        if self.neighbours == AUTO:
            t = self.sizing(n_clients).threshold
        else:
            t = self.threshold if self.threshold is not None else min(group, 2 * group // 3 + 1)
        if t > group:
            raise ConfigError(f"threshold {t} exceeds the share group size {group} for {n_clients} clients")
        if 2 * t <= group and not self.insecure_allow_low_threshold:
            # With t <= g/2 two disjoint halves of a group can each be asked for one share
            # kind of the same client: the server rebuilds both secrets and reads its input.
            raise ConfigError(
                f"threshold {t} is not above half the share group ({group} clients for {n_clients}): "
                f"expected t >= {group // 2 + 1} (set insecure_allow_low_threshold=True to run anyway)"
            )
        return t

    def min_revealed(self, n_clients: int) -> int:
        return max(self.min_clients, self.threshold_for(n_clients))


# ---------------------------------------------------------------- neighbour graph


def neighbour_graph(
    n_clients: int, neighbours: int | None, graph_seed: bytes, round_id: int
) -> list[tuple[int, ...]]:
    """Share group of every client: itself and its neighbours, sorted.

    SecAgg+ (Bell et al. 2020): clients on a ring in a random order drawn from
    ``graph_seed`` (a public PRF permutation), each joined to k/2 on either side: a
    k-regular Harary graph. ``neighbours`` None or >= n - 1 gives the full graph. The
    protocol's seed is :func:`graph_seed_for`, which no party of the round can bias.
    """
    if neighbours is None or neighbours >= n_clients - 1:
        everyone = tuple(range(n_clients))
        return [everyone] * n_clients
    keys = expand(graph_seed, domain("neighbour-graph", round_id=round_id), n_clients, ring_bits=64)
    order = np.argsort(keys, kind="stable")
    position = np.empty(n_clients, dtype=np.int64)
    position[order] = np.arange(n_clients)
    half = neighbours // 2
    offsets = np.concatenate([np.arange(-half, 0), np.arange(0, half + 1)])
    groups = order[(position[:, None] + offsets[None, :]) % n_clients]
    return [tuple(sorted(int(v) for v in row)) for row in groups]


def graph_seed_for(session: str, round_id: int, n_clients: int) -> bytes:
    """The neighbour-graph seed of a round: SHA-256 of (session, round, client count).

    Every client recomputes it; nothing any party sends during the round enters it. A
    seed chosen by the server can be ground until a victim's neighbours are all
    colluders (a few hundred tries for 100 clients, 20 colluders, k = 4), and so can a
    hash of the advertised public keys, since the server picks which adverts to keep and
    colluding clients pick their keys after seeing the honest ones. What stays in the
    orchestrator's hands is the round id: it must run rounds in sequence within a
    session (the session string is fixed when clients enrol, e.g. from a public beacon),
    never retry a round under a fresh id.
    """
    if not 0 <= round_id < 2**32 or not 0 < n_clients < 2**32:
        raise ConfigError(f"expected a round id and client count below 2^32, got {round_id}, {n_clients}")
    label = domain("pairwise/neighbour-graph-seed", round_id=round_id, parties=(n_clients,))
    encoded = session.encode("utf-8")
    return hashlib.sha256(label + struct.pack(">H", len(encoded)) + encoded).digest()


# ---------------------------------------------------------------- wire payloads


def _write_signature(writer: Writer, signature: bytes | None) -> Writer:
    if signature is None:
        return writer.u8(0)
    if len(signature) != SIGNATURE_BYTES:
        raise WireFormatError(f"expected a {SIGNATURE_BYTES}-byte signature, got {len(signature)} bytes")
    return writer.u8(1).raw(signature)


def _read_signature(reader: Reader, name: str) -> bytes | None:
    flag = reader.u8(f"{name} flag")
    if flag not in (0, 1):
        raise WireFormatError(f"{name}: expected flag 0 (unsigned) or 1 (signed), got {flag}")
    return reader.raw(SIGNATURE_BYTES, name) if flag else None


@dataclass(frozen=True)
class AdvertiseKeys(Payload):
    """A client's two public keys, signed under its identity key with active security.

    Layout: 32 bytes c public key (share encryption) | 32 bytes s public key (masks) |
    u8 signed (0 or 1) | 64 bytes Ed25519 signature if signed (:func:`_advert_message`).
    """

    msg_type: ClassVar[int] = 1
    c_public: bytes
    s_public: bytes
    signature: bytes | None = None

    def to_bytes(self) -> bytes:
        writer = Writer().raw(self.c_public).raw(self.s_public)
        return _write_signature(writer, self.signature).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> AdvertiseKeys:
        reader = Reader(data, "AdvertiseKeys")
        c_public = reader.raw(KEY_BYTES, "c public key")
        s_public = reader.raw(KEY_BYTES, "s public key")
        signature = _read_signature(reader, "signature")
        reader.done()
        return cls(c_public, s_public, signature)


@dataclass(frozen=True)
class KeyBroadcast(Payload):
    """The keys of a client's share group (with each owner's signature under active security).

    Layout: u32 count m | u8 signed (0 or 1) | m x (u32 client id | 32 bytes c public |
    32 bytes s public | 64 bytes signature if signed). No graph seed: every client
    derives the graph itself (:func:`graph_seed_for`).
    """

    msg_type: ClassVar[int] = 2
    ids: tuple[int, ...]
    c_publics: tuple[bytes, ...]
    s_publics: tuple[bytes, ...]
    signatures: tuple[bytes, ...] | None = None

    def to_bytes(self) -> bytes:
        signed = self.signatures is not None
        writer = Writer().u32(len(self.ids)).u8(int(signed))
        signatures = self.signatures if self.signatures is not None else (b"",) * len(self.ids)
        for client, c_public, s_public, signature in zip(
            self.ids, self.c_publics, self.s_publics, signatures, strict=True
        ):
            writer.u32(client).raw(c_public).raw(s_public)
            if signed:
                if len(signature) != SIGNATURE_BYTES:
                    raise WireFormatError(
                        f"KeyBroadcast: expected {SIGNATURE_BYTES}-byte signatures, got {len(signature)}"
                    )
                writer.raw(signature)
        return writer.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> KeyBroadcast:
        reader = Reader(data, "KeyBroadcast")
        count = reader.u32("count")
        signed = reader.u8("signed")
        if signed not in (0, 1):
            raise WireFormatError(f"KeyBroadcast: expected signed flag 0 or 1, got {signed}")
        entry = 4 + 2 * KEY_BYTES + (SIGNATURE_BYTES if signed else 0)
        if count * entry > len(data):
            raise WireFormatError(f"KeyBroadcast: {count} entries do not fit {len(data)} bytes")
        ids, c_publics, s_publics, signatures = [], [], [], []
        for _ in range(count):
            ids.append(reader.u32("client id"))
            c_publics.append(reader.raw(KEY_BYTES, "c public key"))
            s_publics.append(reader.raw(KEY_BYTES, "s public key"))
            if signed:
                signatures.append(reader.raw(SIGNATURE_BYTES, "signature"))
        reader.done()
        return cls(tuple(ids), tuple(c_publics), tuple(s_publics), tuple(signatures) if signed else None)


@dataclass(frozen=True)
class EncryptedShares(Payload):
    """A client's encrypted share pairs for its share group, and its b commitment.

    Layout: 32 bytes SHA-256 commitment to b_i | u32 count m | m x (u32 recipient |
    88 bytes AES-256-GCM ciphertext + tag of the 72-byte share pair).
    """

    msg_type: ClassVar[int] = 3
    commitment: bytes
    recipients: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        writer = Writer().raw(self.commitment).u32(len(self.recipients))
        for recipient, ciphertext in zip(self.recipients, self.ciphertexts, strict=True):
            if len(ciphertext) != SHARE_CIPHERTEXT_BYTES:
                raise WireFormatError(
                    f"EncryptedShares: expected {SHARE_CIPHERTEXT_BYTES}-byte ciphertexts, "
                    f"got {len(ciphertext)}"
                )
            writer.u32(recipient).raw(ciphertext)
        return writer.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> EncryptedShares:
        reader = Reader(data, "EncryptedShares")
        commitment = reader.raw(32, "commitment")
        count = reader.u32("count")
        if count * (4 + SHARE_CIPHERTEXT_BYTES) > len(data):
            raise WireFormatError(f"EncryptedShares: {count} entries do not fit {len(data)} bytes")
        recipients, ciphertexts = [], []
        for _ in range(count):
            recipients.append(reader.u32("recipient"))
            ciphertexts.append(reader.raw(SHARE_CIPHERTEXT_BYTES, "ciphertext"))
        reader.done()
        return cls(commitment, tuple(recipients), tuple(ciphertexts))


@dataclass(frozen=True)
class RoutedShares(Payload):
    """The ciphertexts addressed to one client, as the server routes them.

    Layout: u32 count m | m x (u32 sender | 88 bytes ciphertext + tag).
    """

    msg_type: ClassVar[int] = 4
    senders: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        writer = Writer().u32(len(self.senders))
        for sender, ciphertext in zip(self.senders, self.ciphertexts, strict=True):
            writer.u32(sender).raw(ciphertext)
        return writer.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> RoutedShares:
        reader = Reader(data, "RoutedShares")
        count = reader.u32("count")
        if count * (4 + SHARE_CIPHERTEXT_BYTES) > len(data):
            raise WireFormatError(f"RoutedShares: {count} entries do not fit {len(data)} bytes")
        senders, ciphertexts = [], []
        for _ in range(count):
            senders.append(reader.u32("sender"))
            ciphertexts.append(reader.raw(SHARE_CIPHERTEXT_BYTES, "ciphertext"))
        reader.done()
        return cls(tuple(senders), tuple(ciphertexts))


@dataclass(frozen=True)
class MaskedInput(Payload):
    """A client's masked fixed-point vector y_i in Z_2^k.

    Layout, k = 8, 16, 32, 64: array (u8 dtype code 1 = uint8, 8 = uint16, 2 = uint32 or
    3 = uint64 | u64 count | count x k/8 bytes little-endian): 9 + n * k/8 bytes, 2 bytes
    per parameter for k = 16, 4 for k = 32. Any other k: packed (u8 9 | u8 k | u64 count |
    ceil(count * k / 8) bytes, :func:`secagg.wire.pack_bits`), only the low k bits of each
    value. ``bits``: the width on the wire (0: the dtype's). The count is bounded by the
    bytes that follow it, and the server sums only n_params elements of its own ring.
    """

    msg_type: ClassVar[int] = 5
    masked: np.ndarray
    bits: int = 0

    @property
    def ring_bits(self) -> int:
        return self.bits or self.masked.dtype.itemsize * 8

    def to_bytes(self) -> bytes:
        return Writer().ring(self.masked, self.bits).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> MaskedInput:
        reader = Reader(data, "MaskedInput")
        masked, bits = reader.ring("masked")
        reader.done()
        return cls(masked, bits)


@dataclass(frozen=True)
class ConsistencyRequest(Payload):
    """Active security: the survivors U3 (clients whose masked input was summed), to sign.

    Layout: array u4 U3, strictly increasing ids.
    """

    msg_type: ClassVar[int] = 8
    survivors: np.ndarray

    def to_bytes(self) -> bytes:
        return Writer().array(np.asarray(self.survivors, dtype="<u4")).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> ConsistencyRequest:
        reader = Reader(data, "ConsistencyRequest")
        survivors = reader.array("survivors", dtype="<u4")
        reader.done()
        if survivors.size > 1 and not bool(np.all(np.diff(survivors.astype(np.int64)) > 0)):
            raise WireFormatError("ConsistencyRequest: expected strictly increasing survivor ids")
        return cls(survivors)


@dataclass(frozen=True)
class ConsistencySignature(Payload):
    """Active security: a client's Ed25519 signature over the U3 it was shown.

    Layout: 64 bytes signature (:func:`_consistency_message`).
    """

    msg_type: ClassVar[int] = 9
    signature: bytes

    def to_bytes(self) -> bytes:
        return Writer().raw(self.signature).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> ConsistencySignature:
        reader = Reader(data, "ConsistencySignature")
        signature = reader.raw(SIGNATURE_BYTES, "signature")
        reader.done()
        return cls(signature)


@dataclass(frozen=True)
class UnmaskRequest(Payload):
    """The server's survivor list for one client's share group.

    Layout: array u4 survivors (send their b-shares) | array u4 dropped (send their
    s-shares) | array u4 signers (m) | m x 64 bytes signatures over U3 (active security;
    m = 0 otherwise).
    """

    msg_type: ClassVar[int] = 6
    survivors: np.ndarray
    dropped: np.ndarray
    signers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<u4"))
    signatures: tuple[bytes, ...] = ()

    def to_bytes(self) -> bytes:
        writer = (
            Writer()
            .array(np.asarray(self.survivors, dtype="<u4"))
            .array(np.asarray(self.dropped, dtype="<u4"))
            .array(np.asarray(self.signers, dtype="<u4"))
        )
        if len(self.signatures) != np.asarray(self.signers).size:
            raise WireFormatError(
                f"UnmaskRequest: expected one signature per signer ({np.asarray(self.signers).size}), "
                f"got {len(self.signatures)}"
            )
        for signature in self.signatures:
            if len(signature) != SIGNATURE_BYTES:
                raise WireFormatError(f"UnmaskRequest: expected {SIGNATURE_BYTES}-byte signatures")
            writer.raw(signature)
        return writer.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> UnmaskRequest:
        reader = Reader(data, "UnmaskRequest")
        survivors = reader.array("survivors", dtype="<u4")
        dropped = reader.array("dropped", dtype="<u4")
        signers = reader.array("signers", dtype="<u4")
        if signers.size * SIGNATURE_BYTES > len(data):
            raise WireFormatError(f"UnmaskRequest: {signers.size} signatures do not fit {len(data)} bytes")
        signatures = tuple(reader.raw(SIGNATURE_BYTES, "signature") for _ in range(signers.size))
        reader.done()
        return cls(survivors, dropped, signers, signatures)


@dataclass(frozen=True)
class UnmaskShares(Payload):
    """A client's answer: b-shares of survivors and s-shares of dropped clients.

    Layout: array u4 b owners (m) | array u4 b shares (9 m limbs) | array u4 s owners
    (d) | array u4 s shares (9 d limbs). Limbs are elements of GF(2^31 - 1).
    """

    msg_type: ClassVar[int] = 7
    self_mask_owners: np.ndarray
    self_mask_shares: np.ndarray
    key_owners: np.ndarray
    key_shares: np.ndarray

    def to_bytes(self) -> bytes:
        writer = Writer()
        for array in (self.self_mask_owners, self.self_mask_shares, self.key_owners, self.key_shares):
            writer.array(np.asarray(array, dtype="<u4").reshape(-1))
        return writer.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> UnmaskShares:
        reader = Reader(data, "UnmaskShares")
        b_owners = reader.array("b owners", dtype="<u4")
        b_shares = reader.array("b shares", dtype="<u4", count=LIMBS * b_owners.size)
        s_owners = reader.array("s owners", dtype="<u4")
        s_shares = reader.array("s shares", dtype="<u4", count=LIMBS * s_owners.size)
        reader.done()
        for name, shares in (("b", b_shares), ("s", s_shares)):
            if shares.size and int(shares.max()) >= PRIME:
                raise WireFormatError(f"UnmaskShares: {name} shares must be below {PRIME}")
        return cls(b_owners, b_shares.reshape(-1, LIMBS), s_owners, s_shares.reshape(-1, LIMBS))


# ---------------------------------------------------------------- key derivations


def _share_key(
    c_private: bytes, peer_c_public: bytes, *, round_id: int, sender: int, recipient: int
) -> bytes:
    # Directional: the key for i -> j differs from j -> i and from every other round, and
    # each encrypts one message, so a fixed nonce never repeats under one key.
    return shared_key(
        c_private, peer_c_public, domain("pairwise/share-key", round_id=round_id, parties=(sender, recipient))
    )


def _share_context(*, round_id: int, sender: int, recipient: int) -> bytes:
    return struct.pack(">H", WIRE_ID) + domain(
        "pairwise/share", round_id=round_id, parties=(sender, recipient)
    )


def pair_seed(
    s_private: bytes, peer_s_public: bytes, *, round_id: int, a: int, b: int, binding: bytes = b""
) -> bytes:
    """The pair mask seed of clients a and b, bound to the model digest the deriving client
    trained on (``binding``; empty: unbound): two clients that trained on different models
    derive different seeds, so their pair masks do not cancel in the sum."""
    pair = (min(a, b), max(a, b))
    label = bound_label(domain("pairwise/mask-seed", round_id=round_id, parties=pair), binding)
    return shared_key(s_private, peer_s_public, label)


def _pair_mask(seed: bytes, *, round_id: int, a: int, b: int, n: int, ring_bits: int) -> np.ndarray:
    label = domain("pairwise/mask", round_id=round_id, parties=(min(a, b), max(a, b)))
    return expand(seed, label, n, ring_bits=ring_bits)


def _self_mask(seed: bytes, *, round_id: int, client: int, n: int, ring_bits: int) -> np.ndarray:
    return expand(
        seed, domain("pairwise/self-mask", round_id=round_id, parties=(client,)), n, ring_bits=ring_bits
    )


def _pair_label(*, round_id: int, a: int, b: int) -> bytes:
    return domain("pairwise/mask", round_id=round_id, parties=(min(a, b), max(a, b)))


def _self_label(*, round_id: int, client: int) -> bytes:
    return domain("pairwise/self-mask", round_id=round_id, parties=(client,))


class _MaskStream:
    """PRF expansions of one array's size into one reused buffer (the keystream of
    :func:`secagg.prf.stream`, equal to :func:`secagg.prf.expand`'s): a fresh multi-megabyte
    allocation per peer costs more in page faults than AES-CTR itself."""

    def __init__(self, like: np.ndarray) -> None:
        self._zeros = bytes(like.nbytes)
        # update_into wants room for a block more than it writes.
        self._out = bytearray(like.nbytes + 16)
        self.mask = np.frombuffer(self._out, dtype=like.dtype.newbyteorder("<"))[: like.size]

    def fill(self, seed: bytes, label: bytes) -> np.ndarray:
        stream(seed, label).update_into(self._zeros, self._out)
        return self.mask


def apply_masks(
    encoded: np.ndarray,
    *,
    client: int,
    self_mask_seed: bytes,
    pair_seeds: Mapping[int, bytes],
    round_id: int,
) -> np.ndarray:
    """Mask ``encoded`` (a ring dtype, modified in place and returned) as client ``client``.

    y = x + PRG(b) + sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ij) mod 2^k: one PRF
    expansion per peer into one reused buffer, each added or subtracted over the whole
    array in place.
    """
    masks = _MaskStream(encoded)
    np.add(encoded, masks.fill(self_mask_seed, _self_label(round_id=round_id, client=client)), out=encoded)
    for peer, seed in pair_seeds.items():
        mask = masks.fill(seed, _pair_label(round_id=round_id, a=client, b=peer))
        if peer > client:
            np.add(encoded, mask, out=encoded)
        else:
            np.subtract(encoded, mask, out=encoded)
    return encoded


def remove_masks(
    total: np.ndarray,
    *,
    self_mask_seeds: Mapping[int, bytes],
    dropped_pairs: Iterable[tuple[int, int, bytes]],
    round_id: int,
) -> np.ndarray:
    """Unmask the sum of masked inputs in place: the self masks of the survivors, and for
    each (dropped owner, surviving peer, pair seed) the pair mask the survivor added."""
    masks = _MaskStream(total)
    for owner, seed in self_mask_seeds.items():
        np.subtract(total, masks.fill(seed, _self_label(round_id=round_id, client=owner)), out=total)
    for owner, peer, seed in dropped_pairs:
        mask = masks.fill(seed, _pair_label(round_id=round_id, a=owner, b=peer))
        # The survivor added +mask when the dropped owner's id is larger.
        if owner > peer:
            np.subtract(total, mask, out=total)
        else:
            np.add(total, mask, out=total)
    return total


_ADVERT_CONTEXT = b"secagg/pairwise/advertise-keys"
_CONSISTENCY_CONTEXT = b"secagg/pairwise/consistency-check"


def _session_digest(session: str) -> bytes:
    return hashlib.sha256(b"secagg/pairwise/session" + session.encode("utf-8")).digest()


def _advert_message(session: str, *, round_id: int, client: int, c_public: bytes, s_public: bytes) -> bytes:
    # Bound to session, round and client: an advert replayed from another round, session
    # or client fails its signature check.
    label = domain("pairwise/advert", round_id=round_id, parties=(client,))
    return label + _session_digest(session) + c_public + s_public


def _consistency_message(session: str, *, round_id: int, client: int, survivors: Sequence[int]) -> bytes:
    label = domain("pairwise/consistency", round_id=round_id, parties=(client,))
    digest = hashlib.sha256(np.asarray(sorted(survivors), dtype=">u4").tobytes()).digest()
    return label + _session_digest(session) + struct.pack(">I", len(survivors)) + digest


def _commitment(seed: bytes, *, round_id: int, client: int) -> bytes:
    return hashlib.sha256(
        domain("pairwise/self-mask-commitment", round_id=round_id, parties=(client,)) + seed
    ).digest()


def _single(inbox: Sequence[Inbound], payload_type: type[Payload], who: str, stage: str) -> Inbound | None:
    found = None
    for message in inbox:
        if not isinstance(message.payload, payload_type) or message.sender != SERVER:
            raise ProtocolStateError(
                f"{who} at {stage}: expected {payload_type.__name__} from the server, "
                f"got {type(message.payload).__name__} from {party_name(message.sender)}"
            )
        found = message
    return found


# ---------------------------------------------------------------- parties


@dataclass(frozen=True)
class Identities:
    """Active security: the clients' pinned Ed25519 verification keys (client i's at index i).

    Obtained out of band (an enrolment, a PKI), never from the server: every client and
    the server hold the same tuple before the round starts.
    """

    verification_keys: tuple[bytes, ...]

    def key_of(self, client: int) -> bytes:
        if not 0 <= client < len(self.verification_keys):
            raise ProtocolStateError(
                f"expected a client id below {len(self.verification_keys)} (pinned identities), got {client}"
            )
        return self.verification_keys[client]


class PairwiseClient(Party):
    role = "client"

    def __init__(
        self,
        party_id: int,
        update: np.ndarray,
        spec: RoundSpec,
        config: PairwiseConfig,
        *,
        signing_key: bytes | None = None,
        identities: Identities | None = None,
    ) -> None:
        super().__init__(party_id)
        self._update = update
        self._spec = spec
        self._config = config
        self._codec = config.codec(spec.n_clients)
        self._threshold = config.threshold_for(spec.n_clients)
        if config.active_security and (signing_key is None or identities is None):
            raise ConfigError(f"{self.name}: active security needs an identity key and the pinned identities")
        self._signing_key = signing_key
        self._identities = identities
        self._c_private, self._c_public = generate_keypair()
        self._s_private, self._s_public = generate_keypair()
        self._self_mask_seed = b""
        self._group_ids = neighbour_graph(
            spec.n_clients,
            config.neighbours_for(spec.n_clients),
            graph_seed_for(config.session, spec.round_id, spec.n_clients),
            spec.round_id,
        )[party_id]
        self._group: dict[int, tuple[bytes, bytes]] = {}
        # owner -> (b-share limbs, s-share limbs) this client holds, its own included
        self._held: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._signed_survivors: tuple[int, ...] | None = None
        self._answered = False

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage == "advertise":
            return [Envelope(SERVER, self._advert())]
        if stage == "share_keys":
            broadcast = _single(inbox, KeyBroadcast, self.name, stage)
            return [] if broadcast is None else self._share_keys(broadcast.payload)  # type: ignore[arg-type]
        if stage == "masked_input":
            routed = _single(inbox, RoutedShares, self.name, stage)
            return [] if routed is None else self._masked_input(routed.payload)  # type: ignore[arg-type]
        if stage == "consistency_check":
            request = _single(inbox, ConsistencyRequest, self.name, stage)
            return [] if request is None else self._consistency(request.payload)  # type: ignore[arg-type]
        if stage == "unmasking":
            request = _single(inbox, UnmaskRequest, self.name, stage)
            return [] if request is None else self._unmask(request.payload)  # type: ignore[arg-type]
        if inbox:
            raise ProtocolStateError(f"{self.name}: expected no messages at {stage}, got {len(inbox)}")
        return []

    def _advert(self) -> AdvertiseKeys:
        if self._signing_key is None:
            return AdvertiseKeys(self._c_public, self._s_public)
        message = _advert_message(
            self._config.session,
            round_id=self._spec.round_id,
            client=self.party_id,
            c_public=self._c_public,
            s_public=self._s_public,
        )
        signature = sign(self._signing_key, message, context=_ADVERT_CONTEXT)
        return AdvertiseKeys(self._c_public, self._s_public, signature)

    def _share_keys(self, broadcast: KeyBroadcast) -> list[Envelope]:
        me = self.party_id
        group = self._group_ids
        if len(set(broadcast.ids)) != len(broadcast.ids) or not set(broadcast.ids) <= set(group):
            raise ProtocolStateError(
                f"{self.name}: expected keys of distinct members of its share group {list(group)} "
                f"(the graph every client derives for round {self._spec.round_id}), got {list(broadcast.ids)}"
            )
        keys = dict(
            zip(broadcast.ids, zip(broadcast.c_publics, broadcast.s_publics, strict=True), strict=True)
        )
        if keys.get(me) != (self._c_public, self._s_public):
            raise KeyMismatchError(
                f"{self.name}: expected the broadcast to carry this client's own public keys, "
                "got other keys or none"
            )
        if self._identities is not None:
            if broadcast.signatures is None:
                raise IntegrityError(
                    f"{self.name}: expected signed keys (active security), got unsigned ones"
                )
            for member, signature in zip(broadcast.ids, broadcast.signatures, strict=True):
                c_public, s_public = keys[member]
                message = _advert_message(
                    self._config.session,
                    round_id=self._spec.round_id,
                    client=member,
                    c_public=c_public,
                    s_public=s_public,
                )
                verify(
                    self._identities.key_of(member),
                    message,
                    signature,
                    context=_ADVERT_CONTEXT,
                    what=f"{self.name}: keys of {party_name(member)}",
                )
        if len(keys) < self._threshold:  # |U1| >= t within the share group
            raise NotEnoughClientsError(
                f"{self.name}: expected at least t = {self._threshold} members with keys, got {len(keys)}"
            )
        self._group = keys
        self._self_mask_seed = random_seed()
        holders = sorted(keys)
        shares = share_secrets(
            [self._self_mask_seed, self._s_private], threshold=self._threshold, xs=[h + 1 for h in holders]
        ).astype("<u4")
        recipients, ciphertexts = [], []
        rid = self._spec.round_id
        for row, holder in zip(shares, holders, strict=True):
            if holder == me:
                self._held[me] = (row[:LIMBS].astype(np.uint64), row[LIMBS:].astype(np.uint64))
                continue
            key = _share_key(self._c_private, keys[holder][0], round_id=rid, sender=me, recipient=holder)
            context = _share_context(round_id=rid, sender=me, recipient=holder)
            recipients.append(holder)
            ciphertexts.append(AESGCM(key).encrypt(_NONCE, row.tobytes(), context))
        commitment = _commitment(self._self_mask_seed, round_id=rid, client=me)
        return [Envelope(SERVER, EncryptedShares(commitment, tuple(recipients), tuple(ciphertexts)))]

    def _masked_input(self, routed: RoutedShares) -> list[Envelope]:
        me = self.party_id
        rid = self._spec.round_id
        if me not in self._held:
            raise ProtocolStateError(f"{self.name}: shares routed before this client shared its keys")
        if len(set(routed.senders)) != len(routed.senders):
            raise ProtocolStateError(
                f"{self.name}: expected one share per sender, got {list(routed.senders)}"
            )
        # |U2| >= t (Bonawitz et al. 2017, Fig. 4): a client that masks with fewer than
        # t - 1 peers could be left holding a self mask alone, which the server strips with
        # the b-shares it asks for at unmasking. Checked before anything is decrypted.
        if len(routed.senders) + 1 < self._threshold:
            raise NotEnoughClientsError(
                f"{self.name}: expected shares from at least t - 1 = {self._threshold - 1} members of its "
                f"share group, got {len(routed.senders)}; it sends no masked input"
            )
        for sender, ciphertext in zip(routed.senders, routed.ciphertexts, strict=True):
            if sender == me or sender not in self._group:
                raise ProtocolStateError(
                    f"{self.name}: expected shares from its share group {sorted(self._group)}, "
                    f"got one from {party_name(sender)}"
                )
            key = _share_key(
                self._c_private, self._group[sender][0], round_id=rid, sender=sender, recipient=me
            )
            context = _share_context(round_id=rid, sender=sender, recipient=me)
            try:
                plain = AESGCM(key).decrypt(_NONCE, ciphertext, context)
            except InvalidTag:
                raise IntegrityError(
                    f"{self.name}: the share from {party_name(sender)} failed its AES-GCM tag check "
                    f"(expected a share sealed by {party_name(sender)} for round {rid}; got altered "
                    "bytes or one from another round or pair)"
                ) from None
            limbs = np.frombuffer(plain, dtype="<u4").astype(np.uint64)
            if int(limbs.max()) >= PRIME:
                raise IntegrityError(f"{self.name}: the share from {party_name(sender)} is not in GF(p)")
            self._held[sender] = (limbs[:LIMBS], limbs[LIMBS:])
        masked = self._codec.encode(self._update)  # a fresh array: masks are added in place
        pair_seeds = {
            peer: pair_seed(
                self._s_private, self._group[peer][1], round_id=rid, a=me, b=peer, binding=self.binding
            )
            for peer in routed.senders
        }
        apply_masks(
            masked, client=me, self_mask_seed=self._self_mask_seed, pair_seeds=pair_seeds, round_id=rid
        )
        ring_bits = self._codec.ring_bits
        packed_bits = ring_bits if is_packed(ring_bits) else 0
        sent = [Envelope(SERVER, MaskedInput(reduce(masked, ring_bits), packed_bits))]
        if self.binding:  # the server's explicit check; the masks enforce it regardless
            sent.append(Envelope(SERVER, binding_message(self.binding)))
        return sent

    def _check_survivors(self, survivors: Sequence[int], what: str) -> None:
        # U3 within the share group: holders only (a member whose shares never reached this
        # client cannot have masked with it), itself included, at least t of them.
        in_group = set(survivors) & set(self._group_ids)
        if self.party_id not in in_group or not in_group <= set(self._held):
            raise ProtocolStateError(
                f"{self.name}: expected {what} to list itself and only members whose shares it holds "
                f"{sorted(self._held)}, got {sorted(in_group)} of its group"
            )
        if len(in_group) < self._threshold:  # |U3| >= t
            raise NotEnoughClientsError(
                f"{self.name}: expected at least t = {self._threshold} survivors in its share group, "
                f"got {len(in_group)}"
            )

    def _consistency(self, request: ConsistencyRequest) -> list[Envelope]:
        if self._signing_key is None:
            raise ProtocolStateError(f"{self.name}: a consistency check without active security")
        if self._signed_survivors is not None:
            raise ProtocolStateError(f"{self.name}: expected one consistency request per round, got a second")
        survivors = tuple(int(v) for v in request.survivors)
        if any(v >= self._spec.n_clients for v in survivors):
            raise ProtocolStateError(f"{self.name}: expected survivor ids below {self._spec.n_clients}")
        self._check_survivors(survivors, "the consistency request")
        self._signed_survivors = survivors  # the only U3 this client ever signs this round
        message = _consistency_message(
            self._config.session, round_id=self._spec.round_id, client=self.party_id, survivors=survivors
        )
        return [
            Envelope(
                SERVER, ConsistencySignature(sign(self._signing_key, message, context=_CONSISTENCY_CONTEXT))
            )
        ]

    def _check_signatures(self, request: UnmaskRequest) -> None:
        """Active security: at least t members of this client's share group signed the U3
        it signed itself (Bonawitz et al.'s consistency check), or it answers nothing."""
        if self._identities is None or self._signed_survivors is None:
            raise ProtocolStateError(
                f"{self.name}: expected a consistency request before unmasking, got none"
            )
        survivors = self._signed_survivors
        signers = [int(v) for v in request.signers]
        if len(set(signers)) != len(signers) or not set(signers) <= set(self._group_ids) & set(survivors):
            raise ProtocolStateError(
                f"{self.name}: expected distinct signers among the survivors of its group, got {signers}"
            )
        for signer, signature in zip(signers, request.signatures, strict=True):
            message = _consistency_message(
                self._config.session, round_id=self._spec.round_id, client=signer, survivors=survivors
            )
            verify(
                self._identities.key_of(signer),
                message,
                signature,
                context=_CONSISTENCY_CONTEXT,
                what=f"{self.name}: consistency signature of {party_name(signer)}",
            )
        if len(signers) < self._threshold:
            raise NotEnoughClientsError(
                f"{self.name}: expected consistency signatures from at least t = {self._threshold} members "
                f"of its share group, got {len(signers)}"
            )
        expected_alive = set(survivors) & set(self._held)
        if set(int(v) for v in request.survivors) != expected_alive:
            raise ProtocolStateError(
                f"{self.name}: expected the unmasking request's survivors to be the signed U3 "
                f"{sorted(expected_alive)}, got {sorted(int(v) for v in request.survivors)}"
            )

    def _unmask(self, request: UnmaskRequest) -> list[Envelope]:
        me = self.party_id
        if self._answered:
            raise ProtocolStateError(f"{self.name}: expected one unmasking request per round, got a second")
        survivors = [int(v) for v in request.survivors]
        dropped = [int(v) for v in request.dropped]
        both = set(survivors) & set(dropped)
        if both:
            raise ProtocolStateError(
                f"{self.name}: refused to send both the self-mask share and the key share of "
                f"{', '.join(party_name(c) for c in sorted(both))} (the server would learn their input)"
            )
        if len(set(survivors)) != len(survivors) or len(set(dropped)) != len(dropped):
            raise ProtocolStateError(f"{self.name}: expected distinct ids in the unmasking request")
        if set(survivors) | set(dropped) != set(self._held) or me not in survivors:
            raise ProtocolStateError(
                f"{self.name}: expected the request to classify exactly the clients whose shares it "
                f"holds {sorted(self._held)}, itself among the survivors; got survivors {survivors}, "
                f"dropped {dropped}"
            )
        if self._identities is not None:
            self._check_signatures(request)
        self._check_survivors(survivors, "the unmasking request")
        self._answered = True
        empty = np.zeros((0, LIMBS), dtype=np.uint64)
        b_shares = np.stack([self._held[c][0] for c in survivors]) if survivors else empty
        s_shares = np.stack([self._held[c][1] for c in dropped]) if dropped else empty
        reply = UnmaskShares(
            np.array(survivors, dtype="<u4"),
            b_shares.astype("<u4"),
            np.array(dropped, dtype="<u4"),
            s_shares.astype("<u4"),
        )
        return [Envelope(SERVER, reply)]

    def holdings(self) -> list[Holding]:
        held = [
            Holding("c_public", self._c_public, secret=False),
            Holding("s_public", self._s_public, secret=False),
            Holding("c_private", self._c_private, secret=True),
            Holding("s_private", self._s_private, secret=True),
            Holding("self_mask_seed", self._self_mask_seed, secret=True),
            Holding("shares_held_of", tuple(sorted(self._held)), secret=False),
        ]
        if self._signing_key is not None:
            held.append(Holding("identity_signing_key", self._signing_key, secret=True))
        return held


class PairwiseServer(Party):
    role = "server"

    def __init__(
        self, spec: RoundSpec, config: PairwiseConfig, *, identities: Identities | None = None
    ) -> None:
        super().__init__(SERVER)
        self._spec = spec
        self._config = config
        self._identities = identities
        self._codec = config.codec(spec.n_clients)
        self._threshold = config.threshold_for(spec.n_clients)
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self._advert_signatures: dict[int, bytes] = {}
        self._graph_seed = graph_seed_for(config.session, spec.round_id, spec.n_clients)
        self._groups = neighbour_graph(
            spec.n_clients, config.neighbours_for(spec.n_clients), self._graph_seed, spec.round_id
        )
        self._commitments: dict[int, bytes] = {}
        self._shared: list[int] = []  # U2: clients whose shares were routed
        self._survivors: list[int] = []  # U3: clients whose masked input was summed
        self._answering: list[int] = []  # asked to unmask (U4 with active security, else U3)
        self._requested: dict[int, tuple[frozenset[int], frozenset[int]]] = {}
        self._total: np.ndarray | None = None
        self._self_mask_seeds: dict[int, bytes] = {}
        self._key_secrets: dict[int, bytes] = {}
        self._revealed: Revealed | None = None
        # An honest server refuses clients that trained on different models before anyone
        # is asked to unmask; one that skips this still gets masks that do not cancel.
        self.binding_ledger = BindingLedger("server")

    def _from_clients(
        self, inbox: Sequence[Inbound], payload_type: type[Payload], stage: str, allowed: set[int]
    ) -> dict[int, Any]:
        found: dict[int, Any] = {}
        for message in inbox:
            sender = message.sender
            if not isinstance(message.payload, payload_type) or sender not in allowed:
                raise ProtocolStateError(
                    f"server at {stage}: expected {payload_type.__name__} from a client of "
                    f"{sorted(allowed)}, got {type(message.payload).__name__} from {party_name(sender)}"
                )
            found[sender] = message.payload
        return found

    def _need(self, count: int, what: str) -> None:
        if count < self._threshold:
            raise NotEnoughClientsError(
                f"server: expected at least t = {self._threshold} {what}, got {count}"
            )

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage == "broadcast_keys":
            return self._broadcast(
                self._from_clients(inbox, AdvertiseKeys, stage, set(range(self._spec.n_clients)))
            )
        if stage == "route_shares":
            return self._route(self._from_clients(inbox, EncryptedShares, stage, set(self._keys)))
        if stage == "collect_masked":
            inbox = self.binding_ledger.take(inbox)
            return self._collect(self._from_clients(inbox, MaskedInput, stage, set(self._shared)))
        if stage == "collect_signatures":
            if self._identities is None:
                if inbox:
                    raise ProtocolStateError(f"server: expected no messages at {stage}, got {len(inbox)}")
                return self._unmask_requests({})
            return self._collect_signatures(
                self._from_clients(inbox, ConsistencySignature, stage, set(self._survivors))
            )
        if stage == "reconstruct":
            self._reconstruct(self._from_clients(inbox, UnmaskShares, stage, set(self._answering)))
            return []
        if inbox:
            raise ProtocolStateError(f"server: expected no messages at {stage}, got {len(inbox)}")
        return []

    def _broadcast(self, adverts: dict[int, AdvertiseKeys]) -> list[Envelope]:
        if self._identities is not None:
            adverts = {c: a for c, a in adverts.items() if self._advert_verifies(c, a)}
        self._need(len(adverts), "clients advertising keys")
        self._keys = {c: (a.c_public, a.s_public) for c, a in sorted(adverts.items())}
        self._advert_signatures = {c: a.signature for c, a in adverts.items() if a.signature is not None}
        out = []
        for client in self._keys:
            members = [m for m in self._groups[client] if m in self._keys]
            self._need(len(members), f"live members in the share group of {party_name(client)}")
            payload = KeyBroadcast(
                tuple(members),
                tuple(self._keys[m][0] for m in members),
                tuple(self._keys[m][1] for m in members),
                tuple(self._advert_signatures[m] for m in members) if self._identities is not None else None,
            )
            out.append(Envelope(client, payload))
        return out

    def _advert_verifies(self, client: int, advert: AdvertiseKeys) -> bool:
        # A client whose advert does not verify under its pinned key is treated as dropped.
        if self._identities is None or advert.signature is None:
            return False
        message = _advert_message(
            self._config.session,
            round_id=self._spec.round_id,
            client=client,
            c_public=advert.c_public,
            s_public=advert.s_public,
        )
        try:
            verify(self._identities.key_of(client), message, advert.signature, context=_ADVERT_CONTEXT)
        except SecAggError:
            return False
        return True

    def _route(self, uploads: dict[int, EncryptedShares]) -> list[Envelope]:
        self._need(len(uploads), "clients sharing keys")
        for sender, upload in uploads.items():
            expected = {m for m in self._groups[sender] if m in self._keys and m != sender}
            if set(upload.recipients) != expected or len(upload.recipients) != len(expected):
                raise ProtocolStateError(
                    f"server: expected {party_name(sender)} to address shares to {sorted(expected)}, "
                    f"got {sorted(upload.recipients)}"
                )
        self._shared = sorted(uploads)
        self._commitments = {c: u.commitment for c, u in uploads.items()}
        inboxes: dict[int, tuple[list[int], list[bytes]]] = {c: ([], []) for c in self._shared}
        for sender in self._shared:
            upload = uploads[sender]
            for recipient, ciphertext in zip(upload.recipients, upload.ciphertexts, strict=True):
                if recipient in inboxes:
                    inboxes[recipient][0].append(sender)
                    inboxes[recipient][1].append(ciphertext)
        return [Envelope(c, RoutedShares(tuple(s), tuple(ct))) for c, (s, ct) in inboxes.items()]

    def _holders(self, client: int) -> set[int]:
        """Clients holding shares of ``client``'s secrets (itself included)."""
        shared = set(self._shared)
        return {m for m in self._groups[client] if m in shared}

    def _collect(self, uploads: dict[int, MaskedInput]) -> list[Envelope]:
        n = self._spec.n_params
        dtype = np.dtype(self._codec.dtype).newbyteorder("<")
        total = np.zeros(n, dtype=self._codec.dtype)
        for sender, upload in sorted(uploads.items()):
            ring_bits = self._codec.ring_bits
            if upload.masked.size != n or upload.masked.dtype != dtype or upload.ring_bits != ring_bits:
                raise ProtocolStateError(
                    f"server: expected {n} elements of Z_2^{ring_bits} ({dtype}) from "
                    f"{party_name(sender)}, got {upload.masked.size} of Z_2^{upload.ring_bits} "
                    f"({upload.masked.dtype})"
                )
            np.add(total, upload.masked, out=total)
        self._total = total
        self._survivors = sorted(uploads)
        minimum = self._config.min_revealed(self._spec.n_clients)
        if len(self._survivors) < minimum:
            raise NotEnoughClientsError(
                f"server: expected masked inputs from at least {minimum} clients "
                f"(max(min_clients, t)), got {len(self._survivors)}; nothing is revealed"
            )
        self.binding_ledger.require(self._survivors)
        survivors = set(self._survivors)
        for client in self._shared:
            live = len(self._holders(client) & survivors)
            self._need(live, f"surviving holders of {party_name(client)}'s shares")
        if self._identities is None:
            return []  # the unmasking requests go out at collect_signatures
        listed = ConsistencyRequest(np.array(self._survivors, dtype="<u4"))
        return [Envelope(client, listed) for client in self._survivors]

    def _collect_signatures(self, answers: dict[int, ConsistencySignature]) -> list[Envelope]:
        signatures: dict[int, bytes] = {}
        for client, answer in sorted(answers.items()):
            if self._identities is None:
                break
            message = _consistency_message(
                self._config.session, round_id=self._spec.round_id, client=client, survivors=self._survivors
            )
            try:
                verify(
                    self._identities.key_of(client), message, answer.signature, context=_CONSISTENCY_CONTEXT
                )
            except SecAggError:
                continue  # a client whose signature fails is treated as dropped
            signatures[client] = answer.signature
        return self._unmask_requests(signatures)

    def _unmask_requests(self, signatures: Mapping[int, bytes]) -> list[Envelope]:
        survivors = set(self._survivors)
        active = self._identities is not None
        self._answering = sorted(signatures) if active else list(self._survivors)
        self._need(len(self._answering), "clients asked to unmask")
        out = []
        for client in self._answering:
            holders = self._holders(client)
            alive = frozenset(holders & survivors)
            gone = frozenset(holders - survivors)
            self._requested[client] = (alive, gone)
            signers = sorted(m for m in self._groups[client] if m in signatures) if active else []
            if active:
                self._need(len(signers), f"consistency signatures in the share group of {party_name(client)}")
            out.append(
                Envelope(
                    client,
                    UnmaskRequest(
                        np.array(sorted(alive), dtype="<u4"),
                        np.array(sorted(gone), dtype="<u4"),
                        np.array(signers, dtype="<u4"),
                        tuple(signatures[m] for m in signers),
                    ),
                )
            )
        return out

    def _reconstruct(self, answers: dict[int, UnmaskShares]) -> None:
        if self._total is None:
            raise ProtocolStateError("server: unmasking shares arrived before any masked input")
        b_shares: dict[int, list[tuple[int, np.ndarray]]] = {c: [] for c in self._survivors}
        s_shares: dict[int, list[tuple[int, np.ndarray]]] = {
            c: [] for c in self._shared if c not in set(self._survivors)
        }
        for holder, answer in sorted(answers.items()):
            alive, gone = self._requested[holder]
            b_owners = [int(v) for v in answer.self_mask_owners]
            s_owners = [int(v) for v in answer.key_owners]
            if sorted(b_owners) != sorted(alive) or sorted(s_owners) != sorted(gone):
                raise ProtocolStateError(
                    f"server: expected {party_name(holder)} to answer for survivors {sorted(alive)} and "
                    f"dropped {sorted(gone)}, got {sorted(b_owners)} and {sorted(s_owners)}"
                )
            for owner, row in zip(b_owners, answer.self_mask_shares, strict=True):
                b_shares[owner].append((holder + 1, row))
            for owner, row in zip(s_owners, answer.key_shares, strict=True):
                s_shares[owner].append((holder + 1, row))
        b_seeds = self._recover_all(b_shares, "self-mask")
        s_secrets = self._recover_all(s_shares, "key")
        rid = self._spec.round_id
        for owner, seed in b_seeds.items():
            if _commitment(seed, round_id=rid, client=owner) != self._commitments[owner]:
                raise IntegrityError(
                    f"server: the self-mask seed rebuilt for {party_name(owner)} does not match its "
                    "commitment (expected consistent shares, got altered ones)"
                )
            self._self_mask_seeds[owner] = seed
        for owner, secret in s_secrets.items():
            if public_key(secret) != self._keys[owner][1]:
                raise IntegrityError(
                    f"server: the key rebuilt for {party_name(owner)} does not match its advertised "
                    "public key (expected consistent shares, got altered ones)"
                )
            self._key_secrets[owner] = secret
        total = self._total
        survivors = set(self._survivors)
        dropped_pairs = [
            (
                owner,
                peer,
                # The survivor derived the seed bound to its own model digest.
                pair_seed(
                    secret,
                    self._keys[peer][1],
                    round_id=rid,
                    a=owner,
                    b=peer,
                    binding=self.binding_ledger.bindings.get(peer, b""),
                ),
            )  # fmt: skip
            for owner, secret in self._key_secrets.items()
            for peer in sorted(self._holders(owner) & survivors)
        ]
        remove_masks(total, self_mask_seeds=self._self_mask_seeds, dropped_pairs=dropped_pairs, round_id=rid)
        self._revealed = Revealed(self._codec.decode(total), tuple(self._survivors))

    def _recover_all(self, shares: dict[int, list[tuple[int, np.ndarray]]], what: str) -> dict[int, bytes]:
        """Every owner's secret from its first t shares (by holder index), with
        :func:`secagg.shamir.reconstruct`'s checks; owners that share the same t holders
        are rebuilt in one pass."""
        batches: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        for owner, found in shares.items():
            if len(found) < self._threshold:
                raise NotEnoughClientsError(
                    f"server: expected at least t = {self._threshold} {what} shares of "
                    f"{party_name(owner)}, got {len(found)}; nothing is revealed"
                )
            used = sorted(found, key=lambda item: item[0])[: self._threshold]
            xs = tuple(x for x, _ in used)
            batches.setdefault(xs, []).append((owner, np.stack([row for _, row in used])))
        secrets: dict[int, bytes] = {}
        for xs, members in batches.items():
            stacked = np.concatenate([rows for _, rows in members], axis=1)
            values = reconstruct(list(xs), stacked, threshold=self._threshold)
            for index, (owner, _) in enumerate(members):
                secrets[owner] = limbs_to_secret(values[index * LIMBS : (index + 1) * LIMBS], SECRET_BYTES)
        return secrets

    def output(self) -> Revealed | None:
        return self._revealed

    def holdings(self) -> list[Holding]:
        # The rebuilt seeds and secrets are the clients' secrets, revealed to the server by
        # design at unmasking: never both of one client.
        held = [
            Holding("public_keys", dict(self._keys), secret=False),
            Holding("graph_seed", self._graph_seed, secret=False),
            Holding("self_mask_seeds", dict(self._self_mask_seeds), secret=True),
            Holding("key_agreement_secrets", dict(self._key_secrets), secret=True),
        ]
        if self._identities is not None:
            held.append(Holding("pinned_identities", self._identities.verification_keys, secret=False))
        return held


# ---------------------------------------------------------------- protocol


class PairwiseMasking(Protocol[PairwiseConfig]):
    """Bonawitz et al. 2017 pairwise masking, with the SecAgg+ neighbour option."""

    name = "secagg"
    wire_id = WIRE_ID
    stages = (
        "advertise",
        "broadcast_keys",
        "share_keys",
        "route_shares",
        "masked_input",
        "collect_masked",
        "consistency_check",
        "collect_signatures",
        "unmasking",
        "reconstruct",
    )
    offline_stages = frozenset({"advertise", "broadcast_keys", "share_keys", "route_shares"})
    finalize_stages = frozenset({"unmasking", "reconstruct"})
    late_dropout_stage = "unmasking"
    aggregate_kind = "sum"
    payload_types = (
        AdvertiseKeys,
        KeyBroadcast,
        EncryptedShares,
        RoutedShares,
        MaskedInput,
        UnmaskRequest,
        UnmaskShares,
        ConsistencyRequest,
        ConsistencySignature,
        ModelBinding,
    )
    server_ids = (SERVER,)
    aggregate_holder = SERVER
    summary = "pairwise PRF masks + Shamir dropout recovery (Bonawitz 2017; SecAgg+ neighbours)"
    fast_config: ClassVar[dict[str, Any]] = {}
    Config = PairwiseConfig
    input_bound_field = "clip"
    frac_bits_field = "frac_bits"
    ring_bits_field = "ring_bits"
    modular_field = "modular"
    # Each client makes its own key pairs and advertises them in a stage; a dealer
    # would learn every client's key-agreement secret.
    provisioning = "local"
    state_types: ClassVar[tuple[type, ...]] = (PairwiseClient, PairwiseServer, Identities, BindingLedger)
    supports_binding = True
    # At unmasking the server rebuilds survivors' self-mask seeds and dropped clients'
    # key-agreement secrets (never both for one client).
    server_secrets: ClassVar[Mapping[int, frozenset[str]]] = {
        SERVER: frozenset({"self_mask_seeds", "key_agreement_secrets"})
    }
    threat_model = ThreatModel(
        keys="each client: two X25519 key pairs (share encryption, mask agreement) and a self-mask "
        "seed, fresh per round (with active security also a long-term Ed25519 identity key, "
        "pinned by every party); the server: public keys only until unmasking",
        server_sees="public keys, AES-GCM ciphertexts of shares, uniformly masked vectors; at "
        "unmasking the self-mask seeds of survivors and the mask keys of dropped clients, never both",
        collusion="the server with t clients of a share group learns that group's inputs",
        dropouts="any stage, while each share group keeps t live members (t = floor(2g/3) + 1 by default)",
        min_clients=2,
        notes="every client checks |U1|, |U2|, |U3| >= t and derives the neighbour graph itself; "
        "without active_security the server can swap public keys (honest-but-curious only); "
        "min revealed = max(min_clients, t)",
    )

    def make_parties(
        self, updates: Sequence[np.ndarray], weights: Sequence[float] | None, spec: RoundSpec
    ) -> list[Party]:
        config = self.config
        config.codec(spec.n_clients).check_budget(spec.n_clients)
        config.threshold_for(spec.n_clients)
        if not config.active_security:
            parties: list[Party] = [PairwiseClient(i, u, spec, config) for i, u in enumerate(updates)]
            parties.append(PairwiseServer(spec, config))
            return parties
        signing_keys = self._signing_keys
        if signing_keys is None:
            # Stands in for an enrolment: fresh identity keys, every verification key pinned by all.
            signing_keys = tuple(generate_signing_keypair()[0] for _ in updates)
        if len(signing_keys) != spec.n_clients:
            raise ConfigError(
                f"{self.name}: expected {spec.n_clients} pinned identity keys, got {len(signing_keys)}"
            )
        identities = Identities(tuple(verification_key(k) for k in signing_keys))
        parties = [
            PairwiseClient(i, u, spec, config, signing_key=signing_keys[i], identities=identities)
            for i, u in enumerate(updates)
        ]
        parties.append(PairwiseServer(spec, config, identities=identities))
        return parties

    _signing_keys: tuple[bytes, ...] | None = None

    def with_identities(self, signing_keys: Sequence[bytes]) -> PairwiseMasking:
        """This protocol with long-term Ed25519 identity keys (client i's at index i) for
        active security, instead of fresh ones per round (what an enrolment hands out)."""
        protocol = PairwiseMasking(self.config)
        protocol._signing_keys = tuple(bytes(k) for k in signing_keys)
        return protocol

    def precision(self, *, n_clients: int, value_range: float) -> float:
        # One rounding per encoded value; the masked sum is exact in Z_2^k. The second term
        # is float64 itself (decoding a 64-bit sum, the reference's own additions), which
        # only matters when f approaches 52 bits (k = 64).
        codec = self.config.codec(n_clients)
        magnitude = n_clients * max(value_range, codec.clip)
        return n_clients * codec.error_bound + 4 * magnitude * 2.0**-52

    def codec_for(self, n_clients: int) -> FixedPoint:
        return self.config.codec(n_clients)
