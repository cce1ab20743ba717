"""CKKS homomorphic aggregation with TenSEAL: clients encrypt, the server adds, a key holder decrypts.

Follows the scheme of Cheon, Kim, Kim, Song ("Homomorphic Encryption for Arithmetic of
Approximate Numbers", ASIACRYPT 2017) as implemented by Microsoft SEAL through TenSEAL
(Benaissa et al. 2021), used the way NVFlare's HE filters use it and the way the 2020
Acta Automatica Sinica paper on privacy-preserving federated DNNs (after Phong et al.
2017) prescribes: clients send their update encrypted under one shared key and the
server only adds ciphertexts. Parameters come from :mod:`protocols.ckks_params`: one
data prime plus the special prime (additions only), chosen for 128-bit security from
the precision, the number of clients and the clip; NVFlare's N=8192, [60, 40, 40],
Δ=2^40 is the ``nvflare`` preset for comparison.

Rounds: ``upload`` (each client checks |x| <= clip, chunks its flat update into ciphertexts of
N/2 slots and sends them to the server), ``aggregate`` (the server deserialises each
client's ciphertexts with its public context and adds them chunk by chunk; a client whose
ciphertexts do not load is left out), ``decrypt`` (the server sends the summed
ciphertexts and the list of clients in the sum to the key holder, which refuses a sum
of fewer than ``min_clients`` clients and otherwise decrypts and reveals the aggregate).

Threat model.

* Keys: one CKKS secret key, generated for the federation and provisioned out of band to
  every client and to ``KEY_HOLDER`` (a designated client-side party), as NVFlare's
  provisioning does with its startup kits. The server holds only the public context:
  the parameters, made public with ``make_context_public()`` and serialised without the
  secret, public, relinearisation or Galois keys (additions need none of them).
* What the server sees: every client's ciphertexts (RLWE samples: indistinguishable
  from random without the secret key, IND-CPA), their sizes (so n_params) and the chunk
  layout; it learns nothing of any update and, within the round, never sees the
  aggregate (a deployment hands it back: see "Released decryptions" below). The key holder
  sees the summed ciphertexts and the aggregate, never an individual ciphertext.
* Collusion: any client holds the secret key and could decrypt any other client's
  ciphertext if it saw it, as in NVFlare. This protocol never sends a client's
  ciphertext to anyone but the server, and clients receive nothing; so the server
  colluding with any one client (or with the key holder) reads every update. The
  server is assumed honest-but-curious: a malicious server could send the key holder a
  single client's ciphertext while claiming it is the sum of several, and the key holder
  would decrypt it; the ``included`` list it checks is the server's word.
* Dropouts: any number; a client that never sends is not in the sum, a ciphertext the
  router refuses (corrupted, replayed, another round's) or the server cannot load is
  left out (as is a client that sends another message type; the server's ``left_out``
  names each with the reason); the aggregate is over the clients that arrived, provided at least
  ``min_clients`` (default 2) did.
* Minimum clients: ``min_clients`` (>= 2 by default; the key holder enforces it).
* No threshold decryption: TenSEAL exposes none, and OpenFHE's Python wheels (which have
  threshold CKKS) target other platforms and Python versions than ours (3.11), so the key
  holder stays; ``paillier-threshold`` is the protocol whose key no single party holds.
* Clients are trusted to clip: nothing proves what a ciphertext holds, so a malicious
  client can poison the sum or push it past the data modulus (it then wraps).
* Released decryptions (IND-CPA^D). The decrypted aggregate goes back to the server (it
  is the model update the server applies), so the server sees decryptions of
  ciphertexts it chose: the setting of Li and Micciancio ("On the Security of
  Homomorphic Encryption on Approximate Numbers", EUROCRYPT 2021). A CKKS decryption
  is m + e with e a function of the secret key; a server that knows m (it can submit,
  as the "sum", ciphertexts of its own making) learns e and, from enough such
  releases, the secret key shared by every client, and with it every client's past and
  future uploads. IND-CPA says nothing about this. The counter-measure is noise
  flooding of what is released: ``flood_bits`` s > 0 has the key holder add, to every
  released coordinate, independent noise uniform on [-2^s B, 2^s B] from the OS CSPRNG,
  B the sum's decryption-noise bound (:meth:`CkksParameters.noise_bound`); e is then
  hidden up to statistical distance 2^-s per coordinate (the flooding argument; Li,
  Micciancio, Schorr and Walter, CRYPTO 2022, analyse how much is enough), and the
  release is within (2^s + 1) B of the sum (:meth:`CKKS.precision`), so a precision
  target must leave s bits for it (``precision`` 2^-s times tighter). Off by default
  (``flood_bits=0``): the default deployment assumes the server does not submit
  ciphertexts of its own.

CKKS is approximate: the revealed sum differs from the float64 sum by at most
:meth:`CKKS.precision` (see the noise model in :mod:`protocols.ckks_params`). TenSEAL
contexts cannot be pickled or forked; parallelism is TenSEAL's own ``n_threads``, which
on the 2-core machine made no measurable difference to encryption, addition or decryption
(1.03x, 1.00x, 0.99x for 2 threads over 1: benchmarks/ckks.py), since each chunk is its own
small ciphertext; it is kept as a configuration knob (default 1).
"""

from __future__ import annotations

import math
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import tenseal as ts

from protocols.ckks_params import CkksParameters, nvflare_parameters, plan_parameters
from secagg.binding import BindingLedger, ModelBinding, binding_message
from secagg.errors import (
    ConfigError,
    EncodingOverflowError,
    NotEnoughClientsError,
    ProtocolStateError,
    WireFormatError,
)
from secagg.observe import Reading
from secagg.party import KEY_HOLDER, SERVER, Envelope, Holding, Inbound, Party, Revealed
from secagg.protocol import Protocol, RoundSpec, ThreatModel
from secagg.state import LeafCodec
from secagg.wire import Payload, Reader, Writer

PRESETS = ("planned", "nvflare")

# SEAL's serialisation header (seal/serialization.h): magic, header size, version,
# compression mode, reserved, total size.
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_SEAL_MAGIC = 0xA15E
_SEAL_MAJOR = 4
_COMPRESSION_MAGIC = {0: b"", 1: b"\x78", 2: b"\x28\xb5\x2f\xfd"}  # none, zlib, zstd
# TenSEAL's CKKSVectorProto (tenseal/proto/tensors.proto) tags as TenSEAL writes them:
# field 1 packed uint32 sizes, field 2 bytes ciphertexts, field 3 double scale.
_TAG_SIZES, _TAG_CIPHERTEXT, _TAG_SCALE = 0x0A, 0x12, 0x19


@dataclass(frozen=True)
class CKKSConfig:
    """Parameters of the CKKS round.

    ``preset``: 'planned' (the planner's choice for ``max_clients``, ``clip`` and
    ``precision``) or 'nvflare' (N=8192, [60, 40, 40], Δ=2^40).
    ``poly_modulus_degree``/``coeff_mod_bit_sizes``/``scale_bits``: explicit parameters
    instead of a preset (all three or none; sizes as a tuple or "40,14").
    ``precision``: target max error per client, so the sum of n is within n·precision.
    ``clip``: clients refuse values with |x| > clip. ``min_clients`` (>= 2): the key
    holder's minimum. ``n_threads``: TenSEAL's thread count. ``flood_bits`` s (0: off):
    the key holder floods each released coordinate with uniform noise 2^s times the
    decryption-noise bound (see the module's threat model, IND-CPA^D).
    """

    preset: str = "planned"
    max_clients: int = 100
    clip: float = 4.0
    precision: float = 1e-6
    min_clients: int = 2
    n_threads: int = 1
    poly_modulus_degree: int = 0
    coeff_mod_bit_sizes: tuple[int, ...] | str = ()
    scale_bits: float = 0.0
    insecure_allow_low_security: bool = False
    flood_bits: int = 0

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if not (isinstance(self.max_clients, int) and self.max_clients >= 1):
            raise ConfigError(f"max_clients must be an int >= 1, got {self.max_clients!r}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"clip must be finite and > 0, got {self.clip}")
        if not (math.isfinite(self.precision) and self.precision > 0):
            raise ConfigError(f"precision must be finite and > 0, got {self.precision}")
        # At least 2: the key holder would otherwise decrypt one client's update as a "sum".
        if not (isinstance(self.min_clients, int) and 2 <= self.min_clients <= self.max_clients):
            raise ConfigError(f"min_clients must be in [2, {self.max_clients}], got {self.min_clients!r}")
        if not (isinstance(self.n_threads, int) and 1 <= self.n_threads <= 256):
            raise ConfigError(f"n_threads must be in [1, 256], got {self.n_threads!r}")
        flood = self.flood_bits
        if not (isinstance(flood, int) and not isinstance(flood, bool) and 0 <= flood <= 64):
            raise ConfigError(f"flood_bits must be an int in [0, 64] (0: off), got {self.flood_bits!r}")
        sizes = self.coeff_mod_bit_sizes
        if isinstance(sizes, str):
            try:
                sizes = tuple(int(part) for part in sizes.split(",") if part.strip())
            except ValueError:
                raise ConfigError(
                    f"coeff_mod_bit_sizes: expected comma-separated ints, got {sizes!r}"
                ) from None
            object.__setattr__(self, "coeff_mod_bit_sizes", sizes)
        else:
            object.__setattr__(self, "coeff_mod_bit_sizes", tuple(int(b) for b in sizes))
        explicit = (self.poly_modulus_degree != 0, bool(self.coeff_mod_bit_sizes), self.scale_bits != 0.0)
        if any(explicit) and not all(explicit):
            raise ConfigError(
                "explicit parameters need poly_modulus_degree, coeff_mod_bit_sizes and scale_bits "
                f"together, got {self.poly_modulus_degree}, {self.coeff_mod_bit_sizes}, {self.scale_bits}"
            )
        # Build once here so a bad combination fails at configuration time.
        self.parameters()

    @property
    def explicit(self) -> bool:
        return self.poly_modulus_degree != 0

    def parameters(self) -> CkksParameters:
        """The CKKS parameters this configuration stands for."""
        if self.explicit:
            sizes = self.coeff_mod_bit_sizes
            return CkksParameters(
                self.poly_modulus_degree,
                tuple(int(b) for b in sizes),
                2.0**self.scale_bits,
                name="explicit",
                insecure_allow_low_security=self.insecure_allow_low_security,
            )
        if self.preset == "nvflare":
            return nvflare_parameters()
        return plan_parameters(n_clients=self.max_clients, clip=self.clip, precision=self.precision)


# --------------------------------------------------------------------------- wire format


def _varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    for shift in range(0, 64, 7):
        if pos >= len(data):
            raise WireFormatError(f"{what}: truncated varint at offset {pos}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise WireFormatError(f"{what}: varint longer than 10 bytes")


def _split_ckks_vector(blob: bytes, what: str) -> tuple[int, bytes, float]:
    """Parse TenSEAL's CKKSVectorProto framing exactly as TenSEAL writes it:
    (the one packed size, the one ciphertext, the scale); nothing else may follow."""
    pos = 0
    if not blob or blob[pos] != _TAG_SIZES:
        raise WireFormatError(f"{what}: expected sizes field tag {_TAG_SIZES:#x} first")
    length, pos = _varint(blob, pos + 1, what)
    end = pos + length
    if end > len(blob):
        raise WireFormatError(f"{what}: sizes field of {length} bytes overruns the blob")
    size, pos = _varint(blob, pos, what)
    if pos != end:
        raise WireFormatError(f"{what}: expected exactly one size, got a {length}-byte list")
    if pos >= len(blob) or blob[pos] != _TAG_CIPHERTEXT:
        raise WireFormatError(f"{what}: expected one ciphertext field after the sizes")
    length, pos = _varint(blob, pos + 1, what)
    ciphertext = blob[pos : pos + length]
    if len(ciphertext) != length:
        raise WireFormatError(f"{what}: ciphertext of {length} bytes expected, {len(ciphertext)} present")
    pos += length
    if blob[pos : pos + 1] != bytes([_TAG_SCALE]) or len(blob) != pos + 9:
        raise WireFormatError(f"{what}: expected the scale field and nothing after it at offset {pos}")
    (scale,) = struct.unpack("<d", blob[pos + 1 : pos + 9])
    return size, ciphertext, float(scale)


def check_ckks_vector_bytes(blob: bytes, *, expected_size: int, max_bytes: int, what: str) -> float:
    """Validate one serialised TenSEAL ``CKKSVector`` before TenSEAL sees it.

    Checks the protobuf framing (one packed size equal to ``expected_size``, exactly one
    ciphertext, a finite scale >= 1, nothing else) and the SEAL header of the ciphertext
    (magic, header size, major version, a known compression mode whose stream magic
    follows, a total size equal to the bytes). Returns the scale. Raises
    :class:`WireFormatError` naming what was expected and what came.
    """
    if not 0 < len(blob) <= max_bytes:
        raise WireFormatError(f"{what}: expected 1..{max_bytes} bytes, got {len(blob)}")
    size, ciphertext, scale = _split_ckks_vector(blob, what)
    if size != expected_size:
        raise WireFormatError(f"{what}: expected {expected_size} values, got {size}")
    if not (math.isfinite(scale) and scale >= 1.0):
        raise WireFormatError(f"{what}: expected a finite scale >= 1, got {scale}")
    _check_seal_header(ciphertext, what)
    return scale


def _check_seal_header(ciphertext: bytes, what: str) -> None:
    if len(ciphertext) < _SEAL_HEADER.size + 4:
        raise WireFormatError(
            f"{what}: SEAL ciphertext of at least {_SEAL_HEADER.size + 4} bytes expected, "
            f"got {len(ciphertext)}"
        )
    magic, header_size, major, _minor, mode, reserved, total = _SEAL_HEADER.unpack_from(ciphertext)
    if magic != _SEAL_MAGIC or header_size != _SEAL_HEADER.size or reserved != 0:
        raise WireFormatError(f"{what}: expected a SEAL header (magic {_SEAL_MAGIC:#x}), got {magic:#x}")
    if major != _SEAL_MAJOR:
        raise WireFormatError(f"{what}: expected SEAL serialisation version {_SEAL_MAJOR}, got {major}")
    if mode not in _COMPRESSION_MAGIC:
        raise WireFormatError(
            f"{what}: expected compression mode in {sorted(_COMPRESSION_MAGIC)}, got {mode}"
        )
    if total != len(ciphertext):
        raise WireFormatError(f"{what}: SEAL header says {total} bytes, got {len(ciphertext)}")
    stream = _COMPRESSION_MAGIC[mode]
    if ciphertext[_SEAL_HEADER.size : _SEAL_HEADER.size + len(stream)] != stream:
        raise WireFormatError(f"{what}: compressed stream does not start with its magic")


def _max_blob_bytes(slots: int) -> int:
    # Uncompressed SEAL ciphertext of 2 polys, at most 15 primes of 8 bytes, plus framing.
    return 2 * (2 * slots) * 15 * 8 + 1024


@dataclass(frozen=True)
class ChunkedCiphertexts:
    """A flat vector of ``n_params`` values encrypted in ``ceil(n_params/slots)`` CKKS vectors.

    Layout: u32 n_params | u32 slots | u32 n_chunks | n_chunks × (u32 length | bytes),
    each chunk a TenSEAL-serialised ``CKKSVector`` (protobuf holding one SEAL ciphertext)
    of ``slots`` values, the last one of the remainder. Every chunk is validated
    structurally here (:func:`check_ckks_vector_bytes`); TenSEAL parses it only later.
    """

    n_params: int
    slots: int
    chunks: tuple[bytes, ...]

    def write(self, writer: Writer) -> Writer:
        writer.u32(self.n_params).u32(self.slots).u32(len(self.chunks))
        for chunk in self.chunks:
            writer.blob(chunk)
        return writer

    @classmethod
    def read(cls, reader: Reader, what: str) -> ChunkedCiphertexts:
        n_params = reader.u32("n_params")
        slots = reader.u32("slots")
        n_chunks = reader.u32("n_chunks")
        if slots not in (1024, 2048, 4096, 8192, 16384):
            raise WireFormatError(f"{what}: expected slots N/2 for N in 2048..32768, got {slots}")
        if n_params < 1 or n_chunks != -(-n_params // slots):
            raise WireFormatError(
                f"{what}: expected ceil({n_params}/{slots}) = {-(-n_params // slots)} chunks, got {n_chunks}"
            )
        limit = _max_blob_bytes(slots)
        chunks = []
        for index in range(n_chunks):
            blob = reader.blob(f"chunk {index}", max_len=limit)
            expected = min(slots, n_params - index * slots)
            check_ckks_vector_bytes(
                blob, expected_size=expected, max_bytes=limit, what=f"{what} chunk {index}"
            )
            chunks.append(blob)
        return cls(n_params, slots, tuple(chunks))

    def chunk_sizes(self) -> list[int]:
        return [min(self.slots, self.n_params - i * self.slots) for i in range(len(self.chunks))]

    def nbytes(self) -> int:
        return sum(len(c) for c in self.chunks)


@dataclass(frozen=True)
class EncryptedUpdate(Payload):
    """A client's update, encrypted. Layout: the :class:`ChunkedCiphertexts` layout."""

    msg_type: ClassVar[int] = 1
    ciphertexts: ChunkedCiphertexts

    def to_bytes(self) -> bytes:
        return self.ciphertexts.write(Writer()).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> EncryptedUpdate:
        reader = Reader(data, "EncryptedUpdate")
        ciphertexts = ChunkedCiphertexts.read(reader, "EncryptedUpdate")
        reader.done()
        return cls(ciphertexts)

    def arrays(self) -> dict[str, np.ndarray]:
        # What an observer can take from the message: bytes, no numbers of the update.
        return {"ciphertext_bytes": np.frombuffer(b"".join(self.ciphertexts.chunks), dtype=np.uint8)}


@dataclass(frozen=True)
class EncryptedSum(Payload):
    """The server's sum for the key holder, with the clients it claims are in it.

    Layout: array included (u4, strictly increasing client ids) | the
    :class:`ChunkedCiphertexts` layout.
    """

    msg_type: ClassVar[int] = 2
    included: tuple[int, ...]
    ciphertexts: ChunkedCiphertexts

    def to_bytes(self) -> bytes:
        writer = Writer().array(np.asarray(self.included, dtype="<u4"))
        return self.ciphertexts.write(writer).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> EncryptedSum:
        reader = Reader(data, "EncryptedSum")
        ids = reader.array("included", dtype="<u4")
        if ids.size and not np.all(np.diff(ids.astype(np.int64)) > 0):
            raise WireFormatError("EncryptedSum: expected strictly increasing client ids")
        ciphertexts = ChunkedCiphertexts.read(reader, "EncryptedSum")
        reader.done()
        return cls(tuple(int(i) for i in ids), ciphertexts)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "included": np.asarray(self.included, dtype=np.uint32),
            "ciphertext_bytes": np.frombuffer(b"".join(self.ciphertexts.chunks), dtype=np.uint8),
        }


def observable_vector(
    payload: EncryptedUpdate | EncryptedSum | ChunkedCiphertexts | bytes, n_params: int
) -> np.ndarray:
    """What an attacker without the key can make of ciphertexts: a float vector of length
    ``n_params`` shaped like the update. ``payload`` is a decoded payload or its bytes
    (an :class:`EncryptedUpdate` or :class:`EncryptedSum` body, without the wire header).

    The SEAL ciphertext bytes of every chunk (headers stripped; zstd-compressed RLWE
    coefficients) are read as little-endian uint64 words and scaled to [-1, 1); the first
    ``n_params`` words are taken, repeating the stream if it is shorter. Without the
    secret key these words are indistinguishable from uniform, so the vector is noise
    with no relation to the update: this is the "ciphertext view" the leakage assessment
    points attacks at.
    """
    if n_params < 1:
        raise ConfigError(f"n_params must be >= 1, got {n_params}")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        payload = _decode_ciphertext_payload(bytes(payload))
    chunked = payload if isinstance(payload, ChunkedCiphertexts) else payload.ciphertexts
    stream = b"".join(_seal_body(chunk) for chunk in chunked.chunks)
    words = np.frombuffer(stream[: len(stream) // 8 * 8], dtype="<u8")
    if words.size == 0:
        raise WireFormatError("observable_vector: no ciphertext bytes in the payload")
    if words.size < n_params:
        words = np.resize(words, n_params)
    return words[:n_params].astype(np.float64) / 2.0**63 - 1.0


def _decode_ciphertext_payload(data: bytes) -> EncryptedUpdate | EncryptedSum:
    try:
        return EncryptedUpdate.from_bytes(data)
    except WireFormatError:
        return EncryptedSum.from_bytes(data)


def _seal_body(chunk: bytes) -> bytes:
    """The SEAL ciphertext body of a validated chunk (after its 16-byte header)."""
    _, ciphertext, _ = _split_ckks_vector(chunk, "chunk")
    return ciphertext[_SEAL_HEADER.size :]


# --------------------------------------------------------------------------- TenSEAL side


def make_secret_context(params: CkksParameters, n_threads: int = 1) -> ts.Context:
    """A fresh key: the context every client and the key holder share (out of band)."""
    try:
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
            n_threads=n_threads,
        )
    except ValueError as exc:
        # SEAL checks the 128-bit table itself; insecure parameters end here too.
        raise ConfigError(
            f"TenSEAL refused N={params.poly_modulus_degree}, chain {list(params.coeff_mod_bit_sizes)}: {exc}"
        ) from exc
    context.global_scale = params.scale
    return context


def public_context_bytes(secret: ts.Context) -> bytes:
    """The server's context: parameters only, no secret (nor any other) key."""
    public = secret.copy()
    public.make_context_public()
    return bytes(
        public.serialize(
            save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
        )
    )


def load_context(data: bytes, n_threads: int = 1) -> ts.Context:
    try:
        context = ts.context_from(data, n_threads=n_threads)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise WireFormatError(f"context of {len(data)} bytes does not load: {exc}") from exc
    return context


def encrypt_update(context: ts.Context, params: CkksParameters, update: np.ndarray) -> ChunkedCiphertexts:
    """Chunk ``update`` into ciphertexts of ``params.slots`` values and serialise them."""
    values = np.asarray(update, dtype=np.float64)
    slots = params.slots
    chunks = tuple(
        bytes(ts.ckks_vector(context, values[start : start + slots]).serialize())
        for start in range(0, values.size, slots)
    )
    return ChunkedCiphertexts(int(values.size), slots, chunks)


def load_ciphertexts(
    context: ts.Context, params: CkksParameters, chunked: ChunkedCiphertexts, *, n_params: int, what: str
) -> list[ts.CKKSVector]:
    """Deserialise validated chunks with ``context``; any mismatch is a WireFormatError."""
    if chunked.n_params != n_params or chunked.slots != params.slots:
        raise WireFormatError(
            f"{what}: expected {n_params} values in chunks of {params.slots}, "
            f"got {chunked.n_params} in chunks of {chunked.slots}"
        )
    vectors = []
    for index, (blob, size) in enumerate(zip(chunked.chunks, chunked.chunk_sizes(), strict=True)):
        scale = check_ckks_vector_bytes(
            blob, expected_size=size, max_bytes=_max_blob_bytes(params.slots), what=what
        )
        if scale != params.scale:
            raise WireFormatError(f"{what} chunk {index}: expected scale {params.scale}, got {scale}")
        try:
            vector = ts.ckks_vector_from(context, blob)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise WireFormatError(f"{what} chunk {index}: TenSEAL cannot load it: {exc}") from exc
        if vector.size() != size:
            raise WireFormatError(f"{what} chunk {index}: expected {size} values, got {vector.size()}")
        vectors.append(vector)
    return vectors


def serialise_vectors(
    vectors: Sequence[ts.CKKSVector], params: CkksParameters, n_params: int
) -> ChunkedCiphertexts:
    return ChunkedCiphertexts(n_params, params.slots, tuple(bytes(v.serialize()) for v in vectors))


# --------------------------------------------------------------------------- parties


class CkksClient(Party):
    role = "client"

    def __init__(
        self, party_id: int, update: np.ndarray, context: ts.Context, params: CkksParameters, clip: float
    ) -> None:
        super().__init__(party_id)
        self._update = update
        self._context = context
        self._params = params
        self._clip = clip

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage != "upload":
            return []
        if not np.all(np.isfinite(self._update)):
            raise EncodingOverflowError(f"client {self.party_id}: expected finite values, got NaN or inf")
        peak = float(np.max(np.abs(self._update))) if self._update.size else 0.0
        if peak > self._clip:
            raise EncodingOverflowError(
                f"client {self.party_id}: expected |x| <= clip {self._clip}, got max |x| {peak:.6g}"
            )
        sent = [Envelope(SERVER, EncryptedUpdate(encrypt_update(self._context, self._params, self._update)))]
        if self.binding:  # straight to the key holder, who checks before decrypting
            sent.append(Envelope(KEY_HOLDER, binding_message(self.binding)))
        return sent

    def holdings(self) -> list[Holding]:
        return [Holding("context", self._context, secret=True)]


class CkksServer(Party):
    """Adds ciphertexts with a context that holds no key at all."""

    role = "server"

    def __init__(self, spec: RoundSpec, context_bytes: bytes, params: CkksParameters, n_threads: int) -> None:
        super().__init__(SERVER)
        self._spec = spec
        self._params = params
        self._context_bytes = context_bytes
        self._context = load_context(context_bytes, n_threads)
        self.left_out: dict[int, str] = {}

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage != "aggregate":
            return []
        total: list[ts.CKKSVector] | None = None
        included = []
        for message in inbox:
            payload = message.payload
            if not 0 <= message.sender < self._spec.n_clients:
                raise ProtocolStateError(f"server: unexpected {type(payload).__name__} from {message.sender}")
            if not isinstance(payload, EncryptedUpdate):
                # A client that sends something else is left out too, never fatal to the others.
                self.left_out[message.sender] = f"expected an EncryptedUpdate, got {type(payload).__name__}"
                continue
            try:
                vectors = load_ciphertexts(
                    self._context,
                    self._params,
                    payload.ciphertexts,
                    n_params=self._spec.n_params,
                    what=f"client {message.sender}",
                )
                total = vectors if total is None else [a + b for a, b in zip(total, vectors, strict=True)]
            except (WireFormatError, ValueError, RuntimeError) as exc:
                # A client whose ciphertexts do not load (or add) is left out, like a dropout.
                self.left_out[message.sender] = str(exc)
                continue
            included.append(message.sender)
        if total is None:
            return []
        summed = serialise_vectors(total, self._params, self._spec.n_params)
        return [Envelope(KEY_HOLDER, EncryptedSum(tuple(sorted(included)), summed))]

    def holdings(self) -> list[Holding]:
        # The context says itself whether it holds a key: the server's must not.
        return [
            Holding("context", self._context, secret=bool(self._context.is_private())),
            Holding("context_bytes", len(self._context_bytes), secret=False),
            Holding("left_out", dict(self.left_out), secret=False),
        ]


class CkksKeyHolder(Party):
    """Holds the secret key; decrypts a sum of at least ``min_clients`` clients."""

    role = "key-holder"

    def __init__(
        self, spec: RoundSpec, context: ts.Context, params: CkksParameters, min_clients: int,
        flood_bits: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(KEY_HOLDER)
        self._spec = spec
        self._context = context
        self._params = params
        self._min_clients = min_clients
        self._flood_bits = flood_bits
        self._revealed: Revealed | None = None
        # The key holder refuses to decrypt a sum over clients that trained on different models.
        self.binding_ledger = BindingLedger("key-holder")

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        inbox = self.binding_ledger.take(inbox)
        if stage != "decrypt":
            return []
        sums = [m.payload for m in inbox if isinstance(m.payload, EncryptedSum) and m.sender == SERVER]
        if len(sums) != len(inbox):
            raise ProtocolStateError("key holder: expected only the server's EncryptedSum")
        if not sums:
            raise NotEnoughClientsError(
                f"key holder: expected a sum of at least {self._min_clients} clients, got none"
            )
        payload = sums[0]
        included = payload.included
        if any(c >= self._spec.n_clients for c in included):
            raise ProtocolStateError(f"key holder: sum names clients outside 0..{self._spec.n_clients - 1}")
        if len(included) < self._min_clients:
            raise NotEnoughClientsError(
                f"key holder: expected a sum of at least {self._min_clients} clients, got {len(included)}"
            )
        self.binding_ledger.require(included)
        vectors = load_ciphertexts(
            self._context, self._params, payload.ciphertexts, n_params=self._spec.n_params, what="sum"
        )
        aggregate = np.concatenate([np.asarray(v.decrypt(), dtype=np.float64) for v in vectors])
        aggregate = aggregate[: self._spec.n_params]
        if self._flood_bits:
            width = self._params.noise_bound(len(included)) * 2.0**self._flood_bits
            aggregate = aggregate + flooding_noise(aggregate.size, width)
        self._revealed = Revealed(aggregate, included)
        return []

    def output(self) -> Revealed | None:
        return self._revealed

    def holdings(self) -> list[Holding]:
        return [Holding("context", self._context, secret=True)]


def flooding_noise(n: int, width: float) -> np.ndarray:
    """``n`` independent values uniform on [-width, width), from the OS CSPRNG.

    53 random bits per value (a double's mantissa), so every representable step of the
    interval is reachable; never ``np.random``: the noise hides a key-dependent error.
    """
    if n < 0 or not (math.isfinite(width) and width >= 0):
        raise ConfigError(f"flooding noise: expected n >= 0 and a finite width >= 0, got {n}, {width}")
    words = np.frombuffer(secrets.token_bytes(8 * n), dtype="<u8") >> np.uint64(11)
    unit = words.astype(np.float64) * 2.0**-53  # [0, 1)
    return (2.0 * unit - 1.0) * width


def _context_bytes(context: ts.Context) -> bytes:
    """A TenSEAL context with exactly the keys it has (asking for a missing one crashes)."""
    return bytes(
        context.serialize(
            save_public_key=bool(context.has_public_key()),
            save_secret_key=bool(context.has_secret_key()),
            save_galois_keys=bool(context.has_galois_keys()),
            save_relin_keys=bool(context.has_relin_keys()),
        )
    )


class CKKS(Protocol[CKKSConfig]):
    """Clients encrypt with a shared CKKS key; the server adds; a key holder decrypts."""

    name = "ckks"
    wire_id = 20
    stages = ("upload", "aggregate", "decrypt")
    finalize_stages = frozenset({"decrypt"})
    late_dropout_stage = "upload"
    aggregate_kind = "sum"
    payload_types = (EncryptedUpdate, EncryptedSum, ModelBinding)
    supports_binding = True
    aggregate_readers = "key-holder and every client (all hold the secret key)"
    server_ids = (SERVER,)
    aggregate_holder = KEY_HOLDER
    summary = "CKKS (TenSEAL) ciphertexts under a shared key, summed by the server, decrypted by a key holder"
    fast_config: ClassVar[dict[str, Any]] = {"max_clients": 16, "clip": 1.0}
    Config = CKKSConfig
    input_bound_field = "clip"
    # Every client shares one secret context, made once by the key holder's node.
    provisioning = "dealer"
    state_types: ClassVar[tuple[type, ...]] = (
        CkksClient, CkksServer, CkksKeyHolder, CkksParameters, BindingLedger,
    )  # fmt: skip
    state_leaves: ClassVar[tuple[LeafCodec, ...]] = (
        LeafCodec("tenseal-context", ts.Context, _context_bytes, ts.context_from),
    )
    threat_model = ThreatModel(
        keys="one CKKS secret key shared by all clients and the key holder (provisioned out of band); "
        "the server holds only the parameters",
        server_sees="every client's CKKS ciphertexts (IND-CPA), never the aggregate",
        collusion="the server with any one client or the key holder decrypts every update; "
        "a malicious server can pass off one client's ciphertext as a sum",
        dropouts="any number; the sum is over the clients whose ciphertexts arrived",
        min_clients=2,
        notes="honest-but-curious server; clients never see each other's ciphertexts; "
        "clients are trusted to clip (a malicious one can poison or wrap the sum); the released "
        "aggregate returns to the server (IND-CPA^D, Li-Micciancio 2021): flood_bits > 0 floods it",
    )

    def __init__(self, config: CKKSConfig | None = None, /, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.params = self.config.parameters()

    def make_parties(
        self, updates: Sequence[np.ndarray], weights: Sequence[float] | None, spec: RoundSpec
    ) -> list[Party]:
        if (
            spec.n_clients > self.config.max_clients
            and not self.config.explicit
            and self.config.preset == "planned"
        ):
            raise ConfigError(
                f"ckks: parameters planned for at most {self.config.max_clients} clients, "
                f"got {spec.n_clients}"
            )
        self.check_capacity(spec.n_clients)
        secret = make_secret_context(self.params, self.config.n_threads)
        parties: list[Party] = [
            CkksClient(i, np.asarray(u, dtype=np.float64), secret, self.params, self.config.clip)
            for i, u in enumerate(updates)
        ]
        parties.append(CkksServer(spec, public_context_bytes(secret), self.params, self.config.n_threads))
        parties.append(
            CkksKeyHolder(spec, secret, self.params, self.config.min_clients, self.config.flood_bits)
        )
        return parties

    def check_capacity(self, n_clients: int) -> None:
        """Raise EncodingOverflowError unless ``n_clients`` values of |x| <= clip always sum
        below q/2 (noise bound included), whatever the parameters came from.

        CKKS has no overflow flag: a sum past the data modulus decrypts to a wrapped,
        plausible-looking number (three clients at 3.9 under N=2048, [40, 14], Δ=2^36 give
        -4.3). The planner sizes its own parameters for ``max_clients``; explicit parameters
        and the ``nvflare`` preset are checked here, before any key or ciphertext exists.
        """
        worst = n_clients * self.config.clip
        capacity = self.params.capacity(n_clients)
        if worst > capacity:
            raise EncodingOverflowError(
                f"ckks: {n_clients} clients x clip {self.config.clip} = {worst:.6g} exceeds the "
                f"{self.params.name} parameters' capacity {capacity:.6g} (q/2 over scale "
                f"2^{math.log2(self.params.scale):.2f}, less the noise bound): the sum would wrap; "
                "lower scale_bits or clip, or add data-modulus bits"
            )

    def precision(self, *, n_clients: int, value_range: float) -> float:
        """The noise bound of :mod:`protocols.ckks_params` for a sum of ``n_clients``, or
        inf when ``n_clients · value_range`` exceeds what the data modulus holds."""
        if value_range > self.config.clip or n_clients * value_range > self.params.capacity(n_clients):
            return math.inf
        flooded = (2.0**self.config.flood_bits + 1) if self.config.flood_bits else 1.0
        return flooded * self.params.noise_bound(n_clients) + 1e-12 * n_clients * value_range

    def read_payload(self, payload: Payload, spec: RoundSpec) -> Reading:
        if isinstance(payload, (EncryptedUpdate, EncryptedSum)):
            return Reading(
                "ciphertext", observable_vector(payload, spec.n_params), "SEAL ciphertext words scaled"
            )
        return super().read_payload(payload, spec)
