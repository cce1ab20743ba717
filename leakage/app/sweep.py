"""The cost sweep of ``secagg evaluate``: every protocol's round over a few model sizes.

Each point is one round on seeded random updates (real keys, real bytes), measured as
:class:`secagg.costs.RoundCosts`. A protocol's secure default whose next point is
projected (:class:`secagg.costs.Projection`, from a small probe and then from its
previous points) past the time budget falls back to its ``fast_config``, whose own
projection is seeded by the same small probe before any size runs; a point still
projected past it is skipped. Every fallback and skip is noted. The seeding probe runs
:meth:`~secagg.protocol.Protocol.cost_probe` (e.g. threshold Paillier's keys from the
dealer, not the dealer-free generation): its rate is the configuration's, its setup is
not, so a default whose round alone is projected past the budget falls back without
paying a key generation it would throw away; one that runs records its real setup, and
the projection of its next size includes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from leakage.app.records import CostPoint

if TYPE_CHECKING:
    from secagg.protocol import Protocol


def cost_curve(
    names: Sequence[str],
    sizes: Sequence[int],
    n_clients: int,
    *,
    quick: bool,
    max_seconds: float,
    log: Callable[[str], None],
) -> tuple[list[CostPoint], list[str]]:
    """Each protocol over ``sizes``; a size projected past ``max_seconds`` is skipped."""
    import protocols
    from secagg.costs import Projection, fast_or_default, probe
    from secagg.errors import SecAggError

    small = max(16, min(sizes) // 10)

    def seeded(protocol: Protocol[Any]) -> Projection:
        # A small probe round seeds the projection, so a slow configuration (e.g. one
        # 2048-bit Paillier ciphertext per parameter) is not run at a size past the budget.
        projection = Projection()
        try:
            projection.record(probe(protocol.cost_probe(), n_clients=n_clients, n_params=small),
                              n_clients, small)
        except SecAggError:
            pass
        return projection

    points: list[CostPoint] = []
    notes: list[str] = []
    for name in names:
        cls = protocols.get(name)
        protocol = fast_or_default(cls, fast=quick)
        note = "fast_config" if quick else "default config"
        projection = seeded(protocol) if not quick else Projection()
        for n_params in sorted(sizes):
            projected = projection.seconds(n_clients, n_params)
            if projected is not None and projected > max_seconds and cls.fast_config \
                    and note == "default config":
                protocol, note = fast_or_default(cls, fast=True), "fast_config"
                projection = seeded(protocol)
                notes.append(
                    f"{name}: fast_config from {n_params} parameters on (default projected "
                    f"at {projected:.0f} s)"
                )
                projected = projection.seconds(n_clients, n_params)
            if projected is not None and projected > max_seconds:
                notes.append(f"{name}: skipped {n_params} parameters (projected {projected:.0f} s)")
                break
            log(f"cost curve: {name} at {n_params} parameters ({note})")
            try:
                costs = probe(protocol, n_clients=n_clients, n_params=n_params)
            except SecAggError as exc:
                notes.append(f"{name}: {n_params} parameters failed: {type(exc).__name__}: {exc}")
                break
            points.append(CostPoint(name, n_params, n_clients, note, costs))
            projection.record(costs, n_clients, n_params)
    return points, notes
