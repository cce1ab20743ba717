"""The Rényi accountant of the sampled Gaussian mechanism: closed forms, monotonicity,
and agreement with Opacus's RDP accountant (when Opacus is installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secagg.defences import dp
from secagg.errors import ConfigError

# (sample_rate, noise_multiplier, steps): DP-SGD-like, small-q/low-noise, large-q,
# fractional optimum, plain Gaussian, huge noise, tiny q with many steps.
CASES = [
    (0.01, 1.1, 1000),
    (0.001, 0.5, 10000),
    (0.1, 4.0, 100),
    (0.5, 0.8, 10),
    (1.0, 1.0, 5),
    (0.02, 10.0, 3000),
    (1e-4, 0.3, 100_000),
]


def test_plain_gaussian_closed_form() -> None:
    # q = 1: RDP(alpha) = alpha / (2 sigma^2) per step (Mironov 2017, Prop. 7).
    rdp = dp.compute_rdp(sample_rate=1.0, noise_multiplier=2.0, steps=3, orders=[2.0, 3.5, 10.0])
    np.testing.assert_allclose(rdp, [3 * 2.0 / 8, 3 * 3.5 / 8, 3 * 10.0 / 8])


def test_integer_order_two_closed_form() -> None:
    # alpha = 2: A_2 = (1-q)^2 + 2q(1-q) + q^2 e^{1/sigma^2} = 1 + q^2 (e^{1/sigma^2} - 1).
    q, sigma = 0.05, 1.3
    expected = math.log1p(q * q * math.expm1(1 / sigma**2))
    assert dp.rdp_sampled_gaussian(sample_rate=q, noise_multiplier=sigma, order=2) == \
        pytest.approx(expected, rel=1e-12)


def test_fractional_order_sits_between_integer_neighbours() -> None:
    # RDP is non-decreasing in alpha, so the fractional series must land between its
    # integer neighbours (a sign slip in the series breaks this).
    q, sigma = 0.02, 0.9
    values = [dp.rdp_sampled_gaussian(sample_rate=q, noise_multiplier=sigma, order=a)
              for a in (3.0, 3.25, 3.5, 3.75, 4.0)]
    assert values == sorted(values)
    assert values[0] < values[2] < values[4]


def test_fractional_series_agrees_with_integer_form_near_integers() -> None:
    q, sigma = 0.03, 1.2
    integer = dp.rdp_sampled_gaussian(sample_rate=q, noise_multiplier=sigma, order=5.0)
    near = dp.rdp_sampled_gaussian(sample_rate=q, noise_multiplier=sigma, order=5.0 + 1e-7)
    assert near == pytest.approx(integer, rel=1e-5)


def test_epsilon_monotone_in_noise_steps_and_rate() -> None:
    base = dp.epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=500, delta=1e-5)
    assert dp.epsilon(noise_multiplier=2.0, sample_rate=0.01, steps=500, delta=1e-5) < base
    assert dp.epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=2000, delta=1e-5) > base
    assert dp.epsilon(noise_multiplier=1.0, sample_rate=0.05, steps=500, delta=1e-5) > base
    assert dp.epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=500, delta=1e-7) > base


def test_balle_conversion_never_worse_than_standard() -> None:
    rdp = dp.compute_rdp(sample_rate=0.01, noise_multiplier=1.1, steps=1000)
    balle = dp.epsilon_from_rdp(rdp=rdp, orders=dp.DEFAULT_ORDERS, delta=1e-5)
    standard = dp.epsilon_from_rdp(rdp=rdp, orders=dp.DEFAULT_ORDERS, delta=1e-5,
                                   conversion="mironov2017")
    assert balle.epsilon < standard.epsilon
    assert not balle.order_at_grid_edge


def test_degenerate_mechanisms() -> None:
    assert dp.epsilon(noise_multiplier=1.0, sample_rate=0.0, steps=10, delta=1e-5) == 0.0
    assert dp.epsilon(noise_multiplier=0.0, sample_rate=0.1, steps=10, delta=1e-5) == math.inf


@pytest.mark.parametrize("kwargs", [
    {"sample_rate": 1.5, "noise_multiplier": 1.0, "steps": 1},
    {"sample_rate": 0.1, "noise_multiplier": -1.0, "steps": 1},
    {"sample_rate": 0.1, "noise_multiplier": 1.0, "steps": 1.5},
    {"sample_rate": 0.1, "noise_multiplier": 1.0, "steps": 1, "orders": [1.0]},
])
def test_invalid_inputs_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="expected"):
        dp.compute_rdp(**kwargs)
    with pytest.raises(ConfigError, match="delta"):
        dp.epsilon_from_rdp(rdp=[1.0], orders=[2.0], delta=0.0)


@pytest.mark.parametrize("q, sigma, steps", CASES)
def test_matches_opacus_rdp_and_epsilon(q: float, sigma: float, steps: int) -> None:
    pytest.importorskip("opacus")
    from opacus.accountants.analysis import rdp as opacus_rdp

    orders = list(dp.DEFAULT_ORDERS)
    mine = dp.compute_rdp(sample_rate=q, noise_multiplier=sigma, steps=steps, orders=orders)
    theirs = np.asarray(opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps,
                                               orders=orders))
    np.testing.assert_allclose(mine, theirs, rtol=1e-6)
    spent = dp.privacy_spent(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=1e-5)
    eps, order = opacus_rdp.get_privacy_spent(orders=orders, rdp=theirs, delta=1e-5)
    assert spent.epsilon == pytest.approx(float(eps), rel=1e-6)
    assert spent.order == float(order)


def test_secagg_does_not_import_opacus_or_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, secagg.defences.dp, secagg.defences.transforms; "
            "print(any(m in sys.modules for m in ('torch', 'opacus', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
