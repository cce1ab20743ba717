"""The plaintext baseline: FedSGD and FedAvg in the clear, through the same router.

FedSGD (McMahan et al. 2017's baseline): each client sends its gradient; the server
sums them. FedAvg: each client sends its locally trained weights and its sample count;
the server takes the sample-weighted mean. Updates travel as float32 (4 bytes per
parameter, the unit every other protocol's expansion is measured in) or float64.

Threat model: there is none. The server sees every client's update exactly; this is
the observable that gradient-inversion attacks (DLG, iDLG, Inverting Gradients,
analytic recovery) exploit, and the baseline the protected protocols are measured
against.

Inputs must be finite: a client refuses to send NaN or Inf (EncodingOverflowError), and
the server leaves out, like a dropout, a sender whose values are non-finite, of the wrong
length or carry a bad weight, so one bad client never poisons or aborts the others' sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from secagg.binding import BindingLedger, ModelBinding, binding_message
from secagg.errors import ConfigError, EncodingOverflowError, ProtocolStateError, WireFormatError
from secagg.party import SERVER, Envelope, Holding, Inbound, Party, Revealed
from secagg.protocol import Protocol, RoundSpec, ThreatModel
from secagg.wire import Payload, Reader, Writer

_DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass(frozen=True)
class PlaintextConfig:
    """``dtype``: how updates travel ('float32' or 'float64')."""

    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")


@dataclass(frozen=True)
class PlainUpdate(Payload):
    """A client's update in the clear.

    Layout: f64 weight (sample count; 1 for FedSGD) | array values (f4 or f8).
    """

    msg_type: ClassVar[int] = 1
    weight: float
    values: np.ndarray

    def to_bytes(self) -> bytes:
        return Writer().f64(self.weight).array(self.values).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> PlainUpdate:
        reader = Reader(data, "PlainUpdate")
        weight = reader.f64("weight")
        values = reader.array("values")
        reader.done()
        if values.dtype.kind != "f":
            raise WireFormatError(f"PlainUpdate: expected float values, got {values.dtype}")
        return cls(weight, values)


class PlainClient(Party):
    role = "client"

    def __init__(self, party_id: int, update: np.ndarray, weight: float, dtype: str) -> None:
        super().__init__(party_id)
        self._update = update
        self._weight = weight
        self._dtype = _DTYPES[dtype]

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage == "upload":
            with np.errstate(over="ignore"):
                values = self._update.astype(self._dtype, copy=False)
            # After the cast: a finite float64 beyond float32's range becomes Inf there.
            if not np.all(np.isfinite(values)):
                raise EncodingOverflowError(
                    f"{self.name}: expected finite {self._dtype.__name__} values, got NaN or Inf"
                )
            sent = [Envelope(SERVER, PlainUpdate(self._weight, values))]
            if self.binding:
                sent.append(Envelope(SERVER, binding_message(self.binding)))
            return sent
        return []


class PlainServer(Party):
    role = "server"

    def __init__(self, spec: RoundSpec, weighted: bool) -> None:
        super().__init__(SERVER)
        self._spec = spec
        self._weighted = weighted
        self._revealed: Revealed | None = None
        self.left_out: dict[int, str] = {}
        # Checked by the server itself: it binds an honest server only (the plaintext
        # baseline protects nothing from the server anyway).
        self.binding_ledger = BindingLedger("server")

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        if stage != "aggregate":
            return []
        inbox = self.binding_ledger.take(inbox)
        total = np.zeros(self._spec.n_params, dtype=np.float64)
        weight_sum = 0.0
        included = []
        for message in inbox:
            payload = message.payload
            if not isinstance(payload, PlainUpdate) or message.sender >= self._spec.n_clients:
                raise ProtocolStateError(f"server: unexpected {type(payload).__name__} from {message.sender}")
            problem = self._problem(payload)
            if problem:
                # A bad sender is left out like a dropout: the others' aggregate stands.
                self.left_out[message.sender] = problem
                continue
            weight = payload.weight if self._weighted else 1.0
            total += weight * payload.values
            weight_sum += weight
            included.append(message.sender)
        if not included:
            return []
        self.binding_ledger.require(included)
        aggregate = total / weight_sum if self._weighted else total
        self._revealed = Revealed(aggregate, tuple(sorted(included)))
        return []

    def _problem(self, payload: PlainUpdate) -> str:
        if payload.values.size != self._spec.n_params:
            return f"expected {self._spec.n_params} values, got {payload.values.size}"
        if not (np.isfinite(payload.weight) and payload.weight > 0):
            return f"expected a finite weight > 0, got {payload.weight}"
        if not np.all(np.isfinite(payload.values)):
            return "expected finite values, got NaN or Inf"
        return ""

    def output(self) -> Revealed | None:
        return self._revealed

    def holdings(self) -> list[Holding]:
        return [Holding("left_out", dict(self.left_out), secret=False)]


class _Plaintext(Protocol[PlaintextConfig]):
    wire_id = 1
    stages = ("upload", "aggregate")
    late_dropout_stage = "upload"
    payload_types = (PlainUpdate, ModelBinding)
    Config = PlaintextConfig
    is_baseline = True
    supports_binding = True
    # No keys: every node builds its own parties.
    provisioning = "local"
    state_types: ClassVar[tuple[type, ...]] = (PlainClient, PlainServer, BindingLedger)
    threat_model = ThreatModel(
        keys="none",
        server_sees="every client's update in the clear",
        collusion="none needed: the server alone learns every update",
        dropouts="any number; the aggregate is over the clients that sent",
        min_clients=1,
    )

    def make_parties(
        self, updates: Sequence[np.ndarray], weights: Sequence[float] | None, spec: RoundSpec
    ) -> list[Party]:
        weighted = self.aggregate_kind == "weighted_mean"
        parties: list[Party] = [
            PlainClient(
                i, u, float(weights[i]) if (weights is not None and weighted) else 1.0, self.config.dtype
            )
            for i, u in enumerate(updates)
        ]
        parties.append(PlainServer(spec, weighted))
        return parties

    def precision(self, *, n_clients: int, value_range: float) -> float:
        # One rounding to the wire dtype per value, then float64 arithmetic.
        eps = 2.0**-23 if self.config.dtype == "float32" else 2.0**-52
        per_value = value_range * eps / 2
        total = per_value * n_clients if self.aggregate_kind == "sum" else per_value
        return total + 1e-12 * n_clients * value_range


class PlaintextFedSGD(_Plaintext):
    """Clients send gradients in the clear; the server sums them."""

    name = "plaintext-fedsgd"
    aggregate_kind = "sum"
    summary = "gradients in the clear, summed"


class PlaintextFedAvg(_Plaintext):
    """Clients send weights and sample counts in the clear; the server averages."""

    name = "plaintext-fedavg"
    wire_id = 2
    aggregate_kind = "weighted_mean"
    summary = "weights in the clear, sample-weighted mean"
