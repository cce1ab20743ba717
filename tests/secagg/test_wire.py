from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from secagg.errors import WireFormatError
from secagg.wire import (
    HEADER_BYTES,
    PACKED_CODE,
    PACKED_HEADER_BYTES,
    Payload,
    Reader,
    Writer,
    decode_header,
    decode_message,
    encode_message,
    pack_bits,
    packed_bytes,
)


@dataclass(frozen=True)
class Sample(Payload):
    msg_type: ClassVar[int] = 9
    tag: int
    name: str
    values: np.ndarray
    blob: bytes

    def to_bytes(self) -> bytes:
        return Writer().u32(self.tag).text(self.name).array(self.values).blob(self.blob).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> Sample:
        r = Reader(data, "Sample")
        out = cls(r.u32("tag"), r.text("name"), r.array("values"), r.blob("blob"))
        r.done()
        return out


dtypes = st.sampled_from([np.uint32, np.uint64, np.float32, np.float64, np.int64, np.uint8])


@st.composite
def samples(draw: st.DrawFn) -> Sample:
    dtype = draw(dtypes)
    values = draw(hnp.arrays(dtype, st.integers(0, 40)))
    return Sample(
        draw(st.integers(0, 2**32 - 1)), draw(st.text(max_size=20)), values, draw(st.binary(max_size=64))
    )


def _encode(payload: Payload, round_id: int = 3) -> bytes:
    return encode_message(protocol_id=5, round_id=round_id, sender=1, recipient=2, payload=payload)


@settings(max_examples=100, deadline=None)
@given(samples())
def test_round_trip(sample: Sample) -> None:
    raw = _encode(sample)
    header, decoded = decode_message(raw, {9: Sample}, protocol_id=5)
    assert isinstance(decoded, Sample)
    assert (header.round_id, header.sender, header.recipient, header.msg_type) == (3, 1, 2, 9)
    assert decoded.tag == sample.tag and decoded.name == sample.name and decoded.blob == sample.blob
    assert decoded.values.dtype == sample.values.dtype.newbyteorder("<")
    assert np.array_equal(decoded.values, sample.values, equal_nan=sample.values.dtype.kind == "f")
    assert len(raw) == HEADER_BYTES + len(sample.to_bytes()) + 4


@settings(max_examples=100, deadline=None)
@given(samples(), st.data())
def test_truncation_and_extension_raise(sample: Sample, data: st.DataObject) -> None:
    raw = _encode(sample)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(WireFormatError):
        decode_message(raw[:cut], {9: Sample}, protocol_id=5)
    with pytest.raises(WireFormatError, match="oversized"):
        decode_message(raw + b"\x00", {9: Sample}, protocol_id=5)


@settings(max_examples=100, deadline=None)
@given(samples(), st.data())
def test_any_flipped_byte_raises(sample: Sample, data: st.DataObject) -> None:
    raw = bytearray(_encode(sample))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(WireFormatError):
        decode_message(bytes(raw), {9: Sample}, protocol_id=5)


def test_unknown_type_and_protocol() -> None:
    raw = _encode(Sample(1, "a", np.zeros(2, np.uint32), b""))
    with pytest.raises(WireFormatError, match="message type"):
        decode_message(raw, {8: Sample}, protocol_id=5)
    with pytest.raises(WireFormatError, match="protocol id"):
        decode_message(raw, {9: Sample}, protocol_id=6)


def test_hostile_payload_with_valid_crc_raises_typed() -> None:
    # A payload whose array header claims far more elements than present, re-CRC'd.
    body = struct.pack(">I", 1) + struct.pack(">I", 0) + struct.pack(">BQ", 2, 2**40)

    class Raw(Payload):
        msg_type = 9

        def to_bytes(self) -> bytes:
            return body

    raw = _encode(Raw())
    decode_header(raw)  # the frame itself is valid
    with pytest.raises(WireFormatError, match="only"):
        decode_message(raw, {9: Sample}, protocol_id=5)


def test_reader_checks_dtype_and_count() -> None:
    body = Writer().array(np.zeros(3, np.uint32)).to_bytes()
    with pytest.raises(WireFormatError, match="dtype"):
        Reader(body).array(dtype="<u8")
    with pytest.raises(WireFormatError, match="4 elements"):
        Reader(body).array(count=4)


# --- bit-packed ring elements ---------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(bits=st.integers(1, 64), count=st.integers(0, 70), seed=st.integers(0, 2**32 - 1))
def test_packed_round_trip_keeps_exactly_the_low_bits(bits: int, count: int, seed: int) -> None:
    container = next(d for d in ("<u1", "<u2", "<u4", "<u8") if np.dtype(d).itemsize * 8 >= bits)
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**63, count, dtype=np.uint64).astype(container)  # high bits set too
    data = Writer().packed(values, bits).to_bytes()
    assert len(data) == PACKED_HEADER_BYTES + packed_bytes(count, bits) == 10 + (count * bits + 7) // 8
    decoded, width = Reader(data, "packed").array_bits("values")
    assert width == bits and decoded.dtype == np.dtype(container)
    low = values.astype(np.uint64) & np.uint64((1 << bits) - 1) if bits < 64 else values.astype(np.uint64)
    np.testing.assert_array_equal(decoded.astype(np.uint64), low)


def test_packed_layout_is_little_endian_bit_order() -> None:
    # Two 12-bit values 0xABC, 0x123: stream bits 0..11 then 12..23 -> bytes BC 3A 12.
    assert pack_bits(np.array([0xFABC, 0x0123], dtype=np.uint16), 12) == bytes([0xBC, 0x3A, 0x12])


def test_hostile_packed_arrays_are_refused() -> None:
    good = Writer().packed(np.arange(5, dtype=np.uint16), 12).to_bytes()
    with pytest.raises(WireFormatError, match="only"):
        Reader(good[:-1], "p").array("values")  # fewer bytes than the count needs
    huge = bytes([PACKED_CODE, 12]) + struct.pack(">Q", 2**60) + good[10:]
    with pytest.raises(WireFormatError, match="only"):
        Reader(huge, "p").array("values")  # a count the message cannot hold allocates nothing
    for bits in (0, 65):
        with pytest.raises(WireFormatError, match="packed width"):
            Reader(bytes([PACKED_CODE, bits]) + good[2:], "p").array("values")
    padded = bytearray(good)
    padded[-1] |= 0x80  # 5 * 12 = 60 bits: the last byte's top 4 bits are padding
    with pytest.raises(WireFormatError, match="zero padding"):
        Reader(bytes(padded), "p").array("values")
    with pytest.raises(WireFormatError, match="dtype"):
        Reader(good, "p").array("values", dtype="<u4")


def test_packed_round_trip_across_unpacking_blocks() -> None:
    values = np.random.default_rng(3).integers(0, 2**12, 150_001).astype(np.uint16)
    decoded, bits = Reader(Writer().packed(values, 12).to_bytes(), "p").array_bits("values")
    assert bits == 12
    np.testing.assert_array_equal(decoded, values)


@pytest.mark.parametrize("bits", [8, 12, 16, 31, 32, 64])
def test_ring_fields_round_trip_whole_or_packed(bits: int) -> None:
    container = np.dtype({8: "<u1", 12: "<u2", 16: "<u2", 31: "<u4", 32: "<u4", 64: "<u8"}[bits])
    mask = np.uint64((1 << bits) - 1)
    values = ((np.arange(1, 6, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) & mask).astype(container)
    reader = Reader(Writer().ring(values, bits).to_bytes(), "ring")
    found, wire_bits = reader.ring("values")
    reader.done()
    np.testing.assert_array_equal(found, values)
    assert wire_bits == (0 if bits == container.itemsize * 8 else bits)


def test_ring_fields_refuse_floats_signed_and_narrow_widths() -> None:
    for hostile in (
        Writer().array(np.zeros(3, dtype=np.float32)),
        Writer().array(np.zeros(3, dtype=np.int64)),
        Writer().packed(np.zeros(3, dtype=np.uint8), 4),
    ):
        with pytest.raises(WireFormatError, match="expected <u1/<u2/<u4/<u8 masked of at least 8 bits"):
            Reader(hostile.to_bytes(), "Share").ring("masked")
