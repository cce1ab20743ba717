"""Two-server with server B on a Flower node of its own, in one process (the hostile tests'
in-memory ``Grid``): B deals under its own key and keeps its party on its node; the
workflow (server A) hosts server A only, holds none of B's secrets, and refuses a server
party blob that B's pinned key did not sign. The same path runs across processes in
``test_flower_deploy.py``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import protocols
from secagg.errors import ConfigError, IntegrityError
from secagg.party import SERVER, SERVER_B

pytest.importorskip("flwr", reason="Flower is an optional extra: pip install secagg[flower]")

from flwr.app import Context, Message, RecordDict  # noqa: E402

from protocols.runtime.flower.client import STATE_KEY, NodeKeys, Trust, make_client_app  # noqa: E402
from protocols.runtime.flower.server import SecAggWorkflow, ServerKeys, _train_and_aggregate  # noqa: E402
from protocols.runtime.flower.transport import load_node  # noqa: E402
from secagg.signing import generate_signing_keypair  # noqa: E402
from tests.protocols.runtime.test_flower_hostile import (  # noqa: E402
    N_PARAMS,
    FakeGrid,
    N,
    _op,
    _reference,
    _task_identity,  # noqa: F401 - the autouse fixture stamping messages with a run id
    train_fn,
)

B_NODE = 100 + N
NAME = "two-server"


def _grid(trust: Trust, **tamper: Any) -> FakeGrid:
    def keys(partition: int, node_config: Any) -> NodeKeys:
        return trust.server_b_node() if partition == N else trust.node(partition)

    grid = FakeGrid(trust, **tamper)
    grid.app = make_client_app(train_fn, keys)
    grid.contexts[B_NODE] = Context(
        run_id=1, node_id=B_NODE, node_config={"partition-id": N}, state=RecordDict(), run_config={}
    )
    return grid


def _run(grid: FakeGrid, trust: Trust) -> Any:
    flow = SecAggWorkflow(NAME, protocols.get(NAME).fast_config, server_b_node=True)
    keys = ServerKeys.of(trust, with_server_b=False)
    clients = [node for node in grid.get_node_ids() if node != B_NODE]
    return _train_and_aggregate(flow, grid, clients, 0, np.zeros(N_PARAMS), keys, B_NODE)  # type: ignore[arg-type]


def test_server_b_deals_and_keeps_its_party_on_its_own_node() -> None:
    trust = Trust.generate(N)
    grid = _grid(trust)
    outcome = _run(grid, trust)
    assert outcome.included == tuple(range(N))
    bound = protocols.create(NAME, **protocols.get(NAME).fast_config).precision(n_clients=N, value_range=0.5)
    assert np.max(np.abs(outcome.aggregate - _reference(outcome.included))) <= bound
    # Server A's process: server A only, no secret holding, no key of B's but its public one.
    assert set(outcome.server_views) == {SERVER}
    assert not [h.name for h in outcome.server_views[SERVER].holdings if h.secret]
    assert ServerKeys.of(trust, with_server_b=False).server_b_private == b""
    # B's node holds B's party and its declared secret.
    record: Any = grid.contexts[B_NODE].state[STATE_KEY]
    state = load_node(protocols.create(NAME), bytes(record["blob"]))
    assert set(state.parties) == {SERVER_B}
    secrets = {h.name for h in state.parties[SERVER_B].holdings() if h.secret}
    assert secrets == set(protocols.get(NAME).server_secrets[SERVER_B])
    # B took part: its mask sum reached A.
    assert outcome.costs.bytes_sent[SERVER_B] > 0


def test_a_server_party_blob_not_signed_by_b_is_refused() -> None:
    forger, _ = generate_signing_keypair()

    def after(partition: int, request: Message, reply: Message) -> None:
        if _op(request) == "deal_b":
            from protocols.runtime.flower.transport import sign_server_parties

            record: Any = reply.content["secagg"]
            record["server_signature"] = sign_server_parties(forger, 0, bytes(record["server_parties"]))

    trust = Trust.generate(N)
    with pytest.raises(IntegrityError):
        _run(_grid(trust, after=after), trust)


def test_a_server_b_reply_short_of_a_signature_is_refused() -> None:
    def after(partition: int, request: Message, reply: Message) -> None:
        if _op(request) == "deal_b":
            record: Any = reply.content["secagg"]
            record["signatures"] = list(record["signatures"])[1:]

    trust = Trust.generate(N)
    with pytest.raises(IntegrityError, match=f"server B: expected {N} sealed parties"):
        _run(_grid(trust, after=after), trust)


def test_only_server_b_s_node_deals_as_b() -> None:
    trust = Trust.generate(N)
    grid = _grid(trust)
    grid.contexts[B_NODE].node_config["partition-id"] = 0  # a client's keys: no B key
    grid.app = make_client_app(train_fn, trust)
    with pytest.raises(Exception, match="server B"):
        _run(grid, trust)


def test_the_server_b_node_flag() -> None:
    with pytest.raises(ConfigError, match="server_b_node"):
        SecAggWorkflow(NAME, protocols.get(NAME).fast_config)
    assert SecAggWorkflow(NAME, protocols.get(NAME).fast_config, server_b_node=True).server_b_node
    # One flag for a mixed schedule: a one-server protocol ignores it.
    assert not SecAggWorkflow("plaintext-fedavg", {}, server_b_node=True).server_b_node


class _UnavailableGrid(FakeGrid):
    """Node 3 goes away before ``stage``: the SuperLink answers its message with a
    NODE_UNAVAILABLE error from the SuperLink's own node id (1), as Flower 1.42 does."""

    def __init__(self, trust: Trust, stage: str) -> None:
        super().__init__(trust)
        self.stage = stage

    def send_and_receive(self, messages: list[Message], timeout: float | None = None) -> list[Message]:
        from flwr.app import Error

        replies = []
        for message in messages:
            record: Any = message.content["secagg"]
            gone = message.metadata.dst_node_id == 103 and "stage" in record and record["stage"] == self.stage
            if gone:
                reply = Message(Error(code=5, reason="node unavailable"), reply_to=message)
                reply.metadata.__dict__["_src_node_id"] = 1
                replies.append(reply)
            else:
                replies.extend(super().send_and_receive([message], timeout))
        return replies


def test_a_superlink_error_for_a_vanished_node_drops_that_node() -> None:
    trust = Trust.generate(N)
    flow = SecAggWorkflow("secagg", {})
    grid = _UnavailableGrid(trust, "masked_input")
    keys = ServerKeys.of(trust, with_server_b=False)
    outcome = _train_and_aggregate(flow, grid, grid.get_node_ids(), 0, np.zeros(N_PARAMS), keys)  # type: ignore[arg-type]
    assert outcome.included == (0, 1, 2)
    bound = protocols.create("secagg").precision(n_clients=N, value_range=0.5)
    assert np.max(np.abs(outcome.aggregate - _reference(outcome.included))) <= bound
