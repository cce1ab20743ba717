"""The Flower runtime against a hostile server, a hostile dealer and misbehaving nodes.

These run the real ClientApp and the real workflow in one process through a small
in-memory stand-in for Flower's ``Grid`` (no Ray), so they are fast and can tamper with
any message in either direction:

- state bytes never unpickle: a pickle naming ``os.system`` (by the dotted name that
  broke the old allow-list) raises WireFormatError wherever bytes are loaded, and runs
  nothing;
- provisioning is authenticated: a server that swaps a node's provisioning key, or
  re-deals a party under its own key, gets IntegrityError and no secret;
- two servers in one ServerApp are refused unless ``insecure_single_operator``;
- a node whose reply is malformed is dropped, the others' aggregate completes;
- a sealed setup with a low-order ephemeral key is an IntegrityError.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import protocols
from secagg.errors import ConfigError, IntegrityError, WireFormatError
from secagg.party import SERVER
from secagg.protocol import RoundSpec
from secagg.round import reference_aggregate
from secagg.signing import generate_signing_keypair
from secagg.wire import encode_message

pytest.importorskip("flwr", reason="Flower is an optional extra: pip install secagg[flower]")

from flwr.app import Context, Message, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from protocols.plaintext import PlainUpdate  # noqa: E402
from protocols.runtime.flower.client import (  # noqa: E402
    NodeState,
    SecAggNode,
    Trust,
    deal_round,
    make_client_app,
    seal_context,
)
from protocols.runtime.flower.server import (  # noqa: E402
    FlowerRound,
    SecAggWorkflow,
    ServerKeys,
    _train_and_aggregate,
)
from protocols.runtime.flower.transport import (  # noqa: E402
    dump_node,
    load_node,
    load_state,
    new_provisioning_key,
    open_sealed,
    seal,
    sign_dealt,
)

N = 4
N_PARAMS = 30
Tamper = Callable[[int, Message, Message], None]  # (partition, request, reply) -> edits reply


def train_fn(partition: int, params: np.ndarray, round_id: int) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(7000 + 100 * round_id + partition)
    return rng.uniform(-0.5, 0.5, params.size), float(partition + 1)


class FakeGrid:
    """Flower's ``Grid`` for N nodes in this process: each message goes through the real
    ClientApp with the node's own ``Context``; ``before``/``after`` tamper in flight."""

    def __init__(self, trust: Trust, *, before: Tamper | None = None, after: Tamper | None = None) -> None:
        self.app = make_client_app(train_fn, trust)
        self.contexts = {
            100 + i: Context(
                run_id=1, node_id=100 + i, node_config={"partition-id": i}, state=RecordDict(), run_config={}
            )
            for i in range(N)
        }
        self.before, self.after = before, after

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: list[Message], timeout: float | None = None) -> list[Message]:
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            if self.before is not None:
                self.before(node - 100, message, message)
            reply = self.app(message, self.contexts[node])
            if self.after is not None:
                self.after(node - 100, message, reply)
            replies.append(reply)
        return replies


@pytest.fixture(autouse=True)
def _task_identity() -> Any:
    # Messages made outside a Flower process need a run id to stamp.
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _round(name: str, grid: FakeGrid, trust: Trust, **workflow: Any) -> FlowerRound:
    flow = SecAggWorkflow(name, protocols.get(name).fast_config, **workflow)
    keys = ServerKeys.of(trust, with_server_b=flow.insecure_single_operator)
    return _train_and_aggregate(flow, grid, grid.get_node_ids(), 0, np.zeros(N_PARAMS), keys)  # type: ignore[arg-type]


def _reference(included: tuple[int, ...]) -> np.ndarray:
    pairs = [train_fn(i, np.zeros(N_PARAMS), 0) for i in range(N)]
    return reference_aggregate(
        [u for u, _ in pairs], included, kind="weighted_mean", weights=[w for _, w in pairs]
    )


def _op(message: Message) -> str:
    record: Any = message.content["secagg"]
    return str(record["op"]) if "op" in record else message.metadata.message_type


# -- no pickle anywhere -----------------------------------------------------------------


def _os_system_pickle(marker: Path) -> bytes:
    # GLOBAL with a dotted name, as the old allow-list resolved it: module of the project,
    # attribute path reaching os.system. Protocol 0 opcodes, written by hand.
    module = b"protocols.runtime.flower.transport"
    return b"c" + module + b"\nos.system\n(V" + f"touch {marker}".encode() + b"\ntR."


@pytest.mark.parametrize("name", protocols.available())
def test_state_bytes_holding_a_pickle_raise_and_run_nothing(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = _os_system_pickle(marker)
    protocol = protocols.create(name, **protocols.get(name).fast_config)
    with pytest.raises(WireFormatError):
        load_state(protocol, hostile)
    with pytest.raises(WireFormatError):
        load_node(protocol, hostile)
    assert not marker.exists()


def test_a_signed_sealed_pickle_from_the_dealer_raises_and_runs_nothing(tmp_path: Path) -> None:
    """Even a dealer (whose signature verifies) cannot make a node run code."""
    marker = tmp_path / "pwned"
    trust = Trust.generate(N)
    protocol = protocols.create("ckks", **protocols.get("ckks").fast_config)
    node = SecAggNode(protocol, NodeState(partition=1), trust.node(1))
    _, public, _ = node.train(0, np.zeros(N_PARAMS), train_fn)
    sealed = seal(_os_system_pickle(marker), recipient_public=public, context=seal_context(0, 1))
    known = [0, 1, 2, 3, SERVER]
    signature = sign_dealt(trust.dealer_private, 0, 1, sealed, known)
    with pytest.raises(WireFormatError):
        node.provision(RoundSpec(0, N, N_PARAMS), [1.0] * N, sealed, known, signature)
    assert not marker.exists() and node.state.parties == {}


def test_node_state_refuses_undeclared_classes_and_bad_lengths() -> None:
    protocol = protocols.create("plaintext-fedavg")
    node = SecAggNode(protocol, NodeState(partition=2), Trust.generate(N).node(2))
    node.train(0, np.zeros(N_PARAMS), train_fn)
    node.setup_local(RoundSpec(0, N, N_PARAMS), [1.0] * N)
    blob = dump_node(protocol, node.state)
    again = load_node(protocol, blob)
    assert again.partition == 2 and set(again.parties) == {2}
    np.testing.assert_array_equal(again.update, node.state.update)  # type: ignore[arg-type]
    # The same bytes read with another protocol's declarations: its party class is unknown.
    with pytest.raises(WireFormatError, match="declared class"):
        load_node(protocols.create("secagg"), blob)
    for cut in range(0, len(blob), 7):
        with pytest.raises(WireFormatError):
            load_node(protocol, blob[:cut])
    with pytest.raises(WireFormatError, match="trailing"):
        load_node(protocol, blob + b"\x00")


# -- authenticated provisioning -----------------------------------------------------------


def _swap_key(attacker_public: bytes, victim: int) -> Tamper:
    def before(partition: int, request: Message, _: Message) -> None:
        if _op(request) == "deal":
            record: Any = request.content["secagg"]
            keys = [bytes(k) for k in record["keys"]]
            keys[victim] = attacker_public
            record["keys"] = keys

    return before


@pytest.mark.parametrize("name", ["ckks", "paillier"])
def test_a_server_that_swaps_a_provisioning_key_gets_integrity_error_and_no_secret(name: str) -> None:
    trust = Trust.generate(N)
    attacker_private, attacker_public = new_provisioning_key()
    replies: list[Message] = []
    grid = FakeGrid(
        trust,
        before=_swap_key(attacker_public, victim=2),
        after=lambda _p, request, reply: replies.append(reply),
    )
    with pytest.raises(IntegrityError, match="provisioning key of node 2"):
        _round(name, grid, trust)
    # Nothing was dealt: no reply carries a sealed party the attacker could open.
    for reply in replies:
        record: Any = reply.content["secagg"] if reply.has_content() else {}
        assert "sealed" not in record


def test_a_server_that_re_signs_the_key_with_its_own_identity_is_refused() -> None:
    trust = Trust.generate(N)
    server_identity, _ = generate_signing_keypair()
    keys = [new_provisioning_key()[1] for _ in range(N)]
    from protocols.runtime.flower.transport import sign_provision_key

    signatures = [sign_provision_key(server_identity, 0, j, keys[j]) for j in range(N)]
    with pytest.raises(IntegrityError):
        deal_round(
            protocols.create("ckks", **protocols.get("ckks").fast_config),
            RoundSpec(0, N, N_PARAMS),
            [1.0] * N,
            keys,
            dealer_private=trust.dealer_private,
            key_signatures=signatures,
            node_publics=trust.identity_public,
        )


def test_a_party_dealt_under_another_key_is_refused_before_it_is_opened() -> None:
    """The server deals its own party (signed with its own key) to a node: refused."""
    trust = Trust.generate(N)
    server_dealer, _ = generate_signing_keypair()
    protocol = protocols.create("ckks", **protocols.get("ckks").fast_config)
    node = SecAggNode(protocol, NodeState(partition=1), trust.node(1))
    _, public, _ = node.train(0, np.zeros(N_PARAMS), train_fn)
    sealed = seal(b"anything", recipient_public=public, context=seal_context(0, 1))
    known = [0, 1, 2, 3, SERVER]
    with pytest.raises(IntegrityError, match="signature"):
        node.provision(
            RoundSpec(0, N, N_PARAMS),
            [1.0] * N,
            sealed,
            known,
            sign_dealt(server_dealer, 0, 1, sealed, known),
        )
    # A genuine signature over another party list does not verify either.
    signature = sign_dealt(trust.dealer_private, 0, 1, sealed, known)
    with pytest.raises(IntegrityError):
        node.provision(RoundSpec(0, N, N_PARAMS), [1.0] * N, sealed, known[:-1], signature)
    assert node.state.parties == {}


def test_honest_dealing_completes_through_the_workflow() -> None:
    trust = Trust.generate(N)
    outcome = _round("ckks", FakeGrid(trust), trust)
    assert outcome.included == tuple(range(N)) and outcome.provisioning == "dealer"
    assert np.max(np.abs(outcome.aggregate - _reference(outcome.included))) < 1e-3


def test_a_dealer_reply_short_of_a_sealed_party_is_refused() -> None:
    def after(partition: int, request: Message, reply: Message) -> None:
        if _op(request) == "deal":
            record: Any = reply.content["secagg"]
            record["sealed"] = list(record["sealed"])[:-1]

    trust = Trust.generate(N)
    with pytest.raises(IntegrityError, match=f"dealer: expected {N} sealed parties, got {N - 1}"):
        _round("ckks", FakeGrid(trust, after=after), trust)


# -- two servers in one process ---------------------------------------------------------------


def test_two_server_in_one_server_app_is_refused_unless_declared_insecure() -> None:
    with pytest.raises(ConfigError, match="insecure_single_operator"):
        SecAggWorkflow("two-server", protocols.get("two-server").fast_config)
    trust = Trust.generate(N)
    outcome = _round("two-server", FakeGrid(trust), trust, insecure_single_operator=True)
    assert outcome.included == tuple(range(N))


# -- malformed node replies drop the node, not the run -------------------------------------------

_FOREIGN = encode_message(
    protocol_id=protocols.get("plaintext-fedavg").wire_id,
    round_id=0,
    sender=3,
    recipient=0xDEAD,
    payload=PlainUpdate(values=np.zeros(N_PARAMS), weight=1.0),
)


def _malformed(kind: str) -> Tamper:
    def after(partition: int, request: Message, reply: Message) -> None:
        if partition != 3 or _op(request) != "stage":
            return
        record: Any = reply.content["secagg"]
        if kind == "bad header":
            record["outbox"] = [b"\x00" * 40]
        elif kind == "bad refused note":
            record["refused"] = ["not-a-number:oops", "99:out of range"]
        elif kind == "mismatched lengths":
            record["parties"] = [3, 3]
        elif kind == "unknown recipient":
            record["outbox"] = [_FOREIGN]
        elif kind == "missing field":
            del record["parties"]

    return after


@pytest.mark.parametrize(
    "kind", ["bad header", "bad refused note", "mismatched lengths", "unknown recipient", "missing field"]
)
def test_a_malformed_node_reply_drops_that_node_and_the_round_completes(kind: str) -> None:
    trust = Trust.generate(N)
    outcome = _round("plaintext-fedavg", FakeGrid(trust, after=_malformed(kind)), trust)
    assert outcome.included == (0, 1, 2)
    assert np.max(np.abs(outcome.aggregate - _reference((0, 1, 2)))) < 1e-5


def test_a_malformed_reply_in_secagg_drops_the_node() -> None:
    trust = Trust.generate(N)
    outcome = _round("secagg", FakeGrid(trust, after=_malformed("unknown recipient")), trust)
    assert outcome.included == (0, 1, 2)
    assert np.max(np.abs(outcome.aggregate - _reference((0, 1, 2)))) < 1e-5


# -- the sealed channel -------------------------------------------------------------------------


def test_a_low_order_ephemeral_key_is_an_integrity_error() -> None:
    private, public = new_provisioning_key()
    sealed = seal(b"party", recipient_public=public, context=b"ctx")
    for point in (bytes(32), (1).to_bytes(32, "little")):
        with pytest.raises(IntegrityError):
            open_sealed(point + sealed[32:], recipient_private=private, context=b"ctx")
    with pytest.raises(IntegrityError):
        open_sealed(sealed[:20], recipient_private=private, context=b"ctx")
