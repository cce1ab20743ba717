"""Party state as bytes: an explicit, versioned, typed layout that never runs code.

A distributed runtime keeps a party between messages (a node's state may be loaded by
another worker process) and hands dealt parties to other machines, so a party must
become bytes and come back. Pickle cannot be used for that: loading a pickle calls
whatever callable the bytes name. This codec writes a party as a tree of typed values,
and loading can only build

- plain values: None, bool, int (bounded length), float, str, bytes, and the containers
  list, tuple, dict, set, frozenset;
- numpy arrays and scalars of boolean, integer, float or complex dtypes (never object);
- instances of the classes the protocol *declares* (:attr:`secagg.protocol.Protocol.state_types`,
  plus a few core records), rebuilt field by field without calling their constructor;
- leaf values (key objects of other libraries) through the :class:`LeafCodec` the
  protocol declares, each a pure function from bytes to a value.

A class or leaf name in the bytes is looked up in that declared table and nothing else:
no import, no attribute lookup by name. Unknown names, wrong tags, oversized lengths,
too deep nesting and trailing bytes raise :class:`secagg.errors.WireFormatError`.

Layout (integers big-endian, via :class:`secagg.wire.Writer`)::

    b"SGST" | u8 version (1) | value

    value := u8 tag, then by tag
      0 None | 1 False | 2 True
      3 int      u8 sign (0 or 1), blob magnitude (big-endian, at most 8192 bytes)
      4 float    f64
      5 str      text (utf-8, at most 1 MiB)
      6 bytes    blob
      7 list | 8 tuple | 10 set | 11 frozenset    u32 count, values
      9 dict     u32 count, (key value) pairs
      12 array   text dtype (e.g. "<f8"), u8 ndim, u64 per dimension, blob data
      13 scalar  text dtype, blob data (one element)
      14 dtype   text dtype: a numpy scalar type (e.g. numpy.float32)
      15 object  text class name, u32 field count, (text field, value) pairs
      16 leaf    text leaf name, blob
      17 ref     text reference name (an array the loader supplies, see ``references``)

Placeholders (``dump(..., placeholders={id(array): name})``) write an array as a
reference that the loader replaces (``load(..., references={name: array})``): a dealer
builds a client's party around a stand-in for the client's update, and the client node
swaps its own update in. What this codec does not give: authenticity. Bytes from
another machine must be signed (:mod:`secagg.signing`) before they are loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secagg.encoding import FixedPoint
from secagg.errors import ConfigError, WireFormatError
from secagg.party import Holding, Revealed
from secagg.wire import Header, Reader, Writer

MAGIC = b"SGST"
VERSION = 1
MAX_DEPTH = 48
MAX_INT_BYTES = 8192
MAX_TEXT = 1 << 20
_DTYPE_PATTERN = re.compile(r"^[<>|][biufc][0-9]{1,2}$")

_NONE, _FALSE, _TRUE, _INT, _FLOAT, _STR, _BYTES = 0, 1, 2, 3, 4, 5, 6
_LIST, _TUPLE, _DICT, _SET, _FROZENSET = 7, 8, 9, 10, 11
_ARRAY, _SCALAR, _DTYPE, _OBJECT, _LEAF, _REF = 12, 13, 14, 15, 16, 17
_SEQUENCES: dict[int, Callable[[list[Any]], Any]] = {
    _LIST: list,
    _TUPLE: tuple,
    _SET: set,
    _FROZENSET: frozenset,
}


_CONTAINER_TAGS: dict[type, int] = {list: _LIST, tuple: _TUPLE, set: _SET, frozenset: _FROZENSET}


@dataclass(frozen=True)
class LeafCodec:
    """How one foreign type (a key object of another library) becomes bytes and back.

    ``decode`` must only parse its bytes (no lookups by name); it may raise anything,
    which loading reports as :class:`WireFormatError`.
    """

    name: str
    kind: type
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


def _x25519_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def _ed25519_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


CORE_TYPES: tuple[type, ...] = (Revealed, Holding, Header, FixedPoint)
CORE_LEAVES: tuple[LeafCodec, ...] = (
    LeafCodec("x25519-private", X25519PrivateKey, _x25519_private, X25519PrivateKey.from_private_bytes),
    LeafCodec(
        "x25519-public", X25519PublicKey, lambda k: k.public_bytes_raw(), X25519PublicKey.from_public_bytes
    ),
    LeafCodec("ed25519-private", Ed25519PrivateKey, _ed25519_private, Ed25519PrivateKey.from_private_bytes),
    LeafCodec(
        "ed25519-public", Ed25519PublicKey, lambda k: k.public_bytes_raw(), Ed25519PublicKey.from_public_bytes
    ),
)


def type_name(cls: type) -> str:
    """The name a class is written under (its module and qualified name)."""
    return f"{cls.__module__}.{cls.__qualname__}"


class StateCodec:
    """Dumps and loads state made of plain values, numpy, declared classes and leaves."""

    def __init__(self, types: Iterable[type] = (), leaves: Iterable[LeafCodec] = ()) -> None:
        self._types: dict[str, type] = {}
        for cls in (*CORE_TYPES, *types):
            if not isinstance(cls, type):
                raise ConfigError(f"state types: expected classes, got {cls!r}")
            self._types[type_name(cls)] = cls
        self._leaves: dict[str, LeafCodec] = {}
        self._leaf_of: dict[type, LeafCodec] = {}
        for leaf in (*CORE_LEAVES, *leaves):
            if leaf.name in self._leaves and self._leaves[leaf.name] is not leaf:
                raise ConfigError(f"state leaves: name {leaf.name!r} declared twice")
            self._leaves[leaf.name] = leaf
            self._leaf_of[leaf.kind] = leaf

    # -- dump -----------------------------------------------------------------------------

    def dump(self, value: object, *, placeholders: Mapping[int, str] | None = None) -> tuple[bytes, set[str]]:
        """``value`` as bytes, and the placeholder names it referred to."""
        writer = Writer().raw(MAGIC).u8(VERSION)
        referenced: set[str] = set()
        self._write(writer, value, dict(placeholders or {}), referenced, 0)
        return writer.to_bytes(), referenced

    def _write(
        self, out: Writer, value: object, holders: Mapping[int, str], referenced: set[str], depth: int
    ) -> None:
        if depth > MAX_DEPTH:
            raise ConfigError(f"state: nesting deeper than {MAX_DEPTH} (a cycle?)")
        if value is None:
            out.u8(_NONE)
        elif value is True or value is False:
            out.u8(_TRUE if value else _FALSE)
        elif type(value) is int:
            magnitude = abs(value)
            out.u8(_INT).u8(1 if value < 0 else 0).blob(
                magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big")
            )
        elif type(value) is float:
            out.u8(_FLOAT).f64(value)
        elif type(value) is str:
            out.u8(_STR).text(value)
        elif isinstance(value, (bytes, bytearray)) and type(value) in (bytes, bytearray):
            out.u8(_BYTES).blob(bytes(value))
        elif isinstance(value, (list, tuple, set, frozenset)) and type(value) in _CONTAINER_TAGS:
            tag = _CONTAINER_TAGS[type(value)]
            items = list(value)
            out.u8(tag).u32(len(items))
            for item in items:
                self._write(out, item, holders, referenced, depth + 1)
        elif type(value) is dict:
            out.u8(_DICT).u32(len(value))
            for key, item in value.items():
                self._write(out, key, holders, referenced, depth + 1)
                self._write(out, item, holders, referenced, depth + 1)
        elif isinstance(value, np.ndarray):
            name = holders.get(id(value))
            if name is not None:
                referenced.add(name)
                out.u8(_REF).text(name)
                return
            array = np.ascontiguousarray(value)
            out.u8(_ARRAY).text(_dtype_text(array.dtype)).u8(array.ndim)
            for dim in array.shape:
                out.u64(dim)
            out.blob(array.tobytes())
        elif isinstance(value, np.generic):
            out.u8(_SCALAR).text(_dtype_text(value.dtype)).blob(value.tobytes())
        elif isinstance(value, type) and issubclass(value, np.generic):
            out.u8(_DTYPE).text(_dtype_text(np.dtype(value)))
        elif type(value) in self._leaf_of:
            leaf = self._leaf_of[type(value)]
            out.u8(_LEAF).text(leaf.name).blob(leaf.encode(value))
        elif type_name(type(value)) in self._types and self._types[type_name(type(value))] is type(value):
            fields = getattr(value, "__dict__", None)
            if fields is None:
                raise ConfigError(f"state: {type_name(type(value))} has no __dict__ to write")
            out.u8(_OBJECT).text(type_name(type(value))).u32(len(fields))
            for field_name, item in fields.items():
                out.text(field_name)
                self._write(out, item, holders, referenced, depth + 1)
        else:
            raise ConfigError(
                f"state: cannot write a {type_name(type(value))}; expected plain values, numpy, "
                f"a class the protocol declares in state_types or a type with a LeafCodec in state_leaves"
            )

    # -- load -----------------------------------------------------------------------------

    def load(
        self, data: bytes, *, references: Mapping[str, np.ndarray] | None = None, what: str = "party state"
    ) -> tuple[Any, set[str]]:
        """The value :meth:`dump` wrote, with references replaced; and the references used."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise WireFormatError(f"{what}: expected bytes, got {type(data).__name__}")
        reader = Reader(bytes(data), what)
        magic = reader.raw(len(MAGIC), "magic")
        if magic != MAGIC:
            raise WireFormatError(f"{what}: expected magic {MAGIC!r}, got {magic!r}")
        version = reader.u8("version")
        if version != VERSION:
            raise WireFormatError(f"{what}: expected state version {VERSION}, got {version}")
        used: set[str] = set()
        value = self._read(reader, dict(references or {}), used, 0, what)
        reader.done()
        return value, used

    def _read(
        self, reader: Reader, references: Mapping[str, np.ndarray], used: set[str], depth: int, what: str
    ) -> Any:
        if depth > MAX_DEPTH:
            raise WireFormatError(f"{what}: nesting deeper than {MAX_DEPTH}")
        tag = reader.u8("tag")
        if tag == _NONE:
            return None
        if tag in (_FALSE, _TRUE):
            return tag == _TRUE
        if tag == _INT:
            sign = reader.u8("int sign")
            if sign > 1:
                raise WireFormatError(f"{what}: expected int sign 0 or 1, got {sign}")
            magnitude = int.from_bytes(reader.blob("int", MAX_INT_BYTES), "big")
            return -magnitude if sign else magnitude
        if tag == _FLOAT:
            return reader.f64("float")
        if tag == _STR:
            return reader.text("str", MAX_TEXT)
        if tag == _BYTES:
            return reader.blob("bytes")
        if tag in _SEQUENCES or tag == _DICT:
            count = reader.u32("count")
            if count > len(reader._data):  # every item takes at least one byte
                raise WireFormatError(f"{what}: container of {count} items in {len(reader._data)} bytes")
            try:
                if tag == _DICT:
                    return {
                        self._read(reader, references, used, depth + 1, what): self._read(
                            reader, references, used, depth + 1, what
                        )
                        for _ in range(count)
                    }
                return _SEQUENCES[tag](
                    [self._read(reader, references, used, depth + 1, what) for _ in range(count)]
                )
            except TypeError as exc:  # an unhashable key or set element
                raise WireFormatError(f"{what}: {exc}") from None
        if tag == _ARRAY:
            dtype = _dtype_from(reader.text("dtype", 8), what)
            ndim = reader.u8("ndim")
            if ndim > 8:
                raise WireFormatError(f"{what}: expected at most 8 dimensions, got {ndim}")
            shape = tuple(reader.u64("dimension") for _ in range(ndim))
            raw = reader.blob("array data")
            count = 1
            for dim in shape:
                count *= dim
            if count * dtype.itemsize != len(raw):
                raise WireFormatError(
                    f"{what}: array of shape {shape} and dtype {dtype} needs {count * dtype.itemsize} bytes, "
                    f"got {len(raw)}"
                )
            return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        if tag == _SCALAR:
            dtype = _dtype_from(reader.text("dtype", 8), what)
            raw = reader.blob("scalar", 64)
            if len(raw) != dtype.itemsize:
                raise WireFormatError(
                    f"{what}: scalar of {dtype} needs {dtype.itemsize} bytes, got {len(raw)}"
                )
            return np.frombuffer(raw, dtype=dtype)[0]
        if tag == _DTYPE:
            return _dtype_from(reader.text("dtype", 8), what).type
        if tag == _OBJECT:
            name = reader.text("class", 512)
            cls = self._types.get(name)
            if cls is None:
                raise WireFormatError(f"{what}: expected a declared class, got {name!r}")
            count = reader.u32("field count")
            if count > 4096:
                raise WireFormatError(f"{what}: {name} with {count} fields")
            fields: dict[str, Any] = {}
            for _ in range(count):
                field_name = reader.text("field", 256)
                if not field_name.isidentifier() or field_name.startswith("__"):
                    raise WireFormatError(
                        f"{what}: {name} field name {field_name!r} is not a plain attribute"
                    )
                fields[field_name] = self._read(reader, references, used, depth + 1, what)
            instance: Any = object.__new__(cls)
            instance.__dict__.update(fields)
            return instance
        if tag == _LEAF:
            name = reader.text("leaf", 256)
            leaf = self._leaves.get(name)
            if leaf is None:
                raise WireFormatError(f"{what}: expected a declared leaf type, got {name!r}")
            raw = reader.blob(name)
            try:
                return leaf.decode(raw)
            except Exception as exc:  # noqa: BLE001 - any parser failure is malformed bytes
                raise WireFormatError(f"{what}: malformed {name}: {type(exc).__name__}: {exc}") from None
        if tag == _REF:
            name = reader.text("reference", 256)
            if name not in references:
                raise WireFormatError(f"{what}: refers to {name!r}; expected one of {sorted(references)}")
            used.add(name)
            return references[name]
        raise WireFormatError(f"{what}: unknown tag {tag}")


def _dtype_text(dtype: np.dtype[Any]) -> str:
    text = dtype.str
    if not _DTYPE_PATTERN.match(text):
        raise ConfigError(
            f"state: cannot write arrays of dtype {dtype}; expected bool, integer, float or complex"
        )
    return text


def _dtype_from(text: str, what: str) -> np.dtype[Any]:
    if not _DTYPE_PATTERN.match(text):
        raise WireFormatError(f"{what}: expected a bool/int/float/complex dtype, got {text!r}")
    try:
        return np.dtype(text)
    except TypeError:
        raise WireFormatError(f"{what}: unknown dtype {text!r}") from None
