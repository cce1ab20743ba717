"""Fixed-point encoding of float updates as integers of the ring Z_2^k.

Secret sharing and packed Paillier work on integers, model updates are floats. A value x
with ``frac_bits = f`` fractional bits becomes ``rint(x * 2^f)`` held in two's complement
of Z_2^k (k = 32 or 64): -1 in Z_2^32 is 0xFFFFFFFF. Rounding is to nearest (half to
even, numpy's ``rint``), so the codec's error bound is

    |decode(encode(x)) - x| <= 2^-(f+1)        for every |x| <= clip,

and a sum of n encodings decodes to within n * 2^-(f+1) of the float sum, provided the
sum never wraps around the ring. That is the bit budget: every encoded value lies in
[-M, M] with M = rint(clip * 2^f), so n values sum without wrap-around when
n * M <= 2^(k-1) - 1. :meth:`FixedPoint.check_budget` proves this before a round and
raises :class:`EncodingOverflowError` naming the numbers when it cannot hold.

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
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secagg.errors import ConfigError, EncodingOverflowError

RING_BITS = (32, 64)
_UNSIGNED = {32: np.uint32, 64: np.uint64}
_SIGNED = {32: np.int32, 64: np.int64}
# float64 holds integers exactly up to 2^53: beyond it rint(x * 2^f) is no longer exact.
_EXACT_FLOAT_BITS = 53


def ring_dtype(ring_bits: int) -> type[np.unsignedinteger]:
    """The unsigned numpy dtype that holds elements of Z_2^ring_bits."""
    if ring_bits not in _UNSIGNED:
        raise ConfigError(f"ring_bits must be one of {RING_BITS}, got {ring_bits!r}")
    return _UNSIGNED[ring_bits]  # type: ignore[return-value]


@dataclass(frozen=True)
class FixedPoint:
    """A fixed-point codec: ``ring_bits`` k, ``frac_bits`` f and the accepted range ``clip``.

    Values must satisfy |x| <= clip; encode raises otherwise unless asked to clip.
    """

    ring_bits: int = 32
    frac_bits: int = 16
    clip: float = 1.0

    def __post_init__(self) -> None:
        ring_dtype(self.ring_bits)
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
        if magnitude > 2 ** (self.ring_bits - 1) - 1:
            raise EncodingOverflowError(
                f"clip {self.clip} with {self.frac_bits} fractional bits needs magnitude "
                f"{magnitude}, more than Z_2^{self.ring_bits} holds signed "
                f"(max {2 ** (self.ring_bits - 1) - 1})"
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
    def error_bound(self) -> float:
        """Worst-case |decode(encode(x)) - x| for one value: 2^-(f+1)."""
        return 2.0 ** -(self.frac_bits + 1)

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return ring_dtype(self.ring_bits)

    def max_clients(self) -> int:
        """The largest n for which n encoded values always sum without wrap-around."""
        return (2 ** (self.ring_bits - 1) - 1) // self.max_magnitude

    def check_budget(self, n_clients: int) -> None:
        """Prove that ``n_clients`` encodings sum without wrap-around, or raise."""
        if n_clients < 1:
            raise ConfigError(f"n_clients must be >= 1, got {n_clients}")
        worst = n_clients * self.max_magnitude
        limit = 2 ** (self.ring_bits - 1) - 1
        if worst > limit:
            raise EncodingOverflowError(
                f"{n_clients} clients x clip {self.clip} x 2^{self.frac_bits} = {worst} "
                f"does not fit the signed range of Z_2^{self.ring_bits} (max {limit}); "
                f"at most {self.max_clients()} clients fit, or lower frac_bits/clip"
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
        )

    def decode(self, elements: npt.ArrayLike) -> np.ndarray:
        """Decode ring elements (single values or sums) to float64."""
        return decode(elements, ring_bits=self.ring_bits, frac_bits=self.frac_bits)

    @classmethod
    def plan(cls, *, clip: float, n_clients: int, ring_bits: int = 32) -> FixedPoint:
        """The codec with the most fractional bits whose budget holds for ``n_clients``.

        >>> FixedPoint.plan(clip=1.0, n_clients=100, ring_bits=32).frac_bits
        24
        """
        ring_dtype(ring_bits)
        if n_clients < 1:
            raise ConfigError(f"n_clients must be >= 1, got {n_clients}")
        limit = 2 ** (ring_bits - 1) - 1
        per_value = limit // n_clients
        if per_value < 1 or clip <= 0:
            raise EncodingOverflowError(
                f"{n_clients} clients cannot be summed in Z_2^{ring_bits} at any precision"
            )
        frac_bits = max(0, int(math.floor(math.log2(per_value / clip))) + 1)
        frac_bits = min(frac_bits, _EXACT_FLOAT_BITS - 1)
        while frac_bits >= 0:
            magnitude = int(np.rint(clip * 2.0**frac_bits))
            if magnitude * n_clients <= limit and magnitude < 2**_EXACT_FLOAT_BITS:
                return cls(ring_bits=ring_bits, frac_bits=frac_bits, clip=clip)
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
) -> np.ndarray:
    """Encode floats as rint(x * 2^f) in two's complement of Z_2^ring_bits.

    Pure function behind :meth:`FixedPoint.encode`; see the module docstring for the
    error bound.
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
    # Signed cast then a free view: one pass for the rounding cast, none for the wrap.
    return scaled.astype(_SIGNED[ring_bits]).view(ring_dtype(ring_bits))


def decode(elements: npt.ArrayLike, *, ring_bits: int, frac_bits: int) -> np.ndarray:
    """Decode two's-complement ring elements to float64 (x = signed(u) / 2^f)."""
    dtype = ring_dtype(ring_bits)
    array = np.asarray(elements)
    if array.dtype != dtype:
        if array.dtype.kind not in "ui":
            raise EncodingOverflowError(
                f"expected integer ring elements ({np.dtype(dtype).name}), got {array.dtype}"
            )
        array = array.astype(dtype)
    return array.view(_SIGNED[ring_bits]).astype(np.float64) / float(2**frac_bits)
