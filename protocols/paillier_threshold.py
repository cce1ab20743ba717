"""Paillier FedAvg with no single key holder: a committee of clients decrypts the round's sum.

What it is: the ``paillier`` (packed, BatchCrypt-style) and ``paillier-naive`` rounds of
:mod:`protocols.paillier`, with the key holder replaced by threshold Paillier
(:mod:`protocols.threshold_paillier`: Boneh-Franklin / Nishide-Sakurai key generation
without a dealer, Shoup / Damgard-Jurik partial decryptions with proofs). Clients
encrypt exactly as in the single-key protocol (same layout, same ciphertext width, so the
same upload per parameter); the committee (clients 0 .. c-1, ``committee`` = c) holds the
key in shares, any ``threshold`` = t of them decrypt, t - 1 learn nothing.

Keys are generated once per federation (once per protocol instance here; every round of
that instance reuses them): see :mod:`protocols.threshold_paillier` for why reuse is safe.
``keygen="distributed"`` (the default) runs the dealer-free generation among the c
committee members; ``keygen="insecure_trusted_dealer"`` lets one process deal the shares
(fast, for tests and benchmarks), and every round's server holdings carry
``keygen="insecure_trusted_dealer"`` so a report can say so. The generation's parties run
in one process exchanging integers (not over the router); no party object reads another's
state.

Round (stages ``precompute``, ``upload``, ``aggregate``, ``decrypt``, ``combine``):

1. precompute: each client draws its r^N obfuscators (offline).
2. upload: client i sends the server its :class:`~protocols.paillier.EncryptedUpdate` and an
   Ed25519 signature over (round id, i, key fingerprint, SHA-256 of the update's bytes)
   under its identity key; every party holds every client's verification key, pinned at
   setup (the server holds none of the signing keys).
3. aggregate: the server drops uploads whose signature fails, multiplies the rest, and
   sends each committee member a :class:`SumRequest`: the included clients' ids, their
   signatures and their ciphertexts.
4. decrypt: a committee member checks every signature (this round, this client, these
   bytes), that at least ``min_clients`` distinct clients are included, recomputes the
   product itself and returns its :class:`PartialMessage` (partials plus a proof bound to
   the round, the included set and the product). A request that fails any check raises
   :class:`SumCheckError` naming the party at fault: it never partially decrypts anything
   but this round's sum over enough distinct clients' signed uploads.
5. combine: the server verifies each member's proof, drops (and names, in its
   ``rejected_decryptors``) members whose partials fail, and combines any t valid ones;
   fewer than t valid raises :class:`~protocols.threshold_paillier.NotEnoughDecryptorsError`
   (or :class:`~protocols.threshold_paillier.PartialDecryptionError` naming the bad member
   when bad partials are why), and nothing is revealed.

Threat model (honest-but-curious server; the committee checks what the server asks):

* Keys: N is public; the decryption key exists only as c Shamir shares held by the committee
  (no party ever held it with ``keygen="distributed"``). Clients hold Ed25519 identity keys.
* The server sees each client's ciphertexts and signature, the members' partial decryptions
  and proofs, and the revealed weighted mean and total weight. It learns the aggregate
  (it combines), never an individual update.
* A committee member sees every included client's ciphertexts (it recomputes the product)
  and the partials it makes. t - 1 members pooling with the server learn nothing beyond
  the sum; t members with the server decrypt every client's upload.
* A malicious server cannot have a member decrypt a single client's ciphertext, an old
  round's sum or a sum over fewer than ``min_clients`` clients: signatures bind each upload
  to its round and client, and the member recomputes the product. What it can still do:
  include only ``min_clients`` clients, or send different members different included sets
  (each set is a valid sum of >= ``min_clients`` clients; the combination then fails).
* Dropouts: any number of clients (the sum is over those whose signed upload arrived, at
  least ``min_clients``); the round completes while at least t committee members answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gmpy2
import numpy as np

from protocols import threshold_paillier as tp
from protocols.paillier import (
    ENCODING_NAIVE,
    OBFUSCATION_CODES,
    PHE_BASE,
    EncryptedUpdate,
    Layout,
    PaillierClient,
    PaillierConfig,
    PaillierNaive,
    PaillierPacked,
    PublicKeyMessage,
    _PaillierBase,
    ciphertexts_to_bytes,
    decode_ciphertexts,
    decode_packed,
    fingerprint,
    plan_layout,
    precompute_obfuscators,
    unpack,
)
from secagg import signing
from secagg.binding import BindingLedger, ModelBinding, binding_message
from secagg.errors import (
    ConfigError,
    IntegrityError,
    NotEnoughClientsError,
    ProtocolStateError,
    WireFormatError,
)
from secagg.observe import Observation
from secagg.party import SERVER, Envelope, Holding, Inbound, Party, Revealed, View, party_name
from secagg.protocol import Provisioning, RoundSpec, ThreatModel
from secagg.wire import Payload, Reader, Writer

KEYGEN_MODES = (tp.DEALER_DISTRIBUTED, tp.DEALER_INSECURE)
SIGN_CONTEXT = b"secagg/paillier-threshold/upload"
MAX_RESPONSE_BYTES = 4096
RESPONSE_SLACK_BYTES = 192
PROOF_CHALLENGE_BYTES = tp.CHALLENGE_BITS // 8


class SumCheckError(IntegrityError):
    """A committee member refused a decryption request that is not this round's attested sum.

    ``party`` is the party at fault: the server (a forged, replayed, short or altered sum) or a
    client whose signed upload does not verify.
    """

    def __init__(self, message: str, *, party: int) -> None:
        super().__init__(message)
        self.party = party


@dataclass(frozen=True)
class ThresholdPaillierConfig(PaillierConfig):
    """:class:`~protocols.paillier.PaillierConfig` plus the committee.

    ``committee`` c: clients 0 .. c-1 hold key shares (0: every client of the first round);
    ``threshold`` t: partial decryptions
    needed (t - 1 colluding members learn nothing; dealer-free generation needs c >= 2t - 1);
    ``keygen``: "distributed" (no dealer) or "insecure_trusted_dealer" (one process deals).
    """

    committee: int = 3
    threshold: int = 2
    keygen: str = tp.DEALER_DISTRIBUTED

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keygen not in KEYGEN_MODES:
            raise ConfigError(f"keygen must be one of {KEYGEN_MODES}, got {self.keygen!r}")
        if self.committee != 0:  # 0: every client of the federation's first round
            tp.check_committee(
                self.committee, self.threshold, distributed=self.keygen == tp.DEALER_DISTRIBUTED
            )
        elif not isinstance(self.threshold, int) or self.threshold < 1:
            raise ConfigError(f"threshold must be an int >= 1, got {self.threshold!r}")
        if self.obfuscation != "standard":
            raise ConfigError(
                f"threshold Paillier supports obfuscation 'standard' only, got {self.obfuscation!r}"
            )


@dataclass(frozen=True)
class Federation:
    """What setup provisions once per federation: the committee key and the clients' identities."""

    public: tp.ThresholdPublicKey
    shares: tuple[tp.KeyShare, ...]
    signing_keys: tuple[bytes, ...]
    verification_keys: tuple[bytes, ...]
    keygen_seconds: float


# ---------------------------------------------------------------------------------
# Wire


def upload_statement(round_id: int, client: int, key_fingerprint: bytes, update_bytes: bytes) -> bytes:
    """What a client signs: round id, client id, key fingerprint, SHA-256 of its upload."""
    return (
        round_id.to_bytes(4, "big")
        + client.to_bytes(4, "big")
        + key_fingerprint
        + hashlib.sha256(update_bytes).digest()
    )


@dataclass(frozen=True)
class UploadSignature(Payload):
    """A client's signature over its upload, to the server. Layout: 64-byte Ed25519 signature."""

    msg_type: ClassVar[int] = 20
    signature: bytes

    def to_bytes(self) -> bytes:
        return Writer().raw(self.signature).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> UploadSignature:
        reader = Reader(data, "UploadSignature")
        signature = reader.raw(signing.SIGNATURE_BYTES, "signature")
        reader.done()
        return cls(signature)


@dataclass(frozen=True)
class SumRequest(Payload):
    """The server's request to a committee member: the included clients' signed uploads.

    Layout: key fingerprint (32) | :class:`~protocols.paillier.Layout` (31) | u32 k |
    k x (u32 client id, 64-byte signature), ids ascending | k x ``count`` ciphertexts of
    ``width`` bytes (each client's upload body, in id order).
    """

    msg_type: ClassVar[int] = 21
    key_fingerprint: bytes
    layout: Layout
    included: tuple[int, ...]
    signatures: tuple[bytes, ...]
    uploads: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        writer = Writer().raw(self.key_fingerprint)
        self.layout.write(writer)
        writer.u32(len(self.included))
        for client, signature in zip(self.included, self.signatures, strict=True):
            writer.u32(client).raw(signature)
        for blob in self.uploads:
            writer.raw(blob)
        return writer.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> SumRequest:
        reader = Reader(data, "SumRequest")
        key = reader.raw(32, "key fingerprint")
        layout = Layout.read(reader, "SumRequest")
        k = reader.u32("included count")
        body = layout.count * layout.width
        if k * (4 + signing.SIGNATURE_BYTES + body) > len(data):
            raise WireFormatError(f"SumRequest: {k} uploads cannot fit in {len(data)} bytes")
        pairs = [
            (reader.u32("client id"), reader.raw(signing.SIGNATURE_BYTES, "signature")) for _ in range(k)
        ]
        included = tuple(c for c, _ in pairs)
        if list(included) != sorted(set(included)):
            raise WireFormatError("SumRequest: expected ascending distinct client ids")
        uploads = tuple(reader.raw(body, "upload") for _ in range(k))
        reader.done()
        return cls(key, layout, included, tuple(s for _, s in pairs), uploads)


@dataclass(frozen=True)
class PartialMessage(Payload):
    """A committee member's partial decryptions and proof, to the server.

    Layout: u16 share index j | u32 count | u16 width (byte length of N^2) | count x values
    (big-endian) |
    challenge (16 bytes) | u16 response length (width + 192) | response (big-endian).
    """

    msg_type: ClassVar[int] = 22
    index: int
    values: tuple[int, ...]
    width: int
    challenge: int
    response: int

    def to_bytes(self) -> bytes:
        writer = Writer().u16(self.index).u32(len(self.values)).u16(self.width)
        for value in self.values:
            writer.raw(value.to_bytes(self.width, "big"))
        # Fixed width (the byte length of N^2 plus slack for the statistical and challenge
        # bits): the message's length does not depend on the random proof nonce.
        length = min(self.width + RESPONSE_SLACK_BYTES, MAX_RESPONSE_BYTES)
        if self.response.bit_length() > 8 * length:
            raise WireFormatError(
                f"PartialMessage: proof response of {self.response.bit_length()} bits is too long"
            )
        response = self.response.to_bytes(length, "big")
        writer.raw(self.challenge.to_bytes(PROOF_CHALLENGE_BYTES, "big")).u16(len(response)).raw(response)
        return writer.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> PartialMessage:
        reader = Reader(data, "PartialMessage")
        index = reader.u16("share index")
        count = reader.u32("count")
        width = reader.u16("width")
        if count == 0 or width < 16 or count * width > len(data):
            raise WireFormatError(
                f"PartialMessage: expected >= 1 partial of >= 16 bytes within {len(data)} bytes, "
                f"got {count} x {width}"
            )
        values = tuple(int.from_bytes(reader.raw(width, "partial"), "big") for _ in range(count))
        challenge = int.from_bytes(reader.raw(PROOF_CHALLENGE_BYTES, "challenge"), "big")
        length = reader.u16("response length")
        if length > MAX_RESPONSE_BYTES:
            raise WireFormatError(
                f"PartialMessage: expected a response <= {MAX_RESPONSE_BYTES} bytes, got {length}"
            )
        response = int.from_bytes(reader.raw(length, "response"), "big")
        reader.done()
        return cls(index, values, width, challenge, response)


def phe_decode(encoding: int, n: int, exponent: int) -> int | float:
    """python-paillier's ``EncodedNumber.decode``: a mantissa in [-max_int, max_int] (max_int =
    n // 3 - 1, negatives wrapped to the top of Z_n) times 16^exponent; OverflowError between."""
    max_int = n // 3 - 1
    if encoding >= n - max_int:
        mantissa = encoding - n
    elif encoding <= max_int:
        mantissa = encoding
    else:
        raise OverflowError("phe encoding: overflow (the sum left the encoding's range)")
    if exponent >= 0:
        return mantissa * PHE_BASE**exponent
    return mantissa / PHE_BASE ** (-exponent)


def sum_context(
    round_id: int, public: tp.ThresholdPublicKey, included: Sequence[int], product: bytes
) -> bytes:
    """What a partial decryption's proof is bound to: the round, the key, the included set, the sum."""
    h = hashlib.sha256(b"secagg/paillier-threshold/sum")
    h.update(round_id.to_bytes(4, "big") + public.fingerprint() + len(included).to_bytes(4, "big"))
    for client in included:
        h.update(client.to_bytes(4, "big"))
    h.update(hashlib.sha256(product).digest())
    return h.digest()


def _product(blobs: Sequence[bytes], n: int, what: str) -> list[Any]:
    nsquare = gmpy2.mpz(n) * gmpy2.mpz(n)
    product: list[Any] | None = None
    for blob in blobs:
        ciphertexts = decode_ciphertexts(blob, n, what=what)
        product = (
            ciphertexts
            if product is None
            else [gmpy2.f_mod(a * b, nsquare) for a, b in zip(product, ciphertexts, strict=True)]
        )
    return product or []


# ---------------------------------------------------------------------------------
# Parties


class ThresholdClient(PaillierClient):
    """A client: encrypts under the committee key and signs its upload; committee members
    (clients 0 .. c-1) also answer the server's decryption request."""

    def __init__(
        self, party_id: int, update: np.ndarray, weight: float, spec: RoundSpec,
        config: ThresholdPaillierConfig, federation: Federation, *, naive: bool,
    ) -> None:  # fmt: skip
        super().__init__(party_id, update, weight, spec, config, naive=naive)
        self._tconfig = config
        self._federation = federation
        self._public = federation.public
        self._share = federation.shares[party_id] if party_id < federation.public.parties else None
        self._signing_key = federation.signing_keys[party_id]
        self._fingerprint = fingerprint(self._public.n)
        # A committee member partially decrypts only a sum of clients that trained on its model.
        self.binding_ledger = BindingLedger(self.name) if self._share is not None else None

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if self.binding_ledger is not None:
            inbox = self.binding_ledger.take(inbox)
        if stage == "precompute":
            # The key was provisioned at setup: what the single-key round's "keys" stage delivers.
            self._key = PublicKeyMessage(
                self._config.key_bits, self._public.n, OBFUSCATION_CODES["standard"], 0
            )
            self._layout = plan_layout(
                self._config, n=self._public.n, n_clients=self._spec.n_clients,
                n_params=self._spec.n_params, naive=self._naive,
            )  # fmt: skip
            if not self._naive:
                self._obfuscators = precompute_obfuscators(self._layout.count, self._key, self._config)
            if inbox:
                raise ProtocolStateError(
                    f"{self.name}: expected no message at 'precompute', got {len(inbox)}"
                )
            return []
        if stage == "upload":
            update = self._encrypt()
            statement = upload_statement(
                self._spec.round_id, self.party_id, self._fingerprint, update.to_bytes()
            )
            signature = signing.sign(self._signing_key, statement, context=SIGN_CONTEXT)
            sent = [Envelope(SERVER, update), Envelope(SERVER, UploadSignature(signature))]
            if self.binding:  # to every committee member, who checks before decrypting
                if self.binding_ledger is not None:
                    self.binding_ledger.bindings[self.party_id] = self.binding
                sent += [
                    Envelope(member, binding_message(self.binding))
                    for member in range(self._public.parties)
                    if member != self.party_id
                ]
            return sent
        if stage == "decrypt":
            return self._answer(inbox)
        if inbox:
            raise ProtocolStateError(f"{self.name}: expected no message at {stage!r}, got {len(inbox)}")
        return []

    def _answer(self, inbox: Sequence[Inbound]) -> list[Envelope]:
        if self._share is None:
            if inbox:
                raise ProtocolStateError(f"{self.name}: not on the committee, got a decryption request")
            return []
        requests = [m for m in inbox if isinstance(m.payload, SumRequest) and m.sender == SERVER]
        if len(requests) != len(inbox) or len(requests) > 1:
            raise SumCheckError(
                f"{self.name}: expected one SumRequest from the server, got {len(inbox)} messages",
                party=SERVER,
            )
        if not requests:
            return []  # the server asked someone else
        request = requests[0].payload
        if not isinstance(request, SumRequest):
            raise ProtocolStateError(f"{self.name}: expected a SumRequest")
        product = self.check_request(request)
        if self.binding_ledger is not None:
            self.binding_ledger.require(request.included)
        context = sum_context(
            self._spec.round_id,
            self._public,
            request.included,
            ciphertexts_to_bytes(product, request.layout.width),
        )
        partial = tp.partial_decrypt(
            self._share, [int(c) for c in product], context=context, workers=self._config.resolved_workers()
        )
        width = request.layout.width
        return [
            Envelope(
                SERVER,
                PartialMessage(partial.index, partial.values, width, partial.challenge, partial.response),
            )
        ]

    def check_request(self, request: SumRequest) -> list[Any]:
        """The product of the request's signed uploads, or :class:`SumCheckError` naming who is at fault."""
        config = self._tconfig
        if request.key_fingerprint != self._fingerprint:
            raise SumCheckError(
                f"{self.name}: the sum is under another key than the committee's", party=SERVER
            )
        expected = plan_layout(
            config,
            n=self._public.n,
            n_clients=self._spec.n_clients,
            n_params=self._spec.n_params,
            naive=self._naive,
        )
        if request.layout != expected:
            raise SumCheckError(
                f"{self.name}: expected layout {expected}, got {request.layout}", party=SERVER
            )
        if len(request.included) < config.min_clients:
            raise SumCheckError(
                f"{self.name}: expected a sum over at least min_clients={config.min_clients} "
                f"distinct clients, got {len(request.included)}; refusing to decrypt",
                party=SERVER,
            )
        if any(c >= self._spec.n_clients for c in request.included):
            raise SumCheckError(
                f"{self.name}: the sum names unknown clients {list(request.included)}", party=SERVER
            )
        for client, signature, blob in zip(
            request.included, request.signatures, request.uploads, strict=True
        ):
            update = EncryptedUpdate(request.key_fingerprint, request.layout, blob)
            statement = upload_statement(self._spec.round_id, client, self._fingerprint, update.to_bytes())
            try:
                signing.verify(
                    self._federation.verification_keys[client],
                    statement,
                    signature,
                    context=SIGN_CONTEXT,
                    what=f"{party_name(client)}'s upload",
                )
            except IntegrityError as exc:
                raise SumCheckError(
                    f"{self.name}: {party_name(client)}'s upload in the sum is not the one it signed for "
                    f"round {self._spec.round_id} (altered, replayed or forged by the server): {exc}",
                    party=SERVER,
                ) from None
        return _product(request.uploads, self._public.n, f"{self.name}: SumRequest")

    def holdings(self) -> list[Holding]:
        held = super().holdings()
        held.append(Holding("signing_key", self._signing_key, secret=True))
        if self._share is not None:
            held.append(Holding("key_share", self._share, secret=True))
        return held


class ThresholdServer(Party):
    """Multiplies signed uploads, asks the committee for partials, verifies them and combines."""

    role = "server"

    def __init__(
        self, spec: RoundSpec, config: ThresholdPaillierConfig, federation: Federation, *, naive: bool
    ) -> None:
        super().__init__(SERVER)
        self._spec = spec
        self._config = config
        self._federation = federation
        self._public = federation.public
        self._naive = naive
        self._fingerprint = fingerprint(self._public.n)
        self._layout = plan_layout(
            config, n=self._public.n, n_clients=spec.n_clients, n_params=spec.n_params, naive=naive
        )
        self._included: tuple[int, ...] = ()
        self._product: list[Any] = []
        self._revealed: Revealed | None = None
        self.rejected_clients: dict[int, str] = {}
        self.rejected_decryptors: dict[int, str] = {}
        self.total_weight: float | None = None

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage == "aggregate":
            return self._aggregate(inbox)
        if stage == "combine":
            self._combine(inbox)
        elif inbox:
            raise ProtocolStateError(f"server: expected no message at {stage!r}, got {len(inbox)}")
        return []

    def _aggregate(self, inbox: Sequence[Inbound]) -> list[Envelope]:
        updates: dict[int, EncryptedUpdate] = {}
        signatures: dict[int, bytes] = {}
        for message in inbox:
            sender, payload = message.sender, message.payload
            if not 0 <= sender < self._spec.n_clients:
                raise ProtocolStateError(
                    f"server: expected uploads from clients, got one from {party_name(sender)}"
                )
            if isinstance(payload, EncryptedUpdate):
                updates[sender] = payload
            elif isinstance(payload, UploadSignature):
                signatures[sender] = payload.signature
        included, blobs, sigs = [], [], []
        for client in sorted(updates):
            update = updates[client]
            reason = ""
            if client not in signatures:
                reason = "no signature"
            elif update.key_fingerprint != self._fingerprint or update.layout != self._layout:
                reason = "another key or layout"
            else:
                statement = upload_statement(
                    self._spec.round_id, client, self._fingerprint, update.to_bytes()
                )
                try:
                    signing.verify(
                        self._federation.verification_keys[client],
                        statement,
                        signatures[client],
                        context=SIGN_CONTEXT,
                        what=f"{party_name(client)}'s upload",
                    )
                    decode_ciphertexts(
                        update.ciphertexts, self._public.n, what=f"{party_name(client)}'s upload"
                    )
                except (IntegrityError, WireFormatError) as exc:
                    reason = str(exc)
            if reason:
                self.rejected_clients[client] = reason  # a bad client never aborts the others
                continue
            included.append(client)
            blobs.append(update.ciphertexts)
            sigs.append(signatures[client])
        if len(included) < self._config.min_clients:
            raise NotEnoughClientsError(
                f"server: expected signed uploads from at least min_clients={self._config.min_clients} "
                f"clients, got {len(included)}"
            )
        self._included = tuple(included)
        self._product = _product(blobs, self._public.n, "server")
        request = SumRequest(self._fingerprint, self._layout, self._included, tuple(sigs), tuple(blobs))
        return [Envelope(j, request) for j in range(self._public.parties)]

    def _combine(self, inbox: Sequence[Inbound]) -> None:
        public = self._public
        context = sum_context(
            self._spec.round_id,
            public,
            self._included,
            ciphertexts_to_bytes(self._product, self._layout.width),
        )
        ciphertexts = [int(c) for c in self._product]
        valid: list[tp.PartialDecryption] = []
        for message in sorted(inbox, key=lambda m: m.sender):
            payload, sender = message.payload, message.sender
            if not isinstance(payload, PartialMessage) or not 0 <= sender < self._public.parties:
                raise ProtocolStateError(
                    f"server: expected PartialMessages from committee members, got "
                    f"{type(payload).__name__} from {party_name(sender)}"
                )
            # Share j belongs to client j - 1: a member may not answer with another's index.
            partial = tp.PartialDecryption(payload.index, payload.values, payload.challenge, payload.response)
            try:
                if payload.index != sender + 1:
                    raise tp.PartialDecryptionError(
                        f"{party_name(sender)} answered with share index {payload.index}, "
                        f"expected {sender + 1}",
                        party=payload.index,
                    )
                tp.verify_partial(public, ciphertexts, partial, context=context)
            except tp.PartialDecryptionError as exc:
                self.rejected_decryptors[sender] = str(exc)
                continue
            valid.append(partial)
        if len(valid) < public.threshold:
            if self.rejected_decryptors:
                bad = sorted(self.rejected_decryptors)
                raise tp.PartialDecryptionError(
                    f"server: {len(valid)} valid partial decryptions, expected >= t={public.threshold}; "
                    f"bad partials from {[party_name(b) for b in bad]}: "
                    f"{'; '.join(self.rejected_decryptors[b] for b in bad)}; nothing is decrypted",
                    party=bad[0],
                )
            raise tp.NotEnoughDecryptorsError(
                f"server: expected partial decryptions from >= t={public.threshold} committee members, "
                f"got {len(valid)}; nothing is decrypted"
            )
        plaintexts = tp.combine(public, ciphertexts, valid, context=context, verify=False)
        if self._naive:
            aggregate, total = self._decode_naive(plaintexts)
        else:
            aggregate, units = decode_packed(
                plaintexts, self._layout, max_total_weight=len(self._included) * self._config.max_weight_units
            )
            total = units / 2.0**self._layout.weight_frac_bits
        self.total_weight = total
        self._revealed = Revealed(aggregate, self._included)

    def _decode_naive(self, plaintexts: Sequence[int]) -> tuple[np.ndarray, float]:
        n = self._public.n
        exponent = self._layout.exponent
        values = np.array([phe_decode(m, n, exponent) for m in plaintexts[:-1]], dtype=np.float64)
        total_units = phe_decode(plaintexts[-1], n, 0)
        if not (
            isinstance(total_units, int)
            and 1 <= total_units <= len(self._included) * self._config.max_weight_units
        ):
            raise IntegrityError(f"server: expected a positive integer total weight, got {total_units!r}")
        return values / float(total_units), total_units / 2.0**self._layout.weight_frac_bits

    def output(self) -> Revealed | None:
        return self._revealed

    def holdings(self) -> list[Holding]:
        return [
            Holding("threshold_public_key", self._public, secret=False),
            Holding("keygen", self._public.dealer, secret=False),
            Holding("rejected_decryptors", dict(self.rejected_decryptors), secret=False),
        ]


# ---------------------------------------------------------------------------------
# Protocols


_THRESHOLD_THREAT = ThreatModel(
    keys=(
        "the Paillier decryption key exists only as Shamir shares held by a committee of c clients, "
        "generated without a dealer (Boneh-Franklin modulus, Nishide-Sakurai exponent); any t decrypt, "
        "t - 1 learn nothing; clients sign their uploads under pinned Ed25519 identity keys"
    ),
    server_sees=(
        "each client's ciphertexts and signature, the committee's partial decryptions and proofs, "
        "and the revealed weighted mean; never an individual plaintext"
    ),
    collusion=(
        "the server with t - 1 committee members learns nothing beyond the mean; with t members it "
        "decrypts every client's upload"
    ),
    dropouts="any number of clients (at least min_clients signed uploads); at least t committee members",
    min_clients=2,
    notes="DCR assumption; keys reused across rounds of one federation (see protocols.threshold_paillier)",
)


class _ThresholdBase(_PaillierBase):
    """Round parties and observers shared by the packed and naive threshold protocols.

    A Paillier protocol itself (so its overrides are checked against the Paillier base's
    declarations), listed first among each protocol's bases so that its round wins over
    the key-holder round of PaillierPacked / PaillierNaive, whose encoding it keeps."""

    stages: ClassVar[tuple[str, ...]] = ("precompute", "upload", "aggregate", "decrypt", "combine")
    offline_stages = frozenset({"precompute"})
    finalize_stages = frozenset({"decrypt", "combine"})
    threat_model = _THRESHOLD_THREAT
    payload_types: ClassVar[tuple[type[Payload], ...]] = (
        EncryptedUpdate, UploadSignature, SumRequest, PartialMessage, ModelBinding,
    )  # fmt: skip
    supports_binding = True
    aggregate_holder = SERVER
    provisioning: ClassVar[Provisioning] = "dealer"
    Config = ThresholdPaillierConfig
    state_types: ClassVar[tuple[type, ...]] = (
        ThresholdClient, ThresholdServer, Layout, PublicKeyMessage, Federation,
        tp.ThresholdPublicKey, tp.KeyShare, ThresholdPaillierConfig, BindingLedger,
    )  # fmt: skip
    # Test rounds have two to a few clients: every client on the committee, t = 2, which the
    # dealer-free generation cannot make with two clients (it needs c >= 2t - 1), so the fast
    # path is the labelled insecure dealer.
    fast_config: ClassVar[dict[str, Any]] = {
        "key_bits": 256, "insecure_allow_small_keys": True, "workers": 1, "committee": 0, "threshold": 2,
        "keygen": tp.DEALER_INSECURE,
    }  # fmt: skip
    # A cost probe needs keys of the configured size, not how they were made: the dealer's
    # take under a second at 2048 bits, the dealer-free generation about a minute.
    cost_probe_overrides: ClassVar[dict[str, Any]] = {"keygen": tp.DEALER_INSECURE}
    config: ThresholdPaillierConfig
    naive: ClassVar[bool]
    name: ClassVar[str]
    _federation: Federation | None = None

    def federation(self, n_clients: int) -> Federation:
        """The committee key and client identities, made at the first round and reused after."""
        config = self.config
        cached = self._federation
        committee = cached.public.parties if cached is not None else (config.committee or n_clients)
        if n_clients < committee:
            raise ConfigError(f"{self.name}: committee of {committee} needs as many clients, got {n_clients}")
        if cached is not None and len(cached.signing_keys) >= n_clients:
            return cached
        if cached is not None:
            public, shares, seconds = cached.public, cached.shares, cached.keygen_seconds
        else:
            make = (
                tp.distributed_keygen
                if config.keygen == tp.DEALER_DISTRIBUTED
                else tp.insecure_trusted_dealer
            )
            public, share_list, stats = make(committee, config.threshold, config.key_bits)
            shares, seconds = tuple(share_list), stats.seconds
        identities = [signing.generate_signing_keypair() for _ in range(n_clients)]
        federation = Federation(
            public, shares, tuple(p for p, _ in identities), tuple(v for _, v in identities), seconds
        )
        self._federation = federation
        return federation

    def make_parties(
        self, updates: Sequence[np.ndarray], weights: Sequence[float] | None, spec: RoundSpec
    ) -> list[Party]:
        federation = self.federation(spec.n_clients)
        server = ThresholdServer(spec, self.config, federation, naive=self.naive)
        parties: list[Party] = [
            ThresholdClient(
                i,
                update,
                1.0 if weights is None else float(weights[i]),
                spec,
                self.config,
                federation,
                naive=self.naive,
            )
            for i, update in enumerate(updates)
        ]
        parties.append(server)
        return parties

    def colluding_parties(self) -> tuple[int, ...]:
        committee = self._federation.public.parties if self._federation else self.config.committee
        return (SERVER, *range(committee))

    def collude(self, views: Mapping[int, View], spec: RoundSpec) -> list[Observation]:
        """The server with t - 1 and with t committee members try to open every client's upload
        with the members' pooled key shares (interpolating over the shares they have)."""
        if SERVER not in views:
            return []
        shares = []
        for member in range(len(views)):
            if member in views:
                for item in views[member].holdings:
                    if item.name == "key_share" and isinstance(item.value, tp.KeyShare):
                        shares.append(item.value)
        uploads = {
            r.header.sender: r.payload
            for r in views[SERVER].received
            if isinstance(r.payload, EncryptedUpdate)
        }
        t = self.config.threshold
        sizes = [size for size in sorted({max(1, t - 1), t}) if len(shares) >= size]
        if not sizes:
            return []
        # Each member's partials of a client's upload are computed once and reused by every
        # coalition it belongs to (the t - 1 coalition is a prefix of the t coalition).
        opened: dict[int, dict[int, tuple[np.ndarray, str]]] = {size: {} for size in sizes}
        public = shares[0].public
        for client in sorted(uploads):
            raw = uploads[client].ciphertexts
            ciphertexts = [int(c) for c in decode_ciphertexts(raw, public.n, what="upload")]
            powers = {share.index: tp.share_powers(share, ciphertexts) for share in shares[: sizes[-1]]}
            for size in sizes:
                coalition = {share.index: powers[share.index] for share in shares[:size]}
                opened[size][client] = _open_with(public, coalition, uploads[client], spec, self.config,
                                                  naive=self.naive)
        found: list[Observation] = []
        for size in sizes:
            observer = f"colluding: server + {size} decryptors ({'t' if size == t else 't-1'})"
            for client, (vector, note) in opened[size].items():
                found.append(
                    Observation(
                        observer,
                        f"{party_name(client)} (pooled key shares)",
                        (client,),
                        "colluding",
                        vector,
                        note=note,
                    )
                )
        return found


def _open_with(
    public: tp.ThresholdPublicKey,
    coalition: Mapping[int, Sequence[int]],
    update: EncryptedUpdate,
    spec: RoundSpec,
    config: ThresholdPaillierConfig,
    *,
    naive: bool,
) -> tuple[np.ndarray, str]:
    """Combine the coalition's partials of one upload (index -> partials) as if they were t."""
    n = public.n
    plaintexts = tp.interpolate_partials(public, coalition, strict=False)
    note = f"{len(coalition)} of t={public.threshold} key shares combined"
    layout = update.layout
    if layout.encoding == ENCODING_NAIVE or naive:
        try:
            weight = phe_decode(plaintexts[-1], n, 0)
            values = [phe_decode(m, n, layout.exponent) for m in plaintexts[:-1]]
            vector = np.asarray(values, dtype=np.float64) / float(weight)
        except (OverflowError, ZeroDivisionError, ValueError):
            vector = np.asarray([m / n * 2 - 1 for m in plaintexts[:-1]], dtype=np.float64) * config.clip
            note += "; not a decryption"
        return np.clip(np.nan_to_num(vector), -config.clip, config.clip)[: spec.n_params], note
    try:
        vector, _ = decode_packed(plaintexts, layout, max_total_weight=config.max_weight_units)
    except IntegrityError:
        mask = (1 << (layout.slots * layout.slot_bits)) - 1
        slots = unpack(
            [m & mask for m in plaintexts],
            slot_bits=layout.slot_bits,
            slots=layout.slots,
            count=layout.n_params,
        )
        vector = (slots.astype(np.float64) / 2.0**layout.slot_bits * 2 - 1) * config.clip
        note += "; not a decryption"
    return np.asarray(vector, dtype=np.float64)[: spec.n_params], note


class PaillierThreshold(_ThresholdBase, PaillierPacked):
    """Packed Paillier FedAvg decrypted by any t of a c-client committee (no key holder)."""

    name = "paillier-threshold"
    wire_id = 12
    summary = "packed Paillier, key shared t-of-c by a client committee (dealer-free keygen); no key holder"


class PaillierNaiveThreshold(_ThresholdBase, PaillierNaive):
    """One phe ciphertext per parameter, decrypted by any t of a c-client committee."""

    name = "paillier-naive-threshold"
    wire_id = 13
    summary = "naive Paillier (one ciphertext per value), key shared t-of-c by a client committee"
