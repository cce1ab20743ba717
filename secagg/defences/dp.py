"""Rényi-DP accounting for the (Poisson-subsampled) Gaussian mechanism.

What it is: the privacy accountant behind :class:`secagg.defences.transforms.DPGaussian`. It
computes the Rényi differential privacy (RDP) of ``steps`` compositions of the sampled
Gaussian mechanism (SGM) and converts it to an (epsilon, delta) guarantee.

Papers followed:

- Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
  Mechanism" (arXiv:1908.10530). Section 3.3 gives ``A_alpha``, the quantity whose log
  divided by ``alpha - 1`` is the RDP of one SGM step with sampling rate ``q`` and noise
  multiplier ``sigma`` (noise std / L2 sensitivity), under add/remove-one adjacency:

  * integer ``alpha`` (Section 3.3, eq. for A_alpha as a binomial expansion)::

        A_alpha = sum_{i=0}^{alpha} C(alpha, i) (1-q)^(alpha-i) q^i exp((i^2 - i) / (2 sigma^2))

  * fractional ``alpha`` (Section 3.3): with ``z0 = sigma^2 log(1/q - 1) + 1/2``,
    ``A_alpha = A1 + A2`` where, summed over i = 0, 1, 2, ... until the terms vanish::

        A1 = sum_i C(alpha, i) q^i (1-q)^(alpha-i) exp((i^2 - i) / (2 sigma^2))
                   * erfc((i - z0) / (sqrt(2) sigma)) / 2
        A2 = sum_i C(alpha, i) q^(alpha-i) (1-q)^i exp(((alpha-i)^2 - (alpha-i)) / (2 sigma^2))
                   * erfc((z0 - (alpha - i)) / (sqrt(2) sigma)) / 2

    C(alpha, i) is the generalised binomial coefficient (its sign alternates once i
    exceeds alpha). Both series are summed in log space and stop once a term falls
    below exp(-30), the stopping rule of the paper's reference implementation.

  ``q == 1`` is the plain Gaussian mechanism: RDP = alpha / (2 sigma^2) (Mironov 2017).
  RDP composes additively over steps.

- Conversion to (epsilon, delta), two documented choices (:func:`epsilon_from_rdp`):

  * ``"mironov2017"`` (Mironov 2017, Prop. 3): ``eps = rdp - log(delta) / (alpha - 1)``.
  * ``"balle2020"`` (Balle, Barthe, Gaboardi, Hsu, Sato 2020, "Hypothesis testing
    interpretations and Rényi differential privacy", Thm. 21), never worse:
    ``eps = rdp + log((alpha - 1) / alpha) - (log(delta) + log(alpha)) / (alpha - 1)``.
    This is the conversion Opacus's ``get_privacy_spent`` uses, so the default here is
    directly comparable with Opacus.

  Epsilon is minimised over a grid of orders; the order that attains it is reported
  so a caller can see whether the grid was wide enough (an optimum at an end of the
  grid means a wider grid would give a smaller epsilon).

Pure Python ``math`` + numpy: no scipy, no torch. Written from the papers; cross-checked
against Opacus's ``compute_rdp``/``get_privacy_spent`` in ``tests/secagg/test_dp.py``.

>>> round(epsilon(noise_multiplier=1.1, sample_rate=0.01, steps=1000, delta=1e-5), 3)
1.725
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from secagg.errors import ConfigError

# Orders of the grid: dense near 1 (where large-noise, many-step runs land), then
# integers up to 256 (where small-noise runs land). A superset of Opacus's default.
DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1.0 + x / 20.0 for x in range(1, 40)]
    + [3.0 + x / 4.0 for x in range(0, 20)]
    + [float(a) for a in range(8, 64)]
    + [64.0, 80.0, 96.0, 128.0, 160.0, 192.0, 256.0]
)

CONVERSIONS: tuple[str, ...] = ("balle2020", "mironov2017")

# A fractional-order series term below exp(_TAIL) is negligible (the reference stopping rule).
_TAIL = -30.0


def _log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow."""
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


def _log_sub(a: float, b: float) -> float:
    """log(exp(a) - exp(b)) for a >= b; the series terms guarantee a > b up to rounding."""
    if b == -math.inf:
        return a
    if b >= a:
        # Rounding can make a vanishing difference non-positive; -inf is its limit.
        return -math.inf
    return a + math.log(-math.expm1(b - a))


def _log_erfc(x: float) -> float:
    """log(erfc(x)), accurate where erfc underflows (x > ~26)."""
    if x < 20.0:
        return math.log(math.erfc(x))
    # Asymptotic series erfc(x) ~ exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + 3/(4x^4) - ...);
    # at x >= 20 four terms are exact to ~1e-13 relative.
    inv = 1.0 / (x * x)
    series = 1.0 - 0.5 * inv + 0.75 * inv**2 - 1.875 * inv**3 + 6.5625 * inv**4
    return -x * x - math.log(x) - 0.5 * math.log(math.pi) + math.log(series)


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    """log A_alpha for integer alpha: the binomial expansion, summed in log space."""
    log_q, log_1q = math.log(q), math.log1p(-q)
    total = -math.inf
    for i in range(alpha + 1):
        log_binom = math.lgamma(alpha + 1) - math.lgamma(i + 1) - math.lgamma(alpha - i + 1)
        term = log_binom + i * log_q + (alpha - i) * log_1q + (i * i - i) / (2.0 * sigma * sigma)
        total = _log_add(total, term)
    return total


def _log_a_fractional(q: float, sigma: float, alpha: float) -> float:
    """log A_alpha for fractional alpha: the two series of Mironov et al. 2019, Sec. 3.3.

    Each term i of the generalised binomial expansion of ``(1 - q + q e^{...})^alpha`` is
    split at ``z0`` into the part of the Gaussian integral below it (series 0) and above
    it (series 1); the generalised binomial coefficient C(alpha, i) changes sign once i
    exceeds alpha, which the log-space sums handle with add or subtract.
    """
    sum0, sum1 = -math.inf, -math.inf
    z0 = sigma * sigma * math.log(1.0 / q - 1.0) + 0.5
    log_q, log_1q = math.log(q), math.log1p(-q)
    root2_sigma = math.sqrt(2.0) * sigma
    # C(alpha, i) by the recurrence C(alpha, i+1) = C(alpha, i) (alpha - i) / (i + 1),
    # tracked as (log|C|, sign): lgamma of negative arguments would need its own sign rule.
    log_coef, sign = 0.0, 1.0
    i = 0
    while True:
        j = alpha - i
        log_t0 = log_coef + i * log_q + j * log_1q
        log_t1 = log_coef + j * log_q + i * log_1q
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / root2_sigma)
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / root2_sigma)
        log_s0 = log_t0 + (i * i - i) / (2.0 * sigma * sigma) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1
        if sign > 0:
            sum0, sum1 = _log_add(sum0, log_s0), _log_add(sum1, log_s1)
        else:
            sum0, sum1 = _log_sub(sum0, log_s0), _log_sub(sum1, log_s1)
        if max(log_s0, log_s1) < _TAIL:
            break
        factor = (alpha - i) / (i + 1)
        if factor == 0.0:  # cannot happen for fractional alpha; guards the log below
            break
        log_coef += math.log(abs(factor))
        sign *= 1.0 if factor > 0 else -1.0
        i += 1
    return _log_add(sum0, sum1)


def _check(q: float, sigma: float, steps: int) -> None:
    if not 0.0 <= q <= 1.0:
        raise ConfigError(f"expected a sample rate in [0, 1], got {q}")
    if not (sigma >= 0.0 and math.isfinite(sigma)):
        raise ConfigError(f"expected a finite noise multiplier >= 0, got {sigma}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ConfigError(f"expected a non-negative integer number of steps, got {steps!r}")


def _check_orders(orders: Sequence[float]) -> list[float]:
    values = [float(a) for a in orders]
    if not values:
        raise ConfigError("expected at least one Rényi order, got none")
    for a in values:
        if not (a > 1.0 and math.isfinite(a)):
            raise ConfigError(f"expected Rényi orders > 1 and finite, got {a}")
    return values


def rdp_sampled_gaussian(*, sample_rate: float, noise_multiplier: float, order: float) -> float:
    """RDP at ``order`` of ONE step of the Poisson-sampled Gaussian mechanism.

    >>> rdp_sampled_gaussian(sample_rate=1.0, noise_multiplier=2.0, order=4.0)
    0.5
    """
    q, sigma = float(sample_rate), float(noise_multiplier)
    _check(q, sigma, 1)
    alpha = _check_orders([order])[0]
    if q == 0.0:
        return 0.0
    if sigma == 0.0:
        return math.inf
    if q == 1.0:
        return alpha / (2.0 * sigma * sigma)
    if float(alpha).is_integer():
        log_a = _log_a_integer(q, sigma, int(alpha))
    else:
        log_a = _log_a_fractional(q, sigma, alpha)
    return log_a / (alpha - 1.0)


def compute_rdp(
    *,
    sample_rate: float,
    noise_multiplier: float,
    steps: int,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> np.ndarray:
    """RDP of ``steps`` SGM steps at each of ``orders`` (composition adds RDP)."""
    _check(float(sample_rate), float(noise_multiplier), steps)
    values = _check_orders(orders)
    return np.array([
        steps * rdp_sampled_gaussian(sample_rate=sample_rate, noise_multiplier=noise_multiplier,
                                     order=a)
        for a in values
    ])


@dataclass(frozen=True)
class PrivacySpent:
    """(epsilon, delta) and the Rényi order that attained the minimum."""

    epsilon: float
    delta: float
    order: float
    conversion: str
    # True when the optimum sits at an end of the order grid (a wider grid could do better).
    order_at_grid_edge: bool = False


def epsilon_from_rdp(
    *,
    rdp: Sequence[float] | np.ndarray,
    orders: Sequence[float],
    delta: float,
    conversion: str = "balle2020",
) -> PrivacySpent:
    """Smallest epsilon over the orders for the given delta (see the module docstring)."""
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"expected delta in (0, 1), got {delta}")
    if conversion not in CONVERSIONS:
        raise ConfigError(f"expected a conversion in {CONVERSIONS}, got {conversion!r}")
    alphas = np.asarray(_check_orders(orders), dtype=np.float64)
    rdp_vec = np.asarray(rdp, dtype=np.float64)
    if rdp_vec.shape != alphas.shape:
        raise ConfigError(f"expected one RDP value per order ({alphas.size}), got {rdp_vec.size}")
    if conversion == "mironov2017":
        eps = rdp_vec - math.log(delta) / (alphas - 1.0)
    else:
        eps = rdp_vec + np.log((alphas - 1.0) / alphas) - (math.log(delta) + np.log(alphas)) / (
            alphas - 1.0)
    if np.all(rdp_vec == 0.0):
        # No privacy loss at any order (q = 0): epsilon tends to 0 as alpha grows; the
        # conversion's additive terms at a finite grid would only report the grid's edge.
        return PrivacySpent(0.0, float(delta), float(alphas[-1]), conversion, True)
    # An infinite RDP (sigma = 0) gives an infinite epsilon at every order.
    eps = np.where(np.isnan(eps), np.inf, eps)
    best = int(np.argmin(eps))
    edge = bool(alphas[best] in (alphas.min(), alphas.max()))
    return PrivacySpent(float(max(eps[best], 0.0)), float(delta), float(alphas[best]), conversion,
                        edge)


def privacy_spent(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    orders: Sequence[float] = DEFAULT_ORDERS,
    conversion: str = "balle2020",
) -> PrivacySpent:
    """(epsilon, delta) after ``steps`` SGM steps, with the attaining order."""
    rdp = compute_rdp(sample_rate=sample_rate, noise_multiplier=noise_multiplier, steps=steps,
                      orders=orders)
    return epsilon_from_rdp(rdp=rdp, orders=orders, delta=delta, conversion=conversion)


def epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    orders: Sequence[float] = DEFAULT_ORDERS,
    conversion: str = "balle2020",
) -> float:
    """Just the epsilon of :func:`privacy_spent`."""
    return privacy_spent(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps,
                         delta=delta, orders=orders, conversion=conversion).epsilon
