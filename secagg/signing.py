"""Ed25519 signatures under pinned keys: pure functions over bytes.

What it is: authentication for every key a party encrypts to or trusts. A sealed box
(:mod:`secagg.sealing`) hides a payload but says nothing about who sealed it, so a relay
that substitutes its own public key can open and re-seal what passes through it. The
fix, as in Bonawitz et al. 2017's malicious-server variant, is that the owner of a key
signs what it advertises under a long-term identity key, and the receiver verifies the
signature under a verification key it obtained out of band (pinned in its configuration,
never taken from the relay).

Keys are raw 32-byte strings (``generate_signing_keypair`` returns ``(private,
public)``); signatures are 64 bytes (RFC 8032 Ed25519, deterministic).

Domain separation: the signed bytes are ``SIGN_TAG | u16 len(context) | context |
message``, so a signature made for one purpose (say a Paillier public-key message) is
never valid for another (a dealt Flower blob), even under the same key. Contexts name the
purpose and the protocol; the message carries the round and party ids.

What a verifier learns: nothing secret. What a signature does not give: freshness. A
caller that must refuse replays puts the round id and a session nonce into ``message``.

>>> private, public = generate_signing_keypair()
>>> signature = sign(private, b"public key bytes", context=b"paillier/pk")
>>> verify(public, b"public key bytes", signature, context=b"paillier/pk")
>>> len(signature) == SIGNATURE_BYTES, len(fingerprint(public))
(True, 16)
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secagg.errors import ConfigError, IntegrityError, WireFormatError

SIGNING_KEY_BYTES = 32
SIGNATURE_BYTES = 64
FINGERPRINT_BYTES = 16
SIGN_TAG = b"secagg-sign-v1"


def generate_signing_keypair() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair from the OS CSPRNG, as raw ``(private, public)`` bytes."""
    private = Ed25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def verification_key(private: bytes) -> bytes:
    """The raw public (verification) key of a raw Ed25519 private key."""
    return _private(private).public_key().public_bytes_raw()


def sign(private: bytes, message: bytes, *, context: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``message`` under ``context`` (see the docstring)."""
    return _private(private).sign(_signed_bytes(context, message))


def verify(public: bytes, message: bytes, signature: bytes, *, context: bytes, what: str = "message") -> None:
    """Return if ``signature`` is ``public``'s over (``context``, ``message``); else raise.

    :class:`IntegrityError` when the signature does not verify (forged, altered, made
    for another context or under another key); :class:`WireFormatError` when the key or
    signature has the wrong length. ``what`` names the payload in the error (e.g.
    ``"public key from key-holder"``); it must not contain secrets.
    """
    key = _public(public, f"{what}: verification key")
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != SIGNATURE_BYTES:
        raise WireFormatError(
            f"{what}: expected a {SIGNATURE_BYTES}-byte signature, got {_describe(signature)}"
        )
    try:
        key.verify(bytes(signature), _signed_bytes(context, message))
    except InvalidSignature:
        raise IntegrityError(
            f"{what}: Ed25519 signature check failed under the pinned key "
            f"{fingerprint(public).hex()} (expected a signature by that key over this "
            f"context; got a forgery, altered bytes or another signer)"
        ) from None


def fingerprint(public: bytes) -> bytes:
    """A short, collision-resistant name for a public key: SHA-256 truncated to 16 bytes."""
    if not isinstance(public, (bytes, bytearray)):
        raise ConfigError(f"expected public key bytes, got {type(public).__name__}")
    return hashlib.sha256(b"secagg-fingerprint-v1" + bytes(public)).digest()[:FINGERPRINT_BYTES]


def _signed_bytes(context: bytes, message: bytes) -> bytes:
    if not isinstance(context, (bytes, bytearray)) or not 1 <= len(context) <= 0xFFFF:
        raise ConfigError(f"context: expected 1..65535 bytes, got {_describe(context)}")
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise ConfigError(f"message: expected bytes, got {type(message).__name__}")
    return SIGN_TAG + len(context).to_bytes(2, "big") + bytes(context) + bytes(message)


def _private(private: bytes) -> Ed25519PrivateKey:
    if not isinstance(private, (bytes, bytearray)) or len(private) != SIGNING_KEY_BYTES:
        raise ConfigError(f"signing key: expected {SIGNING_KEY_BYTES} raw bytes, got {_describe(private)}")
    return Ed25519PrivateKey.from_private_bytes(bytes(private))


def _public(public: bytes, what: str) -> Ed25519PublicKey:
    if not isinstance(public, (bytes, bytearray)) or len(public) != SIGNING_KEY_BYTES:
        raise WireFormatError(f"{what}: expected {SIGNING_KEY_BYTES} raw bytes, got {_describe(public)}")
    try:
        return Ed25519PublicKey.from_public_bytes(bytes(public))
    except ValueError:
        raise WireFormatError(f"{what}: not a valid Ed25519 point") from None


def _describe(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{len(value)} bytes"
    return type(value).__name__
