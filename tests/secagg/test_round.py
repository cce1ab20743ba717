from __future__ import annotations

import numpy as np
import pytest

from secagg.errors import ConfigError, SecAggError
from secagg.party import SERVER
from secagg.round import reference_aggregate, run_round
from secagg.router import Dropout
from tests.conftest import fast_protocol, make_updates


def test_views_record_what_each_party_received() -> None:
    updates = make_updates(3, 10)
    result = run_round(fast_protocol("plaintext-fedsgd"), updates, round_id=9)
    server = result.views[SERVER]
    assert [r.header.sender for r in server.received] == [0, 1, 2]
    assert all(r.header.round_id == 9 for r in server.received)
    assert server.revealed is not None and np.allclose(server.revealed.aggregate, result.unwrap())
    # Clients received nothing in this protocol.
    assert all(not result.views[c].received for c in range(3))


def test_costs_are_per_party_and_stage() -> None:
    result = run_round(fast_protocol("plaintext-fedsgd"), make_updates(2, 1000))
    assert result.costs.seconds[0]["upload"] > 0
    assert "aggregate" in result.costs.seconds[SERVER]
    assert result.costs.bytes_per_param() == pytest.approx(4.0, abs=0.1)
    assert result.costs.server_seconds() > 0


def test_all_dropped_is_a_typed_error() -> None:
    result = run_round(
        fast_protocol("plaintext-fedsgd"),
        make_updates(2, 4),
        faults=[Dropout(0, "upload"), Dropout(1, "upload")],
    )
    assert isinstance(result.error, SecAggError)
    with pytest.raises(SecAggError):
        result.unwrap()


def test_bad_inputs_raise_config_errors() -> None:
    protocol = fast_protocol("plaintext-fedsgd")
    with pytest.raises(ConfigError, match="flat float vector"):
        run_round(protocol, [np.zeros((2, 2))])
    with pytest.raises(ConfigError, match="parameters like client 0"):
        run_round(protocol, [np.zeros(3), np.zeros(4)])
    with pytest.raises(ConfigError, match="stage"):
        run_round(protocol, [np.zeros(3)], faults=[Dropout(0, "no-such-stage")])
    with pytest.raises(ConfigError, match="weights"):
        run_round(fast_protocol("plaintext-fedavg"), [np.zeros(3)], weights=[0.0])


def test_weighted_mean_reference() -> None:
    updates = [np.array([1.0, 0.0]), np.array([3.0, 4.0])]
    ref = reference_aggregate(updates, (0, 1), kind="weighted_mean", weights=[1.0, 3.0])
    assert ref.tolist() == [2.5, 3.0]
