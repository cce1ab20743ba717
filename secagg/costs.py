"""What a round cost, as one record, and how a caller chooses a configuration it can afford.

:class:`RoundCosts` is the one cost record every output uses: ``secagg aggregate
--json``, each run of ``secagg evaluate``'s ``results.json``, ``secagg assess`` and the
cost benchmarks build it with :func:`round_costs` from a round's ledger
(:class:`secagg.round.Costs`), so a measure has one name wherever it is printed:

==========================  ==================================================================
``client_s``                mean seconds of all client work in the round (offline included)
``client_offline_s``        the part of ``client_s`` that does not depend on the data
``server_s``                seconds the servers spent collecting and aggregating
``finalize_s``              seconds any party spent revealing the aggregate (decrypt, unmask)
``setup_s``                 seconds to build the round's parties (key generation, provisioning)
``bytes_up_per_client``     mean bytes a client sent, over the clients that sent anything
``bytes_down_per_client``   mean bytes a client received, over the same clients
``bytes_per_param``         ``bytes_up_per_client`` per parameter
``expansion_over_float32``  ``bytes_per_param`` / 4
``total_bytes``             every byte any party sent
``max_abs_error``           max \\|aggregate - float64 reference\\| over the included clients
                            (None: no aggregate was revealed; a modular codec's aggregate is
                            compared modulo its ring's period)
``declared_precision``      the protocol's declared bound on ``max_abs_error``
==========================  ==================================================================

The configuration policy (:func:`choose_config`, :class:`Projection`): run the secure
default unless asked for the fast one; when the default's round is projected (linearly
in clients x parameters, from a probe round or from the previous points) past a time
budget, fall back to the protocol's ``fast_config`` and say so. ``secagg evaluate``,
``secagg assess`` and ``benchmarks.costs`` all use it.

This module depends on numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from secagg.errors import SecAggError

if TYPE_CHECKING:
    from secagg.protocol import Protocol
    from secagg.round import RoundResult

PROBE_PARAMS = 256  # parameters of the probe round a projection starts from


@dataclass(frozen=True)
class RoundCosts:
    """One round's costs, one name per measure (the module docstring defines each)."""

    client_s: float
    client_offline_s: float
    server_s: float
    finalize_s: float
    setup_s: float
    bytes_up_per_client: float
    bytes_down_per_client: float
    bytes_per_param: float
    expansion_over_float32: float
    total_bytes: int
    max_abs_error: float | None
    declared_precision: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def round_seconds(self, n_clients: int) -> float:
        """The work of the whole round: every client's, the servers' and the reveal."""
        return self.client_s * n_clients + self.server_s + self.finalize_s


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RoundCosts))


def round_costs(
    result: RoundResult,
    updates: Sequence[np.ndarray],
    *,
    weights: Sequence[float] | None = None,
    value_range: float | None = None,
) -> RoundCosts:
    """The cost record of ``result``, a round run over ``updates`` (and ``weights``).

    ``value_range`` is the bound on |x| the inputs respected (default: their max |x|);
    the protocol's declared precision is taken for it and the round's client count.
    """
    from secagg.round import reference_aggregate

    protocol = result.instance
    if value_range is None:
        value_range = float(max(np.abs(u).max() for u in updates)) if updates else 0.0
    error: float | None = None
    if result.error is None and result.aggregate is not None and result.included:
        reference = reference_aggregate(
            updates, result.included, kind=protocol.aggregate_kind, weights=weights
        )
        difference = result.aggregate - reference
        codec = protocol.codec_for(result.n_clients)
        if codec is not None and codec.modular:
            # A modular ring reveals the sum mod 2^k by design: compare residues.
            difference = difference - codec.period * np.rint(difference / codec.period)
        error = float(np.max(np.abs(difference)))
    ledger = result.costs
    per_param = ledger.bytes_per_param()
    return RoundCosts(
        client_s=ledger.client_seconds(),
        client_offline_s=ledger.client_seconds(offline=True),
        server_s=ledger.server_seconds(),
        finalize_s=ledger.finalize_seconds(),
        setup_s=ledger.setup_seconds,
        bytes_up_per_client=ledger.bytes_up_per_client(),
        bytes_down_per_client=ledger.bytes_down_per_client(),
        bytes_per_param=per_param,
        expansion_over_float32=per_param / 4.0,
        total_bytes=ledger.total_bytes(),
        max_abs_error=error,
        declared_precision=protocol.precision(n_clients=result.n_clients, value_range=value_range),
    )


# --- choosing a configuration that fits a time budget ----------------------------------


class Projection:
    """Seconds of a round projected linearly in clients x parameters from rounds seen.

    The rate is the largest seen (a conservative projection); the fixed part is the
    largest setup (key generation does not scale with the update).
    """

    def __init__(self) -> None:
        self.rate: float | None = None
        self.fixed = 0.0

    def record(self, costs: RoundCosts, n_clients: int, n_params: int) -> None:
        rate = costs.round_seconds(n_clients) / max(1, n_clients * n_params)
        self.rate = rate if self.rate is None else max(self.rate, rate)
        self.fixed = max(self.fixed, costs.setup_s)

    def seconds(self, n_clients: int, n_params: int) -> float | None:
        """The projected seconds of a round (None: nothing recorded yet)."""
        if self.rate is None:
            return None
        return self.rate * n_clients * n_params + self.fixed


def fast_or_default(cls: type[Protocol[Any]], *, fast: bool) -> Protocol[Any]:
    """An instance of ``cls``: its ``fast_config`` when ``fast``, its secure default otherwise."""
    return cls(**(dict(cls.fast_config) if fast else {}))


def covering(protocol: Protocol[Any], max_abs: float) -> Protocol[Any]:
    """``protocol`` with an input bound covering ``max_abs`` (the smallest power of two
    above it) when its own bound does not; the bound is public configuration."""
    bound = protocol.input_bound
    if bound is not None and max_abs > bound:
        return protocol.with_input_bound(float(2.0 ** math.ceil(math.log2(max_abs))))
    return protocol


def probe(protocol: Protocol[Any], *, n_clients: int, n_params: int, seed: int = 0) -> RoundCosts:
    """One round of ``protocol`` on seeded random updates within its bound: what it costs."""
    from secagg.round import run_round

    rng = np.random.default_rng(seed)  # simulation data, never key material
    bound = protocol.input_bound if protocol.input_bound is not None else 1.0
    updates = [rng.uniform(-bound / 2, bound / 2, n_params) for _ in range(max(2, n_clients))]
    weights = [1.0] * len(updates) if protocol.aggregate_kind == "weighted_mean" else None
    result = run_round(protocol, updates, weights=weights)
    result.unwrap()
    return round_costs(result, updates, weights=weights, value_range=bound / 2)


@dataclass(frozen=True)
class Choice:
    """The protocol instance a caller runs, and a note saying which configuration it is."""

    protocol: Protocol[Any]
    note: str


def choose_config(
    cls: type[Protocol[Any]],
    *,
    fast: bool,
    n_clients: int,
    n_params: int,
    max_seconds: float,
    max_abs: float = 0.0,
) -> Choice:
    """The configuration to run a round of ``n_clients`` x ``n_params`` with.

    ``fast``: the protocol's ``fast_config``. Otherwise its secure default, unless a
    probe round of :data:`PROBE_PARAMS` parameters projects the round past
    ``max_seconds`` and the protocol has a ``fast_config``, which it then gets. Either
    way the input bound covers ``max_abs``.
    """
    if fast:
        return Choice(covering(fast_or_default(cls, fast=True), max_abs), "fast_config")
    protocol = covering(fast_or_default(cls, fast=False), max_abs)
    projection = Projection()
    probe_clients = 2
    probe_params = min(PROBE_PARAMS, n_params)
    try:
        costs = probe(protocol, n_clients=probe_clients, n_params=probe_params)
        projection.record(costs, probe_clients, probe_params)
    except SecAggError as exc:
        return Choice(protocol, f"default config (probe failed: {type(exc).__name__})")
    projected = projection.seconds(n_clients, n_params)
    if projected is not None and projected > max_seconds and cls.fast_config:
        fast_protocol = covering(fast_or_default(cls, fast=True), max_abs)
        return Choice(fast_protocol, f"fast_config (secure default projected at {projected:.0f} s)")
    return Choice(protocol, "default config")
