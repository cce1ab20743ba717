"""Faults over every protocol: a dropped, a corrupted or a replayed message gives either
the correct aggregate of the remaining clients or a typed error, never a wrong one."""

from __future__ import annotations

import numpy as np
import pytest

import protocols
from secagg.errors import SecAggError
from secagg.round import RoundResult, reference_aggregate, run_round
from secagg.router import Corrupt, Dropout, Fault, Inject, Replay
from tests.conftest import fast_protocol, make_updates

N_CLIENTS = 5
N_PARAMS = 64


def _run(name: str, faults: list[Fault], round_id: int = 1) -> tuple[RoundResult, list[np.ndarray]]:
    protocol = fast_protocol(name)
    updates = make_updates(N_CLIENTS, N_PARAMS, seed=3)
    weights = [1.0, 2.0, 3.0, 4.0, 5.0] if protocol.aggregate_kind == "weighted_mean" else None
    return run_round(protocol, updates, weights=weights, faults=faults, round_id=round_id), updates


def _correct_or_typed_error(name: str, result: RoundResult, updates: list[np.ndarray]) -> None:
    if result.error is not None:
        assert isinstance(result.error, SecAggError)
        assert result.aggregate is None
        return
    protocol = fast_protocol(name)
    weights = [1.0, 2.0, 3.0, 4.0, 5.0] if protocol.aggregate_kind == "weighted_mean" else None
    reference = reference_aggregate(updates, result.included, kind=protocol.aggregate_kind, weights=weights)
    bound = protocol.precision(n_clients=N_CLIENTS, value_range=1.0)
    assert np.max(np.abs(result.unwrap() - reference)) <= bound


def _first_sending_stage(name: str, client: int) -> str:
    clean, _ = _run(name, [])
    return next(e.stage for e in clean.transcript if e.sender == client)


@pytest.mark.parametrize("name", protocols.available())
def test_late_dropout_leaves_the_others_aggregate(name: str) -> None:
    protocol = fast_protocol(name)
    result, updates = _run(name, [Dropout(4, protocol.late_dropout_stage)])
    _correct_or_typed_error(name, result, updates)
    assert result.error is None, f"{name} should survive one late dropout: {result.error}"
    # The clients that stayed are all in the aggregate (the dropped one may be, if its input
    # was already in by the late stage).
    assert {0, 1, 2, 3} <= set(result.included)


@pytest.mark.parametrize("name", protocols.available())
def test_early_dropout_is_left_out(name: str) -> None:
    result, updates = _run(name, [Dropout(2, fast_protocol(name).stages[0])])
    _correct_or_typed_error(name, result, updates)
    # A client gone before it sent anything costs the others nothing: they are aggregated.
    assert result.error is None, f"{name} should survive an early dropout: {result.error}"
    assert result.included == (0, 1, 3, 4)


@pytest.mark.parametrize("name", protocols.available())
def test_corrupted_message(name: str) -> None:
    stage = _first_sending_stage(name, 1)
    result, updates = _run(name, [Corrupt(1, stage)])
    assert any(not e.delivered and "corrupt" in e.note for e in result.transcript)
    _correct_or_typed_error(name, result, updates)


@pytest.mark.parametrize("name", protocols.available())
def test_replayed_message(name: str) -> None:
    stage = _first_sending_stage(name, 0)
    result, updates = _run(name, [Replay(0, stage)])
    assert any("replay" in e.note for e in result.transcript)
    _correct_or_typed_error(name, result, updates)
    assert result.error is None and 0 in result.included


@pytest.mark.parametrize("name", protocols.available())
def test_message_from_an_old_round_is_refused(name: str) -> None:
    old, _ = _run(name, [], round_id=1)
    stale = next(v for v in old.views.values() for r in v.received if r.header.sender == 0)
    raw = next(r.raw for r in stale.received if r.header.sender == 0)
    stage = _first_sending_stage(name, 0)
    result, updates = _run(name, [Inject(raw, stale.party_id, stage)], round_id=2)
    assert any("another round" in e.note for e in result.transcript)
    _correct_or_typed_error(name, result, updates)
    assert result.error is None
