"""A protocol the project does not ship, defined here, goes through every seam unchanged.

``DealtMasks`` is one-time-pad aggregation with a trusted dealer: the dealer hands each
client a mask in Z_2^k, the masks summing to zero; a client sends its fixed-point input
plus its mask, and the server's sum of the masked inputs is the sum of the inputs (the
textbook warm-up to Bonawitz et al. 2017, without dropout recovery). It is a module of
its own plus one :func:`protocols.register` call: the router runs it, its server view is
observed through :meth:`Protocol.observe`, ``leakage.assess`` attacks the observations,
and the registry-wide wire and holdings contracts hold for it -- with no edit to
``leakage/`` or ``protocols/runtime/flower/``.

It declares its dealer provisioning and the classes its party state is made of
(``state_types``), so the Flower runtime carries it as well (the slow test; Ray's workers
register it by importing :mod:`tests.protocols.sixth_flower`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import protocols
from secagg.encoding import FixedPoint
from secagg.errors import ProtocolStateError, WireFormatError
from secagg.party import SERVER, Envelope, Holding, Inbound, Party, Revealed
from secagg.prf import domain, expand, random_seed
from secagg.protocol import Protocol, RoundSpec, ThreatModel
from secagg.round import reference_aggregate, run_round
from secagg.wire import Payload, Reader, Writer
from tests.conftest import make_updates
from tests.protocols.test_contract import _check_wire

N_CLIENTS = 3
N_PARAMS = 96


@dataclass(frozen=True)
class DealtMasksConfig:
    clip: float = 1.0
    frac_bits: int = 16

    def codec(self) -> FixedPoint:
        return FixedPoint(ring_bits=32, frac_bits=self.frac_bits, clip=self.clip)


@dataclass(frozen=True)
class MaskedInput(Payload):
    """Layout: array values (<u4, one element per parameter)."""

    msg_type: ClassVar[int] = 1
    values: np.ndarray

    def to_bytes(self) -> bytes:
        return Writer().array(self.values).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> MaskedInput:
        reader = Reader(data, "MaskedInput")
        values = reader.array("values", dtype="<u4")
        reader.done()
        return cls(values)


class MaskedClient(Party):
    role = "client"

    def __init__(self, party_id: int, update: np.ndarray, mask: np.ndarray, codec: FixedPoint) -> None:
        super().__init__(party_id)
        self._update, self._mask, self._codec = update, mask, codec

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage != "upload":
            return []
        return [Envelope(SERVER, MaskedInput(self._codec.encode(self._update) + self._mask))]

    def holdings(self) -> list[Holding]:
        return [Holding("mask", self._mask, secret=True)]


class SummingServer(Party):
    role = "server"

    def __init__(self, spec: RoundSpec, codec: FixedPoint) -> None:
        super().__init__(SERVER)
        self._spec, self._codec = spec, codec
        self._revealed: Revealed | None = None

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage != "aggregate":
            return []
        senders = sorted(m.sender for m in inbox)
        if senders != list(range(self._spec.n_clients)):
            # A missing mask leaves the sum uniformly random: refuse rather than reveal noise.
            raise ProtocolStateError(f"server: expected every client's input, got {senders}")
        total = np.zeros(self._spec.n_params, dtype=np.uint32)
        for message in inbox:
            assert isinstance(message.payload, MaskedInput)
            if message.payload.values.size != self._spec.n_params:
                raise ProtocolStateError(f"server: wrong length from client {message.sender}")
            total += message.payload.values
        self._revealed = Revealed(self._codec.decode(total), tuple(senders))
        return []

    def output(self) -> Revealed | None:
        return self._revealed


class DealtMasks(Protocol[DealtMasksConfig]):
    """One-time pads from a trusted dealer, summing to zero."""

    name = "dealt-masks"
    wire_id = 990
    stages = ("upload", "aggregate")
    late_dropout_stage = "upload"
    payload_types = (MaskedInput,)
    Config = DealtMasksConfig
    input_bound_field = "clip"
    frac_bits_field = "frac_bits"
    provisioning = "dealer"
    state_types: ClassVar[tuple[type, ...]] = (MaskedClient, SummingServer)
    summary = "test protocol: dealer's zero-sum one-time pads"
    threat_model = ThreatModel(
        keys="a trusted dealer deals each client a mask; the masks sum to zero",
        server_sees="each client's input plus a uniform mask, then the sum",
        collusion="the dealer and the server together learn every input",
        dropouts="none: a missing client leaves its mask in the sum, so the round is refused",
        min_clients=2,
    )

    def make_parties(
        self, updates: Sequence[np.ndarray], weights: Sequence[float] | None, spec: RoundSpec
    ) -> list[Party]:
        codec = self.codec_for(spec.n_clients)
        seed = random_seed()  # the dealer's, from the OS CSPRNG
        masks = [
            expand(seed, domain("dealt-masks", round_id=spec.round_id, parties=(i,)), spec.n_params).copy()
            for i in range(spec.n_clients - 1)
        ]
        masks.append(np.asarray(-np.sum(masks, axis=0, dtype=np.uint32), dtype=np.uint32))
        parties: list[Party] = [MaskedClient(i, u, masks[i], codec) for i, u in enumerate(updates)]
        return [*parties, SummingServer(spec, codec)]

    def codec_for(self, n_clients: int) -> FixedPoint:
        return self.config.codec()

    def precision(self, *, n_clients: int, value_range: float) -> float:
        return n_clients * self.config.codec().error_bound


@pytest.fixture
def registered() -> Iterator[type[DealtMasks]]:
    protocols.register(DealtMasks)
    try:
        yield DealtMasks
    finally:
        protocols.unregister(DealtMasks.name)


def test_registration_is_the_only_line_it_needs(registered: type[DealtMasks]) -> None:
    assert protocols.get("dealt-masks") is DealtMasks
    protocol = protocols.create("dealt-masks", clip=2.0)
    assert protocol.input_bound == 2.0 and protocol.with_input_bound(0.5).input_bound == 0.5


def test_it_runs_under_the_router_and_keeps_the_contracts(registered: type[DealtMasks]) -> None:
    protocol = protocols.create("dealt-masks")
    updates = make_updates(N_CLIENTS, N_PARAMS, seed=4)
    result = run_round(protocol, updates, round_id=2)
    reference = reference_aggregate(updates, result.included, kind="sum")
    bound = protocol.precision(n_clients=N_CLIENTS, value_range=1.0)
    assert np.max(np.abs(result.unwrap() - reference)) <= bound
    assert _check_wire("dealt-masks", result) == N_CLIENTS
    assert result.views[SERVER].secrets() == ()
    with pytest.raises(WireFormatError):
        MaskedInput.from_bytes(MaskedInput(np.zeros(3, np.float32)).to_bytes())


def test_a_dropped_client_is_refused_not_revealed(registered: type[DealtMasks]) -> None:
    from secagg.router import Dropout

    updates = make_updates(N_CLIENTS, N_PARAMS, seed=5)
    result = run_round(protocols.create("dealt-masks"), updates, faults=[Dropout(1, "upload")])
    assert isinstance(result.error, ProtocolStateError) and result.aggregate is None


def test_it_is_observed_and_assessed_without_touching_leakage(registered: type[DealtMasks]) -> None:
    from leakage.assess import assess
    from tests.leakage.test_assess import BUDGET, _tiny_setup

    model, truth, updates = _tiny_setup(N_CLIENTS)
    scale = max(float(np.abs(u).max()) for u in updates)
    protocol = protocols.create("dealt-masks").with_input_bound(scale)
    result = run_round(protocol, updates, round_id=3)
    observations = result.observations()
    messages = [o for o in observations if o.name != "aggregate"]
    assert [o.clients for o in messages] == [(0,), (1,), (2,)]
    assert {o.kind for o in messages} == {"ring"}
    assessment = assess(observations, model, truth, BUDGET, label="dealt-masks", include_aggregate=False)
    rows = [r for r in assessment.rows if r.observer == "server"]
    assert {r.observable for r in rows} == {f"client-{c} MaskedInput" for c in range(N_CLIENTS)}
    assert all(r.verdict == "not exposed" and r.full_attack for r in rows)


@pytest.mark.slow
def test_it_runs_under_flower_simulation() -> None:
    pytest.importorskip("flwr")
    from protocols.runtime.flower import SecAggWorkflow, simulate
    from tests.protocols import sixth_flower  # registers DealtMasks here and in Ray's workers

    try:
        run = simulate(
            [SecAggWorkflow(DealtMasks.name, {})], sixth_flower.train_fn,
            initial=np.zeros(sixth_flower.N_PARAMS), n_clients=sixth_flower.N_CLIENTS,
        )
        outcome = run.outcome(0)
        updates, weights = sixth_flower.updates(0)
        assert outcome.included == tuple(range(sixth_flower.N_CLIENTS))
        reference = reference_aggregate(updates, outcome.included, kind="weighted_mean", weights=weights)
        bound = DealtMasks().precision(n_clients=sixth_flower.N_CLIENTS, value_range=1.0)
        assert float(np.max(np.abs(outcome.aggregate - reference))) <= bound
    finally:
        protocols.unregister(DealtMasks.name)
