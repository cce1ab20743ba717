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
from secagg.wire import HEADER_BYTES, Payload, Reader, Writer, decode_header, decode_message, encode_message


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
