"""The plaintext baseline: finite inputs only, and a bad sender never spoils the others' sum."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from protocols.plaintext import PlainClient, PlaintextFedAvg, PlaintextFedSGD, PlainUpdate
from secagg.errors import EncodingOverflowError
from secagg.party import SERVER, Envelope, Inbound, Party
from secagg.protocol import RoundSpec
from secagg.round import reference_aggregate, run_round
from tests.conftest import make_updates


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("protocol", [PlaintextFedSGD(), PlaintextFedAvg(dtype="float64")])
def test_a_client_refuses_to_send_non_finite_values(bad: float, protocol: PlaintextFedSGD) -> None:
    updates = make_updates(3, 6, seed=1)
    updates[1][2] = bad
    result = run_round(protocol, updates)
    assert isinstance(result.error, EncodingOverflowError)
    assert result.aggregate is None


def test_a_value_that_overflows_float32_is_refused() -> None:
    updates = make_updates(2, 4, seed=2)
    updates[0][0] = 1e39  # finite in float64, Inf once cast to the float32 wire
    assert isinstance(run_round(PlaintextFedSGD(), updates).error, EncodingOverflowError)


class _HostileClient(PlainClient):
    """Skips its own checks and sends whatever values it was built with."""

    def __init__(self, party_id: int, values: np.ndarray, weight: float) -> None:
        super().__init__(party_id, values, weight, "float64")
        self._values = values
        self._sent_weight = weight

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage == "upload":
            return [Envelope(SERVER, PlainUpdate(self._sent_weight, self._values))]
        return []


class _WithHostileClient(PlaintextFedAvg):
    def __init__(self, values: np.ndarray, weight: float) -> None:
        super().__init__(dtype="float64")
        self._hostile = (values, weight)

    def make_parties(
        self, updates: Sequence[np.ndarray], weights: Sequence[float] | None, spec: RoundSpec
    ) -> list[Party]:
        parties = super().make_parties(updates, weights, spec)
        parties[1] = _HostileClient(1, *self._hostile)
        return parties


@pytest.mark.parametrize(
    "values, weight",
    [
        (np.array([0.1, np.nan, 0.2, 0.3]), 1.0),
        (np.array([0.1, np.inf, 0.2, 0.3]), 1.0),
        (np.array([0.1, 0.2]), 1.0),  # wrong length
        (np.zeros(4), float("inf")),
    ],
)
def test_the_server_leaves_out_a_non_finite_or_malformed_sender(values: np.ndarray, weight: float) -> None:
    updates = make_updates(3, 4, seed=3)
    weights = [2.0, 1.0, 5.0]
    result = run_round(_WithHostileClient(values, weight), updates, weights=weights)
    assert result.included == (0, 2)
    aggregate = result.unwrap()
    assert np.all(np.isfinite(aggregate))
    expected = reference_aggregate(updates, (0, 2), kind="weighted_mean", weights=weights)
    assert np.allclose(aggregate, expected)
    left_out = result.views[SERVER].holding("left_out")
    assert isinstance(left_out, dict) and set(left_out) == {1}
