"""Every registered protocol inside Flower's simulation engine (flwr, Ray backend).

One simulation (Ray starts once, ~6 s) runs one FedAvg round per registered protocol,
each in its ``fast_config``, with 4 virtual clients and a 300-parameter model; the
protocol comes with each Flower message, so a single ClientApp serves them all. Checks:
the aggregate equals the float64 sample-weighted mean within the protocol's declared
precision, no server-side party held a secret key, and the bytes Flower carried equal
the bytes the in-process router counts for the same round.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import protocols
from protocols.plaintext import PlaintextFedAvg
from secagg.errors import ConfigError, IntegrityError
from secagg.party import KEY_HOLDER, SERVER
from secagg.protocol import RoundSpec
from secagg.round import reference_aggregate, run_round
from secagg.router import Router
from secagg.signing import generate_signing_keypair
from secagg.wire import HEADER_BYTES, TRAILER_BYTES

flwr = pytest.importorskip("flwr", reason="Flower is an optional extra: pip install secagg[flower]")

from protocols.runtime.flower import SecAggWorkflow, secret_holdings, simulate  # noqa: E402
from protocols.runtime.flower.client import _party_input, deal_round  # noqa: E402
from protocols.runtime.flower.server import FlowerRun  # noqa: E402
from protocols.runtime.flower.transport import (  # noqa: E402
    dump_state,
    load_state,
    new_provisioning_key,
    open_sealed,
    seal,
)

# Two-server's servers A and B share the ServerApp process in these tests.
SINGLE: dict[str, Any] = {"insecure_single_operator": True}

N_CLIENTS = 4
N_PARAMS = 300
RANGE = 0.5
NAMES = protocols.available()
# The exact-sum protocols in small rings, after the rounds above: 16 bits (uint16 on the
# wire) and 12 (bit-packed, 1.5 bytes per parameter).
RING16: list[tuple[str, dict[str, Any]]] = [
    ("two-server", {"ring_bits": 16, "frac_bits": 8}),
    ("secagg", {"ring_bits": 16}),
    ("two-server", {"ring_bits": 12, "frac_bits": 4}),
]


def train_fn(partition: int, params: np.ndarray, round_id: int) -> tuple[np.ndarray, float]:
    """A stand-in for local training: a seeded update and a sample count per client."""
    rng = np.random.default_rng(1000 * round_id + partition)
    return rng.uniform(-RANGE, RANGE, params.size), float(partition + 1)


def _updates(round_id: int) -> tuple[list[np.ndarray], list[float]]:
    pairs = [train_fn(i, np.zeros(N_PARAMS), round_id) for i in range(N_CLIENTS)]
    return [u for u, _ in pairs], [w for _, w in pairs]


def _late_dropout(name: str) -> SecAggWorkflow:
    protocol = protocols.get(name)
    return SecAggWorkflow(
        name, protocol.fast_config, dropouts={N_CLIENTS - 1: protocol.late_dropout_stage}, **SINGLE
    )


@pytest.fixture(scope="module")
def flower_run() -> FlowerRun:
    # Round r < len(NAMES): protocol r as is; then protocol r again with a late dropout.
    schedule = [SecAggWorkflow(name, protocols.get(name).fast_config, **SINGLE) for name in NAMES]
    schedule += [_late_dropout(name) for name in NAMES]
    schedule += [SecAggWorkflow(name, config, **SINGLE) for name, config in RING16]
    # keep_going: a protocol that fails fails its own tests, not every protocol's.
    return simulate(schedule, train_fn, initial=np.zeros(N_PARAMS), n_clients=N_CLIENTS, keep_going=True)


def test_import_needs_no_flwr() -> None:
    code = "import sys, protocols.runtime.flower; assert 'flwr' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_aggregate_equals_fedavg(flower_run: FlowerRun, index: int) -> None:
    name = NAMES[index]
    outcome = flower_run.outcome(index)
    updates, weights = _updates(index)
    assert outcome.included == tuple(range(N_CLIENTS))
    reference = reference_aggregate(updates, outcome.included, kind="weighted_mean", weights=weights)
    protocol = protocols.create(name, **protocols.get(name).fast_config)
    bound = protocol.precision(n_clients=N_CLIENTS, value_range=RANGE)
    error = float(np.max(np.abs(outcome.aggregate - reference)))
    assert error <= bound, f"{name}: error {error:.3e} above declared precision {bound:.3e}"
    # FedAvg moved the global parameters by the aggregate.
    previous = flower_run.params[index - 1] if index else np.zeros(N_PARAMS)
    np.testing.assert_allclose(flower_run.params[index] - previous, outcome.aggregate, rtol=0, atol=1e-12)


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_late_dropout_leaves_fedavg_of_the_rest(flower_run: FlowerRun, index: int) -> None:
    """A node that stops answering after sending its input: the protocol recovers in Flower too."""
    name = NAMES[index]
    round_id = len(NAMES) + index
    outcome = flower_run.outcome(round_id)
    updates, weights = _updates(round_id)
    assert set(outcome.included) <= set(range(N_CLIENTS)) and len(outcome.included) >= 2
    reference = reference_aggregate(updates, outcome.included, kind="weighted_mean", weights=weights)
    protocol = protocols.create(name, **protocols.get(name).fast_config)
    # Sum protocols' pre-scaled result is rescaled by W / W_included (at most 10/6 here).
    bound = protocol.precision(n_clients=N_CLIENTS, value_range=RANGE) * (10 / 6)
    assert float(np.max(np.abs(outcome.aggregate - reference))) <= bound
    dropped = [e for e in outcome.transcript if e.note == "recipient dropped out"]
    assert all(e.recipient == N_CLIENTS - 1 for e in dropped)


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_server_side_never_held_a_secret_key(flower_run: FlowerRun, index: int) -> None:
    outcome = flower_run.outcome(index)
    assert SERVER in outcome.server_views
    declared = protocols.get(NAMES[index]).server_secrets
    for sid, view in outcome.server_views.items():
        # Only what the protocol declares a server holds by design (two-server: B's own key).
        found = [n for n in secret_holdings(view.holdings) if n not in declared.get(sid, frozenset())]
        assert found == [], f"{NAMES[index]}: {view.name} held {found}"
    # A key holder lives on a client node, never on the server side, and is dealt by a client.
    assert KEY_HOLDER not in outcome.server_views
    if protocols.get(NAMES[index]).aggregate_holder == KEY_HOLDER:
        assert outcome.provisioning == "dealer"


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_bytes_agree_with_the_in_process_router(flower_run: FlowerRun, index: int) -> None:
    name = NAMES[index]
    outcome = flower_run.outcome(index)
    protocol = protocols.create(name, **protocols.get(name).fast_config)
    updates, weights = _updates(index)
    inputs = [_party_input(protocol, u, weights, i) for i, u in enumerate(updates)]
    round_weights = weights if protocol.aggregate_kind == "weighted_mean" else None
    first = run_round(protocol, inputs, weights=round_weights, round_id=index).costs
    second = run_round(protocol, inputs, weights=round_weights, round_id=index).costs
    # Every message of the round crossed Flower and was counted once, delivered.
    assert all(entry.delivered for entry in outcome.transcript)
    assert outcome.costs.total_bytes() == sum(e.nbytes for e in outcome.transcript)
    if first.bytes_sent != second.bytes_sent:
        pytest.skip(f"{name}: message sizes vary between runs (compressed ciphertexts)")
    assert outcome.costs.bytes_sent == first.bytes_sent
    assert outcome.costs.bytes_received == first.bytes_received
    assert outcome.costs.bytes_per_param() == first.bytes_per_param()


@pytest.mark.parametrize("index", range(len(RING16)), ids=[f"{n}-{c['ring_bits']}" for n, c in RING16])
def test_small_rings_run_in_flower(flower_run: FlowerRun, index: int) -> None:
    """ring_bits travels with the protocol's config: the round in Flower is exact to the
    small ring's precision and its bytes are the in-process router's (k/8 B/param + keys)."""
    name, config = RING16[index]
    round_id = 2 * len(NAMES) + index
    outcome = flower_run.outcome(round_id)
    updates, weights = _updates(round_id)
    protocol = protocols.create(name, **config)
    assert outcome.included == tuple(range(N_CLIENTS))
    reference = reference_aggregate(updates, outcome.included, kind="weighted_mean", weights=weights)
    bound = protocol.precision(n_clients=N_CLIENTS, value_range=RANGE)
    assert float(np.max(np.abs(outcome.aggregate - reference))) <= bound
    inputs = [_party_input(protocol, u, weights, i) for i, u in enumerate(updates)]
    local = run_round(protocol, inputs, round_id=round_id).costs
    assert outcome.costs.bytes_sent == local.bytes_sent
    # Each client's masked vector crossed Flower at k bits per value: uint16, or packed.
    bits = config["ring_bits"]
    vector = 9 + 2 * N_PARAMS if bits == 16 else 10 + (bits * N_PARAMS + 7) // 8
    masked = [e for e in outcome.transcript if e.message in ("MaskedShare", "MaskedInput")]
    assert len(masked) == N_CLIENTS
    assert all(e.nbytes == HEADER_BYTES + TRAILER_BYTES + vector for e in masked)


@pytest.mark.parametrize("name", NAMES)
def test_party_state_survives_every_stage_as_bytes(name: str) -> None:
    """Node state is bytes between Flower messages: dump and load every party at every stage."""
    protocol = protocols.create(name, **protocols.get(name).fast_config)
    updates, weights = _updates(0)
    updates = [u[:40] for u in updates[:3]]
    round_weights = weights[:3] if protocol.aggregate_kind == "weighted_mean" else None
    parties = {p.party_id: p for p in protocol.make_parties(updates, round_weights, RoundSpec(0, 3, 40))}
    router = Router(protocol, 0, list(parties))
    for stage in protocol.stages:
        for pid in list(parties):
            inbox = router.deliver(pid, stage, alive=True)
            blob, _ = dump_state(protocol, {pid: parties[pid]})
            parties[pid] = load_state(protocol, blob)[0][pid]
            router.send(pid, stage, parties[pid].step(stage, inbox))
    revealed = parties[protocol.aggregate_holder].output()
    assert revealed is not None and revealed.included == (0, 1, 2)
    reference = reference_aggregate(updates, (0, 1, 2), kind=protocol.aggregate_kind, weights=round_weights)
    assert np.max(np.abs(revealed.aggregate - reference)) <= protocol.precision(
        n_clients=3, value_range=RANGE
    )


class _CopyingClient(PlaintextFedAvg):
    """A protocol whose client party copies its update: the dealer cannot swap it in."""

    name = "copying"

    def make_parties(self, updates, weights, spec):  # type: ignore[no-untyped-def]
        return super().make_parties([u.copy() for u in updates], weights, spec)


def test_dealer_refuses_a_party_that_does_not_keep_its_update() -> None:
    keys = [new_provisioning_key()[1] for _ in range(2)]
    dealer, _ = generate_signing_keypair()
    with pytest.raises(ConfigError, match="must keep the update array"):
        deal_round(_CopyingClient(), RoundSpec(0, 2, 5), [1.0, 1.0], keys, dealer_private=dealer)
    dealt = deal_round(PlaintextFedAvg(), RoundSpec(0, 2, 5), [1.0, 1.0], keys, dealer_private=dealer)
    assert set(dealt.server_side) == {SERVER} and len(dealt.sealed) == 2


def test_sealed_setup_is_bound_to_its_party_and_round() -> None:
    private, public = new_provisioning_key()
    sealed = seal(b"client state", recipient_public=public, context=b"\x00\x00\x00\x01\x00\x00\x00\x02")
    assert open_sealed(sealed, recipient_private=private, context=b"\x00\x00\x00\x01\x00\x00\x00\x02") == (
        b"client state"
    )
    with pytest.raises(IntegrityError):
        open_sealed(sealed, recipient_private=private, context=b"\x00\x00\x00\x01\x00\x00\x00\x03")
    other, _ = new_provisioning_key()
    with pytest.raises(IntegrityError):
        open_sealed(sealed, recipient_private=other, context=b"\x00\x00\x00\x01\x00\x00\x00\x02")
