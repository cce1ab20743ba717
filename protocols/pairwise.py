"""Single-server secure aggregation by pairwise masking with dropout recovery.

Follows Bonawitz et al. 2017 (Practical Secure Aggregation for Privacy-Preserving
Machine Learning, CCS), semi-honest variant (no consistency-check round), with the
SecAgg+ option of Bell et al. 2020 (Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead, CCS): each client masks with k neighbours on a random
k-regular (Harary) graph instead of with every other client.

Rounds (one stage each, the server's stages in between route messages)::

    advertise       client i -> server: two X25519 public keys, c_i (encrypting
                    shares) and s_i (agreeing pairwise mask seeds)
    broadcast_keys  server -> client i: the keys of i's share group G(i) (i and its
                    neighbours; everyone for the full graph) and the graph seed
    share_keys      client i draws a self-mask seed b_i, Shamir-shares b_i and its
                    s-secret t-of-|G(i)| (secagg.shamir), encrypts each share pair to
                    its holder j with AES-256-GCM under HKDF(X25519(c_i, c_j)) bound
                    to (round, i, j), sends them all to the server with a commitment
                    H(b_i)
    route_shares    server -> client j: the ciphertexts addressed to j
    masked_input    client i -> server: y_i = x_i + PRG(b_i) + sum_{j>i} PRG(s_ij)
                    - sum_{j<i} PRG(s_ij) mod 2^k, over the neighbours j whose shares
                    reached i; PRG = secagg.prf.expand, labels bound to round and ids
    collect_masked  server sums the y_i (aggregation) and sends each survivor the
                    survivors and the dropped clients among its share group
    unmasking       client i -> server: b-shares of survivors, s-shares of dropped
                    clients, never both for one client (a request for both is refused
                    with ProtocolStateError)
    reconstruct     server reconstructs b_j of survivors and s_j of dropped clients,
                    removes their masks, checks the minimum and reveals the sum

Fixed point: x_i is encoded as rint(x * 2^f) in Z_2^k (k = 32 by default; f planned
from clip and the number of clients unless set), so the revealed sum is exact mod 2^k
and decodes to within n * 2^-(f+1) of the float sum (``precision()``).

Threat model:

- Keys: every client holds two fresh X25519 key pairs per round and a fresh self-mask
  seed b_i; the server holds only public keys until it reconstructs, at the end, the
  b_j of survivors and the s-secrets of clients that dropped before their masked input.
- The server sees public keys, AES-GCM ciphertexts of shares (it routes them but holds
  no c-secret), masked vectors that are uniform in Z_2^k one by one, and at the end
  fewer than t shares of any secret it must not have: for no client does it receive
  both t b-shares and t s-shares, because each client answers one request only and
  refuses to give both shares of one client.
- Collusion: the server together with t - 1 clients of a share group learns nothing
  individual; t clients of G(i) colluding with the server learn x_i. A server that
  lies about who dropped (an active server; this is the semi-honest variant, without
  Bonawitz's consistency check) could ask disjoint halves of the survivors for
  different share kinds, which the default t = floor(2g/3) + 1 > g/2 (g the group
  size) rules out. The neighbour graph is drawn by the server (semi-honest, as in
  Bell et al.'s semi-honest setting).
- Dropouts: any client may drop at any stage; the round completes while every share
  group keeps at least t live members at each stage, else NotEnoughClientsError and
  nothing is revealed.
- Minimum clients: the revealed sum holds at least max(min_clients, t) inputs
  (min_clients = 2 by default); below that NotEnoughClientsError.

Costs: upload 4 bytes per parameter for k = 32 (8 for k = 64) plus about 140 bytes per
member of the share group (a 92-byte encrypted share pair and a 40-byte unmasking share
each, 64 bytes of keys and a 32-byte commitment once); the client expands one PRG
stream per neighbour plus its self mask, whole-array, in place
(:func:`apply_masks`). The server also sees H(b_i), a SHA-256 commitment that lets it
check the b_i it rebuilds (b_i is 256 uniform bits: the hash reveals nothing useful).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secagg.encoding import FixedPoint
from secagg.errors import (
    ConfigError,
    IntegrityError,
    KeyMismatchError,
    NotEnoughClientsError,
    ProtocolStateError,
    WireFormatError,
)
from secagg.party import SERVER, Envelope, Holding, Inbound, Party, Revealed, party_name
from secagg.prf import domain, expand, random_seed
from secagg.protocol import Protocol, RoundSpec, ThreatModel
from secagg.sealing import generate_keypair, public_key, shared_key
from secagg.shamir import (
    PRIME,
    lagrange_at_zero,
    limbs_per_secret,
    limbs_to_secret,
    share_secrets,
)
from secagg.wire import Payload, Reader, Writer

WIRE_ID = 40
KEY_BYTES = 32
SECRET_BYTES = 32
LIMBS = limbs_per_secret(SECRET_BYTES)  # 9 field elements per 32-byte secret
SHARE_PLAINTEXT_BYTES = 2 * 4 * LIMBS  # b-share and s-share, uint32 limbs
GCM_TAG_BYTES = 16
SHARE_CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + GCM_TAG_BYTES
_NONCE = bytes(12)  # every share key encrypts exactly one message (see _share_key)


# ---------------------------------------------------------------- configuration


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

    ``ring_bits`` k (32 or 64); ``clip`` the accepted |x|; ``frac_bits`` None plans the
    most fractional bits the bit budget allows for the round's client count;
    ``threshold`` t of the Shamir sharing within a share group (None: floor(2g/3) + 1,
    g the group size); ``neighbours`` k of SecAgg+ (even, >= 2; None: full graph);
    ``min_clients`` fewest inputs in a revealed sum (never below t).
    """

    ring_bits: int = 32
    clip: float = 1.0
    frac_bits: int | None = None
    threshold: int | None = None
    neighbours: int | None = None
    min_clients: int = 2

    def __post_init__(self) -> None:
        for name in ("frac_bits", "threshold", "neighbours"):
            object.__setattr__(self, name, _optional_int(getattr(self, name), name))
        if self.ring_bits not in (32, 64):
            raise ConfigError(f"ring_bits must be 32 or 64, got {self.ring_bits!r}")
        if not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"clip must be a finite number > 0, got {self.clip!r}")
        if self.frac_bits is not None:
            FixedPoint(ring_bits=self.ring_bits, frac_bits=self.frac_bits, clip=self.clip)
        if self.threshold is not None and self.threshold < 2:
            raise ConfigError(
                f"threshold must be >= 2 (t = 1 hands a secret to one holder), got {self.threshold}"
            )
        if self.neighbours is not None and (self.neighbours < 2 or self.neighbours % 2):
            raise ConfigError(f"neighbours must be an even number >= 2 or None, got {self.neighbours}")
        if not isinstance(self.min_clients, int) or self.min_clients < 1:
            raise ConfigError(f"min_clients must be an int >= 1, got {self.min_clients!r}")

    def codec(self, n_clients: int) -> FixedPoint:
        if self.frac_bits is None:
            return FixedPoint.plan(clip=self.clip, n_clients=n_clients, ring_bits=self.ring_bits)
        return FixedPoint(ring_bits=self.ring_bits, frac_bits=self.frac_bits, clip=self.clip)

    def uses_graph(self, n_clients: int) -> bool:
        """True when the SecAgg+ neighbour graph is sparser than the full graph."""
        return self.neighbours is not None and self.neighbours < n_clients - 1

    def group_size(self, n_clients: int) -> int:
        """g: the clients that hold shares of one client's secrets (itself included)."""
        if self.uses_graph(n_clients):
            return int(self.neighbours) + 1  # type: ignore[arg-type]
        return n_clients

    def threshold_for(self, n_clients: int) -> int:
        group = self.group_size(n_clients)
        t = self.threshold if self.threshold is not None else min(group, 2 * group // 3 + 1)
        if t > group:
            raise ConfigError(f"threshold {t} exceeds the share group size {group} for {n_clients} clients")
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
    k-regular Harary graph. ``neighbours`` None or >= n - 1 gives the full graph.
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


# ---------------------------------------------------------------- wire payloads


@dataclass(frozen=True)
class AdvertiseKeys(Payload):
    """A client's two public keys.

    Layout: 32 bytes c public key (share encryption) | 32 bytes s public key (masks).
    """

    msg_type: ClassVar[int] = 1
    c_public: bytes
    s_public: bytes

    def to_bytes(self) -> bytes:
        return Writer().raw(self.c_public).raw(self.s_public).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> AdvertiseKeys:
        reader = Reader(data, "AdvertiseKeys")
        c_public = reader.raw(KEY_BYTES, "c public key")
        s_public = reader.raw(KEY_BYTES, "s public key")
        reader.done()
        return cls(c_public, s_public)


@dataclass(frozen=True)
class KeyBroadcast(Payload):
    """The keys of a client's share group, and the neighbour-graph seed.

    Layout: 32 bytes graph seed | u32 count m | m x (u32 client id | 32 bytes c public
    | 32 bytes s public).
    """

    msg_type: ClassVar[int] = 2
    graph_seed: bytes
    ids: tuple[int, ...]
    c_publics: tuple[bytes, ...]
    s_publics: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        writer = Writer().raw(self.graph_seed).u32(len(self.ids))
        for client, c_public, s_public in zip(self.ids, self.c_publics, self.s_publics, strict=True):
            writer.u32(client).raw(c_public).raw(s_public)
        return writer.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> KeyBroadcast:
        reader = Reader(data, "KeyBroadcast")
        graph_seed = reader.raw(32, "graph seed")
        count = reader.u32("count")
        if count * (4 + 2 * KEY_BYTES) > len(data):
            raise WireFormatError(f"KeyBroadcast: {count} entries do not fit {len(data)} bytes")
        ids, c_publics, s_publics = [], [], []
        for _ in range(count):
            ids.append(reader.u32("client id"))
            c_publics.append(reader.raw(KEY_BYTES, "c public key"))
            s_publics.append(reader.raw(KEY_BYTES, "s public key"))
        reader.done()
        return cls(graph_seed, tuple(ids), tuple(c_publics), tuple(s_publics))


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

    Layout: array (u8 dtype code 2 = uint32 or 3 = uint64 | u64 count | count x 4 or 8
    bytes little-endian). 4 bytes per parameter for k = 32.
    """

    msg_type: ClassVar[int] = 5
    masked: np.ndarray

    def to_bytes(self) -> bytes:
        return Writer().array(self.masked).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> MaskedInput:
        reader = Reader(data, "MaskedInput")
        masked = reader.array("masked")
        reader.done()
        if masked.dtype not in (np.dtype("<u4"), np.dtype("<u8")):
            raise WireFormatError(f"MaskedInput: expected uint32 or uint64 elements, got {masked.dtype}")
        return cls(masked)


@dataclass(frozen=True)
class UnmaskRequest(Payload):
    """The server's survivor list for one client's share group.

    Layout: array u4 survivors (send their b-shares) | array u4 dropped (send their
    s-shares).
    """

    msg_type: ClassVar[int] = 6
    survivors: np.ndarray
    dropped: np.ndarray

    def to_bytes(self) -> bytes:
        return (
            Writer()
            .array(np.asarray(self.survivors, dtype="<u4"))
            .array(np.asarray(self.dropped, dtype="<u4"))
            .to_bytes()
        )

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> UnmaskRequest:
        reader = Reader(data, "UnmaskRequest")
        survivors = reader.array("survivors", dtype="<u4")
        dropped = reader.array("dropped", dtype="<u4")
        reader.done()
        return cls(survivors, dropped)


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


def pair_seed(s_private: bytes, peer_s_public: bytes, *, round_id: int, a: int, b: int) -> bytes:
    pair = (min(a, b), max(a, b))
    return shared_key(s_private, peer_s_public, domain("pairwise/mask-seed", round_id=round_id, parties=pair))


def _pair_mask(seed: bytes, *, round_id: int, a: int, b: int, n: int, ring_bits: int) -> np.ndarray:
    label = domain("pairwise/mask", round_id=round_id, parties=(min(a, b), max(a, b)))
    return expand(seed, label, n, ring_bits=ring_bits)


def _self_mask(seed: bytes, *, round_id: int, client: int, n: int, ring_bits: int) -> np.ndarray:
    return expand(
        seed, domain("pairwise/self-mask", round_id=round_id, parties=(client,)), n, ring_bits=ring_bits
    )


def apply_masks(
    encoded: np.ndarray,
    *,
    client: int,
    self_mask_seed: bytes,
    pair_seeds: Mapping[int, bytes],
    round_id: int,
) -> np.ndarray:
    """Mask ``encoded`` (uint32/uint64, modified in place and returned) as client ``client``.

    y = x + PRG(b) + sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ij) mod 2^k: one PRF
    expansion per peer, each added or subtracted over the whole array, no copies.
    """
    n = encoded.size
    bits = 8 * encoded.dtype.itemsize
    np.add(
        encoded,
        _self_mask(self_mask_seed, round_id=round_id, client=client, n=n, ring_bits=bits),
        out=encoded,
    )
    for peer, seed in pair_seeds.items():
        mask = _pair_mask(seed, round_id=round_id, a=client, b=peer, n=n, ring_bits=bits)
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
    n = total.size
    bits = 8 * total.dtype.itemsize
    for owner, seed in self_mask_seeds.items():
        np.subtract(total, _self_mask(seed, round_id=round_id, client=owner, n=n, ring_bits=bits), out=total)
    for owner, peer, seed in dropped_pairs:
        mask = _pair_mask(seed, round_id=round_id, a=owner, b=peer, n=n, ring_bits=bits)
        # The survivor added +mask when the dropped owner's id is larger.
        if owner > peer:
            np.subtract(total, mask, out=total)
        else:
            np.add(total, mask, out=total)
    return total


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


class PairwiseClient(Party):
    role = "client"

    def __init__(self, party_id: int, update: np.ndarray, spec: RoundSpec, config: PairwiseConfig) -> None:
        super().__init__(party_id)
        self._update = update
        self._spec = spec
        self._config = config
        self._codec = config.codec(spec.n_clients)
        self._threshold = config.threshold_for(spec.n_clients)
        self._c_private, self._c_public = generate_keypair()
        self._s_private, self._s_public = generate_keypair()
        self._self_mask_seed = b""
        self._group: dict[int, tuple[bytes, bytes]] = {}
        # owner -> (b-share limbs, s-share limbs) this client holds, its own included
        self._held: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._answered = False

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage == "advertise":
            return [Envelope(SERVER, AdvertiseKeys(self._c_public, self._s_public))]
        if stage == "share_keys":
            broadcast = _single(inbox, KeyBroadcast, self.name, stage)
            return [] if broadcast is None else self._share_keys(broadcast.payload)  # type: ignore[arg-type]
        if stage == "masked_input":
            routed = _single(inbox, RoutedShares, self.name, stage)
            return [] if routed is None else self._masked_input(routed.payload)  # type: ignore[arg-type]
        if stage == "unmasking":
            request = _single(inbox, UnmaskRequest, self.name, stage)
            return [] if request is None else self._unmask(request.payload)  # type: ignore[arg-type]
        if inbox:
            raise ProtocolStateError(f"{self.name}: expected no messages at {stage}, got {len(inbox)}")
        return []

    def _share_keys(self, broadcast: KeyBroadcast) -> list[Envelope]:
        me = self.party_id
        n = self._spec.n_clients
        group = neighbour_graph(n, self._config.neighbours, broadcast.graph_seed, self._spec.round_id)[me]
        if len(set(broadcast.ids)) != len(broadcast.ids) or not set(broadcast.ids) <= set(group):
            raise ProtocolStateError(
                f"{self.name}: expected keys of distinct members of its share group {list(group)}, "
                f"got {list(broadcast.ids)}"
            )
        keys = dict(
            zip(broadcast.ids, zip(broadcast.c_publics, broadcast.s_publics, strict=True), strict=True)
        )
        if keys.get(me) != (self._c_public, self._s_public):
            raise KeyMismatchError(
                f"{self.name}: expected the broadcast to carry this client's own public keys, "
                "got other keys or none"
            )
        if len(keys) < self._threshold:
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
            peer: pair_seed(self._s_private, self._group[peer][1], round_id=rid, a=me, b=peer)
            for peer in routed.senders
        }
        apply_masks(
            masked, client=me, self_mask_seed=self._self_mask_seed, pair_seeds=pair_seeds, round_id=rid
        )
        return [Envelope(SERVER, MaskedInput(masked))]

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
        if len(survivors) < self._threshold:
            raise NotEnoughClientsError(
                f"{self.name}: expected at least t = {self._threshold} survivors, got {len(survivors)}"
            )
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
        return [
            Holding("c_public", self._c_public, secret=False),
            Holding("s_public", self._s_public, secret=False),
            Holding("c_private", self._c_private, secret=True),
            Holding("s_private", self._s_private, secret=True),
            Holding("self_mask_seed", self._self_mask_seed, secret=True),
            Holding("shares_held_of", tuple(sorted(self._held)), secret=False),
        ]


class PairwiseServer(Party):
    role = "server"

    def __init__(self, spec: RoundSpec, config: PairwiseConfig) -> None:
        super().__init__(SERVER)
        self._spec = spec
        self._config = config
        self._codec = config.codec(spec.n_clients)
        self._threshold = config.threshold_for(spec.n_clients)
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self._graph_seed = b""
        self._groups: list[tuple[int, ...]] = []
        self._commitments: dict[int, bytes] = {}
        self._shared: list[int] = []  # U2: clients whose shares were routed
        self._survivors: list[int] = []  # U3: clients whose masked input was summed
        self._requested: dict[int, tuple[frozenset[int], frozenset[int]]] = {}
        self._total: np.ndarray | None = None
        self._self_mask_seeds: dict[int, bytes] = {}
        self._key_secrets: dict[int, bytes] = {}
        self._revealed: Revealed | None = None

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
            return self._collect(self._from_clients(inbox, MaskedInput, stage, set(self._shared)))
        if stage == "reconstruct":
            self._reconstruct(self._from_clients(inbox, UnmaskShares, stage, set(self._survivors)))
            return []
        if inbox:
            raise ProtocolStateError(f"server: expected no messages at {stage}, got {len(inbox)}")
        return []

    def _broadcast(self, adverts: dict[int, AdvertiseKeys]) -> list[Envelope]:
        self._need(len(adverts), "clients advertising keys")
        self._keys = {c: (a.c_public, a.s_public) for c, a in sorted(adverts.items())}
        self._graph_seed = random_seed()
        self._groups = neighbour_graph(
            self._spec.n_clients, self._config.neighbours, self._graph_seed, self._spec.round_id
        )
        out = []
        for client in self._keys:
            members = [m for m in self._groups[client] if m in self._keys]
            self._need(len(members), f"live members in the share group of {party_name(client)}")
            payload = KeyBroadcast(
                self._graph_seed,
                tuple(members),
                tuple(self._keys[m][0] for m in members),
                tuple(self._keys[m][1] for m in members),
            )
            out.append(Envelope(client, payload))
        return out

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
            if upload.masked.size != n or upload.masked.dtype != dtype:
                raise ProtocolStateError(
                    f"server: expected {n} elements of {dtype} from {party_name(sender)}, "
                    f"got {upload.masked.size} of {upload.masked.dtype}"
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
        survivors = set(self._survivors)
        for client in self._shared:
            live = len(self._holders(client) & survivors)
            self._need(live, f"surviving holders of {party_name(client)}'s shares")
        out = []
        for client in self._survivors:
            holders = self._holders(client)
            alive = frozenset(holders & survivors)
            gone = frozenset(holders - survivors)
            self._requested[client] = (alive, gone)
            out.append(
                Envelope(
                    client,
                    UnmaskRequest(np.array(sorted(alive), dtype="<u4"), np.array(sorted(gone), dtype="<u4")),
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
        weights_cache: dict[tuple[int, ...], np.ndarray] = {}

        def recover(owner: int, shares: list[tuple[int, np.ndarray]], what: str) -> bytes:
            if len(shares) < self._threshold:
                raise NotEnoughClientsError(
                    f"server: expected at least t = {self._threshold} {what} shares of "
                    f"{party_name(owner)}, got {len(shares)}; nothing is revealed"
                )
            used = sorted(shares, key=lambda item: item[0])[: self._threshold]
            xs = tuple(x for x, _ in used)
            if xs not in weights_cache:
                weights_cache[xs] = lagrange_at_zero(xs)
            rows = np.stack([row for _, row in used]).astype(np.uint64)
            limbs = (rows * weights_cache[xs][:, None] % np.uint64(PRIME)).sum(axis=0) % np.uint64(PRIME)
            return limbs_to_secret(limbs, SECRET_BYTES)

        rid = self._spec.round_id
        for owner, shares in b_shares.items():
            seed = recover(owner, shares, "self-mask")
            if _commitment(seed, round_id=rid, client=owner) != self._commitments[owner]:
                raise IntegrityError(
                    f"server: the self-mask seed rebuilt for {party_name(owner)} does not match its "
                    "commitment (expected consistent shares, got altered ones)"
                )
            self._self_mask_seeds[owner] = seed
        for owner, shares in s_shares.items():
            secret = recover(owner, shares, "key")
            if public_key(secret) != self._keys[owner][1]:
                raise IntegrityError(
                    f"server: the key rebuilt for {party_name(owner)} does not match its advertised "
                    "public key (expected consistent shares, got altered ones)"
                )
            self._key_secrets[owner] = secret
        total = self._total
        survivors = set(self._survivors)
        dropped_pairs = [
            (owner, peer, pair_seed(secret, self._keys[peer][1], round_id=rid, a=owner, b=peer))
            for owner, secret in self._key_secrets.items()
            for peer in sorted(self._holders(owner) & survivors)
        ]
        remove_masks(total, self_mask_seeds=self._self_mask_seeds, dropped_pairs=dropped_pairs, round_id=rid)
        self._revealed = Revealed(self._codec.decode(total), tuple(self._survivors))

    def output(self) -> Revealed | None:
        return self._revealed

    def holdings(self) -> list[Holding]:
        # The rebuilt seeds and secrets are the clients' secrets, revealed to the server by
        # design at unmasking: never both of one client.
        return [
            Holding("public_keys", dict(self._keys), secret=False),
            Holding("graph_seed", self._graph_seed, secret=False),
            Holding("self_mask_seeds", dict(self._self_mask_seeds), secret=True),
            Holding("key_agreement_secrets", dict(self._key_secrets), secret=True),
        ]


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
    )
    server_ids = (SERVER,)
    aggregate_holder = SERVER
    summary = "pairwise PRF masks + Shamir dropout recovery (Bonawitz 2017; SecAgg+ neighbours)"
    fast_config: ClassVar[dict[str, Any]] = {}
    Config = PairwiseConfig
    input_bound_field = "clip"
    # Each client makes its own key pairs and advertises them in a stage; a dealer
    # would learn every client's key-agreement secret.
    provisioning = "local"
    state_types: ClassVar[tuple[type, ...]] = (PairwiseClient, PairwiseServer)
    # At unmasking the server rebuilds survivors' self-mask seeds and dropped clients'
    # key-agreement secrets (never both for one client).
    server_secrets: ClassVar[Mapping[int, frozenset[str]]] = {
        SERVER: frozenset({"self_mask_seeds", "key_agreement_secrets"})
    }
    threat_model = ThreatModel(
        keys="each client: two X25519 key pairs (share encryption, mask agreement) and a self-mask "
        "seed, fresh per round; the server: public keys only until unmasking",
        server_sees="public keys, AES-GCM ciphertexts of shares, uniformly masked vectors; at "
        "unmasking the self-mask seeds of survivors and the mask keys of dropped clients, never both",
        collusion="the server with t clients of a share group learns that group's inputs",
        dropouts="any stage, while each share group keeps t live members (t = floor(2g/3) + 1 by default)",
        min_clients=2,
        notes="semi-honest server (no consistency-check round); min revealed = max(min_clients, t)",
    )

    def make_parties(
        self, updates: Sequence[np.ndarray], weights: Sequence[float] | None, spec: RoundSpec
    ) -> list[Party]:
        config = self.config
        config.codec(spec.n_clients).check_budget(spec.n_clients)
        config.threshold_for(spec.n_clients)
        parties: list[Party] = [PairwiseClient(i, u, spec, config) for i, u in enumerate(updates)]
        parties.append(PairwiseServer(spec, config))
        return parties

    def precision(self, *, n_clients: int, value_range: float) -> float:
        # One rounding per encoded value; the masked sum is exact in Z_2^k. The second term
        # is float64 itself (decoding a 64-bit sum, the reference's own additions), which
        # only matters when f approaches 52 bits (k = 64).
        codec = self.config.codec(n_clients)
        magnitude = n_clients * max(value_range, codec.clip)
        return n_clients * codec.error_bound + 4 * magnitude * 2.0**-52

    def codec_for(self, n_clients: int) -> FixedPoint:
        return self.config.codec(n_clients)
