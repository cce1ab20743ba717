"""Tests of secagg.sealing: round trips, tampering, context binding, key agreement."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import ConfigError, IntegrityError, KeyMismatchError, WireFormatError
from secagg.sealing import (
    KEY_BYTES,
    SEAL_OVERHEAD,
    generate_keypair,
    open_sealed,
    public_key,
    seal,
    shared_key,
)

# Low-order points of Curve25519 (u = 0 has order 2, u = 1 order 4): both
# give an all-zero shared secret, which X25519 implementations must refuse.
LOW_ORDER_POINTS = [bytes(32), (1).to_bytes(32, "little")]


def test_keypair_is_raw_bytes_and_public_matches() -> None:
    private, public = generate_keypair()
    assert len(private) == len(public) == KEY_BYTES
    assert public_key(private) == public
    assert generate_keypair()[0] != private


@settings(max_examples=30, deadline=None)
@given(plaintext=st.binary(max_size=300), associated_data=st.binary(max_size=64))
def test_round_trip_and_layout(plaintext: bytes, associated_data: bytes) -> None:
    private, public = generate_keypair()
    box = seal(public, plaintext, associated_data)
    assert len(box) == len(plaintext) + SEAL_OVERHEAD
    assert open_sealed(private, box, associated_data) == plaintext


def test_two_seals_of_one_plaintext_differ() -> None:
    _, public = generate_keypair()
    assert seal(public, b"x" * 32, b"ad") != seal(public, b"x" * 32, b"ad")


def test_plaintext_is_not_in_the_box() -> None:
    _, public = generate_keypair()
    secret = bytes(range(32))
    assert secret not in seal(public, secret, b"ad")


@pytest.mark.parametrize("position", [0, 5, KEY_BYTES, KEY_BYTES + 10, -1])
def test_any_flipped_bit_fails_with_integrity_error(position: int) -> None:
    private, public = generate_keypair()
    box = bytearray(seal(public, b"s" * 32, b"ad"))
    box[position] ^= 0x01
    with pytest.raises(IntegrityError, match="seed from client-7"):
        open_sealed(private, bytes(box), b"ad", what="seed from client-7")


def test_other_associated_data_fails() -> None:
    private, public = generate_keypair()
    box = seal(public, b"seed", b"round 1")
    with pytest.raises(IntegrityError):
        open_sealed(private, box, b"round 2")


def test_other_recipient_fails() -> None:
    _, public = generate_keypair()
    other_private, _ = generate_keypair()
    with pytest.raises(IntegrityError):
        open_sealed(other_private, seal(public, b"seed", b""), b"")


def test_low_order_ephemeral_key_is_an_integrity_error() -> None:
    private, _ = generate_keypair()
    for point in LOW_ORDER_POINTS:
        with pytest.raises(IntegrityError, match="invalid ephemeral key"):
            open_sealed(private, point + bytes(16), b"")


def test_short_box_is_a_wire_format_error() -> None:
    private, _ = generate_keypair()
    with pytest.raises(WireFormatError, match=f"at least {SEAL_OVERHEAD}"):
        open_sealed(private, bytes(SEAL_OVERHEAD - 1))


def test_bad_key_lengths() -> None:
    private, public = generate_keypair()
    with pytest.raises(WireFormatError, match="expected 32 raw bytes, got 31 bytes"):
        seal(public[:31], b"x")
    with pytest.raises(ConfigError, match="got 33 bytes"):
        open_sealed(private + b"\0", seal(public, b"x"))
    with pytest.raises(ConfigError, match="got str"):
        shared_key("k" * 32, public, b"")  # type: ignore[arg-type]


def test_shared_key_is_symmetric_and_bound_to_info() -> None:
    a_private, a_public = generate_keypair()
    b_private, b_public = generate_keypair()
    c_private, _ = generate_keypair()
    ab = shared_key(a_private, b_public, b"pair 1 2")
    assert ab == shared_key(b_private, a_public, b"pair 1 2")
    assert len(ab) == 32
    assert shared_key(a_private, b_public, b"pair 1 3") != ab
    assert shared_key(c_private, b_public, b"pair 1 2") != ab
    assert len(shared_key(a_private, b_public, b"x", length=64)) == 64


def test_shared_key_refuses_low_order_peer_and_bad_length() -> None:
    private, public = generate_keypair()
    for point in LOW_ORDER_POINTS:
        with pytest.raises(KeyMismatchError, match="low-order"):
            shared_key(private, point, b"")
    with pytest.raises(ConfigError, match="length"):
        shared_key(private, public, b"", length=0)
