"""SecAgg+ neighbour count k and Shamir threshold t from failure bounds (Bell et al. 2020).

Bell, Bonawitz, Gascón, Lepoint and Raykova (Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead, CCS 2020) replace Bonawitz et al.'s complete graph with a
random sparse one and choose k and t from n, the fraction of clients that drop out, the
fraction that are corrupt and the tolerated failure probabilities, so that with
probability at least 1 - 2^-sigma nothing individual leaks and with probability at least
1 - 2^-eta the round completes. :func:`size_secaggplus` does that for *this*
implementation's graph (:func:`protocols.pairwise.neighbour_graph`: clients on a ring in
a uniformly random order, each joined to k/2 on either side), with exact tails rather
than asymptotic ones.

The model (what the bounds assume):

- ``corrupt`` is the fraction of clients the adversary controls, fixed before the graph is
  drawn (the graph seed comes from the session and the round, :func:`graph_seed_for`):
  C = ceil(corrupt * n) clients. Corrupt clients share with the server and may refuse to
  answer, so they count as neither honest nor live.
- every client drops out independently with probability ``dropout`` (at any stage;
  counted as if before its masked input, the case that removes its pair masks).

Three events, each bounded by a union over the n clients (or the windows of the ring);
a client's k neighbours are, marginally, a uniform k-subset of the other n - 1 clients,
so the number of corrupt neighbours c_i is hypergeometric:

1. *Shares* (privacy): the server learns x_i if it gathers t shares of both of client i's
   secrets. Honest members answer one request each, corrupt ones answer both, so a server
   that lies about i's dropout to two halves of i's group (g = k + 1 members) gets both
   when 2t <= g + c_i. Failure: some c_i >= 2t - g.
2. *Graph* (privacy): the server learns the sum of each connected component of the honest
   live clients (pair masks with corrupt or dropped clients it can remove). On the ring,
   that graph falls apart only when at least two runs of k/2 consecutive ring positions
   are all corrupt or dropped. Failure probability <= (number of pairs of disjoint
   windows) * P(k given positions all removed).
3. *Correctness*: every secret the server must rebuild needs t shares from live holders,
   and client i checks that at least t members of its group took part. Failure: some
   client with fewer than t honest live neighbours (itself not counted): r_i > k - t,
   r_i = c_i + Binomial(k - c_i, dropout).

The privacy events together must stay below 2^-privacy_bits, the correctness event below
2^-correctness_bits. The search takes the smallest even k (then the smallest t > g/2 that
meets privacy, which is the best t for correctness) and falls back to the complete graph;
when no k works it raises :class:`ConfigError` saying which dropout rate, corrupt fraction
and failure target would work at this n.

>>> sizing = size_secaggplus(n_clients=1000, dropout=0.1, corrupt=0.05)
>>> (sizing.neighbours, sizing.threshold)
(96, 59)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from secagg.errors import ConfigError

DEFAULT_DROPOUT = 0.1
DEFAULT_CORRUPT = 0.05
DEFAULT_FAILURE_BITS = 20
MAX_SIZED_CLIENTS = 1 << 20


@dataclass(frozen=True)
class Sizing:
    """k and t for one client count, with the failure bounds (log2) they reach.

    ``neighbours`` None means the complete graph (every client shares with all others).
    """

    n_clients: int
    neighbours: int | None
    threshold: int
    privacy_log2: float
    correctness_log2: float

    @property
    def group(self) -> int:
        return self.n_clients if self.neighbours is None else self.neighbours + 1


def _log_factorials(n: int) -> np.ndarray:
    out = np.zeros(n + 1)
    np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)), out=out[1:])
    return out


def _log_choose(lf: np.ndarray, n: int | np.ndarray, k: int | np.ndarray) -> np.ndarray:
    return np.asarray(lf[n] - lf[k] - lf[np.asarray(n) - np.asarray(k)], dtype=np.float64)


def _hypergeometric(lf: np.ndarray, population: int, successes: int, draws: int) -> np.ndarray:
    """pmf over 0..draws of the successes among ``draws`` taken without replacement."""
    j = np.arange(draws + 1)
    ok = (j <= successes) & (draws - j <= population - successes)
    pmf = np.zeros(draws + 1)
    jj = j[ok]
    pmf[ok] = np.exp(
        _log_choose(lf, successes, jj)
        + _log_choose(lf, population - successes, draws - jj)
        - _log_choose(lf, population, draws)
    )
    return pmf


def _upper_tails(pmf: np.ndarray) -> np.ndarray:
    """tails[m] = P(X >= m) for m in 0..len(pmf) (the last entry 0)."""
    tails = np.zeros(len(pmf) + 1)
    tails[:-1] = np.cumsum(pmf[::-1])[::-1]
    return np.minimum(tails, 1.0)


def _removed_tails(lf: np.ndarray, corrupt_pmf: np.ndarray, dropout: float) -> np.ndarray:
    """P(r >= m), r = c + Binomial(k - c, dropout) removed neighbours of k."""
    k = len(corrupt_pmf) - 1
    pmf = np.zeros(k + 1)
    if dropout <= 0.0:
        return _upper_tails(corrupt_pmf)
    log_p, log_q = math.log(dropout), math.log1p(-dropout) if dropout < 1 else -math.inf
    for c in np.nonzero(corrupt_pmf > 0)[0]:
        trials = k - int(c)
        d = np.arange(trials + 1)
        with np.errstate(invalid="ignore"):
            log_binom = (
                _log_choose(lf, trials, d) + d * log_p + np.where(trials - d > 0, (trials - d) * log_q, 0)
            )
        pmf[c : c + trials + 1] += corrupt_pmf[c] * np.exp(log_binom)
    return _upper_tails(pmf)


def _all_removed(lf: np.ndarray, n: int, corrupt_count: int, positions: int, dropout: float) -> float:
    """P(``positions`` given ring positions are all corrupt or dropped)."""
    if positions > n:
        return 0.0
    corrupt_pmf = _hypergeometric(lf, n, corrupt_count, positions)
    j = np.arange(positions + 1)
    honest = positions - j
    with np.errstate(divide="ignore"):
        weights = np.where(honest == 0, 1.0, np.exp(honest * math.log(dropout)) if dropout > 0 else 0.0)
    return float(np.sum(corrupt_pmf * weights))


def _log2(p: float) -> float:
    return math.log2(p) if p > 0 else -math.inf


def _check(
    n_clients: int, dropout: float, corrupt: float, privacy_bits: float, correctness_bits: float
) -> None:
    if not isinstance(n_clients, int) or not 3 <= n_clients <= MAX_SIZED_CLIENTS:
        raise ConfigError(f"sizing: expected 3 <= n_clients <= {MAX_SIZED_CLIENTS}, got {n_clients!r}")
    for name, value in (("dropout", dropout), ("corrupt", corrupt)):
        if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
            raise ConfigError(f"sizing: expected 0 <= {name} < 1, got {value!r}")
    for name, value in (("privacy_bits", privacy_bits), ("correctness_bits", correctness_bits)):
        if not (isinstance(value, (int, float)) and 1 <= value <= 128):
            raise ConfigError(f"sizing: expected 1 <= {name} <= 128, got {value!r}")


@lru_cache(maxsize=256)
def _search(
    n_clients: int, dropout: float, corrupt: float, privacy_bits: float, correctness_bits: float
) -> Sizing | None:
    n = n_clients
    lf = _log_factorials(n)
    corrupt_count = math.ceil(corrupt * n)
    privacy_budget, correctness_budget = 2.0**-privacy_bits, 2.0**-correctness_bits
    candidates = list(range(2, n - 1, 2)) + [n - 1]
    for k in candidates:
        full = k == n - 1
        group = k + 1
        if full:
            graph_failure = 0.0  # the complete graph on the honest live clients is connected
        else:
            half = k // 2
            # Disjoint pairs of windows of k/2 consecutive positions on a ring of n.
            pairs = n * max(0, n - 2 * half + 1) / 2
            graph_failure = pairs * _all_removed(lf, n, corrupt_count, 2 * half, dropout)
        if graph_failure >= privacy_budget:
            continue
        corrupt_pmf = _hypergeometric(lf, n - 1, min(corrupt_count, n - 1), k)
        corrupt_tails = _upper_tails(corrupt_pmf)
        share_budget = privacy_budget - graph_failure
        threshold = None
        for t in range(max(2, group // 2 + 1), group + 1):
            if n * corrupt_tails[min(max(2 * t - group, 0), k + 1)] <= share_budget:
                threshold = t
                break
        if threshold is None or threshold > k:
            continue
        removed_tails = _removed_tails(lf, corrupt_pmf, dropout)
        correctness_failure = n * removed_tails[k - threshold + 1]
        if correctness_failure > correctness_budget:
            continue
        share_failure = n * corrupt_tails[min(max(2 * threshold - group, 0), k + 1)]
        return Sizing(
            n_clients=n,
            neighbours=None if full else k,
            threshold=threshold,
            privacy_log2=_log2(graph_failure + share_failure),
            correctness_log2=_log2(correctness_failure),
        )
    return None


def _largest(feasible: Callable[[float], bool], low: float, high: float, steps: int = 12) -> float | None:
    """The largest x in [low, high] with feasible(x) (feasibility falls as x grows)."""
    if not feasible(low):
        return None
    for _ in range(steps):
        middle = (low + high) / 2
        if feasible(middle):
            low = middle
        else:
            high = middle
    return low


def _what_would_work(
    n: int, dropout: float, corrupt: float, privacy_bits: float, correctness_bits: float
) -> str:
    def works(
        n_clients: int = n, d: float = dropout, c: float = corrupt, bits: tuple[float, float] | None = None
    ) -> bool:
        p, q = bits if bits is not None else (privacy_bits, correctness_bits)
        return _search(n_clients, d, c, p, q) is not None

    would: list[str] = []
    max_dropout = _largest(lambda d: works(d=d), 0.0, dropout)
    if max_dropout is not None:
        would.append(f"dropout <= {math.floor(max_dropout * 1000) / 1000:g}")
    max_corrupt = _largest(lambda c: works(c=c), 0.0, corrupt)
    if max_corrupt is not None:
        would.append(f"corrupt fraction <= {math.floor(max_corrupt * 1000) / 1000:g}")
    top = int(min(privacy_bits, correctness_bits))
    bits = next((b for b in range(top - 1, 0, -1) if works(bits=(b, b))), None)
    if bits is not None:
        would.append(f"failure targets 2^-{bits} for privacy and correctness")
    more = next((m for m in (2 * n, 4 * n, 10 * n) if m <= MAX_SIZED_CLIENTS and works(n_clients=m)), None)
    if more is not None:
        would.append(f"{more} clients")
    return "what would (each alone): " + "; ".join(would) if would else "nothing near these settings would"


def size_secaggplus(
    *,
    n_clients: int,
    dropout: float = DEFAULT_DROPOUT,
    corrupt: float = DEFAULT_CORRUPT,
    privacy_bits: float = DEFAULT_FAILURE_BITS,
    correctness_bits: float = DEFAULT_FAILURE_BITS,
) -> Sizing:
    """The smallest k (and its t) meeting both failure targets for ``n_clients``.

    Raises :class:`ConfigError` when even the complete graph misses a target, naming the
    dropout rate, corrupt fraction and failure targets that would work at this n.
    """
    _check(n_clients, dropout, corrupt, privacy_bits, correctness_bits)
    found = _search(n_clients, float(dropout), float(corrupt), float(privacy_bits), float(correctness_bits))
    if found is not None:
        return found
    raise ConfigError(
        f"SecAgg+ sizing: no neighbour count k <= {n_clients - 1} and threshold t meet privacy failure "
        f"<= 2^-{privacy_bits:g} and correctness failure <= 2^-{correctness_bits:g} for {n_clients} clients "
        f"with dropout {dropout:g} and corrupt fraction {corrupt:g}; "
        + _what_would_work(
            n_clients, float(dropout), float(corrupt), float(privacy_bits), float(correctness_bits)
        )
    )
