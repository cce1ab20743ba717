"""Flatten a model's parameters or gradients into one vector, and back.

Protocols aggregate one flat float vector per client; models are dicts or lists of
tensors. :func:`flatten` accepts a ``state_dict``-like mapping, a sequence of tensors or
arrays, or a single array, and returns the vector plus a :class:`FlatSpec` (names,
shapes, dtypes) that :func:`unflatten` inverts. Torch is never imported: anything with
``.detach().cpu().numpy()`` (a torch tensor) or ``__array__`` is accepted.

>>> vector, spec = flatten({"w": np.ones((2, 2)), "b": np.zeros(3)})
>>> vector.shape, spec.size, [t.name for t in spec.tensors]
((7,), 7, ['w', 'b'])
>>> unflatten(vector, spec)["w"].shape
(2, 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from secagg.errors import ConfigError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class FlatSpec:
    """Where each tensor sits in the flat vector, in order."""

    tensors: tuple[TensorSpec, ...]

    @property
    def size(self) -> int:
        return sum(t.size for t in self.tensors)

    def offsets(self) -> list[tuple[int, int]]:
        """(start, stop) of each tensor in the flat vector."""
        spans, start = [], 0
        for tensor in self.tensors:
            spans.append((start, start + tensor.size))
            start += tensor.size
        return spans


def to_numpy(obj: Any) -> np.ndarray:
    """A numpy view or copy of a tensor-like object, without importing torch."""
    detach = getattr(obj, "detach", None)
    if callable(detach):
        return np.asarray(detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return obj
    if hasattr(obj, "__array__") or isinstance(obj, (int, float, list, tuple)):
        return np.asarray(obj)
    raise ConfigError(
        "expected a tensor (with .detach()), a numpy array or an object with __array__, "
        f"got {type(obj).__name__}"
    )


def flatten(params: Any, *, dtype: type[np.floating] = np.float64) -> tuple[np.ndarray, FlatSpec]:
    """One contiguous ``dtype`` vector of all parameters plus the spec to undo it."""
    if isinstance(params, Mapping):
        named = [(str(name), to_numpy(value)) for name, value in params.items()]
    elif isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        named = [(str(i), to_numpy(value)) for i, value in enumerate(params)]
    else:
        named = [("0", to_numpy(params))]
    if not named:
        raise ConfigError("expected at least one tensor to flatten, got none")
    specs = tuple(TensorSpec(name, tuple(int(d) for d in a.shape), a.dtype.str) for name, a in named)
    vector = np.empty(sum(s.size for s in specs), dtype=dtype)
    start = 0
    for (_, array), spec in zip(named, specs):
        vector[start : start + spec.size] = array.reshape(-1)
        start += spec.size
    return vector, FlatSpec(specs)


def unflatten(vector: np.ndarray, spec: FlatSpec, *, keep_dtype: bool = True) -> dict[str, np.ndarray]:
    """The tensors of ``spec`` cut back out of ``vector`` (as their original dtypes)."""
    vector = np.asarray(vector)
    if vector.ndim != 1 or vector.size != spec.size:
        raise ConfigError(f"expected a flat vector of {spec.size} values, got shape {vector.shape}")
    out: dict[str, np.ndarray] = {}
    for tensor, (start, stop) in zip(spec.tensors, spec.offsets()):
        piece = vector[start:stop].reshape(tensor.shape)
        out[tensor.name] = piece.astype(np.dtype(tensor.dtype)) if keep_dtype else piece.copy()
    return out
