"""Privacy accounting for distributed DP: the sum of n clients' discrete Gaussian or Skellam noise.

What it is: the accountant behind :mod:`secagg.defences.ddp`. Every client adds integer
noise to its rotated, rounded update; secure aggregation reveals only the sum, whose noise
is the sum of n independent draws. The unit protected is one client's update (add/remove
one client's vector, bounded in L2 by the clip after rotation and rounding); everything is
in the integer units of the ring (after scaling by 1 / granularity).

Formulas (written from the papers; the order alpha is an integer here, as both papers
state their bounds for integer orders):

- Rounded sensitivity (Kairouz, Liu, Steinke, ICML 2021, "The Distributed Discrete
  Gaussian Mechanism for Federated Learning with Secure Aggregation", Theorem 2 and the
  conditional rounding of Section 4): a vector of L2 norm ``c`` (integer units) in
  dimension ``d``, randomly rounded and re-rounded until its norm is at most

      Delta_2 = min( c + sqrt(d),
                     sqrt(c^2 + d/4 + sqrt(2 log(1/beta)) (c + sqrt(d)/2)) )

  (the second bound holds for one rounding with probability >= 1 - beta; conditioning
  enforces it, so beta only sets the expected number of retries). For integer vectors
  ``||x||_1 <= ||x||_2^2`` and ``||x||_1 <= sqrt(d) ||x||_2``, so
  ``Delta_1 = min(Delta_2^2, sqrt(d) Delta_2)``.
- Distributed discrete Gaussian (same paper, Proposition 14; Theorem 1 is its
  concentrated-DP corollary): n clients each add N_Z(0, sigma^2) per coordinate. With
  ``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1))`` and
  ``s_2 = Delta_2 / (sqrt(n) sigma)``, ``s_1 = Delta_1 / (sqrt(n) sigma)``:

      RDP(alpha) = min( alpha/2 s_2^2 + tau d,
                        alpha/2 (s_2^2 + 2 s_1 tau + tau^2 d),
                        alpha/2 (s_2 + tau sqrt(d))^2 )

  ``tau`` measures how far the sum of discrete Gaussians is from one discrete Gaussian of
  variance n sigma^2; it vanishes fast once sigma >= 1 (sigma = 1, n = 100: ~1e-7).
- Distributed Skellam (Agarwal, Kairouz, Liu, NeurIPS 2021, "The Skellam Mechanism for
  Differentially Private Federated Learning", Theorem 3.5 / Corollary 3.6): the sum of
  independent Skellams is Skellam; with ``mu`` the variance per coordinate of the SUM
  (n times each client's):

      RDP(alpha) = alpha Delta_2^2 / (2 mu)
                   + min( ((2 alpha - 1) Delta_2^2 + 6 Delta_1) / (4 mu^2), 3 Delta_1 / (2 mu) )

- Composition over ``rounds`` adds RDP; conversion to (epsilon, delta) is
  :func:`secagg.defences.dp.epsilon_from_rdp` (Balle et al. 2020, Thm 21, identical to
  Canonne-Kamath-Steinke's concentrated-DP conversion at rho = RDP / alpha).

Sampling: no amplification by client sampling is claimed. The server that runs secure
aggregation learns who took part in each sum, so against it each participation costs the
full per-round RDP; ``rounds`` counts a client's participations.

>>> round(ddg_rdp(order=2, l2=10.0, l1=100.0, sigma=5.0, n_clients=4, dim=16), 4)
1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from secagg.defences.dp import PrivacySpent, epsilon_from_rdp
from secagg.errors import ConfigError

# Integer orders: the bounds above are stated for integer alpha.
ORDERS: tuple[float, ...] = tuple(float(a) for a in list(range(2, 64)) + [64, 80, 96, 128, 160, 192, 256,
                                                                            384, 512, 1024])


def rounded_l2_bound(*, l2: float, dim: int, beta: float) -> float:
    """Delta_2 after conditional randomised rounding of a norm-``l2`` vector (integer units)."""
    if not (l2 >= 0 and math.isfinite(l2)):
        raise ConfigError(f"expected a finite L2 norm >= 0, got {l2!r}")
    if dim < 1:
        raise ConfigError(f"expected a dimension >= 1, got {dim}")
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"expected beta in [0, 1), got {beta!r}")
    worst = l2 + math.sqrt(dim)
    if beta == 0.0:
        return worst
    conditional = math.sqrt(l2 * l2 + dim / 4.0
                            + math.sqrt(2.0 * math.log(1.0 / beta)) * (l2 + math.sqrt(dim) / 2.0))
    return min(worst, conditional)


def rounded_l1_bound(*, l2: float, dim: int) -> float:
    """Delta_1 of an integer vector of L2 norm at most ``l2``."""
    return min(l2 * l2, math.sqrt(dim) * l2)


def ddg_tau(*, sigma: float, n_clients: int) -> float:
    """tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1)) (Kairouz et al. 2021)."""
    if n_clients < 1:
        raise ConfigError(f"expected at least one client, got {n_clients}")
    k = np.arange(1, n_clients, dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi**2 * sigma**2 * k / (k + 1.0))))


def ddg_rdp(*, order: float, l2: float, l1: float, sigma: float, n_clients: int, dim: int) -> float:
    """RDP at ``order`` of the sum of n discrete Gaussians N_Z(0, sigma^2) per coordinate
    (Proposition 14); ``l2``, ``l1`` are the integer-unit sensitivities."""
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ConfigError(f"expected a per-client noise std > 0, got {sigma!r}")
    tau = ddg_tau(sigma=sigma, n_clients=n_clients)
    root = math.sqrt(n_clients) * sigma
    s2, s1 = l2 / root, l1 / root
    half = order / 2.0
    return min(half * s2 * s2 + tau * dim,
               half * (s2 * s2 + 2.0 * s1 * tau + tau * tau * dim),
               half * (s2 + tau * math.sqrt(dim)) ** 2)


def skellam_rdp(*, order: float, l2: float, l1: float, central_variance: float) -> float:
    """RDP at ``order`` of the Skellam mechanism whose SUM has ``central_variance`` per
    coordinate (Agarwal et al. 2021, Thm 3.5)."""
    if not (central_variance > 0 and math.isfinite(central_variance)):
        raise ConfigError(f"expected a central variance > 0, got {central_variance!r}")
    mu = central_variance
    return order * l2 * l2 / (2.0 * mu) + min(((2.0 * order - 1.0) * l2 * l2 + 6.0 * l1) / (4.0 * mu * mu),
                                              3.0 * l1 / (2.0 * mu))


def distributed_epsilon(
    *,
    noise: str,
    l2: float,
    dim: int,
    n_clients: int,
    client_variance: float,
    delta: float,
    rounds: int = 1,
    orders: Sequence[float] = ORDERS,
) -> PrivacySpent:
    """(epsilon, delta) of ``rounds`` releases of the secure sum of n clients' noise.

    ``l2`` is Delta_2 (already rounded, integer units); ``client_variance`` each client's
    noise variance per coordinate (integer units).
    """
    if noise not in ("dgauss", "skellam"):
        raise ConfigError(f"expected noise 'dgauss' or 'skellam', got {noise!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"expected rounds to be an int >= 1, got {rounds!r}")
    if n_clients < 1:
        raise ConfigError(f"expected at least one client, got {n_clients}")
    l1 = rounded_l1_bound(l2=l2, dim=dim)
    alphas = np.asarray(orders, dtype=np.float64)
    if noise == "dgauss":
        if not (client_variance > 0 and math.isfinite(client_variance)):
            raise ConfigError(f"expected a per-client noise variance > 0, got {client_variance!r}")
        # ddg_rdp over every order at once (tau computed once).
        tau = ddg_tau(sigma=math.sqrt(client_variance), n_clients=n_clients)
        root = math.sqrt(n_clients * client_variance)
        s2, s1 = l2 / root, l1 / root
        half = alphas / 2.0
        per_round = np.minimum(np.minimum(half * s2 * s2 + tau * dim,
                                          half * (s2 * s2 + 2.0 * s1 * tau + tau * tau * dim)),
                               half * (s2 + tau * math.sqrt(dim)) ** 2)
    else:
        per_round = np.array([skellam_rdp(order=a, l2=l2, l1=l1, central_variance=n_clients * client_variance)
                              for a in orders])
    rdp = rounds * per_round
    return epsilon_from_rdp(rdp=rdp, orders=orders, delta=delta)


def central_gaussian_multiplier(*, epsilon: float, delta: float, rounds: int = 1) -> float:
    """The smallest noise multiplier z (std / L2 sensitivity) of the CENTRAL Gaussian
    mechanism reaching ``epsilon`` at ``delta`` under the same RDP conversion: the
    reference the distributed mechanisms are compared with."""
    from secagg.defences.dp import privacy_spent

    def eps(z: float) -> float:
        return privacy_spent(noise_multiplier=z, sample_rate=1.0, steps=rounds, delta=delta,
                             orders=ORDERS).epsilon

    low, high = 1e-3, 1.0
    while eps(high) > epsilon:
        high *= 2.0
        if high > 1e6:
            raise ConfigError(f"no Gaussian noise multiplier below 1e6 reaches epsilon {epsilon}")
    for _ in range(60):
        middle = math.sqrt(low * high)
        if eps(middle) > epsilon:
            low = middle
        else:
            high = middle
    return high
