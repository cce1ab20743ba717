"""The client node's side of a secagg round in Flower: its parties, stepped stage by stage.

A client node hosts the protocol party of its partition (client ``i`` for Flower's
``partition-id`` ``i``) and, on the dealer node (partition 0), the protocol's
client-side roles: the dealer's setup and, for the homomorphic protocols, the
``KEY_HOLDER`` that holds the secret key. Everything here works on bytes and numpy
arrays; :func:`make_client_app` wraps it in a Flower ``ClientApp`` and is the only
function that imports ``flwr``.

Operations (one Flower message each, ``query.secagg`` with an ``op`` field; the protocol
and its config come with every message, so one ClientApp serves any registered protocol):

- ``train`` (Flower's ``train`` message type): run the user's local training on the
  global parameters, keep the update in the node's ``Context.state`` and answer only
  the (public) sample count and a fresh X25519 provisioning public key.
- provisioning, one of three ways (:func:`provisioning_of` says which and why):
  ``setup`` (local: the node runs ``make_parties`` itself and keeps its own party, for
  protocols whose parties share no keys); ``deal`` (the key holder's node, partition 0,
  runs ``make_parties`` once with a stand-in array for each client's update, keeps
  ``KEY_HOLDER``, returns the server-side parties and seals each client its party to
  that client's provisioning key, :func:`protocols.runtime.flower.transport.seal`, which the
  server relays unread); ``provision`` (a node opens its sealed party, from the dealer
  node or from ``SERVER_B``, and swaps its real update in for the stand-in).
- ``deal_b`` (server B's own node, in a deployment where B runs apart from A): as
  ``deal``, under B's dealing key; B keeps ``SERVER_B`` (its X25519 private key stays on
  this node) and returns server A's party signed, and the clients' parties sealed.
- ``stage``: deliver the wire bytes the server relays (the router's checks), step each
  hosted party, return its outgoing wire bytes.
- ``reveal``: the aggregate, from the node hosting the protocol's aggregate holder.

State between messages lives in ``Context.state`` as bytes in an explicit versioned layout
(:func:`protocols.runtime.flower.transport.dump_node`, parties through ``secagg.state``,
never pickled): Ray may hand a node's next message to another worker process, and a
deployment starts a fresh ClientApp process per message, while the state must stay on
the node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import protocols
from protocols.runtime.flower.transport import (
    DeliveryChecks,
    NodeState,
    Refused,
    dump_node,
    dump_parties,
    dump_state,
    load_node,
    load_state,
    new_provisioning_key,
    open_sealed,
    seal,
    seal_context,
    sign_dealt,
    sign_provision_key,
    sign_server_parties,
    update_ref,
    verify_dealt,
    verify_provision_key,
)
from secagg import signing
from secagg.errors import ConfigError, IntegrityError, ProtocolStateError
from secagg.party import KEY_HOLDER, SERVER_B, Party, is_client
from secagg.protocol import PROVISIONING_MODES, Protocol, RoundSpec
from secagg.wire import encode_message, peek_header

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

DEALER_PARTITION = 0
STATE_KEY = "secagg"

# (partition, global parameters, round) -> (update, sample count)
TrainFn = Callable[[int, np.ndarray, int], tuple[np.ndarray, float]]


@dataclass(frozen=True)
class Trust:
    """The long-term keys of a deployment, made and handed out by its operator out of band.

    Each node's configuration holds its own Ed25519 identity key and pins the dealers'
    verification keys; the dealer node (partition 0) also holds the dealer signing key
    and pins every node's identity key. The server holds none of the private keys, so it
    can neither advertise a provisioning key in a node's name nor deal in the dealer's.
    ``server_b_private`` is the second server's dealing key (two-server), held by B.
    """

    identity_private: tuple[bytes, ...]
    identity_public: tuple[bytes, ...]
    dealer_private: bytes
    dealer_public: bytes
    server_b_private: bytes
    server_b_public: bytes

    @classmethod
    def generate(cls, n_nodes: int) -> Trust:
        pairs = [signing.generate_signing_keypair() for _ in range(n_nodes)]
        dealer = signing.generate_signing_keypair()
        server_b = signing.generate_signing_keypair()
        return cls(
            tuple(private for private, _ in pairs),
            tuple(public for _, public in pairs),
            dealer[0],
            dealer[1],
            server_b[0],
            server_b[1],
        )

    def server_b_node(self) -> NodeKeys:
        """What server B's own node holds: B's dealing key and every node's pinned identity."""
        return NodeKeys(
            identity_private=b"",
            dealer_public=self.dealer_public,
            server_b_public=self.server_b_public,
            node_publics=self.identity_public,
            server_b_private=self.server_b_private,
        )

    def node(self, partition: int) -> NodeKeys:
        """What node ``partition``'s configuration holds."""
        if not 0 <= partition < len(self.identity_private):
            raise ConfigError(f"expected a partition in [0, {len(self.identity_private)}), got {partition}")
        dealer = partition == DEALER_PARTITION
        return NodeKeys(
            identity_private=self.identity_private[partition],
            dealer_public=self.dealer_public,
            server_b_public=self.server_b_public,
            dealer_private=self.dealer_private if dealer else b"",
            node_publics=self.identity_public if dealer else (),
        )


@dataclass(frozen=True)
class NodeKeys:
    """One node's keys: its identity key, and the verification keys it pins."""

    identity_private: bytes
    dealer_public: bytes
    server_b_public: bytes
    dealer_private: bytes = b""
    node_publics: tuple[bytes, ...] = ()
    server_b_private: bytes = b""  # only on server B's own node

    @property
    def is_server_b(self) -> bool:
        return bool(self.server_b_private)


def protocol_from(name: str, config: dict[str, Any] | None) -> Protocol:
    return protocols.create(name, **(config or {}))


def provisioning_of(protocol: Protocol[Any]) -> str:
    """How ``protocol``'s parties reach the Flower nodes, as the protocol declares it
    (:attr:`secagg.protocol.Protocol.provisioning`): 'local', 'dealer' or 'server-b'.

    - ``local``: every node runs ``make_parties`` itself and keeps its own client party;
      the server builds the server parties itself. Only for protocols whose parties
      share no key material made in ``make_parties``.
    - ``dealer``: the key holder's node (partition 0) runs ``make_parties`` once and seals
      each client its party; it keeps ``KEY_HOLDER`` and returns the server parties.
    - ``server-b``: ``SERVER_B`` deals instead of a client node.
    """
    declared = protocol.provisioning
    if declared not in PROVISIONING_MODES:
        raise ConfigError(
            f"{protocol.name}: provisioning must be one of {PROVISIONING_MODES}, got {declared!r}"
        )
    return str(declared)


@dataclass(frozen=True)
class DealRequest:
    """What a server asks a dealing node for: the round, the weights, and every node's
    provisioning key with its signature under that node's identity key."""

    spec: RoundSpec
    weights: Sequence[float]
    node_keys: Sequence[bytes]
    signatures: Sequence[bytes]


@dataclass
class Dealt:
    """One round's parties as a dealer built them: what it keeps, seals and signs."""

    server_side: dict[int, Party]
    key_holder: Party | None
    sealed: list[bytes]
    known: list[int]
    signatures: list[bytes]
    server_blob: bytes
    server_signature: bytes


def deal_round(
    protocol: Protocol,
    spec: RoundSpec,
    weights: Sequence[float],
    node_keys: Sequence[bytes],
    *,
    dealer_private: bytes,
    key_signatures: Sequence[bytes] | None = None,
    node_publics: Sequence[bytes] | None = None,
    keep: frozenset[int] = frozenset(),
) -> Dealt:
    """Run ``make_parties`` once with a stand-in per client update and seal each client its party.

    ``keep``: server parties the dealer hosts itself (server B on its own node); they are
    left out of the signed server-side blob and come back in ``Dealt.server_side`` only.

    A client party must keep the update array it was given (by reference) and derive
    nothing from it before its first step: its node swaps its real update in for the
    stand-in when it loads the party. That is checked here (the sealed state must refer
    to its own stand-in and no other) and by the aggregate tests.
    """
    if len(node_keys) != spec.n_clients:
        raise ConfigError(f"deal: expected {spec.n_clients} provisioning keys, got {len(node_keys)}")
    if key_signatures is not None or node_publics is not None:
        # Every key is checked before anything is made: a swapped key gets no secret.
        if key_signatures is None or node_publics is None or len(node_publics) != spec.n_clients:
            raise ConfigError(f"deal: expected {spec.n_clients} pinned identity keys and key signatures")
        if len(key_signatures) != spec.n_clients:
            raise IntegrityError(f"deal: expected {spec.n_clients} key signatures, got {len(key_signatures)}")
        for j in range(spec.n_clients):
            verify_provision_key(node_publics[j], spec.round_id, j, node_keys[j], key_signatures[j])
    inputs = _placeholders(spec.n_clients, spec.n_params)
    refs = {id(array): update_ref(j) for j, array in enumerate(inputs)}
    parties = {p.party_id: p for p in protocol.make_parties(inputs, _weights_for(protocol, weights), spec)}
    server_side = {pid: p for pid, p in parties.items() if pid in protocol.server_ids}
    missing = [pid for pid in protocol.server_ids if pid not in server_side]
    if missing:
        raise ProtocolStateError(f"{protocol.name}: make_parties built no server party {missing}")
    others = {pid for pid in parties if not is_client(pid) and pid not in server_side}
    if others - {KEY_HOLDER}:
        raise ConfigError(f"{protocol.name}: no Flower node hosts parties {sorted(others - {KEY_HOLDER})}")
    sealed: list[bytes] = []
    for j in range(spec.n_clients):
        if j not in parties:
            raise ProtocolStateError(f"{protocol.name}: make_parties built no party for client {j}")
        blob, referenced = dump_state(protocol, {j: parties[j]}, placeholders=refs)
        if referenced != {update_ref(j)}:
            raise ConfigError(
                f"{protocol.name}: client {j}'s party must keep the update array it was given "
                f"(to take the client's real update on its node); it refers to {sorted(referenced)}. "
                f"A protocol whose parties share no keys may declare flower_provisioning 'local'."
            )
        sealed.append(seal(blob, recipient_public=node_keys[j], context=seal_context(spec.round_id, j)))
    known = sorted(parties)
    signatures = [sign_dealt(dealer_private, spec.round_id, j, blob, known) for j, blob in enumerate(sealed)]
    # The server parties must not hold any client's update (dump_parties checks).
    server_blob = dump_parties(protocol, {pid: p for pid, p in server_side.items() if pid not in keep})
    server_signature = sign_server_parties(dealer_private, spec.round_id, server_blob)
    return Dealt(
        server_side, parties.get(KEY_HOLDER), sealed, known, signatures, server_blob, server_signature
    )


def _placeholders(n_clients: int, n_params: int) -> list[np.ndarray]:
    # Distinct objects: the dealer's pickler recognises each client's stand-in by identity.
    return [np.zeros(n_params, dtype=np.float64) for _ in range(n_clients)]


def _party_input(
    protocol: Protocol, update: np.ndarray, weights: Sequence[float], partition: int
) -> np.ndarray:
    """The vector this node feeds the protocol: FedAvg for 'sum' protocols via pre-scaling."""
    vector = np.asarray(update, dtype=np.float64)
    if protocol.aggregate_kind == "sum":
        # Sample counts are public (Flower's FedAvg sends them in the clear), so each client
        # scales by its share and the protocol's sum is the sample-weighted mean.
        return vector * (float(weights[partition]) / float(sum(weights)))
    return vector


def _weights_for(protocol: Protocol, weights: Sequence[float]) -> list[float] | None:
    return [float(w) for w in weights] if protocol.aggregate_kind == "weighted_mean" else None


class SecAggNode:
    """One client node: the operations of the module docstring, over bytes and arrays."""

    def __init__(self, protocol: Protocol, state: NodeState, keys: NodeKeys) -> None:
        self.protocol = protocol
        self.state = state
        self.keys = keys

    # -- training ---------------------------------------------------------------
    def train(
        self, round_id: int, global_params: np.ndarray, train_fn: TrainFn
    ) -> tuple[float, bytes, bytes]:
        """Train; (sample count, provisioning public key, its signature by this node's identity)."""
        update, weight = train_fn(self.state.partition, global_params, round_id)
        update = np.asarray(update, dtype=np.float64).reshape(-1)
        if update.size != global_params.size:
            raise ConfigError(
                f"train_fn: expected an update of {global_params.size} values, got {update.size}"
            )
        if not (np.isfinite(weight) and weight > 0):
            raise ConfigError(f"train_fn: expected a finite positive sample count, got {weight}")
        private, public = new_provisioning_key()
        self.state.round_id = round_id
        self.state.update = update
        self.state.weight = float(weight)
        self.state.provision_private = private
        self.state.parties = {}
        self.state.seen = set()
        signature = sign_provision_key(self.keys.identity_private, round_id, self.state.partition, public)
        return float(weight), public, signature

    def _require_round(self, round_id: int) -> np.ndarray:
        if self.state.round_id != round_id or self.state.update is None:
            raise ProtocolStateError(
                f"node {self.state.partition}: expected round {self.state.round_id} (trained), got {round_id}"
            )
        return self.state.update

    # -- provisioning -------------------------------------------------------------
    def setup_local(self, spec: RoundSpec, weights: Sequence[float]) -> None:
        update = self._require_round(spec.round_id)
        i = self.state.partition
        inputs = _placeholders(spec.n_clients, spec.n_params)
        inputs[i] = _party_input(self.protocol, update, weights, i)
        parties = {
            p.party_id: p
            for p in self.protocol.make_parties(inputs, _weights_for(self.protocol, weights), spec)
        }
        if i not in parties:
            raise ProtocolStateError(f"{self.protocol.name}: make_parties built no party for client {i}")
        self.state.parties = {i: parties[i]}
        self.state.known = frozenset(parties)

    def _deal_pinned(self, request: DealRequest, *, dealer_private: bytes,
                     keep: frozenset[int] = frozenset()) -> Dealt:
        """:func:`deal_round` under ``dealer_private``, every node's provisioning key checked
        against the identity keys this node pins (the one way a node deals)."""
        return deal_round(
            self.protocol,
            request.spec,
            request.weights,
            request.node_keys,
            dealer_private=dealer_private,
            key_signatures=request.signatures,
            node_publics=self.keys.node_publics,
            keep=keep,
        )

    def deal(self, request: DealRequest) -> Dealt:
        """The dealer node: verify every node's key, deal, keep its own party and the key holder."""
        spec = request.spec
        self._require_round(spec.round_id)
        if self.state.partition != DEALER_PARTITION or not self.keys.dealer_private:
            raise ProtocolStateError(f"node {self.state.partition} asked to deal; expected the dealer node")
        dealt = self._deal_pinned(request, dealer_private=self.keys.dealer_private)
        i = self.state.partition
        self.provision(spec, request.weights, dealt.sealed[i], dealt.known, dealt.signatures[i])
        if dealt.key_holder is not None:
            self.state.parties[KEY_HOLDER] = dealt.key_holder
        return dealt

    def deal_as_server_b(self, request: DealRequest) -> Dealt:
        """Server B's own node: verify every node's key, deal under B's key, keep ``SERVER_B``.

        Server A receives its own party (signed by B) and the clients' sealed parties to
        relay; B's party, with its private key, never leaves this node.
        """
        if not self.keys.is_server_b or self.protocol.provisioning != "server-b":
            raise ProtocolStateError(
                f"node {self.state.partition} asked to deal as server B; expected server B's node "
                f"and a server-b protocol, got {self.protocol.name}"
            )
        dealt = self._deal_pinned(request, dealer_private=self.keys.server_b_private,
                                  keep=frozenset({SERVER_B}))
        self.state.round_id = request.spec.round_id
        self.state.update = None
        self.state.parties = {SERVER_B: dealt.server_side[SERVER_B]}
        self.state.known = frozenset(dealt.known)
        self.state.seen = set()
        return dealt

    def provision(
        self,
        spec: RoundSpec,
        weights: Sequence[float],
        sealed: bytes,
        known: Sequence[int],
        signature: bytes,
        *,
        dealer: str = "dealer",
    ) -> None:
        """Verify the dealer's signature (under the pinned key), then open and load the party."""
        update = self._require_round(spec.round_id)
        i = self.state.partition
        pinned = self.keys.server_b_public if dealer == "server-b" else self.keys.dealer_public
        verify_dealt(pinned, spec.round_id, i, sealed, list(known), signature)
        blob = open_sealed(
            sealed, recipient_private=self.state.provision_private, context=seal_context(spec.round_id, i)
        )
        self._load_hosted(blob, _party_input(self.protocol, update, weights, i))
        self.state.known = frozenset(known)

    def _load_hosted(self, blob: bytes, own_input: np.ndarray) -> None:
        i = self.state.partition
        hosted, loaded = load_state(
            self.protocol, blob, references={update_ref(i): own_input}, what="dealt party"
        )
        if (
            loaded != {update_ref(i)}
            or not isinstance(hosted, dict)
            or set(hosted) != {i}
            or not isinstance(hosted[i], Party)
        ):
            raise IntegrityError(f"node {i}: the dealt party does not hold this node's update")
        self.state.parties = hosted

    # -- stages -----------------------------------------------------------------
    def stage(self, stage: str, inbox: Sequence[bytes]) -> tuple[list[bytes], list[str], dict[int, float]]:
        """Step every hosted party; (outgoing wire bytes, refusal notes, seconds per party)."""
        if stage not in self.protocol.stages:
            raise ConfigError(
                f"expected a stage of {self.protocol.name} {self.protocol.stages}, got {stage!r}"
            )
        if not self.state.parties:
            raise ProtocolStateError(f"node {self.state.partition}: stage {stage!r} before setup")
        checker = DeliveryChecks(self.protocol, self.state.round_id, self.state.known, self.state.seen)
        inboxes: dict[int, list[Any]] = {pid: [] for pid in self.state.parties}
        refused: list[str] = []
        for index, raw in enumerate(inbox):
            header = peek_header(raw)
            recipient = header.recipient if header is not None else -1
            if recipient not in inboxes:
                refused.append(f"{index}:not hosted here")
                continue
            try:
                inboxes[recipient].append(checker.accept(raw, recipient))
            except Refused as exc:
                refused.append(f"{index}:{exc}")
        outgoing: list[bytes] = []
        seconds: dict[int, float] = {}
        for pid in sorted(self.state.parties):
            began = time.perf_counter()
            envelopes = self.state.parties[pid].step(stage, inboxes[pid])
            for envelope in envelopes:
                outgoing.append(
                    encode_message(
                        protocol_id=self.protocol.wire_id,
                        round_id=self.state.round_id,
                        sender=pid,
                        recipient=envelope.recipient,
                        payload=envelope.payload,
                    )
                )
            seconds[pid] = time.perf_counter() - began
        self.state.seen = checker.seen
        return outgoing, refused, seconds

    def reveal(self, holder: int) -> tuple[np.ndarray, tuple[int, ...]]:
        party = self.state.parties.get(holder)
        revealed = party.output() if party is not None else None
        if revealed is None:
            raise ProtocolStateError(f"node {self.state.partition}: the aggregate holder revealed nothing")
        return np.asarray(revealed.aggregate, dtype=np.float64), tuple(revealed.included)


# -- the Flower ClientApp ----------------------------------------------------------


def _load_node(context: Any, protocol: Protocol, partition: int) -> NodeState:
    record = context.state.get(STATE_KEY) if STATE_KEY in context.state else None
    if record is None:
        return NodeState(partition=partition)
    if str(record["protocol"]) != protocol.name:
        # Another protocol's round left this state: nothing of it carries over.
        return NodeState(partition=partition)
    state = load_node(protocol, bytes(record["blob"]))
    if state.partition != partition:
        raise IntegrityError(f"node state of partition {state.partition} loaded on partition {partition}")
    return state


def _save_node(context: Any, protocol: Protocol, state: NodeState) -> None:
    from flwr.app import ConfigRecord

    context.state[STATE_KEY] = ConfigRecord({"protocol": protocol.name, "blob": dump_node(protocol, state)})


def _floats(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f8").copy()


def make_client_app(
    train_fn: TrainFn, trust: Trust | Callable[[int, Mapping[str, Any]], NodeKeys]
) -> ClientApp:
    """A Flower ``ClientApp`` running the client side of any registered protocol around ``train_fn``.

    ``train_fn(partition, global_params, round) -> (update, sample_count)`` is the user's
    local training (numpy in, numpy out); it runs on the node and its update never
    leaves the node except through the protocol. Which protocol (and its config) a
    round uses comes with each message, so one simulation can run several protocols.
    ``trust`` gives each node its configured keys (:class:`Trust`, or a function from
    the partition and the node's configuration to :class:`NodeKeys`); the ServerApp never
    receives it.
    """
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    def keys_of(partition: int, node_config: Mapping[str, Any]) -> NodeKeys:
        return trust.node(partition) if isinstance(trust, Trust) else trust(partition, node_config)

    def _node(context: Context, record: Any) -> SecAggNode:
        partition = int(context.node_config["partition-id"])
        protocol = protocol_from(str(record["protocol"]), json.loads(str(record["config"])))
        return SecAggNode(
            protocol, _load_node(context, protocol, partition), keys_of(partition, context.node_config)
        )

    @app.train()
    def train(message: Message, context: Context) -> Message:
        record: Any = message.content["secagg"]
        node = _node(context, record)
        weight, public, signature = node.train(
            int(record["round"]), _floats(bytes(record["params"])), train_fn
        )
        _save_node(context, node.protocol, node.state)
        reply = ConfigRecord(
            {
                "partition": node.state.partition,
                "weight": weight,
                "provision_key": public,
                "key_signature": signature,
            }
        )
        return Message(RecordDict({"secagg": reply}), reply_to=message)

    @app.query("secagg")
    def query(message: Message, context: Context) -> Message:
        record: Any = message.content["secagg"]
        op = str(record["op"])
        node = _node(context, record)
        reply: dict[str, Any] = {"partition": node.state.partition}
        if op == "hello":
            reply["role"] = "server-b" if node.keys.is_server_b else "client"
            # The run's first message: a node that already holds secagg state here carries
            # something over from elsewhere (Flower keeps a Context per run and node).
            reply["fresh"] = STATE_KEY not in context.state
        elif op in ("setup", "deal", "deal_b", "provision"):
            spec = RoundSpec(int(record["round"]), int(record["n_clients"]), int(record["n_params"]))
            weights = [float(w) for w in record["weights"]]
            if op == "setup":
                node.setup_local(spec, weights)
            elif op == "provision":
                node.provision(
                    spec,
                    weights,
                    bytes(record["sealed"]),
                    [int(k) for k in record["known"]],
                    bytes(record["signature"]),
                    dealer=str(record["dealer"]),
                )
            else:
                request = DealRequest(
                    spec,
                    weights,
                    [bytes(k) for k in record["keys"]],
                    [bytes(k) for k in record["key_signatures"]],
                )
                if op == "deal_b":
                    dealt, own = node.deal_as_server_b(request), None
                else:  # the dealer node's own party stays here: nothing to send for it
                    dealt, own = node.deal(request), node.state.partition
                reply.update(
                    server_parties=dealt.server_blob,
                    server_signature=dealt.server_signature,
                    sealed=[b"" if j == own else blob for j, blob in enumerate(dealt.sealed)],
                    signatures=[b"" if j == own else sig for j, sig in enumerate(dealt.signatures)],
                    known=dealt.known,
                )
        elif op == "stage":
            inbox = [bytes(raw) for raw in record["inbox"]] if "inbox" in record else []
            outgoing, refused, seconds = node.stage(str(record["stage"]), inbox)
            if outgoing:
                reply["outbox"] = outgoing
            if refused:
                reply["refused"] = refused
            reply["parties"] = list(seconds)
            reply["seconds"] = list(seconds.values())
        elif op == "reveal":
            aggregate, included = node.reveal(int(record["holder"]))
            reply.update(aggregate=aggregate.astype("<f8").tobytes(), included=list(included) or [-1])
        else:
            raise ConfigError(f"expected op hello/setup/deal/deal_b/provision/stage/reveal, got {op!r}")
        _save_node(context, node.protocol, node.state)
        return Message(RecordDict({"secagg": ConfigRecord(reply)}), reply_to=message)

    return app
