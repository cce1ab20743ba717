"""A PRF/PRG over ring elements: a 32-byte seed and a domain label give any number of
uniform elements of Z_2^k (k = 8..32 or 64).

Construction: ``key = HKDF-SHA256(seed, salt=SALT, info=label)`` (32 bytes), then the
AES-256-CTR keystream under ``key`` (zero nonce: every label gives a fresh key) read as
little-endian integers. The seed keeps its full 256 bits of entropy (compare Flower's
SecAgg+, whose ``pseudo_rand_gen`` folds a 32-byte seed to 32 bits and draws from
``np.random.RandomState``: a seed space one can enumerate). Every k-bit pattern occurs,
both ends of the ring included, because the keystream bytes are uniform and are used
whole, without rejection or modular reduction: an element of Z_2^16 is two keystream
bytes, one of Z_2^32 four (so a 16-bit ring's mask is exactly as uniform as a 32-bit one,
and costs half the keystream).

Domain separation: the label binds purpose, round and party ids, so the mask a client
uses in round 3 never equals the one it used in round 2, and a pairwise mask for (i, j)
differs from the self-mask of i.

Speed: one ``cryptography`` call produces the whole keystream (AES-NI, about 2 GB/s on
one core here) and numpy reinterprets it without a copy.

>>> seed = bytes(32)
>>> a = expand(seed, domain("mask", round_id=1, parties=(3,)), 4)
>>> b = expand(seed, domain("mask", round_id=2, parties=(3,)), 4)
>>> bool((a != b).any()), a.dtype.name
(True, 'uint32')
"""

from __future__ import annotations

import os
import struct

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.encoding import reduce, ring_dtype
from secagg.errors import ConfigError

SEED_BYTES = 32
SALT = b"secagg/prf/v1"
_LABEL_TAG = b"secagg-domain-v1"
_MAX_ELEMENTS = 2**34  # 64 GiB of uint32: beyond any model, small enough to catch a bad size


def random_seed() -> bytes:
    """A fresh 32-byte seed from the OS CSPRNG."""
    return os.urandom(SEED_BYTES)


def domain(purpose: str, *, round_id: int, parties: tuple[int, ...] = ()) -> bytes:
    """Canonical, injective label bytes for (purpose, round, party ids).

    Layout: tag | u16 len(purpose) | purpose utf-8 | u64 round | u16 count | u32 ids...
    (big-endian). Injective because every field is length-prefixed or fixed-width.
    """
    encoded = purpose.encode("utf-8")
    if not encoded or len(encoded) > 0xFFFF:
        raise ConfigError(f"purpose must be 1..65535 bytes of utf-8, got {len(encoded)} bytes")
    if not 0 <= round_id < 2**64:
        raise ConfigError(f"round_id must be in [0, 2^64), got {round_id}")
    if len(parties) > 0xFFFF or any(not 0 <= p < 2**32 for p in parties):
        raise ConfigError(f"parties must be at most 65535 ids in [0, 2^32), got {parties!r}")
    return b"".join(
        (
            _LABEL_TAG,
            struct.pack(">H", len(encoded)),
            encoded,
            struct.pack(">QH", round_id, len(parties)),
            struct.pack(f">{len(parties)}I", *parties),
        )
    )


def derive_key(seed: bytes, label: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 of ``seed`` bound to ``label``: the key under which the PRG runs."""
    _check_seed(seed)
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=SALT, info=label).derive(seed)


def stream(seed: bytes, label: bytes) -> CipherContext:
    """The PRF's keystream as an open AES-256-CTR context under HKDF(seed, label).

    Encrypting zeros with it yields the stream :func:`keystream` returns, in as many
    pieces as the caller likes (CTR is a stream: the pieces concatenate). This is the one
    place the cipher is built; callers that mask block by block (two-server's encoder)
    draw from it so their masks equal :func:`expand`'s.
    """
    return Cipher(algorithms.AES(derive_key(seed, label)), modes.CTR(bytes(16))).encryptor()


def keystream(seed: bytes, label: bytes, n_bytes: int) -> bytes:
    """``n_bytes`` of AES-256-CTR keystream under HKDF(seed, label)."""
    if n_bytes < 0:
        raise ConfigError(f"n_bytes must be >= 0, got {n_bytes}")
    encryptor = stream(seed, label)
    return encryptor.update(bytes(n_bytes)) + encryptor.finalize()


def expand(seed: bytes, label: bytes, n: int, *, ring_bits: int = 32) -> np.ndarray:
    """``n`` uniform elements of Z_2^ring_bits from (seed, label), as a read-only array.

    The array views the keystream bytes without a copy; use it as an operand
    (``np.subtract(x, mask, out=x)``) or ``.copy()`` it to write. For a width that is not
    a whole dtype (k = 12: uint16 words) each element is one container word of the stream
    reduced mod 2^k (uniform: 2^k divides the word's range), in a new array.
    """
    dtype = np.dtype(ring_dtype(ring_bits)).newbyteorder("<")
    if not 0 <= n <= _MAX_ELEMENTS:
        raise ConfigError(f"n must be in [0, {_MAX_ELEMENTS}], got {n}")
    stream = keystream(seed, label, n * dtype.itemsize)
    words = np.frombuffer(stream, dtype=dtype)
    if dtype.itemsize * 8 != ring_bits:
        return reduce(words.copy(), ring_bits)
    return words


def _check_seed(seed: bytes) -> None:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
        got = f"{len(seed)} bytes" if isinstance(seed, (bytes, bytearray)) else type(seed).__name__
        raise ConfigError(f"seed must be {SEED_BYTES} bytes, got {got}")
