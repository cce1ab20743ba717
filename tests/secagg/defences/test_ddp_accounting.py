"""The distributed-DP accountant against the published formulas and the Gaussian limit."""

from __future__ import annotations

import math

import pytest

from secagg.defences import dp
from secagg.defences.ddp_accounting import (
    ORDERS,
    central_gaussian_multiplier,
    ddg_rdp,
    ddg_tau,
    distributed_epsilon,
    rounded_l1_bound,
    rounded_l2_bound,
    skellam_rdp,
)
from secagg.errors import ConfigError


def test_tau_by_hand() -> None:
    # n = 2: one term, 10 exp(-2 pi^2 sigma^2 / 2); sigma = 1/2 gives 10 exp(-pi^2 / 4).
    assert ddg_tau(sigma=0.5, n_clients=2) == pytest.approx(10 * math.exp(-math.pi**2 / 4))
    # n = 3 adds k = 2: exp(-2 pi^2 sigma^2 2/3).
    expected = 10 * (math.exp(-math.pi**2 / 4) + math.exp(-2 * math.pi**2 * 0.25 * 2 / 3))
    assert ddg_tau(sigma=0.5, n_clients=3) == pytest.approx(expected)
    assert ddg_tau(sigma=0.5, n_clients=1) == 0.0


def test_ddg_rdp_is_the_minimum_of_proposition_14() -> None:
    # A case where tau matters (sigma = 0.6): each of the three terms by hand.
    order, l2, l1, sigma, n, d = 3.0, 4.0, 9.0, 0.6, 5, 10
    tau = ddg_tau(sigma=sigma, n_clients=n)
    s2, s1 = l2 / (math.sqrt(n) * sigma), l1 / (math.sqrt(n) * sigma)
    terms = (order / 2 * s2**2 + tau * d,
             order / 2 * (s2**2 + 2 * s1 * tau + tau**2 * d),
             order / 2 * (s2 + tau * math.sqrt(d)) ** 2)
    assert tau > 1e-3
    assert ddg_rdp(order=order, l2=l2, l1=l1, sigma=sigma, n_clients=n, dim=d) == pytest.approx(min(terms))


def test_ddg_tends_to_the_central_gaussian() -> None:
    # With sigma >> 1, tau ~ 0: the sum of n discrete Gaussians is a Gaussian of std
    # sqrt(n) sigma, so epsilon equals the central Gaussian mechanism's at z = sqrt(n) sigma / l2
    # (dp.py, itself cross-checked against Opacus).
    l2, n, sigma = 50.0, 10, 30.0
    spent = distributed_epsilon(noise="dgauss", l2=l2, dim=1000, n_clients=n, client_variance=sigma**2,
                                delta=1e-5)
    z = math.sqrt(n) * sigma / l2
    central = dp.epsilon_from_rdp(rdp=[a / (2 * z * z) for a in ORDERS], orders=ORDERS, delta=1e-5)
    assert spent.epsilon == pytest.approx(central.epsilon, rel=1e-9)


def test_skellam_formula_by_hand_and_its_gaussian_limit() -> None:
    order, l2, l1, mu = 4.0, 3.0, 7.0, 20.0
    expected = order * 9 / 40 + min((7 * 9 + 42) / (4 * 400), 21 / 40)
    assert skellam_rdp(order=order, l2=l2, l1=l1, central_variance=mu) == pytest.approx(expected)
    # Skellam always costs a little more than the Gaussian of the same variance, less and
    # less as the variance grows.
    gaps = []
    for variance in (10.0, 1000.0, 1e5):
        sk = distributed_epsilon(noise="skellam", l2=10.0, dim=100, n_clients=4, client_variance=variance,
                                 delta=1e-5).epsilon
        dg = distributed_epsilon(noise="dgauss", l2=10.0, dim=100, n_clients=4, client_variance=variance,
                                 delta=1e-5).epsilon
        assert sk >= dg
        gaps.append(sk / dg - 1)
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3


def test_more_clients_or_noise_lower_epsilon_and_rounds_compose() -> None:
    def eps(**kw: float) -> float:
        args = {"noise": "dgauss", "l2": 100.0, "dim": 64, "n_clients": 10, "client_variance": 900.0,
                "delta": 1e-5}
        args.update(kw)
        return distributed_epsilon(**args).epsilon  # type: ignore[arg-type]

    assert eps(n_clients=20) < eps()
    assert eps(client_variance=1600.0) < eps()
    assert eps(rounds=4) > eps()


def test_rounded_bounds() -> None:
    # beta = 0: the worst case c + sqrt(d).
    assert rounded_l2_bound(l2=10.0, dim=16, beta=0.0) == 14.0
    beta = math.exp(-0.5)  # sqrt(2 log(1/beta)) = 1
    expected = math.sqrt(100 + 16 / 4 + 1.0 * (10 + 4 / 2))
    assert rounded_l2_bound(l2=10.0, dim=16, beta=beta) == pytest.approx(expected)
    assert rounded_l1_bound(l2=3.0, dim=100) == 9.0
    assert rounded_l1_bound(l2=30.0, dim=4) == 60.0
    with pytest.raises(ConfigError):
        rounded_l2_bound(l2=-1.0, dim=4, beta=0.1)


def test_central_multiplier_inverts_the_gaussian_accountant() -> None:
    z = central_gaussian_multiplier(epsilon=3.0, delta=1e-5)
    got = dp.privacy_spent(noise_multiplier=z, sample_rate=1.0, steps=1, delta=1e-5, orders=ORDERS).epsilon
    assert got == pytest.approx(3.0, abs=1e-6)
    assert 1.0 < z < 2.0


def test_bad_arguments_are_typed() -> None:
    with pytest.raises(ConfigError, match="noise"):
        distributed_epsilon(noise="laplace", l2=1.0, dim=4, n_clients=2, client_variance=1.0, delta=1e-5)
    with pytest.raises(ConfigError, match="rounds"):
        distributed_epsilon(noise="dgauss", l2=1.0, dim=4, n_clients=2, client_variance=1.0, delta=1e-5,
                            rounds=0)


def test_against_dp_accounting_when_installed() -> None:
    dp_accounting = pytest.importorskip("dp_accounting")
    # Large noise: the distributed discrete Gaussian equals the Gaussian mechanism, which
    # dp-accounting's RDP accountant computes independently.
    l2, n, sigma = 20.0, 16, 25.0
    z = math.sqrt(n) * sigma / l2
    accountant = dp_accounting.rdp.RdpAccountant(list(ORDERS))
    accountant.compose(dp_accounting.GaussianDpEvent(z))
    theirs = accountant.get_epsilon(1e-5)
    ours = distributed_epsilon(noise="dgauss", l2=l2, dim=10, n_clients=n, client_variance=sigma**2,
                               delta=1e-5).epsilon
    assert ours == pytest.approx(theirs, rel=0.02)


def test_against_dp_accounting_zcdp_composition_when_installed() -> None:
    dp_accounting = pytest.importorskip("dp_accounting")
    # Kairouz et al.'s Theorem 1: with tau ~ 0 the sum of discrete Gaussians is rho-zCDP,
    # rho = Delta_2^2 / (2 n sigma^2); dp-accounting composes a ZCDpEvent over the rounds
    # and converts it to epsilon with its own code. Skellam at a large variance converges
    # to the same figure from above (Agarwal et al.'s extra terms vanish as 1 / mu).
    l2, n, sigma, rounds = 30.0, 8, 12.0, 5
    rho = l2**2 / (2 * n * sigma**2)
    accountant = dp_accounting.rdp.RdpAccountant(list(ORDERS))
    accountant.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.ZCDpEvent(rho), rounds))
    theirs = accountant.get_epsilon(1e-5)
    ours = distributed_epsilon(noise="dgauss", l2=l2, dim=100, n_clients=n, client_variance=sigma**2,
                               delta=1e-5, rounds=rounds).epsilon
    assert ours == pytest.approx(theirs, rel=0.02)
    scale = 100.0  # the same noise multiplier at 100x the integer resolution
    skellam = distributed_epsilon(noise="skellam", l2=l2 * scale, dim=100, n_clients=n,
                                  client_variance=(sigma * scale) ** 2, delta=1e-5, rounds=rounds).epsilon
    assert skellam >= ours and skellam == pytest.approx(theirs, rel=0.02)
