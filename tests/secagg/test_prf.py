from __future__ import annotations

import numpy as np
import pytest

from secagg.errors import ConfigError
from secagg.prf import domain, expand, keystream, random_seed


def test_deterministic_for_seed_and_label() -> None:
    seed = random_seed()
    label = domain("mask", round_id=7, parties=(1, 2))
    assert np.array_equal(expand(seed, label, 1000), expand(seed, label, 1000))


def test_prefix_consistent() -> None:
    seed, label = random_seed(), domain("mask", round_id=0)
    assert np.array_equal(expand(seed, label, 10), expand(seed, label, 1000)[:10])


@pytest.mark.parametrize(
    "other",
    [
        domain("mask", round_id=8, parties=(1, 2)),
        domain("mask", round_id=7, parties=(2, 1)),
        domain("self", round_id=7, parties=(1, 2)),
        domain("mask", round_id=7, parties=(1,)),
    ],
)
def test_domain_separation(other: bytes) -> None:
    seed = random_seed()
    base = expand(seed, domain("mask", round_id=7, parties=(1, 2)), 64)
    assert not np.array_equal(base, expand(seed, other, 64))


def test_seed_matters_in_every_byte() -> None:
    seed = bytearray(random_seed())
    label = domain("mask", round_id=0)
    base = expand(bytes(seed), label, 16)
    seed[31] ^= 1  # the last byte: the whole seed is used, not a 32-bit fold of it
    assert not np.array_equal(base, expand(bytes(seed), label, 16))


def test_bytes_are_uniform_chi_square() -> None:
    stream = np.frombuffer(keystream(random_seed(), domain("u", round_id=0), 1 << 20), dtype=np.uint8)
    counts = np.bincount(stream, minlength=256)
    expected = stream.size / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 255 degrees of freedom: the 1e-6 upper quantile is about 375.
    assert chi2 < 375, chi2


@pytest.mark.parametrize("ring_bits", [32])
def test_both_ends_of_the_ring_occur(ring_bits: int) -> None:
    # 2^24 draws, 2^-20 chance each to land in the top (bottom) 2^12 values:
    # P(miss) = (1 - 2^-20)^(2^24) ~ e^-16.
    values = expand(random_seed(), domain("ends", round_id=0), 1 << 24, ring_bits=ring_bits)
    assert values.max() >= 2**32 - 2**12
    assert values.min() <= 2**12
    # Every top byte occurs: no value range is excluded.
    assert np.unique(values >> 24).size == 256


def test_ring16_takes_whole_16_bit_words_of_the_stream() -> None:
    """A Z_2^16 mask is the keystream read as little-endian 16-bit words: no modular
    reduction, no rejection, so it is as uniform as the bytes (2^16 divides 2^32: the
    32-bit mask's low and high halves are exactly these words)."""
    seed, label = random_seed(), domain("r16", round_id=0)
    words = expand(seed, label, 1 << 18, ring_bits=16)
    assert words.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(words, np.frombuffer(keystream(seed, label, 1 << 19), dtype="<u2"))
    wide = expand(seed, label, 1 << 17, ring_bits=32)
    np.testing.assert_array_equal(words[0::2], (wide & 0xFFFF).astype(np.uint16))
    # Both ends of the ring and every top byte occur (each misses with P < e^-200 in 2^18 draws).
    assert np.unique(words >> 8).size == 256
    assert words.max() >= 2**16 - 2**6 and words.min() < 2**6


def test_packed_ring_takes_words_reduced_mod_2_to_the_k() -> None:
    seed, label = random_seed(), domain("r12", round_id=0)
    values = expand(seed, label, 1 << 16, ring_bits=12)
    words = np.frombuffer(keystream(seed, label, 1 << 17), dtype="<u2")
    assert values.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(values, words & 0x0FFF)
    assert values.max() == 2**12 - 1 and values.min() == 0  # every residue is reachable


def test_ring64_dtype_and_range() -> None:
    values = expand(random_seed(), domain("r64", round_id=0), 1 << 16, ring_bits=64)
    assert values.dtype == np.dtype("<u8")
    assert (values >> 63).any() and not (values >> 63).all()


def test_bad_seed_and_sizes_raise() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        expand(b"short", domain("m", round_id=0), 4)
    with pytest.raises(ConfigError, match="n must be"):
        expand(random_seed(), domain("m", round_id=0), -1)
    with pytest.raises(ConfigError, match="purpose"):
        domain("", round_id=0)
