"""Ed25519 signing under pinned keys: forgeries, other contexts and bad lengths are refused."""

from __future__ import annotations

import pytest

from secagg.errors import ConfigError, IntegrityError, WireFormatError
from secagg.signing import (
    SIGNATURE_BYTES,
    fingerprint,
    generate_signing_keypair,
    sign,
    verification_key,
    verify,
)


def test_sign_verify_round_trip() -> None:
    private, public = generate_signing_keypair()
    assert verification_key(private) == public
    signature = sign(private, b"msg", context=b"ctx")
    assert len(signature) == SIGNATURE_BYTES
    verify(public, b"msg", signature, context=b"ctx")


@pytest.mark.parametrize("change", ["message", "context", "key", "signature"])
def test_any_change_is_refused(change: str) -> None:
    private, public = generate_signing_keypair()
    signature = sign(private, b"msg", context=b"ctx")
    message, context, key = b"msg", b"ctx", public
    if change == "message":
        message = b"msh"
    elif change == "context":
        context = b"cty"
    elif change == "key":
        key = generate_signing_keypair()[1]
    else:
        signature = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(IntegrityError, match="signature check failed"):
        verify(key, message, signature, context=context, what="test blob")


def test_context_is_length_prefixed() -> None:
    # (context "ab", message "c") must not collide with (context "a", message "bc").
    private, public = generate_signing_keypair()
    signature = sign(private, b"c", context=b"ab")
    with pytest.raises(IntegrityError):
        verify(public, b"bc", signature, context=b"a")


def test_bad_lengths_are_typed() -> None:
    private, public = generate_signing_keypair()
    with pytest.raises(WireFormatError, match="64-byte signature"):
        verify(public, b"m", b"short", context=b"c")
    with pytest.raises(WireFormatError, match="32 raw bytes"):
        verify(public[:5], b"m", bytes(64), context=b"c")
    with pytest.raises(ConfigError):
        sign(private[:3], b"m", context=b"c")
    with pytest.raises(ConfigError, match="context"):
        sign(private, b"m", context=b"")


def test_fingerprint_is_stable_and_distinct() -> None:
    a, b = generate_signing_keypair()[1], generate_signing_keypair()[1]
    assert fingerprint(a) == fingerprint(a)
    assert fingerprint(a) != fingerprint(b)
