"""Run one round of a protocol through the router and collect what happened.

:func:`run_round` builds the parties, steps them stage by stage (a message sent during
stage s is delivered at the recipient's step of stage s+1 or later), and returns a
:class:`RoundResult`: the aggregate (or the typed error that stopped the protocol from
revealing one), the transcript, every party's frozen view, the costs, and the protocol
instance that ran it, whose :meth:`~secagg.protocol.Protocol.observe` turns the server
views into observations (:meth:`RoundResult.observations`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from secagg.binding import validate_bindings
from secagg.errors import ConfigError, SecAggError
from secagg.observe import Observation
from secagg.party import MAX_CLIENTS, View, ViewRecorder, is_client
from secagg.protocol import Protocol, RoundSpec, observe_round
from secagg.router import Fault, Router, TranscriptEntry


@dataclass
class Costs:
    """Seconds per party per stage and bytes per party, for one round."""

    seconds: dict[int, dict[str, float]]
    bytes_sent: dict[int, int]
    bytes_received: dict[int, int]
    n_clients: int
    n_params: int
    offline_stages: frozenset[str] = frozenset()
    finalize_stages: frozenset[str] = frozenset()
    server_ids: tuple[int, ...] = ()
    setup_seconds: float = 0.0

    def _clients(self) -> list[int]:
        return list(range(self.n_clients))

    def client_seconds(self, *, offline: bool | None = None) -> float:
        """Mean seconds per client over the round (``offline`` True/False: that part only)."""
        total = 0.0
        for client in self._clients():
            for stage, seconds in self.seconds.get(client, {}).items():
                if offline is None or (stage in self.offline_stages) == offline:
                    total += seconds
        return total / max(1, self.n_clients)

    def server_seconds(self) -> float:
        """Seconds the servers spent collecting and aggregating (finalize stages apart)."""
        return sum(
            seconds
            for server in self.server_ids
            for stage, seconds in self.seconds.get(server, {}).items()
            if stage not in self.finalize_stages
        )

    def finalize_seconds(self) -> float:
        """Seconds any party spent revealing the aggregate (decrypt, unmask)."""
        return sum(
            seconds
            for per_stage in self.seconds.values()
            for stage, seconds in per_stage.items()
            if stage in self.finalize_stages
        )

    def _senders(self) -> list[int]:
        # Clients that dropped before sending anything would dilute the per-client figure.
        return [c for c in self._clients() if self.bytes_sent.get(c, 0) > 0] or self._clients()

    def bytes_up_per_client(self) -> float:
        """Mean bytes sent per client, over the clients that sent anything."""
        senders = self._senders()
        return sum(self.bytes_sent.get(c, 0) for c in senders) / len(senders)

    def bytes_down_per_client(self) -> float:
        senders = self._senders()
        return sum(self.bytes_received.get(c, 0) for c in senders) / len(senders)

    def total_bytes(self) -> int:
        return sum(self.bytes_sent.values())

    def bytes_per_param(self) -> float:
        """Uploaded bytes per client per parameter."""
        return self.bytes_up_per_client() / max(1, self.n_params)


@dataclass
class RoundResult:
    """One round: its aggregate or error, transcript, frozen views and costs.

    ``instance`` is the protocol that ran the round, with the configuration it ran with;
    ``protocol`` its registered name.
    """

    protocol: str
    round_id: int
    n_clients: int
    n_params: int
    aggregate: np.ndarray | None
    included: tuple[int, ...]
    error: SecAggError | None
    transcript: list[TranscriptEntry]
    views: dict[int, View]
    costs: Costs
    instance: Protocol[Any]
    server_ids: tuple[int, ...] = ()
    weights: tuple[float, ...] = field(default_factory=tuple)

    @property
    def spec(self) -> RoundSpec:
        return RoundSpec(round_id=self.round_id, n_clients=self.n_clients, n_params=self.n_params)

    def observations(self) -> list[Observation]:
        """What each server observes in its view, then what the servers observe pooled
        (:func:`secagg.protocol.observe_round` with the protocol that ran the round)."""
        return observe_round(self.instance, self.views, self.spec)

    def unwrap(self) -> np.ndarray:
        """The aggregate, or raise the error that kept the protocol from revealing it."""
        if self.error is not None:
            raise self.error
        if self.aggregate is None:  # unreachable: run_round sets one of the two
            raise SecAggError(f"{self.protocol}: no aggregate and no error")
        return self.aggregate

    def server_views(self) -> dict[int, View]:
        return {sid: self.views[sid] for sid in self.server_ids}

    def refused(self) -> list[TranscriptEntry]:
        return [entry for entry in self.transcript if not entry.delivered]


def run_round(
    protocol: Protocol[Any],
    updates: Sequence[np.ndarray],
    *,
    weights: Sequence[float] | None = None,
    faults: Sequence[Fault] = (),
    round_id: int = 0,
    bindings: Sequence[bytes] | None = None,
) -> RoundResult:
    """Run one round of ``protocol`` over ``updates`` (one flat float vector per client).

    ``bindings``: each client's model digest (:func:`secagg.binding.model_digest` of the
    model it trained on); the protocol then refuses to reveal an aggregate over clients
    whose digests differ (:class:`secagg.errors.ModelBindingError`). None: unbound.
    """
    vectors = [_check_update(i, u) for i, u in enumerate(updates)]
    if not vectors:
        raise ConfigError("expected at least one client update, got none")
    if len(vectors) >= MAX_CLIENTS:
        raise ConfigError(f"expected fewer than {MAX_CLIENTS} clients, got {len(vectors)}")
    n_params = vectors[0].size
    for i, vector in enumerate(vectors):
        if vector.size != n_params:
            raise ConfigError(f"client {i}: expected {n_params} parameters like client 0, got {vector.size}")
    if weights is not None:
        if len(weights) != len(vectors):
            raise ConfigError(f"expected {len(vectors)} weights, got {len(weights)}")
        if any(not (np.isfinite(w) and w > 0) for w in weights):
            raise ConfigError(f"expected finite positive weights, got {list(weights)}")
    if not 0 <= round_id < 2**32:
        raise ConfigError(f"round_id must be in [0, 2^32), got {round_id}")
    spec = RoundSpec(round_id=round_id, n_clients=len(vectors), n_params=n_params)
    digests = validate_bindings(bindings, len(vectors)) if bindings is not None else None

    started = time.perf_counter()
    parties = protocol.make_parties(vectors, weights, spec)
    if digests is not None:
        protocol.bind(parties, digests)
    setup_seconds = time.perf_counter() - started
    by_id = {party.party_id: party for party in parties}
    if len(by_id) != len(parties):
        raise ConfigError(f"{protocol.name}: two parties share an id")
    recorders = {pid: ViewRecorder(pid, party.role) for pid, party in by_id.items()}
    router = Router(protocol, round_id, list(by_id), faults, views=recorders)
    seconds: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    error: SecAggError | None = None
    try:
        for stage in protocol.stages:
            for pid, party in by_id.items():
                alive = not router.dropped(pid, stage)
                inbox = router.deliver(pid, stage, alive=alive)
                if not alive:
                    continue
                began = time.perf_counter()
                outgoing = party.step(stage, inbox)
                seconds[pid][stage] += time.perf_counter() - began
                router.send(pid, stage, outgoing)
            router.inject(stage)
    except SecAggError as exc:
        error = exc
    for (pid, stage), spent in router.decode_seconds.items():
        seconds[pid][stage] += spent

    aggregate: np.ndarray | None = None
    included: tuple[int, ...] = ()
    views = {
        pid: recorders[pid].freeze(
            revealed=party.output() if error is None else None, holdings=party.holdings()
        )
        for pid, party in by_id.items()
    }
    if error is None:
        holder = views.get(protocol.aggregate_holder)
        revealed = holder.revealed if holder else None
        if revealed is None:
            error = SecAggError(f"{protocol.name}: the round ended without an aggregate")
        else:
            aggregate, included = revealed.aggregate, revealed.included

    costs = router.ledger.costs(
        n_clients=len(vectors), n_params=n_params, seconds=seconds, setup_seconds=setup_seconds
    )
    return RoundResult(
        protocol=protocol.name,
        round_id=round_id,
        n_clients=len(vectors),
        n_params=n_params,
        aggregate=aggregate,
        included=included,
        error=error,
        transcript=router.transcript,
        views=views,
        costs=costs,
        instance=protocol,
        server_ids=protocol.server_ids,
        weights=tuple(float(w) for w in weights) if weights is not None else (),
    )


def reference_aggregate(
    updates: Sequence[np.ndarray],
    included: Sequence[int],
    *,
    kind: str,
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """The float64 sum or weighted mean over the ``included`` clients."""
    if not included:
        raise ConfigError("expected at least one included client")
    stacked = np.stack([np.asarray(updates[i], dtype=np.float64) for i in included])
    if kind == "sum":
        return stacked.sum(axis=0)
    if kind == "weighted_mean":
        w = np.asarray([1.0 if weights is None else weights[i] for i in included], dtype=np.float64)
        return (w[:, None] * stacked).sum(axis=0) / w.sum()
    raise ConfigError(f"expected aggregate kind 'sum' or 'weighted_mean', got {kind!r}")


def _check_update(index: int, update: np.ndarray) -> np.ndarray:
    array = np.asarray(update)
    if array.ndim != 1 or array.dtype.kind != "f":
        raise ConfigError(
            f"client {index}: expected a flat float vector (secagg.flat.flatten), "
            f"got {array.dtype} of shape {array.shape}"
        )
    if not is_client(index):
        raise ConfigError(f"client index {index} out of range")
    return array
