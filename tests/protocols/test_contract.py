"""The contract every registered protocol keeps.

1. The aggregate equals the float64 reference (sum or weighted mean) within the
   protocol's declared precision.
2. Byte counts equal the lengths of the serialised messages.
3. For every protocol but the plaintext baseline, no client's update can be read from
   any server view: neither its float32/float64 bytes, nor its fixed-point encoding at
   any usual scale, nor the decoded arrays of any received message.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

import protocols
from secagg.party import View, is_client
from secagg.round import RoundResult, reference_aggregate, run_round
from tests.conftest import fast_protocol, make_updates

N_CLIENTS = 4
N_PARAMS = 300
RANGE = 1.0
WEIGHTS = [3.0, 1.0, 7.0, 2.0]


def _run(name: str) -> tuple[RoundResult, list[np.ndarray], list[float] | None]:
    protocol = fast_protocol(name)
    updates = make_updates(N_CLIENTS, N_PARAMS, value_range=RANGE, seed=11)
    weights = WEIGHTS if protocol.aggregate_kind == "weighted_mean" else None
    return run_round(protocol, updates, weights=weights, round_id=5), updates, weights


@pytest.fixture(scope="module", params=protocols.available())
def outcome(request: pytest.FixtureRequest) -> tuple[str, RoundResult, list[np.ndarray], list[float] | None]:
    result, updates, weights = _run(request.param)
    return request.param, result, updates, weights


def test_registry_has_the_baseline() -> None:
    assert {"plaintext-fedsgd", "plaintext-fedavg"} <= set(protocols.available())


def test_aggregate_matches_reference(outcome) -> None:
    name, result, updates, weights = outcome
    protocol = protocols.get(name)
    aggregate = result.unwrap()
    assert result.included == tuple(range(N_CLIENTS))
    reference = reference_aggregate(updates, result.included, kind=protocol.aggregate_kind, weights=weights)
    bound = fast_protocol(name).precision(n_clients=N_CLIENTS, value_range=RANGE)
    error = float(np.max(np.abs(aggregate - reference)))
    assert error <= bound, f"{name}: error {error:.3e} above declared precision {bound:.3e}"
    # The declared precision is meaningful: well below the spread of the values.
    assert bound < 1e-2 * RANGE


def test_byte_counts_are_exact(outcome) -> None:
    _, result, _, _ = outcome
    sent: dict[int, int] = defaultdict(int)
    seen_raw = []
    for view in result.views.values():
        for received in view.received:
            assert received.header.payload_len + 30 == len(received.raw)
            sent[received.header.sender] += len(received.raw)
            seen_raw.append(len(received.raw))
    delivered = [e.nbytes for e in result.transcript if e.delivered]
    assert sorted(delivered) == sorted(seen_raw)
    for party, nbytes in sent.items():
        assert result.costs.bytes_sent[party] == nbytes
    clients = [c for c in range(N_CLIENTS)]
    assert result.costs.bytes_up_per_client() == pytest.approx(
        sum(result.costs.bytes_sent.get(c, 0) for c in clients) / N_CLIENTS
    )
    assert result.costs.total_bytes() == sum(e.nbytes for e in result.transcript)


def _probes(update: np.ndarray) -> list[bytes]:
    """Byte patterns by which a server could read an update straight off the wire."""
    head = update[8:16]
    patterns = [head.astype("<f4").tobytes(), head.astype("<f8").tobytes()]
    for frac_bits in range(8, 33):
        scaled = np.rint(head * 2.0**frac_bits)
        if np.abs(scaled).max() < 2**31:
            patterns.append(scaled.astype("<i4").tobytes())
        patterns.append(scaled.astype("<i8").tobytes())
    return patterns


def _arrays_reveal(view: View, update: np.ndarray) -> str | None:
    head = update[:32]
    for received in view.received:
        for field, array in received.payload.arrays().items():
            flat = np.asarray(array).reshape(-1)
            if flat.size < head.size:
                continue
            window = flat[: head.size]
            if window.dtype.kind == "f":
                if np.allclose(window.astype(np.float64), head, atol=1e-3):
                    return f"{field} of {received.header.sender} holds the update in floats"
            elif window.dtype.kind in "ui":
                signed = (
                    window.astype(np.uint64).view(np.int64)
                    if window.dtype.itemsize == 8
                    else (window.astype(np.uint32).view(np.int32).astype(np.int64))
                )
                for frac_bits in range(0, 41):
                    if np.allclose(signed / 2.0**frac_bits, head, atol=1e-3):
                        return f"{field} of {received.header.sender} holds the update at 2^{frac_bits}"
    return None


def test_servers_cannot_read_updates(outcome) -> None:
    name, result, updates, _ = outcome
    if name.startswith("plaintext"):
        # The baseline is the exposure the others are measured against: prove it is there.
        view = result.views[result.server_ids[0]]
        assert _arrays_reveal(view, updates[0]) is not None
        return
    for server_id, view in result.server_views().items():
        raw = view.raw_bytes()
        for client, update in enumerate(updates):
            for pattern in _probes(update):
                assert pattern not in raw, f"{name}: client {client}'s update is in {view.name}'s bytes"
            found = _arrays_reveal(view, update)
            assert found is None, f"{name}: {view.name} can read client {client}: {found}"


def test_every_client_message_is_in_the_transcript(outcome) -> None:
    _, result, _, _ = outcome
    senders = {e.sender for e in result.transcript}
    assert all(c in senders for c in range(N_CLIENTS))
    assert all(is_client(e.sender) or e.sender in result.views for e in result.transcript)
