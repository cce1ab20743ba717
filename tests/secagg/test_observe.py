"""The default reading of a payload: what it yields and which bytes it offers for tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from secagg.encoding import FixedPoint, ring_dtype
from secagg.observe import read_payload, ring_element_bytes
from secagg.wire import Payload, pack_bits


@dataclass(frozen=True)
class _Masked(Payload):
    msg_type: ClassVar[int] = 1
    round_tag: np.ndarray  # a short field of another width: framing, not the share
    values: np.ndarray


@pytest.mark.parametrize("ring_bits", [8, 12, 16, 32])
def test_a_ring_reading_offers_only_the_ring_elements_as_they_travel(ring_bits: int) -> None:
    codec = FixedPoint(ring_bits=ring_bits, frac_bits=4, clip=1.0)
    rng = np.random.default_rng(ring_bits)
    values = rng.integers(0, 2**ring_bits, size=64, dtype=np.uint64).astype(ring_dtype(ring_bits))
    payload = _Masked(np.arange(3, dtype=np.uint64), values)
    reading = read_payload(payload, 64, codec=codec, bound=None)
    assert reading.kind == "ring"
    little = values.astype(values.dtype.newbyteorder("<"))
    expected = pack_bits(values, ring_bits) if ring_bits == 12 else little.tobytes()
    assert reading.data == expected == ring_element_bytes(values, ring_bits)
    assert len(expected) == 64 * ring_bits // 8
    assert reading.vector is not None
    np.testing.assert_allclose(reading.vector, codec.decode(values))


def test_other_readings_leave_the_bytes_to_the_whole_payload() -> None:
    payload = _Masked(np.arange(3, dtype=np.uint64), np.linspace(-1, 1, 64))
    reading = read_payload(payload, 64, codec=FixedPoint(), bound=None)
    assert reading.kind == "plaintext" and reading.data is None
