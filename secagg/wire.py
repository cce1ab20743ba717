"""The wire format: a fixed header, a typed payload and a CRC32 trailer.

Every message between parties crosses the router as these bytes, so byte counts are
exact and the codec runs on every round. Layout (integers big-endian)::

    offset  size  field
    0       4     magic b"SAGG"
    4       1     version (1)
    5       1     flags (0; reserved)
    6       2     protocol id
    8       2     message type (protocol specific)
    10      4     round
    14      4     sender party id
    18      4     recipient party id
    22      4     payload length n
    26      n     payload (its layout is documented by its Payload class)
    26+n    4     CRC32 of bytes [0, 26+n)

The CRC catches transport corruption, not an adversary: authenticity of secret
material is each protocol's job (AES-GCM). Payload arrays are little-endian.

Payload codecs are built from :class:`Writer` and :class:`Reader`, whose reads are
bounds-checked: hostile bytes raise :class:`WireFormatError`, never ``IndexError`` or a
silently wrong value. Arrays travel as ``u8 dtype code | u64 count | count elements``
(codes in ``_DTYPE_CODES``: 1 <u1, 8 <u2, 2 <u4, 3 <u8, 4 <i8, 5 <f4, 6 <f8, 7 <f2) or,
for ring elements of a width that is no whole dtype, bit-packed as ``u8 9 | u8 k | u64
count | ceil(count * k / 8) bytes`` (:func:`pack_bits`); a count is checked against the
bytes present before anything is allocated.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from secagg.errors import WireFormatError

MAGIC = b"SAGG"
VERSION = 1
HEADER = struct.Struct(">4sBBHHIIII")
HEADER_BYTES = HEADER.size  # 26
TRAILER_BYTES = 4
MAX_PAYLOAD = 2**32 - 1

# dtype codes for arrays on the wire; little-endian always. The one table: payload
# codecs that lay an array out by hand take their code from :func:`dtype_code`.
_DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype("<u1"),
    2: np.dtype("<u4"),
    3: np.dtype("<u8"),
    4: np.dtype("<i8"),
    5: np.dtype("<f4"),
    6: np.dtype("<f8"),
    7: np.dtype("<f2"),
    8: np.dtype("<u2"),  # elements of Z_2^16 (a 16-bit ring's masked shares)
}
_CODE_OF = {dtype: code for code, dtype in _DTYPE_CODES.items()}
ARRAY_HEADER_BYTES = 9  # Writer.array: u8 dtype code + u64 element count
# A bit-packed array of unsigned k-bit elements (Writer.packed): u8 code 9 | u8 k | u64
# count | ceil(count * k / 8) bytes. Read back into the smallest uint dtype holding k bits.
PACKED_CODE = 9
PACKED_HEADER_BYTES = 10
_CONTAINERS = (np.dtype("<u1"), np.dtype("<u2"), np.dtype("<u4"), np.dtype("<u8"))
# Ring elements (Reader.ring) arrive in one of these, whole or packed in the smallest.
_RING_DTYPES = _CONTAINERS
_RING_NAMES = "/".join(f"<u{d.itemsize}" for d in _RING_DTYPES)


_UNPACK_BLOCK = 1 << 16


def packed_bytes(count: int, bits: int) -> int:
    """Bytes of ``count`` elements packed at ``bits`` each (without the header)."""
    return (count * bits + 7) // 8


def _container(bits: int) -> np.dtype:
    if not 1 <= bits <= 64:
        raise WireFormatError(f"expected a packed width in [1, 64] bits, got {bits}")
    return next(d for d in _CONTAINERS if d.itemsize * 8 >= bits)


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """The low ``bits`` bits of each unsigned value, concatenated little-endian: bit j of
    value i is bit (i * bits + j) of the stream, bit b of the stream is bit b % 8 of byte
    b // 8. Higher bits of the values are dropped (never sent)."""
    array = np.asarray(values)
    if array.dtype.kind != "u":
        raise WireFormatError(f"expected unsigned values to pack, got {array.dtype}")
    if not 1 <= bits <= array.dtype.itemsize * 8:
        raise WireFormatError(f"expected a width in [1, {array.dtype.itemsize * 8}] bits, got {bits}")
    little = np.ascontiguousarray(array.reshape(-1), dtype=array.dtype.newbyteorder("<"))
    planes = np.unpackbits(little.view(np.uint8).reshape(little.size, little.itemsize), axis=1,
                           bitorder="little")
    return np.packbits(planes[:, :bits], bitorder="little").tobytes()


def unpack_bits(data: bytes | memoryview, count: int, bits: int) -> np.ndarray:
    """``count`` values of ``bits`` bits from :func:`pack_bits`' layout, in the smallest
    unsigned dtype holding them (a new array). ``data`` must be exactly
    ``packed_bytes(count, bits)`` long and its padding bits zero."""
    dtype = _container(bits)
    if len(data) != packed_bytes(count, bits):
        raise WireFormatError(f"expected {packed_bytes(count, bits)} packed bytes, got {len(data)}")
    stream = np.frombuffer(data, dtype=np.uint8)
    tail = count * bits % 8
    if tail and int(stream[-1]) >> tail:
        raise WireFormatError("expected zero padding after the packed values")
    if bits > 56:  # a value and its bit offset may not fit one uint64 word: bit planes
        planes = np.unpackbits(stream, bitorder="little")[: count * bits].reshape(count, bits)
        wide = np.zeros((count, 64), dtype=np.uint8)
        wide[:, :bits] = planes
        return np.packbits(wide, axis=1, bitorder="little").reshape(-1).view(dtype)
    # Value i starts at stream bit i * bits: gather the bytes it spans into a uint64 word
    # (little-endian), shift its offset out and mask; in blocks, so the uint64 temporaries
    # stay small whatever count a message claims (the output is at most 8x its bytes).
    padded = np.zeros(stream.size + 8, dtype=np.uint8)
    padded[: stream.size] = stream
    out = np.empty(count, dtype=dtype)
    mask = np.uint64((1 << bits) - 1)
    for begin in range(0, count, _UNPACK_BLOCK):
        start = np.arange(begin, min(begin + _UNPACK_BLOCK, count), dtype=np.int64) * bits
        first = start >> 3
        word = padded[first].astype(np.uint64)
        for j in range(1, (bits + 7 + 7) // 8):
            word |= padded[first + j].astype(np.uint64) << np.uint64(8 * j)
        word >>= (start & 7).astype(np.uint64)
        word &= mask
        out[begin : begin + start.size] = word
    return out


def dtype_code(dtype: npt.DTypeLike) -> int:
    """The wire code of ``dtype`` (little-endian), as :meth:`Writer.array` writes it."""
    found = _CODE_OF.get(np.dtype(dtype).newbyteorder("<"))
    if found is None:
        known = sorted(map(str, _CODE_OF))
        raise WireFormatError(f"expected an array dtype of {known}, got {np.dtype(dtype)}")
    return found


def array_header(dtype: npt.DTypeLike, count: int) -> bytes:
    """The 9 bytes :meth:`Writer.array` puts before ``count`` elements of ``dtype``."""
    return struct.pack(">BQ", dtype_code(dtype), count)


class Writer:
    """Builds a payload field by field."""

    def __init__(self) -> None:
        self._parts: list[bytes | memoryview] = []

    def u8(self, value: int) -> Writer:
        self._parts.append(struct.pack(">B", value))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(struct.pack(">H", value))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(struct.pack(">I", value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(struct.pack(">Q", value))
        return self

    def f64(self, value: float) -> Writer:
        self._parts.append(struct.pack(">d", value))
        return self

    def raw(self, data: bytes) -> Writer:
        """Fixed-length bytes whose length the reader knows."""
        self._parts.append(bytes(data))
        return self

    def blob(self, data: bytes) -> Writer:
        """u32 length then the bytes."""
        self._parts.append(struct.pack(">I", len(data)))
        self._parts.append(bytes(data))
        return self

    def text(self, value: str) -> Writer:
        return self.blob(value.encode("utf-8"))

    def array(self, values: np.ndarray) -> Writer:
        """u8 dtype code, u64 element count, then the elements little-endian (1-D)."""
        array = np.asarray(values)
        code = dtype_code(array.dtype)
        little = np.ascontiguousarray(array.reshape(-1), dtype=_DTYPE_CODES[code])
        self._parts.append(struct.pack(">BQ", code, little.size))
        self._parts.append(little.view(np.uint8).data)
        return self

    def packed(self, values: np.ndarray, bits: int) -> Writer:
        """u8 code 9, u8 ``bits``, u64 element count, then :func:`pack_bits` (1-D)."""
        array = np.asarray(values).reshape(-1)
        self._parts.append(struct.pack(">BBQ", PACKED_CODE, bits, array.size))
        self._parts.append(pack_bits(array, bits))
        return self

    def ring(self, values: np.ndarray, bits: int = 0) -> Writer:
        """Elements of Z_2^k: an array at the dtype's width (``bits`` 0 or that width),
        else packed at ``bits`` (what :meth:`Reader.ring` reads)."""
        if bits and bits != np.asarray(values).dtype.itemsize * 8:
            return self.packed(values, bits)
        return self.array(values)

    def to_bytes(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads a payload field by field; every read checks the bytes are there."""

    def __init__(self, data: bytes | memoryview, what: str = "payload") -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    def _take(self, n: int, field: str) -> memoryview:
        if n < 0 or self._pos + n > len(self._data):
            raise WireFormatError(
                f"{self._what}: expected {n} bytes for {field} at offset {self._pos}, "
                f"only {len(self._data) - self._pos} remain"
            )
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u8(self, field: str = "u8") -> int:
        return int(self._take(1, field)[0])

    def u16(self, field: str = "u16") -> int:
        return int(struct.unpack(">H", self._take(2, field))[0])

    def u32(self, field: str = "u32") -> int:
        return int(struct.unpack(">I", self._take(4, field))[0])

    def u64(self, field: str = "u64") -> int:
        return int(struct.unpack(">Q", self._take(8, field))[0])

    def f64(self, field: str = "f64") -> float:
        return float(struct.unpack(">d", self._take(8, field))[0])

    def raw(self, n: int, field: str = "bytes") -> bytes:
        return bytes(self._take(n, field))

    def blob(self, field: str = "blob", max_len: int = MAX_PAYLOAD) -> bytes:
        length = self.u32(f"{field} length")
        if length > max_len:
            raise WireFormatError(f"{self._what}: {field} of at most {max_len} bytes expected, got {length}")
        return bytes(self._take(length, field))

    def text(self, field: str = "text", max_len: int = 4096) -> str:
        data = self.blob(field, max_len)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireFormatError(f"{self._what}: {field} is not utf-8") from exc

    def array(
        self, field: str = "array", *, dtype: str | None = None, count: int | None = None
    ) -> np.ndarray:
        """A 1-D array; ``dtype``/``count``, when given, are checked against the header."""
        return self.array_bits(field, dtype=dtype, count=count)[0]

    def array_bits(
        self, field: str = "array", *, dtype: str | None = None, count: int | None = None
    ) -> tuple[np.ndarray, int]:
        """A 1-D array as :meth:`Writer.array` or :meth:`Writer.packed` wrote it, and the
        bits each element carried on the wire (the dtype's width unless packed)."""
        code = self.u8(f"{field} dtype")
        if code == PACKED_CODE:
            return self._packed(field, dtype=dtype, count=count)
        if code not in _DTYPE_CODES:
            raise WireFormatError(f"{self._what}: {field} has unknown dtype code {code}")
        found = _DTYPE_CODES[code]
        if dtype is not None and found != np.dtype(dtype).newbyteorder("<"):
            raise WireFormatError(f"{self._what}: {field} expected dtype {dtype}, got {found}")
        n = self.u64(f"{field} count")
        if count is not None and n != count:
            raise WireFormatError(f"{self._what}: {field} expected {count} elements, got {n}")
        chunk = self._take(n * found.itemsize, field)
        return np.frombuffer(chunk, dtype=found), found.itemsize * 8

    def ring(self, field: str) -> tuple[np.ndarray, int]:
        """Elements of Z_2^k as :meth:`Writer.ring` wrote them: an unsigned little-endian
        array of 1, 2, 4 or 8 bytes, or packed at 8 bits or more; and the width on the
        wire (0 for the dtype's own width)."""
        values, bits = self.array_bits(field)
        if values.dtype not in _RING_DTYPES or bits < 8:
            raise WireFormatError(
                f"{self._what}: expected {_RING_NAMES} {field} of at least 8 bits, "
                f"got {bits}-bit {values.dtype}"
            )
        return values, 0 if bits == values.dtype.itemsize * 8 else bits

    def _packed(self, field: str, *, dtype: str | None, count: int | None) -> tuple[np.ndarray, int]:
        bits = self.u8(f"{field} bits")
        if not 1 <= bits <= 64:
            raise WireFormatError(f"{self._what}: {field} expected a packed width in [1, 64], got {bits}")
        found = _container(bits)
        if dtype is not None and found != np.dtype(dtype).newbyteorder("<"):
            raise WireFormatError(f"{self._what}: {field} expected dtype {dtype}, got {bits}-bit packed")
        n = self.u64(f"{field} count")
        if count is not None and n != count:
            raise WireFormatError(f"{self._what}: {field} expected {count} elements, got {n}")
        # The length is bounded by the bytes present before anything is allocated.
        chunk = self._take(packed_bytes(n, bits), field)
        try:
            return unpack_bits(chunk, n, bits), bits
        except WireFormatError as exc:
            raise WireFormatError(f"{self._what}: {field}: {exc}") from None

    def done(self) -> None:
        """Raise if bytes are left over (an oversized message)."""
        if self._pos != len(self._data):
            raise WireFormatError(
                f"{self._what}: expected {self._pos} bytes, got {len(self._data)} "
                f"({len(self._data) - self._pos} trailing)"
            )


P = TypeVar("P", bound="Payload")


class Payload:
    """Base of every message body: a dataclass with ``to_bytes``/``from_bytes``.

    Subclasses set ``msg_type`` (unique within their protocol) and document their
    byte layout. ``arrays()`` lists the numeric contents, which is what an observer
    (and the leakage assessment) can take from the decoded message.
    """

    msg_type: ClassVar[int]

    def to_bytes(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def from_bytes(cls: type[P], data: bytes | memoryview) -> P:
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:
        """Numeric fields of the decoded payload, by field name."""
        if not dataclasses.is_dataclass(self):
            return {}
        found: dict[str, np.ndarray] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, np.ndarray):
                found[item.name] = value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value):
                for i, v in enumerate(value):
                    found[f"{item.name}[{i}]"] = v
        return found


@dataclass(frozen=True)
class Header:
    protocol_id: int
    msg_type: int
    round_id: int
    sender: int
    recipient: int
    payload_len: int
    version: int = VERSION


def peek_header(data: bytes | memoryview) -> Header | None:
    """The header fields of ``data`` as they stand, unchecked (no magic, version or CRC
    check), or None when ``data`` is shorter than a header.

    For accounting only: a transcript names the sender and message type of bytes it
    refused, which :func:`decode_header` would reject. Never trust these fields.
    """
    if len(data) < HEADER_BYTES:
        return None
    _, version, _, protocol_id, msg_type, round_id, sender, recipient, length = HEADER.unpack(
        memoryview(data)[:HEADER_BYTES]
    )
    return Header(protocol_id, msg_type, round_id, sender, recipient, length, version)


def payload_bytes(data: bytes | memoryview) -> bytes:
    """The payload of a checked message (between the header and the CRC trailer)."""
    return bytes(memoryview(data)[HEADER_BYTES : len(data) - TRAILER_BYTES])


def encode_message(
    *, protocol_id: int, round_id: int, sender: int, recipient: int, payload: Payload
) -> bytes:
    """Header + payload + CRC32: the exact bytes that cross the wire."""
    body = payload.to_bytes()
    if len(body) > MAX_PAYLOAD:
        raise WireFormatError(f"payload of at most {MAX_PAYLOAD} bytes expected, got {len(body)}")
    head = HEADER.pack(
        MAGIC, VERSION, 0, protocol_id, payload.msg_type, round_id, sender, recipient, len(body)
    )
    crc = zlib.crc32(body, zlib.crc32(head))
    return b"".join((head, body, struct.pack(">I", crc)))


def decode_header(data: bytes | memoryview) -> Header:
    """Parse and check the header and the CRC of a whole message."""
    view = memoryview(data)
    if len(view) < HEADER_BYTES + TRAILER_BYTES:
        raise WireFormatError(
            f"expected at least {HEADER_BYTES + TRAILER_BYTES} bytes of message, got {len(view)}"
        )
    magic, version, flags, protocol_id, msg_type, round_id, sender, recipient, length = HEADER.unpack(
        view[:HEADER_BYTES]
    )
    if magic != MAGIC:
        raise WireFormatError(f"expected magic {MAGIC!r}, got {bytes(magic)!r}")
    if version != VERSION:
        raise WireFormatError(f"expected wire version {VERSION}, got {version}")
    if flags != 0:
        raise WireFormatError(f"expected flags 0, got {flags}")
    expected = HEADER_BYTES + length + TRAILER_BYTES
    if len(view) != expected:
        kind = "truncated" if len(view) < expected else "oversized"
        raise WireFormatError(f"{kind} message: header says {expected} bytes, got {len(view)}")
    (crc,) = struct.unpack(">I", view[-TRAILER_BYTES:])
    if zlib.crc32(view[:-TRAILER_BYTES]) != crc:
        raise WireFormatError("corrupted message: CRC32 mismatch")
    return Header(protocol_id, msg_type, round_id, sender, recipient, length, version)


def decode_message(
    data: bytes | memoryview,
    payload_types: Mapping[int, type[Payload]],
    *,
    protocol_id: int,
) -> tuple[Header, Payload]:
    """Check the header, then decode the payload with its registered type."""
    header = decode_header(data)
    if header.protocol_id != protocol_id:
        raise WireFormatError(f"expected protocol id {protocol_id}, got {header.protocol_id}")
    payload_type = payload_types.get(header.msg_type)
    if payload_type is None:
        raise WireFormatError(f"expected a message type in {sorted(payload_types)}, got {header.msg_type}")
    body = memoryview(data)[HEADER_BYTES : HEADER_BYTES + header.payload_len]
    try:
        payload = payload_type.from_bytes(body)
    except WireFormatError:
        raise
    except (ValueError, struct.error, IndexError, OverflowError) as exc:
        # A codec that slipped: report it as what it is, a malformed message.
        raise WireFormatError(f"malformed {payload_type.__name__}: {exc}") from exc
    return header, payload
