"""Client-side defences: composable transforms of a flat update, applied before any protocol.

What it is: the defences evaluated by Deep Leakage from Gradients (Zhu, Liu, Han,
NeurIPS 2019, Section 5) and the usual DP-SGD one, as pure functions of a flat float
update. A client runs ``transform.apply(update, rng)`` on its gradient or weight delta
and hands the result to whatever protocol aggregates it; the protocol never knows.

- :class:`GaussianNoise`, :class:`LaplaceNoise`: additive noise of a given VARIANCE per
  coordinate, the DLG paper's parametrisation (it sweeps variance 1e-4 .. 1e-1). Laplace
  of variance v has scale b = sqrt(v / 2).
- :class:`DPGaussian`: DP-SGD-style (Abadi et al. 2016) L2 clipping of the whole update
  to ``clip`` followed by Gaussian noise of std ``noise_multiplier * clip``, with the
  (epsilon, delta) of :mod:`secagg.defences.dp` (Rényi accountant of the sampled Gaussian
  mechanism, Mironov, Talwar, Zhang 2019). The unit protected is one client's update
  (add/remove-one-client adjacency, L2 sensitivity ``clip``): client-level DP in the
  sense of DP-FedAvg (McMahan et al. 2018) with the noise added locally.
- :class:`Float16`, :class:`BFloat16`, :class:`Int8`: quantisation round trips
  (encode, then decode back to the input's float dtype). bf16 is emulated in numpy by
  round-to-nearest-even on the top 16 bits of the float32 bit pattern; int8 is symmetric
  with one scale ``max|x| / 127`` per tensor (per ``segments`` entry, or the whole vector).
- :class:`Prune`: magnitude pruning, exactly ``floor(ratio * n)`` of the smallest-|x|
  entries set to zero (ties: the lower index is pruned first).
- :class:`TopK`: top-k sparsification, the ``k`` largest-|x| entries kept (ties: the
  lower index is kept first), everything else zero.
- :class:`Compose`: a pipeline; :func:`parse_transforms` builds one from a CLI spec such
  as ``"dp:clip=1.0,noise_multiplier=1.1,sample_rate=0.01,steps=100,delta=1e-5"`` or
  ``"prune:ratio=0.3+fp16"`` (stages joined by ``+``, applied left to right).

Randomness: noise comes from the ``rng`` argument, by default a fresh
:class:`SecureRandom`: the AES-256-CTR keystream of :mod:`secagg.prf` under a key derived
(HKDF) from 32 bytes of ``os.urandom``, read as 53-bit uniforms and turned into Gaussian
(Box-Muller) or Laplace (inverse CDF) samples, vectorised. An observer who sees noisy
updates cannot predict or subtract the noise without the seed (AES is a PRF), unlike a
statistical generator (numpy's PCG64, torch's Mersenne Twister: enough outputs reveal the
state). A ``numpy.random.Generator`` may still be passed explicitly: that is for
simulations that must be reproducible (benchmarks, tests), never for a deployed client.

What is and is not claimed for the float mechanisms (GaussianNoise, LaplaceNoise,
DPGaussian): the uniforms are indistinguishable from uniform multiples of 2^-53 and the
samples follow the target distribution up to float64 rounding (the variance and kurtosis
tests check it), except that Box-Muller never goes beyond about 8.6 standard deviations
(sqrt(-2 ln 2^-54)) and Laplace beyond about 37 scales. The (epsilon, delta) that
:class:`DPGaussian` reports is the guarantee of the *ideal* real-valued Gaussian
mechanism. Textbook floating-point samplers do not realise it exactly: the set of floats
a sample can take, and its low-order bits, depend on the true value, and Mironov (CCS
2012) recovers the input from Laplace noise this way; Box-Muller output has the same kind
of gap. This module does not defend against that (a discrete or snapping mechanism
would); :mod:`secagg.defences.ddp` draws exact discrete noise from the same kind of keyed
stream where a proof must hold end to end. Cost: about 2.8x numpy's PCG64 in CPU time
for a million Gaussians (measured once here).

``relative_error(aggregate_with, aggregate_without)`` is the utility cost shared by
all of them: ``||with - without||_2 / ||without||_2``; :func:`aggregate_error` applies
a transform to every client's update and measures it on their sum.

>>> pipeline = parse_transforms("prune:ratio=0.5+int8")
>>> pipeline.spec
'prune:ratio=0.5+int8'
>>> np.round(pipeline.apply(np.array([0.1, -2.0, 0.03, 1.0])), 4).tolist()
[0.0, -2.0, 0.0, 1.0079]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from secagg import prf
from secagg.defences import dp
from secagg.errors import ConfigError, EncodingOverflowError, SecAggError


class UpdateError(SecAggError, ValueError):
    """An update that is not a finite, one-dimensional float vector."""


class NoiseSource(Protocol):
    """What a transform draws noise from: :class:`SecureRandom` (the default) or, for
    reproducible simulations only, a ``numpy.random.Generator``."""

    def normal(self, loc: float = ..., scale: float = ..., size: Any = ...) -> Any: ...

    def laplace(self, loc: float = ..., scale: float = ..., size: Any = ...) -> Any: ...


# Domain label of the defence-noise stream (distinct from every mask and DDP label).
_NOISE_LABEL = prf.domain("defences/float-noise", round_id=0)


class SecureRandom:
    """Gaussian and Laplace samples from a keyed PRF stream (the default noise source).

    Every uniform is 53 bits of the AES-256-CTR keystream of :func:`secagg.prf.stream`
    under HKDF(``seed``); ``seed`` defaults to 32 bytes of ``os.urandom``, and a fixed seed
    reproduces the samples (tests). The stream is consumed in order, never rewound, so two
    draws from one source never share keystream. Gaussians by Box-Muller, Laplace by the
    inverse CDF; only ``normal`` and ``laplace`` are offered. Float caveats: see the
    module docstring.
    """

    _STEP = 2.0**-53

    def __init__(self, seed: bytes | None = None) -> None:
        self._encryptor = prf.stream(prf.random_seed() if seed is None else bytes(seed),
                                     _NOISE_LABEL)

    def _uniform_open(self, n: int) -> np.ndarray:
        """n uniforms in the open interval (0, 1): (k + 1/2) 2^-53, k in [0, 2^53)."""
        keystream = self._encryptor.update(bytes(8 * n))
        words = np.frombuffer(keystream, dtype="<u8") >> np.uint64(11)
        return (words.astype(np.float64) + 0.5) * self._STEP

    @staticmethod
    def _count(size: Any) -> tuple[int, tuple[int, ...]]:
        shape: tuple[int, ...]
        if size is None:
            shape = ()
        elif isinstance(size, (int, np.integer)):
            shape = (int(size),)
        else:
            shape = tuple(int(s) for s in size)
        return int(np.prod(shape, dtype=np.int64)), shape

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Any = None) -> Any:
        n, shape = self._count(size)
        pairs = (n + 1) // 2
        u1, u2 = self._uniform_open(pairs), self._uniform_open(pairs)
        radius = np.sqrt(-2.0 * np.log(u1))
        angle = 2.0 * np.pi * u2
        z = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]
        out = loc + scale * z
        return out.reshape(shape) if shape else float(out[0])

    def laplace(self, loc: float = 0.0, scale: float = 1.0, size: Any = None) -> Any:
        n, shape = self._count(size)
        u = self._uniform_open(n) - 0.5  # symmetric, open: |u| < 1/2, never 0 exactly
        out = loc - scale * np.sign(u) * np.log1p(-2.0 * np.abs(u))
        return out.reshape(shape) if shape else float(out[0])


def relative_error(aggregate_with: np.ndarray, aggregate_without: np.ndarray) -> float:
    """``||with - without||_2 / ||without||_2`` (0 for two zero vectors, inf if only the
    reference is zero)."""
    a = np.asarray(aggregate_with, dtype=np.float64).ravel()
    b = np.asarray(aggregate_without, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise UpdateError(f"expected two vectors of the same length, got {a.size} and {b.size}")
    reference = float(np.linalg.norm(b))
    difference = float(np.linalg.norm(a - b))
    if reference == 0.0:
        return 0.0 if difference == 0.0 else math.inf
    return difference / reference


def aggregate_error(transform: Transform, updates: Sequence[np.ndarray],
                    rng: NoiseSource | None = None) -> float:
    """Utility cost of ``transform`` on one round: the relative error of the sum of the
    transformed updates against the sum of the originals (what the server would reveal)."""
    if not updates:
        raise UpdateError("expected at least one update, got none")
    source = rng if rng is not None else SecureRandom()
    plain = np.sum([_as_update(u).astype(np.float64) for u in updates], axis=0)
    defended = np.sum([transform.apply(u, source).astype(np.float64) for u in updates], axis=0)
    return relative_error(defended, plain)


def _as_update(update: np.ndarray) -> np.ndarray:
    array = np.asarray(update)
    if array.ndim != 1:
        raise UpdateError(f"expected a flat (1-D) update, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        if not np.issubdtype(array.dtype, np.integer):
            raise UpdateError(f"expected a float update, got dtype {array.dtype}")
        array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise UpdateError(f"expected a finite update, got {int(np.sum(~np.isfinite(array)))} "
                          "non-finite entries")
    return array


def _check_segments(segments: tuple[int, ...], n: int) -> list[tuple[int, int]]:
    if not segments:
        return [(0, n)]
    if sum(segments) != n:
        raise UpdateError(f"expected segments summing to the update length {n}, "
                          f"got {sum(segments)}")
    bounds = np.concatenate([[0], np.cumsum(segments)])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


class Transform:
    """Base of every transform: a frozen dataclass config with a pure ``apply``.

    Subclasses set ``kind`` (the spec name) and ``aliases`` (short spec keys).
    """

    kind: ClassVar[str] = ""
    aliases: ClassVar[dict[str, str]] = {}
    # Fields that a spec string cannot carry (they are bound by the caller).
    unspecced: ClassVar[tuple[str, ...]] = ()

    def apply(self, update: np.ndarray, rng: NoiseSource | None = None) -> np.ndarray:
        return self._apply(_as_update(update), rng)

    def _apply(self, update: np.ndarray, rng: NoiseSource | None) -> np.ndarray:
        raise NotImplementedError

    @property
    def stages(self) -> tuple[Transform, ...]:
        """The plain transforms this one applies, in order: itself (a :class:`Compose`, its
        stages)."""
        return (self,)

    @property
    def spec(self) -> str:
        params = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name in self.unspecced:
                continue
            params.append(f"{f.name}={getattr(self, f.name)!r}")
        return self.kind + (":" + ",".join(params) if params else "")

    def describe(self) -> dict[str, Any]:
        """JSON-ready record of the transform (spec plus what it guarantees)."""
        return {"spec": self.spec}


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"expected {name} to be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class GaussianNoise(Transform):
    """Add N(0, variance) to every coordinate."""

    variance: float
    kind: ClassVar[str] = "gaussian"
    aliases: ClassVar[dict[str, str]] = {"var": "variance"}

    def __post_init__(self) -> None:
        _positive("variance", self.variance)

    def _apply(self, update: np.ndarray, rng: NoiseSource | None) -> np.ndarray:
        source = rng if rng is not None else SecureRandom()
        noise = np.asarray(source.normal(0.0, math.sqrt(self.variance), update.shape))
        return (update + noise).astype(update.dtype, copy=False)


@dataclass(frozen=True)
class LaplaceNoise(Transform):
    """Add Laplace noise of the given variance (scale sqrt(variance / 2)) to every coordinate."""

    variance: float
    kind: ClassVar[str] = "laplace"
    aliases: ClassVar[dict[str, str]] = {"var": "variance"}

    def __post_init__(self) -> None:
        _positive("variance", self.variance)

    def _apply(self, update: np.ndarray, rng: NoiseSource | None) -> np.ndarray:
        source = rng if rng is not None else SecureRandom()
        noise = np.asarray(source.laplace(0.0, math.sqrt(self.variance / 2.0), update.shape))
        return (update + noise).astype(update.dtype, copy=False)


@dataclass(frozen=True)
class DPGaussian(Transform):
    """Clip the update's L2 norm to ``clip``, add N(0, (noise_multiplier * clip)^2).

    ``sample_rate`` (probability a client takes part in a round), ``steps`` (rounds) and
    ``delta`` only feed the accountant: :meth:`privacy_spent` is the guarantee for the
    released model against an observer who does not know which clients were sampled.
    The server that receives this client's message knows it took part, so against the
    server there is no amplification by sampling: :meth:`privacy_spent_against_server`
    accounts q = 1 over the expected ``ceil(sample_rate * steps)`` participations.
    """

    clip: float
    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1
    delta: float = 1e-5
    kind: ClassVar[str] = "dp"
    aliases: ClassVar[dict[str, str]] = {"sigma": "noise_multiplier", "q": "sample_rate",
                                         "c": "clip"}

    def __post_init__(self) -> None:
        _positive("clip", self.clip)
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ConfigError(f"expected noise_multiplier >= 0 and finite, "
                              f"got {self.noise_multiplier!r}")
        if not 0.0 < self.sample_rate <= 1.0:
            raise ConfigError(f"expected sample_rate in (0, 1], got {self.sample_rate!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"expected steps to be an int >= 1, got {self.steps!r}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"expected delta in (0, 1), got {self.delta!r}")

    def clip_update(self, update: np.ndarray) -> np.ndarray:
        """The clipped update alone (no noise): ``update * min(1, clip / ||update||)``."""
        array = _as_update(update)
        norm = float(np.linalg.norm(array.astype(np.float64)))
        factor = min(1.0, self.clip / norm) if norm > 0 else 1.0
        return (array * factor).astype(array.dtype, copy=False)

    def _apply(self, update: np.ndarray, rng: NoiseSource | None) -> np.ndarray:
        clipped = self.clip_update(update)
        if self.noise_multiplier == 0:
            return clipped
        source = rng if rng is not None else SecureRandom()
        noise = np.asarray(source.normal(0.0, self.noise_multiplier * self.clip, update.shape))
        return (clipped + noise).astype(update.dtype, copy=False)

    def privacy_spent(self) -> dp.PrivacySpent:
        return dp.privacy_spent(noise_multiplier=self.noise_multiplier,
                                sample_rate=self.sample_rate, steps=self.steps, delta=self.delta)

    def privacy_spent_against_server(self) -> dp.PrivacySpent:
        participations = max(1, math.ceil(self.sample_rate * self.steps))
        return dp.privacy_spent(noise_multiplier=self.noise_multiplier, sample_rate=1.0,
                                steps=participations, delta=self.delta)

    @property
    def epsilon(self) -> float:
        return self.privacy_spent().epsilon

    def describe(self) -> dict[str, Any]:
        spent, server = self.privacy_spent(), self.privacy_spent_against_server()
        return {"spec": self.spec, "epsilon": spent.epsilon, "delta": self.delta,
                "rdp_order": spent.order, "rdp_order_at_grid_edge": spent.order_at_grid_edge,
                "conversion": spent.conversion,
                "epsilon_against_server": server.epsilon}


# Largest finite float16 (2 - 2^-10) * 2^15; values beyond would become inf on the wire.
FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class Float16(Transform):
    """Round trip through IEEE half precision (round-to-nearest-even, numpy's cast)."""

    kind: ClassVar[str] = "fp16"

    def _apply(self, update: np.ndarray, rng: NoiseSource | None) -> np.ndarray:
        peak = float(np.max(np.abs(update))) if update.size else 0.0
        if peak >= FLOAT16_MAX + 16.0:  # 65520 and up round to inf
            raise EncodingOverflowError(f"expected |update| < 65520 for fp16, got max {peak:.6g}")
        return update.astype(np.float16).astype(update.dtype)


def bfloat16_round(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), as float32.

    bfloat16 is the top 16 bits of a float32. Adding 0x7FFF plus the lowest kept bit
    and truncating is round-to-nearest-even; a carry out of the mantissa correctly
    bumps the exponent (and the largest float32s round to inf, as real bf16 does).
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    lsb = (bits >> np.uint32(16)) & np.uint32(1)
    rounded = (bits + np.uint32(0x7FFF) + lsb) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


@dataclass(frozen=True)
class BFloat16(Transform):
    """Round trip through bfloat16 (8 exponent bits, 7 mantissa bits), emulated."""

    kind: ClassVar[str] = "bf16"

    def _apply(self, update: np.ndarray, rng: NoiseSource | None) -> np.ndarray:
        rounded = bfloat16_round(update.astype(np.float32))
        if np.any(np.isinf(rounded)):
            raise EncodingOverflowError("expected |update| within bfloat16's range (< ~3.396e38), "
                                        f"got max {float(np.max(np.abs(update))):.6g}")
        return rounded.astype(update.dtype)


@dataclass(frozen=True)
class Int8(Transform):
    """Symmetric int8: per tensor, q = round(x / s) in [-127, 127] with s = max|x| / 127.

    ``segments`` are the tensor lengths in the flat vector (one scale each); empty means
    the whole vector is one tensor. The round trip is within s / 2 of x; the sender
    would ship q (1 byte each) plus one float32 scale per tensor.
    """

    segments: tuple[int, ...] = ()
    kind: ClassVar[str] = "int8"
    unspecced: ClassVar[tuple[str, ...]] = ("segments",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(int(s) for s in self.segments))
        if any(s < 1 for s in self.segments):
            raise ConfigError(f"expected positive segment lengths, got {self.segments}")

    def quantize(self, update: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int8 codes, float64 scale per segment)."""
        array = _as_update(update).astype(np.float64)
        codes = np.zeros(array.size, dtype=np.int8)
        bounds = _check_segments(self.segments, array.size)
        scales = np.zeros(len(bounds))
        for index, (start, stop) in enumerate(bounds):
            chunk = array[start:stop]
            peak = float(np.max(np.abs(chunk)))
            if peak == 0.0:
                continue
            scales[index] = peak / 127.0
            codes[start:stop] = np.clip(np.rint(chunk / scales[index]), -127, 127)
        return codes, scales

    def _apply(self, update: np.ndarray, rng: NoiseSource | None) -> np.ndarray:
        codes, scales = self.quantize(update)
        bounds = _check_segments(self.segments, update.size)
        lengths = np.array([stop - start for start, stop in bounds])
        return (codes * np.repeat(scales, lengths)).astype(update.dtype)


def _magnitude_order(update: np.ndarray) -> np.ndarray:
    """Indices by ascending |x|; equal magnitudes in ascending index (stable sort)."""
    return np.argsort(np.abs(update), kind="stable")


@dataclass(frozen=True)
class Prune(Transform):
    """Zero exactly ``floor(ratio * n)`` smallest-|x| entries (lower index first on ties)."""

    ratio: float
    kind: ClassVar[str] = "prune"
    aliases: ClassVar[dict[str, str]] = {"p": "ratio"}

    def __post_init__(self) -> None:
        if not (isinstance(self.ratio, (int, float)) and 0.0 <= self.ratio < 1.0):
            raise ConfigError(f"expected a pruning ratio in [0, 1), got {self.ratio!r}")

    def pruned_count(self, n: int) -> int:
        # The small epsilon keeps e.g. 0.3 * 10 = 2.9999999999999996 from flooring to 2.
        return min(n, math.floor(self.ratio * n + 1e-9))

    def _apply(self, update: np.ndarray, rng: NoiseSource | None) -> np.ndarray:
        out = update.copy()
        out[_magnitude_order(update)[: self.pruned_count(update.size)]] = 0
        return out


@dataclass(frozen=True)
class TopK(Transform):
    """Keep the ``k`` largest-|x| entries (lower index first on ties), zero the rest.

    With ``k >= n`` nothing is dropped.
    """

    k: int
    kind: ClassVar[str] = "topk"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"expected k to be an int >= 1, got {self.k!r}")

    def _apply(self, update: np.ndarray, rng: NoiseSource | None) -> np.ndarray:
        if self.k >= update.size:
            return update.copy()
        keep = np.argsort(-np.abs(update), kind="stable")[: self.k]
        out = np.zeros_like(update)
        out[keep] = update[keep]
        return out


@dataclass(frozen=True)
class Compose(Transform):
    """Apply ``transforms`` left to right, all drawing from the same ``rng``."""

    transforms: tuple[Transform, ...] = field(default=())
    kind: ClassVar[str] = "compose"

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", tuple(self.transforms))
        for stage in self.transforms:
            if not isinstance(stage, Transform) or isinstance(stage, Compose):
                raise ConfigError(f"expected plain transforms in a pipeline, got {stage!r}")

    def _apply(self, update: np.ndarray, rng: NoiseSource | None) -> np.ndarray:
        source = rng
        if source is None and any(isinstance(t, (GaussianNoise, LaplaceNoise, DPGaussian))
                                  for t in self.transforms):
            source = SecureRandom()  # one key for the whole pipeline
        out = update
        for stage in self.transforms:
            out = stage._apply(_as_update(out), source)
        # The identity pipeline still hands back a new array: apply never aliases its input.
        return out.copy() if out is update else out

    @property
    def stages(self) -> tuple[Transform, ...]:
        return self.transforms

    @property
    def spec(self) -> str:
        return "+".join(t.spec for t in self.transforms) or "none"

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "stages": [t.describe() for t in self.transforms]}

    def with_segments(self, segments: Sequence[int]) -> Compose:
        """The pipeline with per-tensor ``segments`` bound into every stage that has them."""
        bound = tuple(dataclasses.replace(t, segments=tuple(segments))  # type: ignore[type-var]
                      if "segments" in t.unspecced else t for t in self.transforms)
        return Compose(bound)


TRANSFORMS: dict[str, type[Transform]] = {
    cls.kind: cls
    for cls in (GaussianNoise, LaplaceNoise, DPGaussian, Float16, BFloat16, Int8, Prune, TopK)
}


def _convert(cls: type[Transform], name: str, text: str, stage: str) -> Any:
    kinds = {f.name: str(f.type) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if kinds[name] == "str":
        return text.strip("'\"")
    try:
        if kinds[name] == "int":
            as_float = float(text)
            if not as_float.is_integer():
                raise ValueError(text)
            return int(as_float)
        return float(text)
    except ValueError:
        raise ConfigError(f"expected a {kinds[name]} for {name!r} in {stage!r}, got {text!r}") \
            from None


def parse_transform(stage: str) -> Transform:
    """One stage ``name[:key=value,...]`` (keys may use the class's aliases)."""
    text = stage.strip()
    name, _, params = text.partition(":")
    name = name.strip().lower()
    if name == "ddp" and name not in TRANSFORMS:
        # Distributed DP lives in its own module, which registers itself on import.
        import secagg.defences.ddp  # noqa: F401
    if name not in TRANSFORMS:
        raise ConfigError(f"expected a transform in {sorted(TRANSFORMS)}, got {name!r}")
    cls = TRANSFORMS[name]
    allowed = {f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f.name not in cls.unspecced}
    values: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, sep, raw = item.partition("=")
        key = cls.aliases.get(key.strip().lower(), key.strip().lower())
        if not sep or key not in allowed:
            raise ConfigError(f"expected key=value with a key in {sorted(allowed)} for "
                              f"{name!r}, got {item!r}")
        if key in values:
            raise ConfigError(f"expected each key once in {text!r}, got {key!r} twice")
        values[key] = _convert(cls, key, raw.strip(), text)
    try:
        return cls(**values)
    except TypeError:
        missing = sorted(f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                         if f.name in allowed and f.name not in values
                         and f.default is dataclasses.MISSING)
        raise ConfigError(f"expected values for {missing} in {text!r}") from None


def parse_transforms(spec: str) -> Compose:
    """A pipeline from ``stage+stage+...``; ``""`` or ``"none"`` is the identity."""
    text = spec.strip()
    if text.lower() in ("", "none"):
        return Compose(())
    stages = text.split("+")
    if any(not s.strip() for s in stages):
        raise ConfigError(f"expected stages joined by single '+', got {spec!r}")
    return Compose(tuple(parse_transform(s) for s in stages))
