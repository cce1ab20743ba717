"""Two-server additive secret sharing with PRF-compressed shares ("two-server").

What it is: the two-server aggregation of Prio (Corrigan-Gibbs & Boneh, NSDI 2017)
without the validity proofs, with one of the two additive shares compressed to a PRG
seed (the bandwidth saving Prio describes for all servers but one): client i encodes
its update x_i in fixed point in Z_2^k, draws a fresh 32-byte seed s_i from the OS
CSPRNG and sends

    to server A (SERVER):   y_i = x_i - PRF(s_i, domain(round, i))   mod 2^k   (k/8 bytes/param)
    to server B (SERVER_B): seal(pk_B, s_i, ad = protocol | round | i | B | session)   (80 bytes)

A sums the y_i, B sums the masks PRF(s_i, ...) over the same clients, and A adds the
two sums: sum x_i = sum y_i + sum masks (mod 2^k), decoded to floats.

Threat model (semi-honest servers, non-colluding):

* Keys: B holds an X25519 key pair provisioned at setup (one per protocol instance,
  reused across rounds, or a long-lived one given with :meth:`TwoServer.with_server_b_key`);
  every client holds pk_B and B's session nonce (16 bytes B draws from the OS CSPRNG
  for each session, handed out with pk_B). Seeds are fresh per client per round.
* A alone sees, per client, a vector uniform over Z_2^k (a one-time pad by a PRF
  stream keyed by a seed it never sees), then B's mask sum over the agreed set
  (uniform too) and the aggregate. Sealed seeds do not pass through A; were they
  relayed or observed on the wire, A could not open them without B's private key.
* B alone sees, per client, a 32-byte seed (sealed on the wire, so a network observer
  and A learn nothing), A's list of client ids, and the mask sum it computes itself;
  it never sees anything that depends on x_i.
* A and B colluding learn every update: y_i + PRF(s_i) = x_i. ``test_two_server``
  shows it. There is no protection against a malicious server: B can shift the
  aggregate by sending a wrong mask sum, A can choose which (>= min_clients) clients
  the reveal covers by what it claims to hold.
* Dropouts: any number, before or after upload. A client that reached only one server
  is left out by both: A lists the clients it holds, B answers with the mask sum over
  the intersection and the intersection itself, A removes the shares of clients
  outside it. Nothing from a one-server client reaches the revealed sum. A client
  whose message a server cannot use (another type, size or dtype; a seed that does not
  open) is left out the same way, named in that server's ``rejected_clients``.
* Minimum clients: ``min_clients`` (default 2). Both servers refuse to reveal a sum
  over fewer agreed clients (:class:`NotEnoughClientsError`): a sum of one client's
  input is that client's input.

Why seeds go to B directly rather than through A: sealing already makes relaying safe
(A could read nothing), so the choice is about the round, not secrecy. Direct delivery
saves a stage and A's relay message (80 bytes per client through A twice), keeps A
from silently withholding a client's seed, and makes "which clients reached B" a fact
B states itself in the set agreement, which is what lets a client that reached only
one server be detected and left out. Relaying would suit a deployment where clients
can reach only A; the sealed layout and associated data would not change.

Replay: the sealed seed's associated data binds protocol, round, client and B's session
nonce, so an old round's seed re-headed into a new round, or a seed from an earlier
session replayed under a round number that restarted (B's key unchanged), fails its
GCM tag; B leaves that sender out like a dropout (named, with the reason, in its
``rejected_clients``) and A drops its share, so the others' sum completes. The router
already refuses messages whose header names another round and duplicates within one.

Stages: ``upload`` (clients send) -> ``collect`` (A sums shares and lists them to B; B
opens seeds and sums masks) -> ``unmask`` (B answers with the mask sum over the
intersection) -> ``reveal`` (A combines and decodes).

Rings: k = 8..32 or 64 (default 32); an element is k/8 bytes on the wire, bit-packed
when k is no whole dtype (Z_2^12: 1.5 bytes), and held in memory in the smallest uint
dtype of >= k bits; masks are words of that width from the AES-CTR stream, uniform mod
2^k (2^k divides the word's range; nothing is rejected). A smaller ring leaves less room for the sum:
n clients' |x| <= clip need n * rint(clip * 2^f) <= 2^(k-1) - 1 (checked before any
upload, :class:`EncodingOverflowError` naming what fits), e.g. 100 clients of |x| <= 1
take at most 8 fractional bits in Z_2^16. ``modular=True`` drops that budget for inputs
that are residues whose decoder reduces modulo the ring itself (distributed DP's
messages in Z_2^bits, carried in Z_2^bits: 2 bytes per parameter for bits = 16).

Upload: k/8 bytes per parameter (2 for k = 16, 4 for k = 32, 8 for k = 64) + 9 bytes of
array header (10 when packed) + 80 bytes of sealed seed + two 30-byte message frames.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import numpy as np

from secagg.binding import BindingLedger, ModelBinding, binding_message
from secagg.encoding import FixedPoint, check_range, is_packed, reduce, ring_dtype
from secagg.errors import (
    ConfigError,
    IntegrityError,
    NotEnoughClientsError,
    ProtocolStateError,
    WireFormatError,
)
from secagg.observe import COLLUDING, Observation
from secagg.party import SERVER, SERVER_B, Envelope, Holding, Inbound, Party, Revealed, View, party_name
from secagg.prf import SEED_BYTES, domain, expand, random_seed
from secagg.prf import stream as prf_stream
from secagg.protocol import Protocol, RoundSpec, ThreatModel
from secagg.sealing import SEAL_OVERHEAD, generate_keypair, open_sealed, seal
from secagg.wire import ARRAY_HEADER_BYTES, Payload, Reader, Writer, array_header

WIRE_ID = 30
SEALED_SEED_BYTES = SEED_BYTES + SEAL_OVERHEAD  # 80
SESSION_NONCE_BYTES = 16
# Elements per block of the client kernel: float64 temp + ring temp + keystream stay in L2.
_BLOCK = 1 << 15
# The element dtypes a share or mask sum may carry on the wire: one per ring width.


def mask_label(round_id: int, client: int) -> bytes:
    """PRF domain of client ``client``'s mask in round ``round_id``."""
    return domain("two-server/mask", round_id=round_id, parties=(client,))


def new_session_nonce() -> bytes:
    """B's nonce for one session: 16 bytes from the OS CSPRNG."""
    return secrets.token_bytes(SESSION_NONCE_BYTES)


def seed_associated_data(round_id: int, client: int, session: bytes) -> bytes:
    """Associated data of a sealed seed: binds protocol id, round, sender, recipient and
    B's session nonce (so round numbers that restart under a long-lived B key cannot
    carry an old session's seed)."""
    if len(session) != SESSION_NONCE_BYTES:
        raise ConfigError(f"session nonce: expected {SESSION_NONCE_BYTES} bytes, got {len(session)}")
    label = domain("two-server/seed", round_id=round_id, parties=(client, SERVER_B))
    return WIRE_ID.to_bytes(2, "big") + label + bytes(session)


@dataclass(frozen=True)
class TwoServerConfig:
    """``ring_bits`` k (8..32 or 64), ``frac_bits`` f, ``clip`` (|x| <= clip accepted),
    ``min_clients`` (fewest agreed clients a revealed sum may cover; >= 2), ``modular``
    (inputs are residues, the sum is wanted mod 2^k: no client budget; see the module
    docstring)."""

    ring_bits: int = 32
    frac_bits: int = 16
    clip: float = 1.0
    min_clients: int = 2
    modular: bool = False

    def __post_init__(self) -> None:
        # FixedPoint validates ring_bits, frac_bits and clip (and that clip*2^f fits).
        self.codec()
        if not isinstance(self.min_clients, int) or self.min_clients < 2:
            raise ConfigError(
                "min_clients must be an int >= 2 (a sum of one input is that input), "
                f"got {self.min_clients!r}"
            )

    def codec(self) -> FixedPoint:
        return FixedPoint(
            ring_bits=self.ring_bits, frac_bits=self.frac_bits, clip=self.clip, modular=self.modular
        )


# --- payloads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskedShare(Payload):
    """A's share of one client: x - PRF(seed) in Z_2^k.

    Layout, k = 8, 16, 32, 64: array values (u8 dtype code 1 = <u1, 8 = <u2, 2 = <u4 or 3
    = <u8 | u64 count | count * k/8 bytes little-endian): 9 + n * k/8 bytes. Any other k:
    packed (u8 9 | u8 k | u64 count | ceil(count * k / 8) bytes, :func:`secagg.wire.pack_bits`):
    10 + ceil(n * k / 8) bytes, only the low k bits of each value. The count is bounded by
    the bytes that follow it (the reader refuses a count the message cannot hold), and
    server A takes only n_params elements of its own ring (width and dtype). ``bits`` is
    the width on the wire (0: the dtype's). A client builds a whole-width share with
    :meth:`allocate` and writes the masked values straight into the wire buffer, so
    ``to_bytes`` copies nothing.
    """

    msg_type: ClassVar[int] = 1
    values: np.ndarray
    _wire: bytearray | None = field(default=None, repr=False, compare=False)
    bits: int = 0

    @classmethod
    def allocate(cls, n: int, ring_bits: int) -> MaskedShare:
        """A share whose ``values`` is a writable view into its own wire buffer (a plain
        array for a packed width: packing needs a pass anyway)."""
        dtype = np.dtype(ring_dtype(ring_bits)).newbyteorder("<")
        if is_packed(ring_bits):
            return cls(np.empty(n, dtype=dtype), None, ring_bits)
        buffer = bytearray(ARRAY_HEADER_BYTES + n * dtype.itemsize)
        buffer[:ARRAY_HEADER_BYTES] = array_header(dtype, n)
        values = np.frombuffer(buffer, dtype=dtype, offset=ARRAY_HEADER_BYTES, count=n)
        return cls(values, buffer)

    @property
    def ring_bits(self) -> int:
        """The ring width the share's values travel in."""
        return self.bits or self.values.dtype.itemsize * 8

    def to_bytes(self) -> bytes:
        if self._wire is not None:
            # The prebuilt buffer is the layout above; handing it over spares a 4n-byte copy.
            return cast(bytes, self._wire)
        return Writer().ring(self.values, self.bits).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> MaskedShare:
        reader = Reader(data, "MaskedShare")
        values, bits = reader.ring("values")
        reader.done()
        return cls(values, None, bits)


@dataclass(frozen=True)
class SealedSeed(Payload):
    """B's share of one client: the 32-byte seed sealed to B's X25519 key.

    Layout: 80 raw bytes = ephemeral public key (32) | AES-GCM ciphertext (32) | tag (16)
    (see :mod:`secagg.sealing`).
    """

    msg_type: ClassVar[int] = 2
    sealed: bytes

    def to_bytes(self) -> bytes:
        if len(self.sealed) != SEALED_SEED_BYTES:
            raise WireFormatError(f"SealedSeed: expected {SEALED_SEED_BYTES} bytes, got {len(self.sealed)}")
        return bytes(self.sealed)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> SealedSeed:
        reader = Reader(data, "SealedSeed")
        sealed = reader.raw(SEALED_SEED_BYTES, "sealed seed")
        reader.done()
        return cls(sealed)


def _write_ids(writer: Writer, ids: Sequence[int]) -> Writer:
    return writer.array(np.asarray(sorted(ids), dtype="<u4"))


def _read_ids(reader: Reader, what: str) -> tuple[int, ...]:
    ids = tuple(int(i) for i in reader.array(what, dtype="<u4"))
    if any(b <= a for a, b in zip(ids, ids[1:])):
        raise WireFormatError(f"{what}: expected strictly increasing client ids, got {list(ids)[:8]}...")
    return ids


@dataclass(frozen=True)
class HeldSet(Payload):
    """A -> B: the clients whose shares A holds.

    Layout: array ids (u8 code 2 | u64 count | count * u32 little-endian, increasing).
    """

    msg_type: ClassVar[int] = 3
    clients: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return _write_ids(Writer(), self.clients).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> HeldSet:
        reader = Reader(data, "HeldSet")
        clients = _read_ids(reader, "clients")
        reader.done()
        return cls(clients)


@dataclass(frozen=True)
class MaskSum(Payload):
    """B -> A: the agreed clients (intersection) and the sum of their masks mod 2^k.

    Layout: array ids (as in HeldSet) | mask_sum as MaskedShare's values (an array of a
    ring dtype, or packed at ``bits``).
    """

    msg_type: ClassVar[int] = 4
    clients: tuple[int, ...]
    mask_sum: np.ndarray
    bits: int = 0

    @property
    def ring_bits(self) -> int:
        return self.bits or self.mask_sum.dtype.itemsize * 8

    def to_bytes(self) -> bytes:
        return _write_ids(Writer(), self.clients).ring(self.mask_sum, self.bits).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> MaskSum:
        reader = Reader(data, "MaskSum")
        clients = _read_ids(reader, "clients")
        mask_sum, bits = reader.ring("mask_sum")
        reader.done()
        return cls(clients, mask_sum, bits)


# --- the client kernel --------------------------------------------------------------------


def mask_update(
    update: np.ndarray, codec: FixedPoint, seed: bytes, label: bytes, out: np.ndarray
) -> np.ndarray:
    """Write ``encode(update) - PRF(seed, label)`` mod 2^k into ``out``; one pass, in blocks.

    Equal to ``codec.encode(update) - prf.expand(seed, label, n)``, but each block of
    the float input is range-checked, scaled, rounded, cast and masked while it sits in
    cache, and the AES-CTR keystream is produced block by block into one reused buffer
    (CTR is a stream: the blocks concatenate to ``prf.expand``'s stream). A modular codec
    with k < 64 casts through int64, whose narrowing to k bits is the reduction mod 2^k
    (its inputs may reach +2^(k-1), outside the signed k-bit range).
    """
    n = update.size
    if out.size != n or out.dtype != np.dtype(codec.dtype).newbyteorder("<"):
        raise ConfigError(
            f"out: expected {n} elements of {np.dtype(codec.dtype)}, got {out.size} of {out.dtype}"
        )
    itemsize = np.dtype(codec.dtype).itemsize
    signed = np.dtype(f"<i{itemsize}")
    scale = codec.scale
    encryptor = prf_stream(seed, label)
    block = min(_BLOCK, max(n, 1))
    scaled = np.empty(block, dtype=np.float64)
    encoded = np.empty(block, dtype=signed)
    wide = np.empty(block, dtype=np.int64) if codec.modular and itemsize < 8 else None
    zeros = bytes(block * itemsize)
    # update_into wants room for one extra AES block.
    stream = bytearray(block * itemsize + 15)
    stream_view = np.frombuffer(stream, dtype=out.dtype, count=block)
    for start in range(0, n, block):
        stop = min(start + block, n)
        m = stop - start
        chunk = update[start:stop]
        check_range(chunk, codec.clip)
        np.multiply(chunk, scale, out=scaled[:m])
        np.rint(scaled[:m], out=scaled[:m])
        if wide is None:
            np.copyto(encoded[:m], scaled[:m], casting="unsafe")
        else:
            np.copyto(wide[:m], scaled[:m], casting="unsafe")
            np.copyto(encoded[:m], wide[:m], casting="unsafe")
        encryptor.update_into(zeros[: m * itemsize], stream)
        np.subtract(encoded[:m].view(out.dtype), stream_view[:m], out=out[start:stop])
    encryptor.finalize()
    return reduce(out, codec.ring_bits)  # a packed ring's high container bits: never kept


def accumulate_mask(total: np.ndarray, seed: bytes, label: bytes, *, subtract: bool = False) -> np.ndarray:
    """``total += PRF(seed, label)`` (or ``-=``) mod 2^k in place, block by block.

    The same stream as ``prf.expand(seed, label, total.size)`` without materialising it:
    B adds one mask per client, and a 4n-byte temporary per client would double its
    memory traffic.
    """
    itemsize = total.dtype.itemsize
    n = total.size
    encryptor = prf_stream(seed, label)
    block = min(_BLOCK, max(n, 1))
    zeros = bytes(block * itemsize)
    stream = bytearray(block * itemsize + 15)
    stream_view = np.frombuffer(stream, dtype=total.dtype, count=block)
    combine = np.subtract if subtract else np.add
    for start in range(0, n, block):
        stop = min(start + block, n)
        m = stop - start
        encryptor.update_into(zeros[: m * itemsize], stream)
        combine(total[start:stop], stream_view[:m], out=total[start:stop])
    encryptor.finalize()
    return total


# --- parties --------------------------------------------------------------------------------


class TwoServerClient(Party):
    role = "client"

    def __init__(
        self,
        party_id: int,
        update: np.ndarray,
        spec: RoundSpec,
        codec: FixedPoint,
        server_b_public: bytes,
        session_nonce: bytes,
    ) -> None:
        super().__init__(party_id)
        self._update = update
        self._spec = spec
        self._codec = codec
        self._server_b_public = server_b_public
        self._session_nonce = session_nonce

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage != "upload":
            return []
        seed = random_seed()
        share = MaskedShare.allocate(self._update.size, self._codec.ring_bits)
        mask_update(
            np.asarray(self._update, dtype=np.float64),
            self._codec,
            seed,
            mask_label(self._spec.round_id, self.party_id),
            share.values,
        )
        associated = seed_associated_data(self._spec.round_id, self.party_id, self._session_nonce)
        sealed = seal(self._server_b_public, seed, associated)
        sent = [Envelope(SERVER, share), Envelope(SERVER_B, SealedSeed(sealed))]
        if self.binding:  # to B, whom the protocol trusts not to collude with A
            sent.append(Envelope(SERVER_B, binding_message(self.binding)))
        return sent


class ServerA(Party):
    """Holds the masked shares and reveals the aggregate."""

    role = "server"

    def __init__(self, spec: RoundSpec, codec: FixedPoint, min_clients: int) -> None:
        super().__init__(SERVER)
        self._spec = spec
        self._codec = codec
        self._min_clients = min_clients
        self._total: np.ndarray | None = None
        # References to the received shares (views of the delivered bytes, no copies),
        # kept until B names the agreed set so a share B cannot unmask can be removed.
        self._shares: dict[int, np.ndarray] = {}
        self._revealed: Revealed | None = None
        # Clients whose share was left out (wrong type, size or dtype), and why.
        self.rejected_clients: dict[int, str] = {}

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage == "collect":
            return self._collect(inbox)
        if stage == "reveal":
            self._reveal(inbox)
        elif inbox:
            raise ProtocolStateError(f"server: expected no messages at stage {stage!r}, got {len(inbox)}")
        return []

    def _collect(self, inbox: Sequence[Inbound]) -> list[Envelope]:
        dtype = np.dtype(self._codec.dtype).newbyteorder("<")
        for message in inbox:
            payload = message.payload
            sender = message.sender
            if not 0 <= sender < self._spec.n_clients:
                raise ProtocolStateError(
                    f"server: expected MaskedShare from a client, got {type(payload).__name__} "
                    f"from {party_name(sender)}"
                )
            # A client whose share cannot enter the sum is left out (B's agreement then
            # drops its seed too); it never aborts the others' round.
            if not isinstance(payload, MaskedShare):
                self.rejected_clients[sender] = f"expected a MaskedShare, got {type(payload).__name__}"
                continue
            values = payload.values
            if (values.dtype != dtype or values.size != self._spec.n_params
                    or payload.ring_bits != self._codec.ring_bits):
                self.rejected_clients[sender] = (
                    f"expected {self._spec.n_params} elements of Z_2^{self._codec.ring_bits} ({dtype}) "
                    f"from {party_name(sender)}, got {values.size} of Z_2^{payload.ring_bits} "
                    f"({values.dtype})"
                )
                continue
            if self._total is None:
                self._total = values.copy()
            else:
                np.add(self._total, values, out=self._total)
            self._shares[sender] = values
        return [Envelope(SERVER_B, HeldSet(tuple(sorted(self._shares))))]

    def _reveal(self, inbox: Sequence[Inbound]) -> None:
        answers = [m for m in inbox if isinstance(m.payload, MaskSum) and m.sender == SERVER_B]
        if len(answers) != 1 or len(inbox) != 1:
            raise ProtocolStateError(
                f"server: expected one MaskSum from server-b, got {len(answers)} of {len(inbox)} messages"
            )
        answer = cast(MaskSum, answers[0].payload)
        agreed = set(answer.clients)
        unknown = agreed - set(self._shares)
        if unknown:
            raise ProtocolStateError(
                f"server: server-b's agreed set names clients whose shares are not held: {sorted(unknown)}"
            )
        if len(agreed) < self._min_clients:
            raise NotEnoughClientsError(
                f"server: refusing to reveal a sum over {len(agreed)} clients, expected at least "
                f"{self._min_clients}"
            )
        dtype = np.dtype(self._codec.dtype).newbyteorder("<")
        mask_sum = answer.mask_sum
        if (mask_sum.dtype != dtype or mask_sum.size != self._spec.n_params
                or answer.ring_bits != self._codec.ring_bits):
            raise ProtocolStateError(
                f"server: expected a mask sum of {self._spec.n_params} elements of "
                f"Z_2^{self._codec.ring_bits} ({dtype}), got {mask_sum.size} of "
                f"Z_2^{answer.ring_bits} ({mask_sum.dtype})"
            )
        total = cast(np.ndarray, self._total)  # agreed is non-empty, so shares arrived
        # Clients that reached A only: B has no mask for them, so their shares leave the sum.
        for client in sorted(set(self._shares) - agreed):
            np.subtract(total, self._shares[client], out=total)
        np.add(total, mask_sum, out=total)
        self._shares.clear()
        self._revealed = Revealed(self._codec.decode(total), tuple(sorted(agreed)))

    def output(self) -> Revealed | None:
        return self._revealed

    def holdings(self) -> list[Holding]:
        return [Holding("rejected_clients", dict(self.rejected_clients), secret=False)]


class ServerB(Party):
    """Holds the seeds (as X25519-sealed boxes on the wire) and answers with mask sums."""

    role = "server-b"

    def __init__(
        self,
        spec: RoundSpec,
        codec: FixedPoint,
        min_clients: int,
        private_key: bytes,
        public_key: bytes,
        session_nonce: bytes,
    ) -> None:
        super().__init__(SERVER_B)
        self._spec = spec
        self._codec = codec
        self._min_clients = min_clients
        self._private_key = private_key
        self._public_key = public_key
        self._session_nonce = session_nonce
        self._seeds: dict[int, bytes] = {}
        # Senders whose sealed seed did not open (tampered, replayed, another session), and why.
        self.rejected_clients: dict[int, str] = {}
        self._mask_total: np.ndarray | None = None
        # B refuses to release a mask sum over clients that trained on different models.
        self.binding_ledger = BindingLedger("server-b")

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage == "collect":
            self._collect(inbox)
            return []
        if stage == "unmask":
            return self._unmask(inbox)
        if inbox:
            raise ProtocolStateError(f"server-b: expected no messages at stage {stage!r}, got {len(inbox)}")
        return []

    def _accumulate(self, total: np.ndarray, client: int, *, subtract: bool = False) -> None:
        label = mask_label(self._spec.round_id, client)
        accumulate_mask(total, self._seeds[client], label, subtract=subtract)

    def _collect(self, inbox: Sequence[Inbound]) -> None:
        inbox = self.binding_ledger.take(inbox)
        for message in inbox:
            payload = message.payload
            sender = message.sender
            if not 0 <= sender < self._spec.n_clients:
                raise ProtocolStateError(
                    f"server-b: expected SealedSeed from a client, got {type(payload).__name__} "
                    f"from {party_name(sender)}"
                )
            if not isinstance(payload, SealedSeed):
                self.rejected_clients[sender] = f"expected a SealedSeed, got {type(payload).__name__}"
                continue
            try:
                self._seeds[sender] = open_sealed(
                    self._private_key,
                    payload.sealed,
                    seed_associated_data(self._spec.round_id, sender, self._session_nonce),
                    what=f"server-b: sealed seed from {party_name(sender)}",
                )
            except IntegrityError as exc:
                # Left out like a dropout: A's share of it leaves the sum at the agreement.
                self.rejected_clients[sender] = str(exc)
        # Sum every mask now (while A is busy); the few B holds but A does not leave later.
        total = np.zeros(self._spec.n_params, dtype=self._codec.dtype)
        for client in sorted(self._seeds):
            self._accumulate(total, client)
        self._mask_total = total

    def _unmask(self, inbox: Sequence[Inbound]) -> list[Envelope]:
        held = [m for m in inbox if isinstance(m.payload, HeldSet) and m.sender == SERVER]
        if len(held) != 1 or len(inbox) != 1:
            raise ProtocolStateError(
                f"server-b: expected one HeldSet from server, got {len(held)} of {len(inbox)} messages"
            )
        held_by_a = set(cast(HeldSet, held[0].payload).clients)
        agreed = held_by_a & set(self._seeds)
        if len(agreed) < self._min_clients:
            raise NotEnoughClientsError(
                f"server-b: refusing to unmask a sum over {len(agreed)} clients (server holds "
                f"{len(held_by_a)}, server-b {len(self._seeds)}), expected at least {self._min_clients}"
            )
        self.binding_ledger.require(agreed)
        total = cast(np.ndarray, self._mask_total)
        for client in sorted(set(self._seeds) - agreed):
            self._accumulate(total, client, subtract=True)
        self._seeds.clear()  # a seed is useless after the round; do not keep it
        bits = self._codec.ring_bits if is_packed(self._codec.ring_bits) else 0
        return [Envelope(SERVER, MaskSum(tuple(sorted(agreed)), total, bits))]

    def holdings(self) -> list[Holding]:
        return [
            Holding("x25519_private_key", self._private_key, secret=True),
            Holding("x25519_public_key", self._public_key, secret=False),
            Holding("session_nonce", self._session_nonce, secret=False),
            Holding("rejected_clients", dict(self.rejected_clients), secret=False),
        ]


# --- the protocol ---------------------------------------------------------------------------


class TwoServer(Protocol[TwoServerConfig]):
    """Two non-colluding servers; clients send A a PRF-masked update and B the sealed seed."""

    name = "two-server"
    wire_id = WIRE_ID
    stages = ("upload", "collect", "unmask", "reveal")
    finalize_stages = frozenset({"unmask", "reveal"})
    late_dropout_stage = "collect"
    aggregate_kind = "sum"
    server_ids = (SERVER, SERVER_B)
    aggregate_holder = SERVER
    payload_types = (MaskedShare, SealedSeed, HeldSet, MaskSum, ModelBinding)
    supports_binding = True
    Config = TwoServerConfig
    summary = "additive shares to two non-colluding servers; B's share is a sealed 32-byte PRF seed"
    fast_config: ClassVar[dict[str, Any]] = {}
    input_bound_field = "clip"
    frac_bits_field = "frac_bits"
    ring_bits_field = "ring_bits"
    modular_field = "modular"
    # B's key pair comes with the protocol: B deals, so its secret key never leaves B.
    provisioning = "server-b"
    state_types: ClassVar[tuple[type, ...]] = (TwoServerClient, ServerA, ServerB, BindingLedger)
    # B opens the seeds sealed to it: its own private key is the one secret a server holds.
    server_secrets: ClassVar[Mapping[int, frozenset[str]]] = {SERVER_B: frozenset({"x25519_private_key"})}
    threat_model = ThreatModel(
        keys="server B: an X25519 key pair from setup; clients: B's public key and a fresh seed per round",
        server_sees=(
            "A: one uniformly random vector per client, B's mask sum, the aggregate; "
            "B: one 32-byte seed per client (sealed on the wire), A's client list, its own mask sums"
        ),
        collusion="A and B together learn every update (share + PRF(seed))",
        dropouts="any number, before or after upload; a client that reached one server only is left out",
        min_clients=2,
        notes="semi-honest servers: a malicious B can shift the aggregate undetected",
    )

    def __init__(self, config: TwoServerConfig | None = None, /, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        # B's long-term key, provisioned once per deployment (here: per protocol instance),
        # and B's nonce for this session (a new instance is a new session).
        self._server_b_private, self._server_b_public = generate_keypair()
        self._session_nonce = new_session_nonce()

    @property
    def server_b_public_key(self) -> bytes:
        return self._server_b_public

    @property
    def session_nonce(self) -> bytes:
        """B's nonce for this session, handed to clients with pk_B."""
        return self._session_nonce

    def with_server_b_key(self, private_key: bytes, public_key: bytes) -> TwoServer:
        """A new session of this protocol under B's long-lived X25519 key pair: same key,
        fresh session nonce (so seeds sealed in another session never open in this one)."""
        session = type(self)(self.config)
        session._server_b_private, session._server_b_public = private_key, public_key
        return session

    def make_parties(
        self, updates: Sequence[np.ndarray], weights: Sequence[float] | None, spec: RoundSpec
    ) -> list[Party]:
        codec = self.config.codec()
        # The bit budget: n_clients encodings must sum without wrapping, checked before any upload.
        codec.check_budget(spec.n_clients)
        parties: list[Party] = [
            TwoServerClient(i, update, spec, codec, self._server_b_public, self._session_nonce)
            for i, update in enumerate(updates)
        ]
        parties.append(ServerA(spec, codec, self.config.min_clients))
        parties.append(
            ServerB(
                spec, codec, self.config.min_clients,
                self._server_b_private, self._server_b_public, self._session_nonce,
            )  # fmt: skip
        )
        return parties

    def precision(self, *, n_clients: int, value_range: float) -> float:
        # n roundings of 2^-(f+1) each, then one float64 division of an exact integer.
        fixed_point = n_clients * self.config.codec().error_bound
        return fixed_point + 4 * np.finfo(np.float64).eps * n_clients * value_range

    def codec_for(self, n_clients: int) -> FixedPoint:
        return self.config.codec()

    def collude(self, views: Mapping[int, View], spec: RoundSpec) -> list[Observation]:
        """A and B pooled recover every update: B's private key (its holdings) opens each
        sealed seed, the PRF stream of that seed unmasks A's share, the public codec decodes."""
        if SERVER not in views or SERVER_B not in views:
            return []
        key = views[SERVER_B].holding("x25519_private_key")
        session = views[SERVER_B].holding("session_nonce")
        if not isinstance(key, bytes) or not isinstance(session, bytes):
            return []
        codec = self.codec_for(spec.n_clients)
        seeds = {
            r.header.sender: r.payload for r in views[SERVER_B].received if isinstance(r.payload, SealedSeed)
        }
        shares = {
            r.header.sender: r.payload for r in views[SERVER].received if isinstance(r.payload, MaskedShare)
        }
        found = []
        for client in sorted(set(seeds) & set(shares)):
            try:
                associated = seed_associated_data(spec.round_id, client, session)
                seed = open_sealed(key, seeds[client].sealed, associated)
            except IntegrityError:
                continue  # a seed B could not open is one the pair cannot use either
            mask = expand(seed, mask_label(spec.round_id, client), spec.n_params, ring_bits=codec.ring_bits)
            found.append(
                Observation(
                    COLLUDING,
                    f"{party_name(client)} (joint view)",
                    (client,),
                    "colluding",
                    codec.decode(shares[client].values + mask),
                    note="servers pool their views",
                )
            )
        return found
