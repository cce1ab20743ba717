"""The contract every registered protocol keeps.

1. The aggregate equals the float64 reference (sum or weighted mean) within the
   protocol's declared precision.
2. Byte counts equal the lengths of the serialised messages.
3. For every protocol but the plaintext baseline, no client's update can be read from
   any server view: neither its float32/float64 bytes, nor its fixed-point encoding at
   any usual scale, nor the decoded arrays of any received message.
4. The wire: every payload in every view re-encodes to the bytes that crossed the
   router, and a body cut short or extended by a byte is a WireFormatError.
5. Holdings: no server holds a secret its protocol does not declare in ``server_secrets``.
6. Observations: ``observe`` gives one observation per client message a server received
   (plus one for a revealed aggregate), each naming the client it depends on.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

import protocols
from secagg.errors import WireFormatError
from secagg.observe import AGGREGATE
from secagg.party import View, is_client
from secagg.round import RoundResult, reference_aggregate, run_round
from secagg.router import Dropout
from secagg.wire import HEADER_BYTES, TRAILER_BYTES
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
    if result.instance.is_baseline:
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


def test_every_delivered_message_is_in_its_recipients_view(outcome) -> None:
    _, result, _, _ = outcome
    senders = {e.sender for e in result.transcript}
    assert all(c in senders for c in range(N_CLIENTS))
    delivered = sorted(
        (e.sender, e.recipient, e.msg_type, e.nbytes) for e in result.transcript if e.delivered
    )
    received = sorted(
        (r.header.sender, view.party_id, r.header.msg_type, len(r.raw))
        for view in result.views.values()
        for r in view.received
    )
    assert delivered == received


@pytest.fixture(scope="module")
def dropout_outcome(outcome) -> tuple[str, RoundResult]:
    """The same protocol in a round where client 1 drops at its late stage: the recovery
    messages (unmask requests, shares of the dropped) cross the wire too."""
    name = outcome[0]
    protocol = fast_protocol(name)
    updates = make_updates(N_CLIENTS, N_PARAMS, value_range=RANGE, seed=12)
    weights = WEIGHTS if protocol.aggregate_kind == "weighted_mean" else None
    faults = [Dropout(1, protocol.late_dropout_stage)]
    return name, run_round(protocol, updates, weights=weights, faults=faults, round_id=6)


def _check_wire(name: str, result: RoundResult) -> int:
    checked = 0
    for view in result.views.values():
        for received in view.received:
            body = received.raw[HEADER_BYTES:-TRAILER_BYTES]
            payload_type = type(received.payload)
            where = f"{name}: {payload_type.__name__} to {view.name}"
            assert received.payload.to_bytes() == body, f"{where} does not re-encode to its bytes"
            assert payload_type.from_bytes(body).to_bytes() == body, f"{where} does not round-trip"
            with pytest.raises(WireFormatError):
                payload_type.from_bytes(body[:-1])
            with pytest.raises(WireFormatError):
                payload_type.from_bytes(body + b"\x00")
            checked += 1
    return checked


def test_every_payload_in_every_view_is_its_bytes(outcome, dropout_outcome) -> None:
    name, result, _, _ = outcome
    assert _check_wire(name, result) > 0
    name, dropped = dropout_outcome
    assert dropped.error is None, f"{name}: {dropped.error}"
    assert _check_wire(name, dropped) > 0
    # Together the two rounds exercise every message type the protocol declares that a
    # round sends (a type neither round sends would go unchecked: name it here).
    sent = {type(r.payload) for res in (result, dropped) for v in res.views.values() for r in v.received}
    assert sent <= set(fast_protocol(name).payload_types)


def test_no_server_holds_an_undeclared_secret(outcome, dropout_outcome) -> None:
    name, result, _, _ = outcome
    declared = protocols.get(name).server_secrets
    for res in (result, dropout_outcome[1]):
        for server_id, view in res.server_views().items():
            undeclared = set(view.secrets()) - set(declared.get(server_id, frozenset()))
            assert not undeclared, f"{name}: {view.name} holds undeclared secrets {sorted(undeclared)}"


def test_observe_gives_one_observation_per_client_message(outcome) -> None:
    name, result, _, _ = outcome
    protocol = result.instance
    for view in result.server_views().values():
        observations = protocol.observe(view, result.spec)
        messages = [r for r in view.received if is_client(r.header.sender)]
        per_message = [o for o in observations if o.name != AGGREGATE]
        assert len(per_message) == len(messages) > 0 or not messages
        assert [o.clients for o in per_message] == [(r.header.sender,) for r in messages]
        assert all(o.observer == view.name for o in observations)
        aggregates = [o for o in observations if o.name == AGGREGATE]
        assert len(aggregates) == (view.revealed is not None)
        if view.revealed is not None:
            assert aggregates[0].clients == tuple(view.revealed.included)
