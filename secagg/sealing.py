"""Public-key sealing and pairwise key agreement over X25519: pure functions over bytes.

What it is: an ECIES-style "sealed box" (in the shape of HPKE base mode, RFC 9180,
DHKEM(X25519, HKDF-SHA256) with AES-256-GCM) and an X25519 + HKDF pairwise key, as
used by the two-server protocol (a client seals its mask seed to server B so that
server A, relaying or watching, cannot read it) and by pairwise masking (Bonawitz et
al. 2017, CCS: key agreement for pairwise seeds and for the shares clients send each
other through the server).

Keys are raw 32-byte strings (``generate_keypair`` returns ``(private, public)``), so a
public key goes on the wire as it is and a party's holdings list plain bytes.

Sealed layout (``seal``)::

    offset  size  field
    0       32    ephemeral X25519 public key e
    32      n     AES-256-GCM ciphertext of the plaintext (n = len(plaintext))
    32+n    16    GCM tag

    key = HKDF-SHA256(ikm=X25519(e_priv, recipient), salt=SEAL_SALT,
                      info=SEAL_INFO | e | recipient, length=32)
    nonce = 12 zero bytes

The all-zero nonce is safe because every ``seal`` draws a fresh ephemeral key from the
OS CSPRNG, so every (key, nonce) pair is used once. Both public keys go into the HKDF
info so a sealed box cannot be re-targeted to another recipient key. The caller's
``associated_data`` (round, sender, recipient, protocol) is authenticated, not
encrypted: opening with other associated data fails, which is what makes a replay
into another round or under another sender's name an :class:`IntegrityError`.

Overhead: 48 bytes per sealed message (``SEAL_OVERHEAD``).

What an observer learns: the plaintext length and the ephemeral public key, nothing
else. What it does not give: sender authentication. Anyone holding the recipient's
public key can seal; the associated data says who *claims* to have sealed. Protocols
that need the sender authenticated must bind it another way (the wire header's sender
comes from the transport).

>>> private, public = generate_keypair()
>>> box = seal(public, b"seed", b"round 1")
>>> open_sealed(private, box, b"round 1")
b'seed'
>>> len(box) - len(b"seed") == SEAL_OVERHEAD
True
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import ConfigError, IntegrityError, KeyMismatchError, WireFormatError

KEY_BYTES = 32
TAG_BYTES = 16
SEAL_OVERHEAD = KEY_BYTES + TAG_BYTES  # 48
SEAL_SALT = b"secagg/sealing/v1/seal"
SEAL_INFO = b"secagg-seal-v1"
PAIR_SALT = b"secagg/sealing/v1/pair"
_NONCE = bytes(12)


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair from the OS CSPRNG, as raw ``(private, public)`` bytes."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def public_key(private: bytes) -> bytes:
    """The raw public key of a raw private key."""
    return _private(private).public_key().public_bytes_raw()


def seal(recipient_public_key: bytes, plaintext: bytes, associated_data: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` to ``recipient_public_key``; layout in the module docstring."""
    recipient = _public(recipient_public_key, "recipient public key")
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    key = _seal_key(_exchange(ephemeral, recipient), ephemeral_public, recipient_public_key)
    return ephemeral_public + AESGCM(key).encrypt(_NONCE, bytes(plaintext), bytes(associated_data))


def open_sealed(
    private_key: bytes, sealed: bytes, associated_data: bytes = b"", *, what: str = "sealed payload"
) -> bytes:
    """Decrypt a :func:`seal` box; :class:`IntegrityError` when it was not sealed to this
    key with this associated data, or was altered.

    ``what`` names the payload in the error (e.g. ``"seed from client-3"``) so the
    caller's traceback says whose message failed; it must not contain secrets.
    """
    private = _private(private_key)
    if len(sealed) < SEAL_OVERHEAD:
        raise WireFormatError(f"{what}: expected at least {SEAL_OVERHEAD} sealed bytes, got {len(sealed)}")
    ephemeral_public = bytes(sealed[:KEY_BYTES])
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:
        # A low-order ephemeral point gives an all-zero secret: the box was forged.
        raise IntegrityError(f"{what}: authentication failed (invalid ephemeral key)") from None
    recipient_public = private.public_key().public_bytes_raw()
    key = _seal_key(shared, ephemeral_public, recipient_public)
    try:
        return AESGCM(key).decrypt(_NONCE, bytes(sealed[KEY_BYTES:]), bytes(associated_data))
    except InvalidTag:
        raise IntegrityError(
            f"{what}: AES-GCM tag check failed (expected a box sealed to this key with "
            f"matching associated data; got altered bytes, another key or another context)"
        ) from None


def shared_key(private: bytes, peer_public: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 of the X25519 secret between ``private`` and ``peer_public``.

    Symmetric: both ends get the same key when they pass the same ``info``, so callers
    must build ``info`` from an ordered pair (e.g. ``(min(i, j), max(i, j))``), never
    from "me, peer". A low-order peer key raises :class:`KeyMismatchError`.
    """
    if not 1 <= length <= 255 * 32:
        raise ConfigError(f"length must be in [1, {255 * 32}], got {length}")
    secret = _exchange(_private(private), _public(peer_public, "peer public key"))
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=PAIR_SALT, info=bytes(info)).derive(secret)


def _seal_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    info = SEAL_INFO + ephemeral_public + bytes(recipient_public)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=SEAL_SALT, info=info).derive(shared)


def _exchange(private: X25519PrivateKey, peer: X25519PublicKey) -> bytes:
    try:
        return private.exchange(peer)
    except ValueError:
        raise KeyMismatchError(
            "expected a peer X25519 public key of full order, got a low-order point "
            "(the shared secret would be all zeros)"
        ) from None


def _private(private: bytes) -> X25519PrivateKey:
    if not isinstance(private, (bytes, bytearray)) or len(private) != KEY_BYTES:
        raise ConfigError(f"private key: expected {KEY_BYTES} raw bytes, got {_describe(private)}")
    return X25519PrivateKey.from_private_bytes(bytes(private))


def _public(public: bytes, what: str) -> X25519PublicKey:
    if not isinstance(public, (bytes, bytearray)) or len(public) != KEY_BYTES:
        raise WireFormatError(f"{what}: expected {KEY_BYTES} raw bytes, got {_describe(public)}")
    return X25519PublicKey.from_public_bytes(bytes(public))


def _describe(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{len(value)} bytes"
    return type(value).__name__
