"""Exact integer noise for distributed DP: discrete Gaussian and Skellam from a keyed CSPRNG.

What it is: the samplers behind :mod:`secagg.defences.ddp`. Every random bit comes from
:class:`SecureBits`, the AES-256-CTR keystream (``cryptography``) under a key derived by
HKDF from a 32-byte seed that defaults to ``os.urandom`` — never ``np.random`` — and every
decision is a comparison of uniform *integers* with integer thresholds, so the output
distribution is exactly the one named, with no floating-point step that could leak the
noiseless value through low-order bits (Mironov 2012).

Default samplers: exact inversion of the CDF (:func:`discrete_gaussian`, :func:`poisson`,
:func:`skellam`). ``X = min{k : U < F(k)}`` for ``U`` uniform on the reals of [0, 1) has CDF
``F`` exactly. ``U`` is revealed 64 bits at a time (one keystream word); the table holds,
for every boundary ``F(k)`` of a window around the mode, integers ``A_k <= (F(k) - eps)
2^64`` and ``B_k >= (F(k) + eps) 2^64``, where ``eps`` bounds every error of the computed
``F``: the weights (a recurrence of correctly rounded ``decimal`` operations: rational
ratios ``mean / (k + 1)`` for Poisson; ``exp`` of rationals, itself correctly rounded, for
the discrete Gaussian), the partial sums, the normalisation, and the mass outside the
window (geometric tail bounds). A word ``u`` with ``A_k > u >= B_{k-1}`` proves
``F(k-1) <= U < F(k)``, so ``X = k`` whatever the unrevealed bits; a word that proves
nothing (within ``eps`` of a boundary, or in the tails beyond the window: probability
~2^-63 per sample) reveals 64 more bits of the same ``U`` and is decided against
enclosures recomputed at 128, 192, ... bits (wider windows, more digits): exact,
terminating with probability 1. No floating-point value ever decides a sample. Cost: one
word and a guide-table lookup per sample whatever the variance (the table has O(std)
entries, built once per parameter in ``decimal``: ~0.2 s at std 800); so Skellam
(``Poisson(mu/2) - Poisson(mu/2)``, Agarwal, Kairouz, Liu, NeurIPS 2021) is no longer
O(variance).

Reference samplers (Canonne, Kamath, Steinke, NeurIPS 2020, "The Discrete Gaussian for
Differential Privacy", Section 5, Algorithms 1-3), vectorised: every loop of the paper
runs over all pending samples at once, and an iteration touches only the samples still
undecided; they cross-check the tables in the tests and serve discrete Gaussians wider
than the tables' range.

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
- :func:`discrete_gaussian_cks` for rational ``sigma^2 = p / q`` (Algorithm 3):
  ``t = floor(sigma) + 1``; ``Y = DiscreteLaplace(t)`` accepted with probability
  ``exp(-(|Y| - sigma^2 / t)^2 / (2 sigma^2)) = exp(-(|Y| q t - p)^2 / (2 p q t^2))``.
  The exponent's numerator is computed in int64 when it fits and in Python integers for
  the (astronomically rare) samples where it does not, so it is exact everywhere.
  :func:`rational_variance` picks ``q`` (a power of two) so that the denominator stays
  below 2^56; the accountant then uses exactly ``p / q``. About 13 words per sample.
- :func:`poisson_by_pieces` for rational ``l = a / b``: ``l`` is split into ``m = ceil(2 l)``
  equal pieces ``l' <= 1/2`` (a sum of independent Poissons is Poisson). One piece: ``J``
  counts successes of ``Bernoulli(l' / K)`` for ``K = 1, 2, ...`` (so ``P(J >= k) = l'^k / k!``)
  and is accepted with probability ``(1 - l') (J + 1) / (J + 1 - l')`` — the ratio of the
  Poisson pmf to this proposal, scaled by its maximum (attained at ``J = 0``) — a
  rational, so exact. O(l) work per sample.

numpy + cryptography only.

>>> bits = SecureBits(bytes(32))
>>> x = discrete_gaussian(bits, rational_variance(4.0), 2000)
>>> x.dtype.name, bool(abs(float(x.var()) - 4.0) < 0.6)
('int64', True)
"""

from __future__ import annotations

import bisect
import functools
import math
import os
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, Inexact, Overflow, Underflow
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


def discrete_gaussian_cks(bits: SecureBits, variance: Fraction, n: int) -> np.ndarray:
    """``n`` samples of the discrete Gaussian N_Z(0, p/q): P(x) proportional to
    exp(-x^2 / (2 sigma^2)) on the integers (CKS Algorithm 3; the reference sampler, and
    the one used beyond the inversion tables' range)."""
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


def poisson_by_pieces(bits: SecureBits, mean: Fraction, n: int) -> np.ndarray:
    """``n`` Poisson(mean) samples as sums of ``ceil(2 mean)`` pieces (see the module
    docstring): O(mean) work per sample, the reference for :func:`poisson`.

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


# -- exact inverse-CDF tables ---------------------------------------------------------------
#
# X = min{k : U < F(k)} for a uniform real U in [0, 1) is exactly distributed with CDF F.
# U is revealed 64 bits at a time; a decision is made only when the revealed prefix
# determines X whatever the unrevealed bits are, using certified enclosures of F (below),
# so the output is EXACTLY distributed, with no floating-point shortcut: a prefix too close
# to a boundary to decide draws another 64 bits and compares against enclosures
# recomputed 2^64 times tighter, which happens with probability ~2^-63 per sample.

_GUIDE_BITS = 16  # fixed: _inverse_cdf reads a word's top 16 bits as its last uint16
_SLOW = np.iinfo(np.int64).min  # a guide bucket whose words take the full search
_MAX_WORD = (1 << 64) - 1
_TABLE_CACHE = 16  # fast tables: ~2 MB each at std 800 (arrays and the 2^16-bucket guide)
_BOUNDARY_CACHE = 4  # Python-int enclosures: ~18 MB each at the largest std (8000)


def _guard(digits: int) -> Decimal:
    """An upper bound on the relative error of one correctly rounded operation."""
    return Decimal(10) ** (1 - digits)


def _gaussian_window(variance: Fraction, digits: int, tail: Decimal
                     ) -> tuple[int, list[Decimal], Decimal, Decimal, Decimal]:
    """Weights ``w(k) = exp(-k^2 / (2 sigma^2))`` on ``[-K, K]`` with a relative error bound,
    and bounds on the weight left out below and above (each <= ``tail``).

    ``w(k + 1) = w(k) g_k``, ``g_k = c r^k``, ``c = exp(-1/(2 sigma^2))``, ``r = exp(-1/sigma^2)``:
    ``decimal``'s ``exp`` is correctly rounded and so are products, so with ``e`` the
    error of ``c`` and ``r`` (argument rounding included) ``g_k`` is within
    ``e + k (e + u)`` and ``w(k)`` within ``(k^2 + 2k)(e + u)``. Beyond ``K``:
    ``sum_{j > K} w(j) <= w(K + 1) / (1 - exp(-(K + 1) / sigma^2))`` since
    ``j^2 >= (K + 1)^2 + 2 (K + 1)(j - K - 1)``.
    """
    context = Context(prec=digits)
    unit = _guard(digits)
    p, q = variance.numerator, variance.denominator
    c = context.exp(context.divide(Decimal(-q), Decimal(2 * p)))
    r = context.exp(context.divide(Decimal(-q), Decimal(p)))
    error = (2 + math.ceil(Fraction(q, p))) * unit  # e: the argument's rounding is amplified by |arg|
    side = [Decimal(1)]
    step = c
    while True:
        k = len(side) - 1
        following = context.multiply(side[-1], step)  # w(k + 1)
        if following < tail:
            bound = context.exp(context.divide(Decimal(-(k + 1) * q), Decimal(p)))
            eta = ((k + 1) ** 2 + 2 * (k + 1) + 2) * (error + unit)
            left_out = context.divide(following * (1 + eta), 1 - bound) * Decimal("1.001")
            if left_out <= tail:
                weights = side[:0:-1] + side
                return -k, weights, eta * Decimal("1.001"), left_out, left_out
        side.append(following)
        step = context.multiply(step, r)


def _odds(context: Context, rho: Fraction) -> Decimal:
    """``rho / (1 - rho)`` for a rational ``rho`` in [0, 1): the sum of ``rho^k``, ``k >= 1``."""
    return context.divide(Decimal(rho.numerator), Decimal(rho.denominator - rho.numerator))


def _poisson_window(mean: Fraction, digits: int, tail: Decimal
                    ) -> tuple[int, list[Decimal], Decimal, Decimal, Decimal]:
    """Weights ``w(k) = P(k) / P(m)``, ``m = floor(mean)``, on ``[lo, hi]`` with a relative
    error bound, and bounds on the weight left out below and above.

    ``w(k + 1) / w(k) = mean / (k + 1)`` (rationals; a division and a product per step, so
    ``w`` is within ``2 |k - m| u``). Beyond ``hi >= m``: each ratio is at most
    ``rho = mean / (hi + 1) < 1``, so the rest is at most ``w(hi) rho / (1 - rho)``; below
    ``lo < mean`` likewise with ``rho = lo / mean`` (nothing below ``lo = 0``).
    """
    context = Context(prec=digits)
    unit = _guard(digits)
    a, b = mean.numerator, mean.denominator
    m = a // b
    up, down = [Decimal(1)], [Decimal(1)]
    safety = Decimal("1.001")
    while True:  # upwards from the mode
        hi = m + len(up) - 1
        rho = Fraction(a, b * (hi + 1))
        eta = 2 * len(up) * unit
        above = context.multiply(up[-1] * (1 + eta), _odds(context, rho))
        if above * safety <= tail:
            above *= safety
            break
        up.append(context.multiply(up[-1], context.divide(Decimal(a), Decimal(b * (hi + 1)))))
    below = Decimal(0)
    while m - len(down) + 1 > 0:  # downwards to 0 or until the rest is negligible
        lo = m - len(down) + 1
        if Fraction(lo) < mean:
            rho = Fraction(b * lo, a)
            eta = 2 * len(down) * unit
            below = context.multiply(down[-1] * (1 + eta), _odds(context, rho))
            if below * safety <= tail:
                below *= safety
                break
        down.append(context.multiply(down[-1], context.divide(Decimal(b * lo), Decimal(a))))
    else:
        below = Decimal(0)
    lo = m - len(down) + 1
    eta = 2 * max(len(up), len(down)) * unit * safety
    return lo, down[:0:-1] + up, eta, below, above


@functools.lru_cache(maxsize=_BOUNDARY_CACHE)
def _boundaries(kind: str, parameter: Fraction, word_bits: int, slack_bits: int | None
                ) -> tuple[int, list[int], list[int]]:
    """Certified integer enclosures of the CDF at a resolution of ``word_bits`` bits.

    Returns ``(lo, A, B)`` with, for ``j = 0..N``, ``A_j <= (F(lo - 1 + j) - eps) 2^bits``
    and ``B_j >= (F(lo - 1 + j) + eps) 2^bits`` where ``eps`` bounds every error of the
    computed ``F`` (weights, sums, the division by the total, the weight left out of the
    window); the last conversions run in a ``decimal`` context that traps any inexact
    result. ``slack_bits`` (tests only) widens ``eps`` to ``2^-slack_bits`` so that the
    refinement path runs often.
    """
    target_digits = math.ceil(word_bits * math.log10(2)) + 12
    tail = Decimal(10) ** -target_digits
    spread = math.sqrt(float(parameter)) + 1.0
    width_digits = len(str(int(spread * math.sqrt(2 * math.log(10) * target_digits)) + 16))
    digits = target_digits + 2 * width_digits + 8
    limit = Decimal(2) ** -(word_bits + 8)
    while True:
        window = _gaussian_window if kind == "dgauss" else _poisson_window
        lo, weights, eta, below, above = window(parameter, digits, tail)
        context = Context(prec=digits)
        unit = _guard(digits)
        partial = [Decimal(0)]
        for weight in weights:
            partial.append(context.add(partial[-1], weight))
        total = partial[-1]
        eps = (4 * (eta + len(weights) * unit) + 2 * (below + above) / total + 4 * unit) * Decimal("1.01")
        if eps <= limit:
            break
        digits += 16
    if slack_bits is not None:
        eps = max(eps, Decimal(2) ** -slack_bits)
    exact = Context(prec=4 * digits + word_bits + 64, traps=[Inexact, Overflow, Underflow])
    scale = Decimal(1 << word_bits)
    lower, upper = [], []
    for value in partial:
        fraction = context.divide(value, total)
        low = exact.multiply(exact.subtract(fraction, eps), scale).to_integral_value(rounding=ROUND_FLOOR)
        high = exact.multiply(exact.add(fraction, eps), scale).to_integral_value(rounding=ROUND_CEILING)
        lower.append(max(0, int(low)))
        upper.append(int(high))
    return lo, lower, upper


@dataclass(frozen=True)
class _FastTable:
    """The 64-bit enclosures as arrays plus a guide indexed by a word's top bits: in a
    bucket holding at most one boundary, a word's candidate index is one comparison away."""

    lo: int
    lower: np.ndarray  # uint64, A_0..A_N
    upper: np.ndarray  # uint64, B_0..B_N (clipped to 2^64 - 1, a word never used)
    base: np.ndarray  # int64 per bucket: the sample at the bucket's start; _SLOW: take the slow path
    threshold: np.ndarray  # uint64 per bucket: A of the one boundary inside (2^64 - 1: none)
    tie_width: np.uint64  # max B - A over those boundaries: words in [A, A + width) are undecided


@functools.lru_cache(maxsize=_TABLE_CACHE)
def _fast_table(kind: str, parameter: Fraction, slack_bits: int | None) -> _FastTable:
    lo, lower_list, upper_list = _boundaries(kind, parameter, 64, slack_bits)
    lower = np.array(lower_list, dtype=np.uint64)
    upper = np.array([min(v, _MAX_WORD) for v in upper_list], dtype=np.uint64)
    size = len(lower_list) - 1  # N
    shift = np.uint64(64 - _GUIDE_BITS)
    starts = np.arange(1 << _GUIDE_BITS, dtype=np.uint64) << shift
    ends = starts + ((np.uint64(1) << shift) - np.uint64(1))
    first = np.searchsorted(lower, starts, side="right")  # #A_j <= start (>= 1: A_0 = 0)
    last = np.searchsorted(lower, ends, side="right")
    count = last - first
    previous_upper = upper[np.maximum(first - 1, 0)]
    spill = previous_upper > starts  # the enclosure of the boundary before reaches in
    slow = (count >= 2) | spill | (last >= size + 1)
    slow[-1] = True  # holds the word 2^64 - 1, never decided on the fast path
    one = count == 1
    inside = np.minimum(first, size)
    threshold = np.where(one, lower[inside], np.uint64(_MAX_WORD))
    widths = (upper[inside] - lower[inside])[one & ~slow]
    tie_width = np.uint64(int(widths.max()) if widths.size else 0)
    # A bucket's sample is base (+ 1 past its boundary); lo - 1 + index, folded in here.
    base = np.where(slow, _SLOW, first.astype(np.int64) + (lo - 1)).astype(np.int64)
    return _FastTable(lo, lower, upper, base, threshold.astype(np.uint64), tie_width)


def clear_tables() -> None:
    """Forget the cached tables (benchmarks time their construction)."""
    _fast_table.cache_clear()
    _boundaries.cache_clear()


def _resolve(bits: SecureBits, kind: str, parameter: Fraction, word: int) -> int:
    """The sample for a first word the 64-bit table could not decide: reveal U 64 bits at
    a time against enclosures 2^64 times tighter each step (exact; terminates w.p. 1)."""
    prefix, word_bits = word, 64
    while True:
        prefix = (prefix << 64) | int(bits.words(1)[0])
        word_bits += 64
        lo, lower, upper = _boundaries(kind, parameter, word_bits, None)
        index = bisect.bisect_right(lower, prefix)
        if 1 <= index < len(lower) and prefix >= upper[index - 1] and prefix != (1 << word_bits) - 1:
            return lo - 1 + index


def _inverse_cdf(bits: SecureBits, kind: str, parameter: Fraction, n: int,
                 slack_bits: int | None = None) -> np.ndarray:
    """``n`` exact samples by inversion (one 64-bit word each, almost always)."""
    table = _fast_table(kind, parameter, slack_bits)
    words = bits.words(n)
    # The top 16 bits of each little-endian word are its last two bytes (no shift pass).
    top = words.view("<u2")[3::4].astype(np.intp)
    base = table.base[top]
    threshold = table.threshold[top]
    sample = base + (words >= threshold)
    # Conservative: a word within the widest enclosure of its bucket's boundary (or in a
    # bucket without one, within that width of 2^64 - 1 after wrapping) is re-checked.
    undecided = (base == _SLOW) | ((words - threshold) < table.tie_width)
    slow = np.flatnonzero(undecided)
    if slow.size:
        size = table.lower.size - 1
        chosen = words[slow]
        found = np.searchsorted(table.lower, chosen, side="right")
        clipped = np.clip(found, 1, size + 1)
        decided = (found >= 1) & (found <= size) & (chosen >= table.upper[clipped - 1])
        decided &= chosen != _MAX_WORD
        sample[slow] = found + (table.lo - 1)
        for position in slow[~decided]:
            sample[position] = _resolve(bits, kind, parameter, int(words[position]))
    return sample


# Beyond these the tables (O(std) entries) grow too large: CKS for the discrete Gaussian,
# a typed error for Poisson.
_MAX_TABLE_STD = 50_000.0


def discrete_gaussian(bits: SecureBits, variance: Fraction, n: int, *,
                      slack_bits: int | None = None) -> np.ndarray:
    """``n`` samples of the discrete Gaussian N_Z(0, p/q), exactly, by inversion of its CDF
    (one 64-bit word per sample, almost always; see the table section above). Above a
    std of ``_MAX_TABLE_STD`` it uses :func:`discrete_gaussian_cks`. ``slack_bits``: tests
    only (forces the exact refinement path)."""
    variance = Fraction(variance)
    if variance <= 0:
        raise ConfigError(f"expected a positive variance, got {variance}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if float(variance) > _MAX_TABLE_STD**2:
        return discrete_gaussian_cks(bits, variance, n)
    return _inverse_cdf(bits, "dgauss", variance, n, slack_bits)


def poisson(bits: SecureBits, mean: Fraction, n: int, *, slack_bits: int | None = None) -> np.ndarray:
    """``n`` Poisson(mean) samples, exactly, by inversion of the CDF (cost independent of
    the mean once its table is built; the table has O(sqrt(mean)) entries)."""
    mean = Fraction(mean)
    if mean < 0:
        raise ConfigError(f"expected a Poisson mean >= 0, got {mean}")
    if mean == 0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    if float(mean) > _MAX_TABLE_STD**2:
        raise ConfigError(f"expected a Poisson mean up to {_MAX_TABLE_STD**2:.3g}, got {float(mean):.6g}")
    return _inverse_cdf(bits, "poisson", mean, n, slack_bits)


def skellam(bits: SecureBits, variance: Fraction, n: int) -> np.ndarray:
    """``n`` symmetric Skellam samples of the given variance: Poisson(v/2) - Poisson(v/2)."""
    if variance <= 0:
        raise ConfigError(f"expected a positive Skellam variance, got {variance}")
    half = variance / 2
    return poisson(bits, half, n) - poisson(bits, half, n)
