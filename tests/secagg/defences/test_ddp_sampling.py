"""The exact integer samplers of distributed DP: distributions against their exact pmfs."""

from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest

from secagg.defences import ddp_sampling
from secagg.defences.ddp_sampling import (
    SecureBits,
    bernoulli,
    bernoulli_exp,
    bernoulli_exp_fraction,
    discrete_gaussian,
    discrete_gaussian_cks,
    discrete_laplace,
    poisson,
    poisson_by_pieces,
    rational_variance,
    skellam,
)
from secagg.errors import ConfigError

Sampler = Callable[[SecureBits, Fraction, int], np.ndarray]


def _bits(tag: int = 0) -> SecureBits:
    return SecureBits(bytes([tag]) * 32)


def _within(frequency: float, probability: float, n: int, sigmas: float = 5.0) -> bool:
    return abs(frequency - probability) <= sigmas * math.sqrt(probability * (1 - probability) / n) + 1e-12


def _total_variation(samples: np.ndarray, pmf: dict[int, float]) -> float:
    values, counts = np.unique(samples, return_counts=True)
    empirical = dict(zip(values.tolist(), (counts / samples.size).tolist()))
    support = set(empirical) | set(pmf)
    return 0.5 * sum(abs(empirical.get(k, 0.0) - pmf.get(k, 0.0)) for k in support)


def test_seeded_stream_is_reproducible_and_seeds_differ() -> None:
    assert np.array_equal(_bits(1).words(8), _bits(1).words(8))
    assert not np.array_equal(_bits(1).words(8), _bits(2).words(8))
    fresh_a, fresh_b = SecureBits().words(4), SecureBits().words(4)
    assert not np.array_equal(fresh_a, fresh_b)


def test_no_numpy_or_python_random_in_the_samplers() -> None:
    tree = ast.parse(inspect.getsource(ddp_sampling))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "random":
            raise AssertionError(f"uses {ast.unparse(node)}")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
            assert "random" not in names and "secrets" not in names


@pytest.mark.parametrize("bound", [2, 3, 7, 1000, 2**40 + 3])
def test_below_is_in_range_and_uniform(bound: int) -> None:
    draws = _bits(3).below(bound, 60_000)
    assert draws.min() >= 0 and draws.max() < bound
    if bound <= 7:
        counts = np.bincount(draws, minlength=bound)
        assert all(_within(c / draws.size, 1 / bound, draws.size) for c in counts)
    else:  # the top half is hit as often as the bottom half
        assert _within(float(np.mean(draws >= bound // 2)), (bound - bound // 2) / bound, draws.size)


def test_below_refuses_bounds_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"bound in \[1, 2\^62\]"):
        _bits().below(0, 3)
    with pytest.raises(ConfigError):
        _bits().below(2**63, 3)


def test_bernoulli_rational() -> None:
    coins = bernoulli(_bits(4), np.full(50_000, 3), 8)
    assert _within(float(coins.mean()), 3 / 8, coins.size)


@pytest.mark.parametrize(("numerator", "denominator"), [(0, 5), (1, 3), (5, 5), (7, 10)])
def test_bernoulli_exp_fraction(numerator: int, denominator: int) -> None:
    coins = bernoulli_exp_fraction(_bits(5), np.full(80_000, numerator), denominator)
    assert _within(float(coins.mean()), math.exp(-numerator / denominator), coins.size)


@pytest.mark.parametrize(("numerator", "denominator"), [(5, 2), (3, 1), (37, 10)])
def test_bernoulli_exp_beyond_one(numerator: int, denominator: int) -> None:
    coins = bernoulli_exp(_bits(6), np.full(100_000, numerator), denominator)
    assert _within(float(coins.mean()), math.exp(-numerator / denominator), coins.size)


def test_discrete_laplace_matches_its_pmf() -> None:
    scale = 3
    samples = discrete_laplace(_bits(7), scale, 100_000)
    norm = (1 - math.exp(-1 / scale)) / (1 + math.exp(-1 / scale))
    pmf = {k: norm * math.exp(-abs(k) / scale) for k in range(-80, 81)}
    assert _total_variation(samples, pmf) < 0.015
    assert abs(float(samples.mean())) < 0.1


@pytest.mark.parametrize("sampler", [discrete_gaussian, discrete_gaussian_cks])
@pytest.mark.parametrize("variance", [Fraction(1, 4), Fraction(5, 2), Fraction(40)])
def test_discrete_gaussian_matches_its_pmf(variance: Fraction, sampler: Sampler) -> None:
    samples = sampler(_bits(8), variance, 100_000)
    weights = {k: math.exp(-k * k / (2 * float(variance))) for k in range(-200, 201)}
    total = sum(weights.values())
    pmf = {k: w / total for k, w in weights.items()}
    assert _total_variation(samples, pmf) < 0.015
    exact_variance = sum(k * k * p for k, p in pmf.items())
    assert abs(float(samples.var()) / exact_variance - 1) < 0.03


def test_discrete_gaussian_wide_keeps_its_variance() -> None:
    variance = rational_variance(800.0**2)
    samples = discrete_gaussian(_bits(9), variance, 100_000)
    assert abs(float(samples.var()) / float(variance) - 1) < 0.02
    assert abs(float(samples.mean())) < 5 * 800 / math.sqrt(samples.size)
    assert samples.dtype == np.int64


def test_rational_variance_is_at_least_the_request_and_close() -> None:
    for value in (0.3, 2.0, 1234.567, 7999.0**2):
        fraction = rational_variance(value)
        assert fraction >= Fraction(value) * (1 - 1e-12)
        assert float(fraction) / value - 1 < 1e-6
        assert fraction.denominator & (fraction.denominator - 1) == 0  # a power of two


def test_rational_variance_refuses_beyond_the_integer_range() -> None:
    with pytest.raises(ConfigError, match="coarser granularity"):
        rational_variance(1e5**2)
    with pytest.raises(ConfigError):
        rational_variance(-1.0)


@pytest.mark.parametrize("sampler", [poisson, poisson_by_pieces])
@pytest.mark.parametrize("mean", [Fraction(3, 10), Fraction(3, 2), Fraction(9)])
def test_poisson_matches_its_pmf(mean: Fraction, sampler: Sampler) -> None:
    samples = sampler(_bits(10), mean, 60_000)
    lam = float(mean)
    pmf = {k: math.exp(-lam + k * math.log(lam) - math.lgamma(k + 1)) for k in range(0, 60)}
    assert _total_variation(samples, pmf) < 0.015


def test_skellam_is_symmetric_with_its_variance() -> None:
    samples = skellam(_bits(11), Fraction(6), 60_000)
    assert abs(float(samples.var()) / 6 - 1) < 0.04
    assert abs(float(samples.mean())) < 5 * math.sqrt(6 / samples.size)


def _poisson_pmf(mean: float, support: np.ndarray) -> np.ndarray:
    return np.exp(-mean + support * math.log(mean) - np.array([math.lgamma(k + 1) for k in support]))


def _max_cdf_gap(samples: np.ndarray, support: np.ndarray, pmf: np.ndarray) -> float:
    """The Kolmogorov-Smirnov distance between the samples and a pmf on ``support``."""
    empirical = np.searchsorted(np.sort(samples), support, side="right") / samples.size
    return float(np.max(np.abs(empirical - np.cumsum(pmf))))


def test_poisson_with_a_large_mean_matches_its_pmf() -> None:
    # 10^4: the by-pieces sampler would draw 2 * 10^4 pieces per sample; inversion draws one word.
    mean = Fraction(20_001, 2)
    bits = _bits(12)
    samples = poisson(bits, mean, 100_000)
    assert bits.words_drawn <= samples.size + 4  # one word per sample (a tie costs one more)
    support = np.arange(9_000, 11_001)
    pmf = _poisson_pmf(float(mean), support)
    assert _max_cdf_gap(samples, support, pmf) < 2.5 / math.sqrt(samples.size)  # KS, p ~ 1e-5
    assert abs(float(samples.var()) / float(mean) - 1) < 0.02


def test_skellam_with_a_large_variance_matches_its_pmf() -> None:
    variance = Fraction(20_000)
    samples = skellam(_bits(13), variance, 100_000)
    support = np.arange(8_000, 12_001)
    poisson_pmf = _poisson_pmf(10_000.0, support)
    pmf = np.convolve(poisson_pmf, poisson_pmf[::-1])  # X - Y on [-4000, 4000]
    values = np.arange(-4_000, 4_001)
    assert _max_cdf_gap(samples, values, pmf) < 2.5 / math.sqrt(samples.size)
    assert abs(float(samples.var()) / 20_000 - 1) < 0.02
    assert abs(float(samples.mean())) < 5 * math.sqrt(20_000 / samples.size)


def test_wide_discrete_gaussian_uses_one_word_per_sample() -> None:
    variance = rational_variance(816.0**2)
    bits = _bits(14)
    samples = discrete_gaussian(bits, variance, 200_000)
    assert bits.words_drawn <= samples.size + 4
    support = np.arange(-6_000, 6_001)
    weights = np.exp(-support.astype(np.float64) ** 2 / (2 * float(variance)))
    assert _max_cdf_gap(samples, support, weights / weights.sum()) < 2.5 / math.sqrt(samples.size)


def test_samples_come_from_the_keyed_stream() -> None:
    for sampler, parameter in ((discrete_gaussian, Fraction(900)), (poisson, Fraction(77, 3)),
                               (skellam, Fraction(50))):
        same = sampler(_bits(15), parameter, 1000), sampler(_bits(15), parameter, 1000)
        assert np.array_equal(*same)
        assert not np.array_equal(same[0], sampler(_bits(16), parameter, 1000))


@pytest.mark.parametrize(("kind", "parameter"), [("dgauss", Fraction(5, 2)), ("poisson", Fraction(3, 2))])
def test_the_exact_refinement_path_keeps_the_distribution(kind: str, parameter: Fraction) -> None:
    # slack_bits widens the 64-bit table's uncertainty to 2^-5, so most samples take the
    # path that reveals 64 more bits of U and decides against tighter enclosures.
    bits = _bits(17)
    n = 20_000
    if kind == "dgauss":
        samples = discrete_gaussian(bits, parameter, n, slack_bits=5)
        weights = {k: math.exp(-k * k / (2 * float(parameter))) for k in range(-40, 41)}
    else:
        samples = poisson(bits, parameter, n, slack_bits=5)
        weights = {k: float(parameter) ** k / math.factorial(k) for k in range(0, 40)}
    assert bits.words_drawn > 1.2 * n  # the refinement ran for many samples
    total = sum(weights.values())
    assert _total_variation(samples, {k: w / total for k, w in weights.items()}) < 0.02


def test_a_word_on_a_boundary_is_decided_by_more_bits() -> None:
    parameter = Fraction(40)
    lo, lower, upper = ddp_sampling._boundaries("dgauss", parameter, 64, None)
    j = len(lower) // 2
    assert all(a <= b for a, b in zip(lower, upper)) and lower == sorted(lower)
    # Boundary j encloses F(lo - 1 + j); a first word equal to its lower end cannot decide.
    assert upper[j] > lower[j]
    seen = set()
    for tag in range(40):
        bits = _bits(tag)
        seen.add(ddp_sampling._resolve(bits, "dgauss", parameter, lower[j]))
        assert bits.words_drawn >= 1
    assert seen <= {lo - 1 + j, lo + j}


def test_cdf_enclosures_agree_with_a_float_cdf() -> None:
    parameter = Fraction(40)
    lo, lower, _ = ddp_sampling._boundaries("dgauss", parameter, 64, None)
    support = np.arange(lo, lo + len(lower) - 1)
    weights = np.exp(-support.astype(np.float64) ** 2 / 80.0)
    cdf = np.cumsum(weights) / weights.sum()
    assert np.max(np.abs(np.array(lower[1:], dtype=np.float64) / 2.0**64 - cdf)) < 1e-12


@pytest.mark.parametrize(("kind", "parameter"), [("dgauss", Fraction(40)), ("dgauss", Fraction(1, 3)),
                                                 ("poisson", Fraction(3, 2)), ("poisson", Fraction(1001, 7))])
def test_enclosures_contain_the_cdf_computed_independently(kind: str, parameter: Fraction) -> None:
    # The 64-bit table's A_j <= F(lo - 1 + j) 2^64 <= B_j, with F summed by mpmath at 60
    # digits over a far wider window than the table's (its own error ~1e-55 << 2^-64).
    mpmath = pytest.importorskip("mpmath")
    lo, lower, upper = ddp_sampling._boundaries(kind, parameter, 64, None)
    with mpmath.workdps(60):
        if kind == "dgauss":
            half_width = int(40 * math.sqrt(float(parameter))) + 40
            support = range(-half_width, half_width + 1)
            variance = mpmath.mpf(parameter.numerator) / parameter.denominator

            def weight(k: int) -> object:
                return mpmath.exp(-mpmath.mpf(k * k) / (2 * variance))
        else:
            mean = mpmath.mpf(parameter.numerator) / parameter.denominator
            support = range(0, int(float(parameter) + 40 * math.sqrt(float(parameter))) + 60)

            def weight(k: int) -> object:
                return mpmath.exp(-mean + k * mpmath.log(mean) - mpmath.loggamma(k + 1))
        weights = {k: weight(k) for k in support}
        total = mpmath.fsum(weights.values())
        running = mpmath.fsum(w for k, w in weights.items() if k < lo)
        scale = mpmath.mpf(2) ** 64
        for j in range(len(lower)):
            if j:
                running += weights[lo - 1 + j]
            exact = running / total * scale
            assert lower[j] <= exact <= upper[j], (j, lower[j], exact, upper[j])
