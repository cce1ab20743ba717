"""An actively deviating server, played against any registered protocol.

The honest parties of a round are built by the protocol; the harness replaces one
server's ``step`` with the honest step followed by a *tamper*: a function that sees the
stage, what the server received and what it was about to send, and returns what it
sends instead (edited, withheld, duplicated, swapped). Everything still crosses the
router as bytes, so what the honest clients receive is exactly what a deviating server
could put on the wire.

What the harness checks, for every protocol:

- :func:`assert_typed_or_correct`: the round ends either in a typed error with nothing
  revealed, or in the aggregate the honest clients' inputs determine;
- :func:`individual_exposures`: which clients' updates the server's observations (its
  own reading of its view, :meth:`secagg.protocol.Protocol.observe`) put within reach,
  and, through a protocol-specific ``unmask`` check, which clients' inputs the server can
  compute from its view and the secrets it holds at the end.

Tamper helpers build the usual attacks from small pieces: :func:`at_stage` (one stage
only), :func:`edit_payloads` (rewrite or withhold per recipient).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from secagg.errors import SecAggError
from secagg.party import SERVER, Envelope, Inbound, Party
from secagg.protocol import Protocol, RoundSpec
from secagg.round import RoundResult, reference_aggregate
from secagg.wire import Payload

Tamper = Callable[[str, Sequence[Inbound], list[Envelope]], list[Envelope]]
Before = Callable[[str, Sequence[Inbound]], Sequence[Inbound]]


def honest(stage: str, inbox: Sequence[Inbound], out: list[Envelope]) -> list[Envelope]:
    """The tamper that changes nothing (for attacks made entirely by ``before``)."""
    return out


def adversarial(
    protocol: Protocol[Any], tamper: Tamper, *, server: int = SERVER, before: Before | None = None
) -> Protocol[Any]:
    """``protocol`` (same class, config and attributes) whose party ``server`` runs ``tamper``.

    ``before(stage, inbox)``, if given, edits what the server's honest step is shown
    (for example leaving out uploads it pretends never arrived) before it runs.
    """
    base = type(protocol)

    class Deviating(base):  # type: ignore[valid-type,misc]
        def make_parties(
            self, updates: Sequence[np.ndarray], weights: Sequence[float] | None, spec: RoundSpec
        ) -> list[Party]:
            parties = super().make_parties(updates, weights, spec)
            target = next(p for p in parties if p.party_id == server)
            honest_step = target.step

            def step(stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
                shown = inbox if before is None else before(stage, inbox)
                return tamper(stage, inbox, honest_step(stage, shown))

            target.step = step  # type: ignore[method-assign]
            return parties

    Deviating.__name__ = f"Deviating{base.__name__}"
    deviating = Deviating(protocol.config)
    deviating.__dict__.update({k: v for k, v in protocol.__dict__.items() if k != "config"})
    return deviating


def relayed(protocol: Protocol[Any], tamper: Tamper, *, sender: int) -> Protocol[Any]:
    """``protocol`` whose messages from ``sender`` (a key holder, say) reach their recipients
    through a deviating relay that applies ``tamper`` to them.

    The in-process router delivers a key holder's messages directly; in a deployment
    (Flower, any hub-and-spoke network) the server carries every message, so it can edit,
    withhold or swap them. The honest ``sender`` still computes what it sends; the edit
    happens after it, on the way.
    """
    return adversarial(protocol, tamper, server=sender)


def at_stage(stage: str, tamper: Tamper) -> Tamper:
    """``tamper`` at ``stage`` only; honest elsewhere."""

    def only(s: str, inbox: Sequence[Inbound], out: list[Envelope]) -> list[Envelope]:
        return tamper(s, inbox, out) if s == stage else out

    return only


def edit_payloads(stage: str, edit: Callable[[int, Payload], Payload | None]) -> Tamper:
    """At ``stage``, replace each outgoing payload by ``edit(recipient, payload)``; None withholds it."""

    def tamper(s: str, inbox: Sequence[Inbound], out: list[Envelope]) -> list[Envelope]:
        if s != stage:
            return out
        edited = []
        for envelope in out:
            payload = edit(envelope.recipient, envelope.payload)
            if payload is not None:
                edited.append(Envelope(envelope.recipient, payload))
        return edited

    return tamper


def chain(*tampers: Tamper) -> Tamper:
    """Apply ``tampers`` in order."""

    def both(stage: str, inbox: Sequence[Inbound], out: list[Envelope]) -> list[Envelope]:
        for tamper in tampers:
            out = tamper(stage, inbox, out)
        return out

    return both


def assert_typed_or_correct(
    result: RoundResult,
    updates: Sequence[np.ndarray],
    *,
    errors: tuple[type[SecAggError], ...] = (SecAggError,),
) -> None:
    """The round ended in one of ``errors`` with nothing revealed, or in the right aggregate."""
    if result.error is not None:
        assert isinstance(result.error, errors), repr(result.error)
        assert result.aggregate is None
        for sid in result.server_ids:
            assert result.views[sid].revealed is None, (
                f"{sid}: revealed an aggregate despite {result.error!r}"
            )
        return
    assert result.aggregate is not None
    assert len(result.included) >= max(2, result.instance.threat_model.min_clients)
    reference = reference_aggregate(
        updates,
        result.included,
        kind=result.instance.aggregate_kind,
        weights=list(result.weights) if result.weights else None,
    )
    bound = result.instance.precision(n_clients=result.n_clients, value_range=1.0)
    assert np.max(np.abs(result.aggregate - reference)) <= bound


def _close(candidate: np.ndarray, truth: np.ndarray) -> bool:
    return bool(np.max(np.abs(candidate - truth)) <= 1e-3 * max(1.0, float(np.max(np.abs(truth)))))


def individual_exposures(
    result: RoundResult,
    updates: Sequence[np.ndarray],
    *,
    unmask: Callable[[RoundResult, int], np.ndarray | None] | None = None,
    pooled: Callable[[str], bool] = lambda observer: False,
) -> set[int]:
    """Clients whose update the server side can read: from any single-client observation
    of its views, from an aggregate over one client, or (``unmask``) from its view and
    end holdings by the protocol's own arithmetic (``unmask(result, client)`` returns the
    server's best reconstruction of that client's update, or None when it has none).

    Each server counts alone; pooled views (the protocol's ``collude``: two servers
    together, the server with t decryptors) count only for the observers ``pooled``
    admits, since those coalitions break every protocol's stated assumption anyway."""
    exposed: set[int] = set()
    for observation in result.observations():
        if observation.vector is None or not observation.clients:
            continue
        if observation.kind == "colluding" and not pooled(observation.observer):
            continue
        if len(observation.clients) == 1:
            client = observation.clients[0]
            if _close(observation.vector, np.asarray(updates[client], dtype=np.float64)):
                exposed.add(client)
    if unmask is not None:
        for client in range(result.n_clients):
            candidate = unmask(result, client)
            if candidate is not None and _close(candidate, np.asarray(updates[client], dtype=np.float64)):
                exposed.add(client)
    return exposed
