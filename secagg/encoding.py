"""Fixed-point encoding of float updates as integers of the ring Z_2^k.

Secret sharing and packed Paillier work on integers, model updates are floats. A value x
with ``frac_bits = f`` fractional bits becomes ``rint(x * 2^f)`` held in two's complement
of Z_2^k: -1 in Z_2^32 is 0xFFFFFFFF. Rounding is to nearest (half to even, numpy's
``rint``), so the codec's error bound is

    |decode(encode(x)) - x| <= 2^-(f+1)        for every |x| <= clip,

and a sum of n encodings decodes to within n * 2^-(f+1) of the float sum, provided the
sum never wraps around the ring. That is the bit budget: every encoded value lies in
[-M, M] with M = rint(clip * 2^f), so n values sum without wrap-around when
n * M <= 2^(k-1) - 1. :meth:`FixedPoint.check_budget` proves this before a round and
raises :class:`EncodingOverflowError` naming the numbers when it cannot hold. The
smaller rings leave little room: Z_2^16 holds 100 clients' values of |x| <= 1 with at
most 8 fractional bits (100 * 2^8 <= 2^15 - 1).

Modular codecs (``modular=True``) are for inputs that are already residues of a ring
whose decoder reduces modulo it (distributed DP's messages in Z_2^bits, with a ring of
k >= bits bits: 2^bits divides 2^k, so the sum mod 2^k reduced mod 2^bits is the Z_2^bits
sum). Their sums wrap by design, so no budget bounds n; a value may reach magnitude
2^(k-1) (+2^(k-1) and -2^(k-1) are one residue), and decode returns the signed residue
in [-2^(k-1), 2^(k-1)) / 2^f, not the integer sum.

Ring widths: k = 8..32 or 64. An element lives in memory in the smallest unsigned numpy
dtype that holds k bits (its *container*: uint8, uint16, uint32, uint64), and arithmetic
runs in the container: 2^k divides the container's modulus, so sums and differences stay
right mod 2^k whatever the container's high bits hold, and only reading a value (decode,
the wire) reduces it mod 2^k. For k = 8, 16, 32, 64 the container is the ring and an
element is k/8 bytes on the wire; any other k is bit-packed on the wire (k bits per
element, :func:`secagg.wire.pack_bits`), so Z_2^12 costs 1.5 bytes per value.

What leaks: nothing about the scale is secret. ``clip``, ``f`` and ``k`` travel in the
clear in a protocol's configuration; the encoding itself hides nothing, masks do.

>>> codec = FixedPoint(ring_bits=32, frac_bits=16, clip=1.0)
>>> codec.decode(codec.encode(np.array([0.5, -0.25]))).tolist()
[0.5, -0.25]
>>> int(codec.encode(np.array([-1.0]))[0]) == 2**32 - 2**16
True
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secagg.errors import ConfigError, EncodingOverflowError

# The widths whose container is the ring itself (no packing on the wire).
WHOLE_RING_BITS = (8, 16, 32, 64)
RING_BITS = (*range(8, 33), 64)
_UNSIGNED = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}
_SIGNED = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}
# float64 holds integers exactly up to 2^53: beyond it rint(x * 2^f) is no longer exact.
_EXACT_FLOAT_BITS = 53


def _check_ring_bits(ring_bits: int) -> None:
    if isinstance(ring_bits, bool) or ring_bits not in RING_BITS:
        raise ConfigError(f"ring_bits must be an int in 8..32 or 64, got {ring_bits!r}")


def container_bits(ring_bits: int) -> int:
    """The width of the numpy dtype holding elements of Z_2^ring_bits (8, 16, 32 or 64)."""
    _check_ring_bits(ring_bits)
    return next(k for k in WHOLE_RING_BITS if k >= ring_bits)


def ring_dtype(ring_bits: int) -> type[np.unsignedinteger]:
    """The unsigned numpy dtype that holds elements of Z_2^ring_bits (its container)."""
    return _UNSIGNED[container_bits(ring_bits)]  # type: ignore[return-value]


def is_packed(ring_bits: int) -> bool:
    """Whether Z_2^ring_bits travels bit-packed (k is not a whole dtype's width)."""
    _check_ring_bits(ring_bits)
    return ring_bits not in WHOLE_RING_BITS


def reduce(elements: np.ndarray, ring_bits: int) -> np.ndarray:
    """Container elements reduced mod 2^ring_bits, in place (a no-op for whole widths)."""
    if is_packed(ring_bits):
        np.bitwise_and(elements, elements.dtype.type((1 << ring_bits) - 1), out=elements)
    return elements


def ring_for(bits: int) -> int:
    """The smallest supported ring width k >= ``bits``: Z_2^bits embeds in Z_2^k exactly.

    >>> ring_for(4), ring_for(12), ring_for(16), ring_for(40)
    (8, 12, 16, 64)
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= RING_BITS[-1]:
        raise ConfigError(f"bits must be an int in [1, {RING_BITS[-1]}], got {bits!r}")
    return next(k for k in RING_BITS if k >= bits)


def most_frac_bits(*, clip: float, ring_bits: int, n_clients: int = 1) -> int | None:
    """The most fractional bits for which ``n_clients`` values of |x| <= clip sum without
    wrap-around in Z_2^ring_bits (None: not even 0 fit). For error messages and planning."""
    limit = (2 ** (ring_bits - 1) - 1) // max(n_clients, 1)
    if limit < 1 or int(np.rint(clip)) > limit:
        return None
    frac_bits = min(max(0, int(math.floor(math.log2(limit / clip))) + 1), _EXACT_FLOAT_BITS - 1)
    while frac_bits > 0 and int(np.rint(clip * 2.0**frac_bits)) > limit:
        frac_bits -= 1
    return frac_bits


@dataclass(frozen=True)
class FixedPoint:
    """A fixed-point codec: ``ring_bits`` k, ``frac_bits`` f and the accepted range ``clip``.

    Values must satisfy |x| <= clip; encode raises otherwise unless asked to clip.
    ``modular``: the inputs are residues and only their sum mod 2^k is wanted (see the
    module docstring); clip * 2^f may then reach 2^(k-1) and no client budget applies.
    """

    ring_bits: int = 32
    frac_bits: int = 16
    clip: float = 1.0
    modular: bool = False

    def __post_init__(self) -> None:
        ring_dtype(self.ring_bits)
        if not isinstance(self.modular, bool):
            raise ConfigError(f"modular must be a bool, got {self.modular!r}")
        if not isinstance(self.frac_bits, int) or self.frac_bits < 0:
            raise ConfigError(f"frac_bits must be a non-negative int, got {self.frac_bits!r}")
        if not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"clip must be a finite number > 0, got {self.clip!r}")
        magnitude = self.max_magnitude
        if magnitude == 0:
            # Every accepted value would encode to 0 and max_clients() would divide by zero.
            raise ConfigError(
                f"clip {self.clip} * 2^{self.frac_bits} rounds to 0: expected a magnitude >= 1; "
                "raise frac_bits or clip"
            )
        if magnitude > self.max_value:
            fits = most_frac_bits(clip=self.clip, ring_bits=self.ring_bits)
            hint = f"at most {fits} fractional bits fit" if fits is not None else "lower clip"
            wider = [k for k in WHOLE_RING_BITS if k > self.ring_bits]
            raise EncodingOverflowError(
                f"clip {self.clip} with {self.frac_bits} fractional bits needs magnitude "
                f"{magnitude}, more than Z_2^{self.ring_bits} holds signed "
                f"(max {self.max_value}); {hint}"
                + (f", or use ring_bits={wider[0]}" if wider else "")
            )
        if magnitude >= 2**_EXACT_FLOAT_BITS:
            raise EncodingOverflowError(
                f"clip {self.clip} * 2^{self.frac_bits} = {magnitude} exceeds 2^53: "
                "float64 can no longer round it exactly; use fewer fractional bits"
            )

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    @property
    def max_magnitude(self) -> int:
        """M = rint(clip * 2^f): the largest |encoded value| of an accepted input."""
        return int(np.rint(self.clip * 2.0**self.frac_bits))

    @property
    def max_value(self) -> int:
        """The largest magnitude an encoded input may have: 2^(k-1) - 1, or 2^(k-1) when
        ``modular`` (where -2^(k-1) and +2^(k-1) are one residue)."""
        return 2 ** (self.ring_bits - 1) - (0 if self.modular else 1)

    @property
    def period(self) -> float:
        """2^k / 2^f: the decoded value of one turn of the ring (a modular codec's sums are
        exact modulo it)."""
        return 2.0 ** (self.ring_bits - self.frac_bits)

    @property
    def error_bound(self) -> float:
        """Worst-case |decode(encode(x)) - x| for one value: 2^-(f+1)."""
        return 2.0 ** -(self.frac_bits + 1)

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return ring_dtype(self.ring_bits)

    def max_clients(self) -> int:
        """The largest n for which n encoded values always sum without wrap-around (a
        modular codec wraps by design: any n)."""
        if self.modular:
            return sys.maxsize
        return (2 ** (self.ring_bits - 1) - 1) // self.max_magnitude

    def check_budget(self, n_clients: int) -> None:
        """Prove that ``n_clients`` encodings sum without wrap-around, or raise (a modular
        codec's sums are wanted mod 2^k: only n >= 1 is checked)."""
        if n_clients < 1:
            raise ConfigError(f"n_clients must be >= 1, got {n_clients}")
        if self.modular:
            return
        worst = n_clients * self.max_magnitude
        limit = 2 ** (self.ring_bits - 1) - 1
        if worst > limit:
            fits = most_frac_bits(clip=self.clip, ring_bits=self.ring_bits, n_clients=n_clients)
            other = "" if fits is None else f" or frac_bits <= {fits},"
            wider = [k for k in WHOLE_RING_BITS if k > self.ring_bits]
            raise EncodingOverflowError(
                f"{n_clients} clients x clip {self.clip} x 2^{self.frac_bits} = {worst} "
                f"does not fit the signed range of Z_2^{self.ring_bits} (max {limit}); "
                f"at most {self.max_clients()} clients fit;{other} or lower clip"
                + (f", or use ring_bits={wider[0]}" if wider else "")
            )

    def encode(self, values: npt.ArrayLike, *, clip_values: bool = False) -> np.ndarray:
        """Encode floats to ring elements (a new uint32/uint64 array).

        Raises :class:`EncodingOverflowError` for NaN, Inf or |x| > clip, unless
        ``clip_values`` is true, in which case finite values are clipped to the range
        (NaN still raises: there is no honest value to clip it to).
        """
        return encode(
            values,
            ring_bits=self.ring_bits,
            frac_bits=self.frac_bits,
            clip=self.clip,
            clip_values=clip_values,
            modular=self.modular,
        )

    def decode(self, elements: npt.ArrayLike) -> np.ndarray:
        """Decode ring elements (single values or sums) to float64."""
        return decode(elements, ring_bits=self.ring_bits, frac_bits=self.frac_bits)

    @classmethod
    def plan(cls, *, clip: float, n_clients: int, ring_bits: int = 32, modular: bool = False) -> FixedPoint:
        """The codec with the most fractional bits whose budget holds for ``n_clients``
        (``modular``: for one value, since the sums wrap by design).

        >>> FixedPoint.plan(clip=1.0, n_clients=100, ring_bits=32).frac_bits
        24
        >>> FixedPoint.plan(clip=1.0, n_clients=100, ring_bits=16).frac_bits
        8
        """
        ring_dtype(ring_bits)
        if n_clients < 1:
            raise ConfigError(f"n_clients must be >= 1, got {n_clients}")
        limit = 2 ** (ring_bits - 1) - 1
        per_value = limit // (1 if modular else n_clients)
        if per_value < 1 or clip <= 0:
            raise EncodingOverflowError(
                f"{n_clients} clients cannot be summed in Z_2^{ring_bits} at any precision"
            )
        frac_bits = max(0, int(math.floor(math.log2(per_value / clip))) + 1)
        frac_bits = min(frac_bits, _EXACT_FLOAT_BITS - 1)
        while frac_bits >= 0:
            magnitude = int(np.rint(clip * 2.0**frac_bits))
            if magnitude <= per_value and magnitude < 2**_EXACT_FLOAT_BITS:
                return cls(ring_bits=ring_bits, frac_bits=frac_bits, clip=clip, modular=modular)
            frac_bits -= 1
        raise EncodingOverflowError(
            f"{n_clients} clients with clip {clip} do not fit Z_2^{ring_bits} even with 0 fractional bits"
        )


def check_range(values: np.ndarray, clip: float) -> None:
    """Raise unless every value is finite and within [-clip, clip] (two passes, no copies)."""
    if values.size == 0:
        return
    low, high = values.min(), values.max()
    # NaN propagates through min/max and fails both comparisons.
    if not (low >= -clip and high <= clip):
        if not (np.isfinite(low) and np.isfinite(high)):
            raise EncodingOverflowError(f"expected finite values within [-{clip}, {clip}], got NaN or Inf")
        raise EncodingOverflowError(
            f"expected values within [-{clip}, {clip}], got range [{low:.6g}, {high:.6g}]; "
            "raise clip or pass clip_values=True"
        )


def encode(
    values: npt.ArrayLike,
    *,
    ring_bits: int,
    frac_bits: int,
    clip: float,
    clip_values: bool = False,
    modular: bool = False,
) -> np.ndarray:
    """Encode floats as rint(x * 2^f) in two's complement of Z_2^ring_bits.

    Pure function behind :meth:`FixedPoint.encode`; see the module docstring for the
    error bound. ``modular``: values of magnitude up to 2^(k-1) wrap to their residue.
    """
    array = np.asarray(values, dtype=np.float64)
    if clip_values:
        if np.isnan(array).any():
            raise EncodingOverflowError("expected finite values to clip, got NaN")
        array = np.clip(array, -clip, clip)
    else:
        check_range(array, clip)
    scaled = array * float(2**frac_bits)
    np.rint(scaled, out=scaled)
    container = container_bits(ring_bits)
    if modular and container < 64:
        # +2^(k-1) may be out of the container's signed range (a float cast to it is
        # undefined in C): go through int64, whose narrowing cast is the reduction.
        out = scaled.astype(np.int64).astype(ring_dtype(ring_bits))
    else:
        # Signed cast then a free view: one pass for the rounding cast, none for the wrap.
        out = scaled.astype(_SIGNED[container]).view(ring_dtype(ring_bits))
    return reduce(out, ring_bits)


def decode(elements: npt.ArrayLike, *, ring_bits: int, frac_bits: int) -> np.ndarray:
    """Decode two's-complement ring elements to float64 (x = signed(u mod 2^k) / 2^f).

    Elements may be container words with any high bits (sums in the container): they are
    reduced mod 2^k and sign-extended from bit k-1.
    """
    dtype = ring_dtype(ring_bits)
    array = np.asarray(elements)
    if array.dtype != dtype:
        if array.dtype.kind not in "ui":
            raise EncodingOverflowError(
                f"expected integer ring elements ({np.dtype(dtype).name}), got {array.dtype}"
            )
        array = array.astype(dtype)
    container = container_bits(ring_bits)
    if container != ring_bits:
        # Move bit k-1 to the container's sign bit, then shift back arithmetically.
        shift = container - ring_bits
        signed = np.left_shift(array, dtype(shift)).view(_SIGNED[container])
        return np.right_shift(signed, shift).astype(np.float64) / float(2**frac_bits)
    return array.view(_SIGNED[ring_bits]).astype(np.float64) / float(2**frac_bits)
