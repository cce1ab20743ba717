"""The server side of a secagg round in Flower: the server parties, and the stages as messages.

:class:`SecAggWorkflow` drives one round of any registered protocol through Flower's
``Grid``: it hosts the server-side parties (``SERVER``, and for the two-server protocol
``SERVER_B`` where B shares the ServerApp process, ``insecure_single_operator``, for tests
and the simulation engine; with ``server_b_node`` B runs on a Flower node of its own, another
process under its own keys, as :mod:`protocols.runtime.flower.deploy` runs it), and for each of the protocol's
stages sends every client node one Flower message carrying the wire bytes addressed to
the parties that node hosts. The nodes answer with their outgoing wire bytes, which the
workflow routes: to its own parties, or relayed to another node in the next stage
(client-to-client messages cross the server as they would in any single-server
deployment; protocols encrypt what the server must not read). Every message is counted by
:class:`protocols.runtime.flower.transport.WireLedger` exactly as the in-process router counts it.

Who builds the parties (:func:`protocols.runtime.flower.client.provisioning_of`): for protocols
whose parties share no keys, every node builds its own and the server its own
(``local``); otherwise a dealer runs ``make_parties`` once and seals each client its
party: the key holder's node for the homomorphic protocols (``dealer``; the server only
receives the server-side parties) or ``SERVER_B`` for the two-server protocol
(``server-b``). The server never builds a party that holds a secret key it must not have.

A node that errors or does not answer a stage has dropped out for the rest of the round,
exactly as a :class:`secagg.router.Dropout`; ``dropouts`` injects one on purpose.

:func:`make_server_app` wraps the workflow in a FedAvg training loop (a Flower
``ServerApp``), and :func:`simulate` runs it in Flower's simulation engine (Ray).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from protocols.runtime.flower.client import (
    DEALER_PARTITION,
    PROVISIONING_MODES,
    TrainFn,
    Trust,
    deal_round,
    make_client_app,
    protocol_from,
    provisioning_of,
)
from protocols.runtime.flower.transport import (
    DeliveryChecks,
    Refused,
    WireLedger,
    load_parties,
    route_header,
    verify_server_parties,
)
from secagg.errors import ConfigError, IntegrityError, ProtocolStateError, SecAggError
from secagg.party import (
    KEY_HOLDER,
    SERVER_B,
    Party,
    Received,
    Rejected,
    View,
    ViewRecorder,
    is_client,
    party_name,
)
from secagg.protocol import RoundSpec
from secagg.round import Costs
from secagg.router import TranscriptEntry
from secagg.wire import encode_message, peek_header

if TYPE_CHECKING:
    from flwr.app import Context, Message
    from flwr.serverapp import Grid, ServerApp


@dataclass
class FlowerRound:
    """One protocol round run through Flower."""

    round_id: int
    aggregate: np.ndarray
    included: tuple[int, ...]
    costs: Costs
    transcript: list[TranscriptEntry]
    server_views: dict[int, View]
    provisioning: str
    seconds: float  # wall-clock of the protocol part of the round (setup + stages + reveal)
    flower_bytes_up: int  # protobuf size of the Flower messages nodes sent for the protocol
    flower_bytes_down: int


@dataclass
class FlowerRun:
    """A training run: per-round protocol results and the global parameters after each."""

    protocol: str
    rounds: list[FlowerRound] = field(default_factory=list)
    params: list[np.ndarray] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    failures: dict[int, SecAggError] = field(default_factory=dict)
    error: BaseException | None = None
    # Nodes whose first message of the run found no secagg state in their Context.
    fresh_nodes: int = 0

    def outcome(self, round_id: int) -> FlowerRound:
        """The round's result, or raise the error that stopped it."""
        if round_id in self.failures:
            raise self.failures[round_id]
        for outcome in self.rounds:
            if outcome.round_id == round_id:
                return outcome
        raise ProtocolStateError(f"expected a result for round {round_id}, got none")


@dataclass(frozen=True)
class ServerKeys:
    """What the server side is configured with: public keys it pins, and B's dealing key.

    ``node_publics`` (nodes' identity keys) and ``dealer_public`` are public;
    ``server_b_private`` is the second server's signing key, present only where B runs
    (with two-server under Flower, in this process: ``insecure_single_operator``).
    """

    dealer_public: bytes
    node_publics: tuple[bytes, ...]
    server_b_private: bytes = b""
    server_b_public: bytes = b""  # pinned: checks what server B's own node deals

    @classmethod
    def of(cls, trust: Trust, *, with_server_b: bool) -> ServerKeys:
        return cls(
            trust.dealer_public,
            trust.identity_public,
            trust.server_b_private if with_server_b else b"",
            trust.server_b_public,
        )


class MalformedReply(SecAggError):
    """A node's reply that does not parse as what was asked: the node is dropped."""


def _content_bytes(message: Message) -> int:
    from flwr.common.serde import recorddict_to_proto

    return int(recorddict_to_proto(message.content).ByteSize()) if message.has_content() else 0


class SecAggWorkflow:
    """Runs one secagg round over the client nodes of a Flower ``Grid``.

    A node that answers a stage with an error, or not within ``timeout``, has dropped out:
    it is not contacted again this round and what waits for it is not delivered, as the
    in-process router does for a :class:`secagg.router.Dropout`; the protocol then
    recovers or raises its typed error. ``dropouts`` ({client: stage}) injects such a
    dropout on purpose.
    """

    def __init__(
        self,
        protocol_name: str,
        config: dict[str, Any] | None = None,
        *,
        provisioning: str | None = None,
        timeout: float | None = 600.0,
        dropouts: Mapping[int, str] | None = None,
        insecure_single_operator: bool = False,
        before_stage: Callable[[str], None] | None = None,
        server_b_node: bool = False,
    ) -> None:
        self.protocol_name = protocol_name
        # Called with each stage's name before its messages go out (a deployment's fault
        # injection stops a SuperNode process there).
        self.before_stage = before_stage
        self.config = dict(config or {})
        self.protocol = protocol_from(protocol_name, self.config)
        self.provisioning = provisioning or provisioning_of(self.protocol)
        if self.provisioning not in PROVISIONING_MODES:
            raise ConfigError(f"provisioning must be one of {PROVISIONING_MODES}, got {self.provisioning!r}")
        self.insecure_single_operator = insecure_single_operator
        # Server B on a node of its own (another process, another operator's keys): the
        # workflow then hosts server A only and relays B's messages to that node.
        # (Ignored for a protocol without server B, so one flag serves a mixed schedule.)
        self.server_b_node = server_b_node and SERVER_B in self.protocol.server_ids
        if self.server_b_node and self.provisioning != "server-b":
            raise ConfigError(
                f"{self.protocol.name}: server_b_node needs a protocol that server B provisions "
                f"('server-b'), got {self.provisioning!r}"
            )
        if len(self.protocol.server_ids) > 1 and not (insecure_single_operator or self.server_b_node):
            # Every server party would share this ServerApp process: whoever runs it holds
            # all of them, and the non-collusion assumption is void.
            raise ConfigError(
                f"{self.protocol.name}: its {len(self.protocol.server_ids)} servers would all run in this "
                f"one ServerApp process, so one operator holds every server's secrets and the protocol's "
                f"non-collusion assumption does not hold; run B on its own node (server_b_node=True, "
                f"as the deployment engine does) or pass insecure_single_operator=True (testing only)"
            )
        self.timeout = timeout
        # client -> stage: its node is not contacted from that stage on (the router's Dropout).
        self.dropouts = dict(dropouts or {})
        for client, stage in self.dropouts.items():
            if not is_client(client) or stage not in self.protocol.stages:
                raise ConfigError(
                    f"dropout: expected a client and a stage of {self.protocol.name} "
                    f"{self.protocol.stages}, got {client}, {stage!r}"
                )

    # -- messaging ------------------------------------------------------------------
    def _exchange(
        self,
        grid: Grid,
        contents: Mapping[int, dict[str, Any]],
        *,
        message_type: str = "query.secagg",
        failed: dict[int, str] | None = None,
    ) -> dict[int, tuple[Any, int, int]]:
        """Send each node its record; {node: (reply record, bytes down, bytes up)}.

        A node that fails or does not answer raises, unless ``failed`` is given: then it
        is recorded there (node -> reason) and left out of the answer.
        """
        from flwr.app import ConfigRecord, Message, RecordDict

        tag = {"protocol": self.protocol_name, "config": json.dumps(self.config, sort_keys=True)}
        messages = {
            node: Message(
                RecordDict({"secagg": ConfigRecord({**tag, **record})}),
                dst_node_id=node,
                message_type=message_type,
            )
            for node, record in contents.items()
        }
        replies = grid.send_and_receive(list(messages.values()), timeout=self.timeout)
        answered: dict[int, tuple[Any, int, int]] = {}
        # An error the SuperLink makes for a node that went away (NODE_UNAVAILABLE) comes
        # from the SuperLink's own node id: attribute it by the message it answers.
        by_message_id = {m.metadata.message_id: node for node, m in messages.items() if m.metadata.message_id}
        for reply in replies:
            node = reply.metadata.src_node_id
            if node not in messages:
                node = by_message_id.get(reply.metadata.reply_to_message_id, node)
            if node not in messages:
                continue  # not attributable: its node counts as not answering below
            if reply.has_error():
                if failed is None:
                    raise ProtocolStateError(f"node {node}: {reply.error.reason}")
                failed[node] = str(reply.error.reason)
                continue
            answered[node] = (reply.content["secagg"], _content_bytes(messages[node]), _content_bytes(reply))
        missing = set(messages) - set(answered) - set(failed or {})
        if missing and failed is None:
            raise ProtocolStateError(
                f"expected replies from {len(messages)} nodes, {len(missing)} did not answer"
            )
        for node in missing:
            failed[node] = "no reply"  # type: ignore[index]
        return answered

    # -- one round --------------------------------------------------------------------
    def run_round(
        self,
        grid: Grid,
        nodes: Sequence[int],
        *,
        round_id: int,
        n_params: int,
        weights: Sequence[float],
        provision_keys: Sequence[bytes],
        key_signatures: Sequence[bytes] = (),
        keys: ServerKeys | None = None,
        server_b: int | None = None,
    ) -> FlowerRound:
        """``nodes[i]`` is the Flower node of client ``i``, already trained for ``round_id``;
        ``server_b`` the node of server B where it runs apart (``server_b_node``)."""
        protocol = self.protocol
        began = time.perf_counter()
        n_clients = len(nodes)
        spec = RoundSpec(round_id=round_id, n_clients=n_clients, n_params=n_params)
        ledger = WireLedger(protocol)
        common = {
            "round": round_id,
            "n_clients": n_clients,
            "n_params": n_params,
            "weights": [float(w) for w in weights],
        }
        if self.server_b_node and server_b is None:
            raise ConfigError(f"{protocol.name}: expected the Flower node of server B, got none")
        servers, known = self._provision(
            grid, nodes, spec, common, provision_keys, key_signatures, keys, ledger, server_b
        )

        host: dict[int, int] = {i: node for i, node in enumerate(nodes)}
        if self.server_b_node and server_b is not None:
            host[SERVER_B] = server_b
        if KEY_HOLDER in known:
            if self.provisioning != "dealer":
                raise ConfigError(f"{protocol.name}: a KEY_HOLDER needs dealer provisioning")
            host[KEY_HOLDER] = nodes[DEALER_PARTITION]
        hosted_by: dict[int, list[int]] = defaultdict(list)
        for pid, node in host.items():
            hosted_by[node].append(pid)
        queues: dict[int, list[tuple[bytes, str]]] = {pid: [] for pid in known}
        views = {sid: ViewRecorder(sid, party.role) for sid, party in servers.items()}
        checker = DeliveryChecks(protocol, round_id, frozenset(known))
        seconds: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        dropped: dict[int, str] = {}  # node -> why

        def route(sender: int, raw: bytes, stage: str) -> None:
            header = peek_header(raw)
            if header is None or header.recipient not in queues:
                raise ProtocolStateError(f"{party_name(sender)} addressed an unknown party")
            ledger.sent(sender, raw)
            queues[header.recipient].append((raw, stage))

        def take(pid: int, stage: str) -> list[bytes]:
            pending = [raw for raw, sent_in in queues[pid] if sent_in != stage]
            queues[pid] = [(raw, sent_in) for raw, sent_in in queues[pid] if sent_in == stage]
            return pending

        for stage in protocol.stages:
            if self.before_stage is not None:
                self.before_stage(stage)
            for sid, party in sorted(servers.items()):
                inbox = []
                started = time.perf_counter()
                for raw in take(sid, stage):
                    try:
                        inbound = checker.accept(raw, sid)
                    except Refused as exc:
                        views[sid].rejected.append(Rejected(stage, raw, str(exc)))
                        ledger.delivered(stage, sid, raw, accepted=False, note=str(exc))
                        continue
                    views[sid].received.append(Received(stage, inbound.header, raw, inbound.payload))
                    ledger.delivered(stage, sid, raw, accepted=True)
                    inbox.append(inbound)
                for envelope in party.step(stage, inbox):
                    route(
                        sid,
                        encode_message(
                            protocol_id=protocol.wire_id,
                            round_id=round_id,
                            sender=sid,
                            recipient=envelope.recipient,
                            payload=envelope.payload,
                        ),
                        stage,
                    )
                seconds[sid][stage] += time.perf_counter() - started
            relayed: dict[int, list[tuple[int, bytes]]] = {}
            contents: dict[int, dict[str, Any]] = {}
            for node, pids in hosted_by.items():
                pending = [(pid, raw) for pid in sorted(pids) for raw in take(pid, stage)]
                if not self._alive(node, pids, stage, dropped):
                    for pid, raw in pending:
                        ledger.delivered(
                            stage, pid, raw, accepted=False, note="recipient dropped out", count=False
                        )
                    continue
                relayed[node] = pending
                record: dict[str, Any] = {"op": "stage", "stage": stage}
                if pending:
                    record["inbox"] = [raw for _, raw in pending]
                contents[node] = record
            failed: dict[int, str] = {}
            answered = self._exchange(grid, contents, failed=failed)
            for node, reason in failed.items():
                dropped[node] = f"{stage}: {reason}"
                for pid, raw in relayed[node]:
                    ledger.delivered(
                        stage, pid, raw, accepted=False, note="recipient dropped out", count=False
                    )
            for node, (reply, down, up) in answered.items():
                ledger.flower_bytes_down += down
                ledger.flower_bytes_up += up
                try:
                    parsed = _parse_stage_reply(
                        reply, n_relayed=len(relayed[node]), hosted=hosted_by[node], known=queues
                    )
                except MalformedReply as exc:
                    # A node that answers garbage has dropped out; the others go on.
                    dropped[node] = f"{stage}: malformed reply ({exc})"
                    for pid, raw in relayed[node]:
                        ledger.delivered(
                            stage, pid, raw, accepted=False, note="recipient dropped out", count=False
                        )
                    continue
                refused, spent_by, outbox = parsed
                for index, (pid, raw) in enumerate(relayed[node]):
                    ledger.delivered(
                        stage, pid, raw, accepted=index not in refused, note=refused.get(index, "")
                    )
                for pid, spent in spent_by.items():
                    seconds[pid][stage] += spent
                for sender, raw in outbox:
                    route(sender, raw, stage)

        aggregate, included = self._reveal(grid, servers, host, dropped)
        if protocol.aggregate_kind == "sum" and included:
            # Clients pre-scaled by w_i / W over all clients; over those included, FedAvg
            # divides by their own total weight (sample counts are public).
            total, kept = sum(weights), sum(weights[i] for i in included)
            if kept != total:
                aggregate = aggregate * (total / kept)
        return FlowerRound(
            round_id=round_id,
            aggregate=aggregate,
            included=included,
            costs=ledger.costs(n_clients=n_clients, n_params=n_params, seconds=seconds),
            transcript=ledger.transcript,
            server_views=self._finish_views(views, servers),
            provisioning=self.provisioning,
            seconds=time.perf_counter() - began,
            flower_bytes_up=ledger.flower_bytes_up,
            flower_bytes_down=ledger.flower_bytes_down,
        )

    def _provision(
        self,
        grid: Grid,
        nodes: Sequence[int],
        spec: RoundSpec,
        common: dict[str, Any],
        provision_keys: Sequence[bytes],
        key_signatures: Sequence[bytes],
        keys: ServerKeys | None,
        ledger: WireLedger,
        server_b: int | None = None,
    ) -> tuple[dict[int, Party], list[int]]:
        protocol = self.protocol
        if self.provisioning == "local":
            # Parties that share no keys: the server builds its own from stand-ins.
            stand_ins = [np.zeros(spec.n_params) for _ in nodes]
            weights = list(common["weights"]) if protocol.aggregate_kind == "weighted_mean" else None
            parties = {p.party_id: p for p in protocol.make_parties(stand_ins, weights, spec)}
            servers = {pid: p for pid, p in parties.items() if pid in protocol.server_ids}
            extra = [pid for pid in parties if not is_client(pid) and pid not in servers]
            if extra:
                raise ConfigError(f"{protocol.name}: parties {extra} need a dealer, not local provisioning")
            replies = self._exchange(grid, {node: {**common, "op": "setup"} for node in nodes})
            self._count_setup(ledger, replies)
            return servers, sorted(parties)
        if len(provision_keys) != len(nodes) or len(key_signatures) != len(nodes):
            raise ConfigError(
                f"expected {len(nodes)} provisioning keys and signatures, "
                f"got {len(provision_keys)} and {len(key_signatures)}"
            )
        if keys is None:
            raise ConfigError(
                f"{protocol.name}: {self.provisioning} provisioning needs the deployment's ServerKeys"
            )
        weights = list(common["weights"])
        remote: set[int] = set()
        request = {
            **common,
            "keys": [bytes(k) for k in provision_keys],
            "key_signatures": [bytes(k) for k in key_signatures],
        }
        if self.server_b_node and server_b is not None:
            # B deals on its own node under its own key and keeps its party there; this
            # process receives server A's party, signed by B, and the sealed client parties.
            if not keys.server_b_public:
                raise ConfigError(f"{protocol.name}: expected server B's pinned public key in ServerKeys")
            servers, known, sealed, signatures = self._deal_on_node(
                grid, ledger, server_b, "deal_b", request, keys.server_b_public, spec.round_id, len(nodes)
            )
            if SERVER_B in servers:
                raise IntegrityError("server B's node sent its own party to server A")
            skip: int | None = None
            remote = {SERVER_B}
        elif self.provisioning == "server-b":
            # B deals with its own signing key (insecure_single_operator: B shares this process).
            if not keys.server_b_private:
                raise ConfigError(f"{protocol.name}: server-b provisioning needs server B's signing key")
            dealt = deal_round(
                protocol,
                spec,
                weights,
                provision_keys,
                dealer_private=keys.server_b_private,
                key_signatures=key_signatures,
                node_publics=keys.node_publics,
            )
            if dealt.key_holder is not None:
                raise ConfigError(f"{protocol.name}: a KEY_HOLDER must be dealt by a client node")
            servers, known, skip = dealt.server_side, dealt.known, None
            sealed, signatures = dealt.sealed, dealt.signatures
        else:
            dealer = nodes[DEALER_PARTITION]
            servers, known, sealed, signatures = self._deal_on_node(
                grid, ledger, dealer, "deal", request, keys.dealer_public, spec.round_id, len(nodes)
            )
            skip = DEALER_PARTITION
        if set(servers) | remote != set(protocol.server_ids):
            raise ProtocolStateError(f"dealt parties {sorted(servers)}, expected {list(protocol.server_ids)}")
        others = {
            node: {
                **common,
                "op": "provision",
                "sealed": sealed[i],
                "signature": signatures[i],
                "known": known,
                "dealer": self.provisioning,
            }
            for i, node in enumerate(nodes)
            if i != skip
        }
        if others:
            self._count_setup(ledger, self._exchange(grid, others))
        return servers, known

    def _deal_on_node(
        self,
        grid: Grid,
        ledger: WireLedger,
        node: int,
        op: str,
        request: Mapping[str, Any],
        dealer_public: bytes,
        round_id: int,
        n_nodes: int,
    ) -> tuple[dict[int, Party], list[int], list[bytes], list[bytes]]:
        """Ask ``node`` to deal (``op`` 'deal' or 'deal_b'): the server parties it signed,
        checked under ``dealer_public`` before they load, and what the ``n_nodes`` clients
        get (known ids, sealed parties, the dealer's signatures over them)."""
        replies = self._exchange(grid, {node: {**request, "op": op}})
        self._count_setup(ledger, replies)
        reply = replies[node][0]
        blob = bytes(reply["server_parties"])
        verify_server_parties(dealer_public, round_id, blob, bytes(reply["server_signature"]))
        servers = load_parties(self.protocol, blob)
        known = [int(k) for k in reply["known"]]
        sealed = [bytes(item) for item in reply["sealed"]]
        signatures = [bytes(item) for item in reply["signatures"]]
        if len(sealed) != n_nodes or len(signatures) != n_nodes:
            who = "server B" if op == "deal_b" else "dealer"
            raise IntegrityError(f"{who}: expected {n_nodes} sealed parties, got {len(sealed)}")
        return servers, known, sealed, signatures

    @staticmethod
    def _count_setup(ledger: WireLedger, replies: Mapping[int, tuple[Any, int, int]]) -> None:
        for _, down, up in replies.values():
            ledger.flower_bytes_down += down
            ledger.flower_bytes_up += up

    def _alive(self, node: int, pids: Sequence[int], stage: str, dropped: Mapping[int, str]) -> bool:
        if node in dropped:
            return False
        order = self.protocol.stages.index(stage)
        return not any(
            pid in self.dropouts and self.protocol.stages.index(self.dropouts[pid]) <= order for pid in pids
        )

    def _reveal(
        self, grid: Grid, servers: Mapping[int, Party], host: Mapping[int, int], dropped: Mapping[int, str]
    ) -> tuple[np.ndarray, tuple[int, ...]]:
        holder = self.protocol.aggregate_holder
        if holder in servers:
            revealed = servers[holder].output()
            if revealed is None:
                raise SecAggError(f"{self.protocol.name}: the round ended without an aggregate")
            return np.asarray(revealed.aggregate, dtype=np.float64), tuple(revealed.included)
        if holder not in host:
            raise ConfigError(
                f"{self.protocol.name}: no node hosts the aggregate holder {party_name(holder)}"
            )
        node = host[holder]
        if node in dropped:
            raise ProtocolStateError(f"the node hosting {party_name(holder)} dropped out ({dropped[node]})")
        reply = self._exchange(grid, {node: {"op": "reveal", "holder": holder}})[node][0]
        included = tuple(int(c) for c in reply["included"] if int(c) >= 0)
        return np.frombuffer(bytes(reply["aggregate"]), dtype="<f8").copy(), included

    @staticmethod
    def _finish_views(views: dict[int, ViewRecorder], servers: Mapping[int, Party]) -> dict[int, View]:
        return {
            sid: views[sid].freeze(revealed=party.output(), holdings=party.holdings())
            for sid, party in servers.items()
        }


def _parse_stage_reply(
    reply: Any, *, n_relayed: int, hosted: Sequence[int], known: Mapping[int, Any]
) -> tuple[dict[int, str], dict[int, float], list[tuple[int, bytes]]]:
    """A node's stage reply, checked: (refused position -> reason, seconds per hosted party,
    (sender, raw) of each outgoing message). Anything else raises :class:`MalformedReply`."""
    try:
        refused: dict[int, str] = {}
        for note in reply["refused"] if "refused" in reply else []:
            position, colon, reason = str(note).partition(":")
            if not colon or not position.isdigit() or not 0 <= int(position) < n_relayed:
                raise MalformedReply(f"expected refusal notes 'index:reason' with index < {n_relayed}")
            refused[int(position)] = reason
        pids = [int(pid) for pid in reply["parties"]]
        spent = [float(value) for value in reply["seconds"]]
        if len(pids) != len(spent) or set(pids) - set(hosted):
            raise MalformedReply(f"expected seconds for parties among {sorted(hosted)}, got {pids}")
        if not all(np.isfinite(value) and value >= 0 for value in spent):
            raise MalformedReply("expected finite non-negative seconds")
        outbox: list[tuple[int, bytes]] = []
        for item in reply["outbox"] if "outbox" in reply else []:
            raw = bytes(item)
            sender, recipient = route_header(raw, expected_sender=hosted)
            if recipient not in known:
                raise MalformedReply(f"a message addressed to an unknown party {party_name(recipient)}")
            outbox.append((sender, raw))
    except MalformedReply:
        raise
    except (SecAggError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise MalformedReply(f"{type(exc).__name__}: {exc}") from None
    return refused, dict(zip(pids, spent, strict=True)), outbox


def _wait_for_nodes(grid: Grid, count: int, timeout: float = 120.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise ProtocolStateError(
                f"expected {count} Flower nodes, {len(nodes)} connected in {timeout:.0f} s"
            )
        time.sleep(0.05)
    return nodes


def make_server_app(
    schedule: Sequence[SecAggWorkflow],
    *,
    initial: np.ndarray,
    n_nodes: int,
    run: FlowerRun,
    keys: ServerKeys,
    keep_going: bool = False,
) -> ServerApp:
    """A ``ServerApp`` training by FedAvg, round ``r`` aggregated with ``schedule[r]``.

    Each round: the global parameters go to every node (``train``), the nodes keep their
    updates and answer their public sample counts, the protocol aggregates the
    sample-weighted mean of the updates, and the global parameters move by it. Results
    land in ``run`` (the ServerApp runs in this process). With ``keep_going`` a round whose
    protocol fails is recorded in ``run.failures`` and the global parameters stay put.
    """
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        serve(grid, schedule, initial=initial, n_nodes=n_nodes, run=run, keys=keys, keep_going=keep_going)

    return app


def serve(
    grid: Grid,
    schedule: Sequence[SecAggWorkflow],
    *,
    initial: np.ndarray,
    n_nodes: int,
    run: FlowerRun,
    keys: ServerKeys,
    keep_going: bool = False,
) -> None:
    """The body of :func:`make_server_app`'s ``main``: every round of ``schedule`` into ``run``."""
    try:
        with_b = any(w.server_b_node for w in schedule)
        found = _wait_for_nodes(grid, n_nodes + with_b)
        hello = schedule[0]._exchange(grid, {node: {"op": "hello"} for node in found})
        b_nodes = [node for node, (reply, _, _) in hello.items() if str(reply["role"]) == "server-b"]
        by_partition = {
            int(reply["partition"]): node for node, (reply, _, _) in hello.items() if node not in b_nodes
        }
        if sorted(by_partition) != list(range(n_nodes)):
            raise ProtocolStateError(f"expected partitions 0..{n_nodes - 1}, got {sorted(by_partition)}")
        if len(b_nodes) != with_b:
            raise ProtocolStateError(f"expected {int(with_b)} server B node(s), got {len(b_nodes)}")
        nodes = [by_partition[i] for i in range(n_nodes)]
        server_b = b_nodes[0] if b_nodes else None
        run.fresh_nodes = sum(bool(reply["fresh"]) for reply, _, _ in hello.values())
        params = np.asarray(initial, dtype=np.float64).copy()
        for round_id, workflow in enumerate(schedule):
            began = time.perf_counter()
            try:
                outcome = _train_and_aggregate(workflow, grid, nodes, round_id, params, keys, server_b)
            except SecAggError as exc:
                if not keep_going:
                    raise
                # The nodes reset their round state at the next train message.
                run.failures[round_id] = exc
            else:
                params = params + outcome.aggregate
                run.rounds.append(outcome)
            run.params.append(params.copy())
            run.round_seconds.append(time.perf_counter() - began)
    except BaseException as exc:  # noqa: BLE001 - handed back to the caller
        run.error = exc


def _train_and_aggregate(
    workflow: SecAggWorkflow,
    grid: Grid,
    nodes: Sequence[int],
    round_id: int,
    params: np.ndarray,
    server_keys: ServerKeys,
    server_b: int | None = None,
) -> FlowerRound:
    trained = workflow._exchange(
        grid,
        {node: {"round": round_id, "params": params.astype("<f8").tobytes()} for node in nodes},
        message_type="train",
    )
    weights = [float(trained[node][0]["weight"]) for node in nodes]
    keys = [bytes(trained[node][0]["provision_key"]) for node in nodes]
    signatures = [bytes(trained[node][0]["key_signature"]) for node in nodes]
    return workflow.run_round(
        grid,
        nodes,
        round_id=round_id,
        n_params=params.size,
        weights=weights,
        provision_keys=keys,
        key_signatures=signatures,
        keys=server_keys,
        server_b=server_b if workflow.server_b_node else None,
    )


def _ray_sees_repo() -> None:
    # Ray's workers import the ClientApp's functions by module name: give them this checkout.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
    if root not in sys.path:
        sys.path.insert(0, root)


def simulate(
    schedule: str | Sequence[SecAggWorkflow],
    train_fn: TrainFn,
    *,
    initial: np.ndarray,
    n_clients: int,
    rounds: int = 1,
    config: dict[str, Any] | None = None,
    provisioning: str | None = None,
    num_cpus: float = 1,
    keep_going: bool = False,
    insecure_single_operator: bool = False,
) -> FlowerRun:
    """Train in Flower's simulation engine (Ray); raise what failed.

    ``schedule`` is a protocol name (used for ``rounds`` rounds with ``config``) or one
    :class:`SecAggWorkflow` per round: one Ray start-up then serves several protocols.
    ``keep_going``: a failed round lands in ``run.failures`` instead of stopping the run.
    ``insecure_single_operator``: allow protocols with two servers, both in the ServerApp.

    The deployment's long-term keys (:class:`Trust`) are made here, as an operator would
    before a deployment: each node gets its own, the ServerApp only public keys (and, for
    a protocol with a second server, B's dealing key, since B runs in the same process).
    """
    from flwr.simulation import run_simulation

    _ray_sees_repo()
    if isinstance(schedule, str):
        workflow = SecAggWorkflow(
            schedule, config, provisioning=provisioning, insecure_single_operator=insecure_single_operator
        )
        schedule = [workflow] * rounds
    if not schedule:
        raise ConfigError("expected at least one round, got an empty schedule")
    run = FlowerRun(protocol=",".join(dict.fromkeys(w.protocol_name for w in schedule)))
    trust = Trust.generate(n_clients)
    with_b = any(w.insecure_single_operator and len(w.protocol.server_ids) > 1 for w in schedule)
    server_app = make_server_app(
        schedule,
        initial=initial,
        n_nodes=n_clients,
        run=run,
        keys=ServerKeys.of(trust, with_server_b=with_b),
        keep_going=keep_going,
    )
    run_simulation(
        server_app=server_app,
        client_app=make_client_app(train_fn, trust),
        num_supernodes=n_clients,
        backend_config={"client_resources": {"num_cpus": num_cpus}},
    )
    if run.error is not None:
        raise run.error
    if len(run.rounds) + len(run.failures) != len(schedule):
        raise ProtocolStateError(
            f"expected {len(schedule)} rounds from the simulation, got {len(run.rounds)}"
        )
    return run
