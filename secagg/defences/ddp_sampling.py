"""Exact integer noise for distributed DP: discrete Gaussian and Skellam from a keyed CSPRNG.

What it is: the samplers behind :mod:`secagg.defences.ddp`. Every random bit comes from
:class:`SecureBits`, the AES-256-CTR keystream (``cryptography``) under a key derived by
HKDF from a 32-byte seed that defaults to ``os.urandom`` — never ``np.random`` — and every
decision is a comparison of uniform *integers* with integer thresholds, so the output
distribution is exactly the one named, with no floating-point step that could leak the
noiseless value through low-order bits (Mironov 2012).

Samplers (Canonne, Kamath, Steinke, NeurIPS 2020, "The Discrete Gaussian for Differential
Privacy", Section 5, Algorithms 1-3), vectorised: every loop of the paper runs over all
pending samples at once, and an iteration touches only the samples still undecided.

- ``Bernoulli(n / d)``: a uniform integer in ``[0, d)`` (rejection from whole 64-bit words,
  no modular bias) compared with ``n``.
- ``Bernoulli(exp(-g))`` for rational ``g = N / D`` in ``[0, 1]`` (Algorithm 1): ``K = 1``;
  while ``Bernoulli(g / K)``: ``K += 1``; output ``K`` odd. ``Bernoulli(g / K)`` is drawn as
  ``Bernoulli(N / D)`` and ``Bernoulli(1 / K)`` together (a product of independent coins),
  so thresholds never exceed ``D``. For ``g > 1``: ``floor(g)`` coins ``Bernoulli(exp(-1))``
  must all succeed, then ``Bernoulli(exp(-(g - floor(g))))``.
- ``DiscreteLaplace(t)`` for integer ``t >= 1`` (Algorithm 2 with s = 1): ``U`` uniform in
  ``[0, t)``, kept with probability ``exp(-U / t)``; ``V`` counts successes of
  ``Bernoulli(exp(-1))``; ``X = U + t V``; a sign bit, rejecting ``-0``.
- ``DiscreteGaussian(sigma^2)`` for rational ``sigma^2 = p / q`` (Algorithm 3):
  ``t = floor(sigma) + 1``; ``Y = DiscreteLaplace(t)`` accepted with probability
  ``exp(-(|Y| - sigma^2 / t)^2 / (2 sigma^2)) = exp(-(|Y| q t - p)^2 / (2 p q t^2))``.
  The exponent's numerator is computed in int64 when it fits and in Python integers for
  the (astronomically rare) samples where it does not, so it is exact everywhere.
  :func:`rational_variance` picks ``q`` (a power of two) so that the denominator stays
  below 2^56; the accountant then uses exactly ``p / q``.
- ``Poisson(l)`` for rational ``l = a / b``: ``l`` is split into ``m = ceil(2 l)`` equal
  pieces ``l' <= 1/2`` (a sum of independent Poissons is Poisson). One piece: ``J`` counts
  successes of ``Bernoulli(l' / K)`` for ``K = 1, 2, ...`` (so ``P(J >= k) = l'^k / k!``)
  and is accepted with probability ``(1 - l') (J + 1) / (J + 1 - l')`` — the ratio of the
  Poisson pmf to this proposal, scaled by its maximum (attained at ``J = 0``) — a
  rational, so exact. ``Skellam(mu)`` (variance ``mu``) is ``Poisson(mu/2) - Poisson(mu/2)``
  (Agarwal, Kairouz, Liu, NeurIPS 2021). Cost: O(mu) coin rounds per coordinate, fine for
  the per-client variances of tests and small rounds, slow for large ones (the discrete
  Gaussian costs O(1) per sample and is the default).

numpy + cryptography only.

>>> bits = SecureBits(bytes(32))
>>> x = discrete_gaussian(bits, rational_variance(4.0), 2000)
>>> x.dtype.name, bool(abs(float(x.var()) - 4.0) < 0.6)
('int64', True)
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg import prf
from secagg.errors import ConfigError

SEED_BYTES = 32
_LABEL = prf.domain("ddp/noise", round_id=0)
# Largest exponent denominator D with D * 2 < 2^63 (int64 thresholds, uint64 words).
_MAX_DENOMINATOR = 2**56
# |Y| q t - p below this squares within int64; larger values take the Python-int path.
_SQUARE_LIMIT = 3_037_000_499  # floor(sqrt(2^63 - 1))
# A single chunk of keystream: bounds memory while a big request streams.
_CHUNK_WORDS = 1 << 22


class SecureBits:
    """Uniform 64-bit words from AES-256-CTR under HKDF(seed): the only randomness source.

    ``seed`` defaults to 32 bytes of ``os.urandom``; a fixed seed reproduces the stream
    (tests). The stream is consumed in order and never reused.
    """

    def __init__(self, seed: bytes | None = None) -> None:
        key_seed = os.urandom(SEED_BYTES) if seed is None else bytes(seed)
        key = prf.derive_key(key_seed, _LABEL)
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._zeros = bytes(8 * 4096)
        self.words_drawn = 0

    def words(self, n: int) -> np.ndarray:
        """``n`` uniform uint64 words (a read-only view of fresh keystream)."""
        if n < 0:
            raise ConfigError(f"expected a non-negative word count, got {n}")
        self.words_drawn += n
        if 8 * n > len(self._zeros):
            self._zeros = bytes(8 * n)
        return np.frombuffer(self._encryptor.update(memoryview(self._zeros)[: 8 * n]), dtype="<u8")

    def below(self, bound: int, n: int) -> np.ndarray:
        """``n`` uniform integers in ``[0, bound)`` (int64), ``1 <= bound <= 2^62``.

        Each is the top ``bit_length(bound - 1)`` bits of a word, redrawn while it is
        ``>= bound``: exact, no modular bias, at most two draws expected per value.
        """
        if not 1 <= bound <= 2**62:
            raise ConfigError(f"expected a bound in [1, 2^62], got {bound}")
        if bound == 1 or n == 0:
            return np.zeros(n, dtype=np.int64)
        shift = np.uint64(64 - (bound - 1).bit_length())
        out = (self.words(n) >> shift).view(np.int64)
        if bound & (bound - 1) == 0:  # a power of two: every draw is in range
            return out
        bad = np.flatnonzero(out >= bound)
        while bad.size:
            out[bad] = (self.words(bad.size) >> shift).view(np.int64)
            bad = bad[out[bad] >= bound]
        return out

    def bits(self, n: int) -> np.ndarray:
        """``n`` fair coins (bool)."""
        words = self.words((n + 63) // 64)
        unpacked = np.unpackbits(words.view(np.uint8))
        return unpacked[:n].astype(bool)

    def uniform(self, n: int) -> np.ndarray:
        """``n`` floats ``k 2^-53`` with ``k`` uniform in ``[0, 2^53)`` (for randomised
        rounding, where the probability, not the noise, is a float)."""
        return (self.words(n) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def bernoulli(bits: SecureBits, numerators: np.ndarray, denominator: int) -> np.ndarray:
    """Coins with probabilities ``numerators / denominator`` (exact)."""
    draws = bits.below(int(denominator), int(np.size(numerators)))
    return draws < np.asarray(numerators, dtype=np.int64)


def bernoulli_exp_fraction(bits: SecureBits, numerators: np.ndarray, denominator: int) -> np.ndarray:
    """Coins with probabilities ``exp(-N / D)`` for ``0 <= N <= D`` (CKS Algorithm 1)."""
    numerators = np.asarray(numerators, dtype=np.int64)
    out = np.zeros(numerators.size, dtype=bool)
    # K = 1: Bernoulli(N / D).
    success = bits.below(denominator, numerators.size) < numerators
    out[~success] = True
    active = np.flatnonzero(success)
    k = 2
    while active.size:
        if denominator * k <= 2**62:  # Bernoulli(N / (D K)) in one draw
            success = bits.below(denominator * k, active.size) < numerators[active]
        else:
            success = (bits.below(denominator, active.size) < numerators[active]) & (
                bits.below(k, active.size) == 0)
        out[active[~success]] = k % 2 == 1
        active = active[success]
        k += 1
    return out


def bernoulli_exp(bits: SecureBits, numerators: np.ndarray, denominator: int) -> np.ndarray:
    """Coins with probabilities ``exp(-N / D)`` for any ``N >= 0`` (int64 array)."""
    numerators = np.asarray(numerators, dtype=np.int64)
    whole, remainder = np.divmod(numerators, np.int64(denominator))
    alive = np.ones(numerators.size, dtype=bool)
    level = 1
    while True:
        index = np.flatnonzero(alive & (whole >= level))
        if not index.size:
            break
        alive[index] &= bernoulli_exp_fraction(bits, np.ones(index.size, dtype=np.int64), 1)
        level += 1
    out = np.zeros(numerators.size, dtype=bool)
    index = np.flatnonzero(alive)
    out[index] = bernoulli_exp_fraction(bits, remainder[index], denominator)
    return out


def _geometric_exp_minus_one(bits: SecureBits, n: int) -> np.ndarray:
    """Number of successes of Bernoulli(exp(-1)) before the first failure, per sample."""
    counts = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    while active.size:
        success = bernoulli_exp_fraction(bits, np.ones(active.size, dtype=np.int64), 1)
        counts[active[success]] += 1
        active = active[success]
    return counts


def discrete_laplace(bits: SecureBits, scale: int, n: int) -> np.ndarray:
    """``n`` samples with P(x) proportional to exp(-|x| / scale), integer scale >= 1."""
    if scale < 1:
        raise ConfigError(f"expected an integer discrete Laplace scale >= 1, got {scale}")
    out = np.zeros(n, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        u = bits.below(scale, pending.size)
        keep = bernoulli_exp_fraction(bits, u, scale)
        u, slots = u[keep], pending[keep]
        v = _geometric_exp_minus_one(bits, u.size)
        x = u + scale * v
        negative = bits.bits(u.size)
        accepted = ~(negative & (x == 0))
        out[slots[accepted]] = np.where(negative, -x, x)[accepted]
        pending = np.concatenate([pending[~keep], slots[~accepted]])
    return out


def rational_variance(variance: float, *, max_denominator: int = _MAX_DENOMINATOR) -> Fraction:
    """``variance`` as ``p / q`` with ``q`` a power of two, as fine as the sampler's integer
    thresholds allow (the exponent denominator ``2 p q t^2`` stays below ``max_denominator``).

    The accountant must use the returned fraction, the variance actually sampled.
    """
    if not (math.isfinite(variance) and variance > 0):
        raise ConfigError(f"expected a finite variance > 0, got {variance!r}")
    q = 1 << 40
    while q > 1:
        p = max(1, math.ceil(variance * q))
        t = math.isqrt(p // q) + 1
        if 2 * p * q * t * t < max_denominator:
            break
        q >>= 1
    p = max(1, math.ceil(variance * q))
    t = math.isqrt(p // q) + 1
    if 2 * p * q * t * t >= max_denominator:
        limit = (max_denominator / 2.0) ** 0.25
        raise ConfigError(
            f"a discrete Gaussian of variance {variance:.6g} (std {math.sqrt(variance):.6g}) "
            f"is beyond the exact sampler's integer range: expected a std below ~{limit:.0f}; "
            "use a coarser granularity (fewer bits)"
        )
    return Fraction(p, q)


def discrete_gaussian(bits: SecureBits, variance: Fraction, n: int) -> np.ndarray:
    """``n`` samples of the discrete Gaussian N_Z(0, p/q): P(x) proportional to
    exp(-x^2 / (2 sigma^2)) on the integers (CKS Algorithm 3)."""
    p, q = variance.numerator, variance.denominator
    if p <= 0:
        raise ConfigError(f"expected a positive variance, got {variance}")
    t = math.isqrt(p // q) + 1
    denominator = 2 * p * q * t * t
    if denominator >= _MAX_DENOMINATOR * 2:
        raise ConfigError(f"variance {variance} is beyond the sampler's range; see rational_variance")
    out = np.zeros(n, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        y = discrete_laplace(bits, t, pending.size)
        centred = np.abs(y) * (q * t) - p
        numerators = np.zeros(y.size, dtype=np.int64)
        small = np.abs(centred) < _SQUARE_LIMIT
        numerators[small] = centred[small] * centred[small]
        accept = np.zeros(y.size, dtype=bool)
        accept[small] = bernoulli_exp(bits, numerators[small], denominator)
        for index in np.flatnonzero(~small):  # exact big-integer path, practically never taken
            accept[index] = _bernoulli_exp_big(bits, int(centred[index]) ** 2, denominator)
        out[pending[accept]] = y[accept]
        pending = pending[~accept]
    return out


def _bernoulli_exp_big(bits: SecureBits, numerator: int, denominator: int) -> bool:
    """One Bernoulli(exp(-N/D)) coin for an N beyond int64 (Python integers)."""
    whole, remainder = divmod(numerator, denominator)
    for _ in range(whole):
        if not bernoulli_exp_fraction(bits, np.ones(1, dtype=np.int64), 1)[0]:
            return False
    return bool(bernoulli_exp_fraction(bits, np.array([remainder], dtype=np.int64), denominator)[0])


def poisson(bits: SecureBits, mean: Fraction, n: int) -> np.ndarray:
    """``n`` Poisson(mean) samples, mean a non-negative rational (see the module docstring).

    All ``n * pieces`` piece samples are drawn together (in chunks), then summed.
    """
    if mean < 0:
        raise ConfigError(f"expected a Poisson mean >= 0, got {mean}")
    out = np.zeros(n, dtype=np.int64)
    if mean == 0 or n == 0:
        return out
    pieces = math.ceil(2 * mean)
    piece = mean / pieces  # <= 1/2
    a, b = piece.numerator, piece.denominator
    if b > 2**40:
        raise ConfigError(f"Poisson mean {mean} has a denominator beyond the sampler's range (2^40)")
    per_chunk = max(1, _CHUNK_WORDS // pieces)
    for start in range(0, n, per_chunk):
        count = min(per_chunk, n - start)
        draws = _poisson_pieces(bits, a, b, count * pieces)
        out[start:start + count] = draws.reshape(count, pieces).sum(axis=1)
    return out


def _poisson_pieces(bits: SecureBits, a: int, b: int, n: int) -> np.ndarray:
    """``n`` Poisson(a / b) samples, a / b <= 1/2 (proposal and exact rational acceptance)."""
    out = np.zeros(n, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        successes = np.zeros(pending.size, dtype=np.int64)
        active = np.arange(pending.size)
        k = 1
        while active.size:
            coin = bits.below(b, active.size) < a
            if k > 1:
                coin &= bits.below(k, active.size) == 0
            successes[active[coin]] += 1
            active = active[coin]
            k += 1
        # Accept J with probability (b - a)(J + 1) / ((J + 1) b - a).
        j1 = successes + 1
        accept = np.zeros(pending.size, dtype=bool)
        for value in np.unique(j1):
            chosen = np.flatnonzero(j1 == value)
            accept[chosen] = bits.below(int(value) * b - a, chosen.size) < (b - a) * int(value)
        out[pending[accept]] = successes[accept]
        pending = pending[~accept]
    return out


def skellam(bits: SecureBits, variance: Fraction, n: int) -> np.ndarray:
    """``n`` symmetric Skellam samples of the given variance: Poisson(v/2) - Poisson(v/2)."""
    if variance <= 0:
        raise ConfigError(f"expected a positive Skellam variance, got {variance}")
    half = variance / 2
    return poisson(bits, half, n) - poisson(bits, half, n)
