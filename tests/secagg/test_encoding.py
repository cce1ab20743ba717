from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from secagg.encoding import FixedPoint, container_bits, decode, encode, is_packed, ring_dtype
from secagg.errors import ConfigError, EncodingOverflowError


@settings(max_examples=200, deadline=None)
@given(
    ring_bits=st.sampled_from([8, 12, 16, 20, 32, 64]),
    frac_bits=st.integers(0, 28),
    data=st.data(),
)
def test_round_trip_within_half_ulp(ring_bits: int, frac_bits: int, data: st.DataObject) -> None:
    clip = 4.0
    frac_bits = min(frac_bits, ring_bits - 4)  # 4 * 2^f must fit the signed ring
    codec = FixedPoint(ring_bits=ring_bits, frac_bits=frac_bits, clip=clip)
    values = data.draw(
        hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(-clip, clip, allow_nan=False))
    )
    decoded = codec.decode(codec.encode(values))
    assert np.all(np.abs(decoded - values) <= codec.error_bound)


def test_rounds_to_nearest_not_truncation() -> None:
    codec = FixedPoint(ring_bits=32, frac_bits=2, clip=8.0)
    # 0.2 * 4 = 0.8 -> 1 (truncation would give 0); -0.2 -> -1.
    assert codec.encode(np.array([0.2, -0.2])).view(np.int32).tolist() == [1, -1]


def test_twos_complement_layout() -> None:
    codec = FixedPoint(ring_bits=32, frac_bits=16, clip=1.0)
    assert codec.encode(np.array([-1.0]))[0] == 2**32 - 2**16
    codec64 = FixedPoint(ring_bits=64, frac_bits=16, clip=1.0)
    assert codec64.encode(np.array([-1.0]))[0] == 2**64 - 2**16
    assert codec64.encode(np.array([1.0])).dtype == np.uint64


@settings(max_examples=100, deadline=None)
@given(n_clients=st.integers(1, 64), ring_bits=st.sampled_from([16, 24, 32, 64]), seed=st.integers(0, 2**16))
def test_sums_within_budget_decode_exactly(n_clients: int, ring_bits: int, seed: int) -> None:
    codec = FixedPoint.plan(clip=2.0, n_clients=n_clients, ring_bits=ring_bits)
    rng = np.random.default_rng(seed)
    values = rng.uniform(-2.0, 2.0, (n_clients, 16))
    values[0, 0] = 2.0  # the extremes are in the budget
    values[-1, 1] = -2.0
    total = np.zeros(16, dtype=codec.dtype)
    for row in values:
        total += codec.encode(row)  # wraps mod 2^k, as the ring does
    decoded = codec.decode(total)
    assert np.all(np.abs(decoded - values.sum(axis=0)) <= n_clients * codec.error_bound + 1e-9)


def test_all_clients_at_the_extreme_fit_exactly() -> None:
    codec = FixedPoint(ring_bits=32, frac_bits=16, clip=1.0)
    n = codec.max_clients()
    codec.check_budget(n)
    total = (codec.encode(np.array([-1.0])).astype(np.uint64) * n) % 2**32
    assert codec.decode(total.astype(np.uint32))[0] == -float(n)
    with pytest.raises(EncodingOverflowError, match=f"{n + 1} clients"):
        codec.check_budget(n + 1)


def test_plan_picks_most_fractional_bits() -> None:
    codec = FixedPoint.plan(clip=1.0, n_clients=100, ring_bits=32)
    codec.check_budget(100)
    with pytest.raises(EncodingOverflowError):
        FixedPoint(ring_bits=32, frac_bits=codec.frac_bits + 1, clip=1.0).check_budget(100)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1.5, -1.0000001])
def test_rejects_nan_inf_and_out_of_range(bad: float) -> None:
    codec = FixedPoint(ring_bits=32, frac_bits=16, clip=1.0)
    with pytest.raises(EncodingOverflowError, match="expected"):
        codec.encode(np.array([0.0, bad]))


def test_clipping_only_when_asked() -> None:
    codec = FixedPoint(ring_bits=32, frac_bits=16, clip=1.0)
    clipped = codec.decode(codec.encode(np.array([3.0, -np.inf]), clip_values=True))
    assert clipped.tolist() == [1.0, -1.0]
    with pytest.raises(EncodingOverflowError, match="NaN"):
        codec.encode(np.array([np.nan]), clip_values=True)


def test_config_errors_name_the_value() -> None:
    with pytest.raises(ConfigError, match="ring_bits"):
        FixedPoint(ring_bits=40)
    with pytest.raises(ConfigError, match="clip"):
        FixedPoint(clip=-1.0)
    with pytest.raises(EncodingOverflowError, match="Z_2\\^32"):
        FixedPoint(ring_bits=32, frac_bits=31, clip=2.0)


def test_pure_functions_match_codec() -> None:
    x = np.linspace(-1, 1, 11)
    u = encode(x, ring_bits=64, frac_bits=20, clip=1.0)
    assert np.array_equal(decode(u, ring_bits=64, frac_bits=20), FixedPoint(64, 20, 1.0).decode(u))


@pytest.mark.parametrize("clip, frac_bits", [(0.25, 1), (1e-6, 16), (0.4, 0)])
def test_a_scale_that_rounds_to_zero_is_refused_at_construction(clip: float, frac_bits: int) -> None:
    # rint(clip * 2^f) == 0 would encode every value as 0 and divide by zero in max_clients().
    with pytest.raises(ConfigError, match="rounds to 0"):
        FixedPoint(ring_bits=32, frac_bits=frac_bits, clip=clip)
    assert FixedPoint(ring_bits=32, frac_bits=frac_bits, clip=1.0).max_clients() >= 1


# --- small rings and modular codecs ---------------------------------------------------------


def test_sixteen_bit_ring_is_uint16_twos_complement() -> None:
    codec = FixedPoint(ring_bits=16, frac_bits=8, clip=1.0)
    encoded = codec.encode(np.array([-1.0, 0.5]))
    assert encoded.dtype == np.uint16
    assert encoded.tolist() == [2**16 - 2**8, 2**7]
    assert codec.decode(encoded).tolist() == [-1.0, 0.5]


def test_small_ring_budget_names_what_fits() -> None:
    # 100 clients of |x| <= 1 in Z_2^16: 100 * 2^8 = 25600 fits, 100 * 2^9 does not.
    assert FixedPoint.plan(clip=1.0, n_clients=100, ring_bits=16).frac_bits == 8
    FixedPoint(ring_bits=16, frac_bits=8, clip=1.0).check_budget(100)
    with pytest.raises(EncodingOverflowError, match="frac_bits <= 8, or lower clip, or use ring_bits=32"):
        FixedPoint(ring_bits=16, frac_bits=9, clip=1.0).check_budget(100)
    with pytest.raises(EncodingOverflowError, match="at most 6 fractional bits fit, or use ring_bits=16"):
        FixedPoint(ring_bits=8, frac_bits=7, clip=1.0)


def test_modular_codec_wraps_by_design() -> None:
    """Residues of Z_2^16 (distributed DP's messages): both ends of [-2^15, 2^15] are accepted,
    +2^15 is the residue of -2^15, and a sum that wraps is the sum mod 2^16."""
    with pytest.raises(EncodingOverflowError):
        FixedPoint(ring_bits=16, frac_bits=0, clip=2.0**15)
    codec = FixedPoint(ring_bits=16, frac_bits=0, clip=2.0**15, modular=True)
    assert codec.encode(np.array([2.0**15, -(2.0**15), -1.0])).tolist() == [2**15, 2**15, 2**16 - 1]
    codec.check_budget(10**6)  # no budget: the sum is wanted mod 2^16
    values = np.array([[30000.0, -32768.0], [30000.0, 5.0], [30000.0, -7.0]])
    total = np.zeros(2, dtype=np.uint16)
    for row in values:
        total += codec.encode(row)
    residues = (values.sum(axis=0).astype(np.int64) + 2**15) % 2**16 - 2**15
    assert codec.decode(total).tolist() == residues.tolist()
    assert codec.period == 2.0**16


def test_packed_width_lives_in_the_next_container_and_decodes_mod_2_to_the_k() -> None:
    """Z_2^12 in uint16: encodings are residues below 2^12, sums may carry high container
    bits (arithmetic in uint16 is right mod 2^12), and decode reduces and sign-extends."""
    assert (container_bits(12), ring_dtype(12), is_packed(12), is_packed(16)) == (16, np.uint16, True, False)
    codec = FixedPoint(ring_bits=12, frac_bits=4, clip=8.0)
    encoded = codec.encode(np.array([-1.0, 0.5, -8.0]))
    assert encoded.dtype == np.uint16 and encoded.tolist() == [2**12 - 16, 8, 2**12 - 128]
    garbage_high = encoded + np.uint16(0xA000)  # the same residues mod 2^12
    assert codec.decode(garbage_high).tolist() == [-1.0, 0.5, -8.0]
    with pytest.raises(EncodingOverflowError, match="at most 7 fractional bits fit"):
        FixedPoint(ring_bits=12, frac_bits=8, clip=8.0)
    assert FixedPoint.plan(clip=1.0, n_clients=100, ring_bits=12).frac_bits == 4
