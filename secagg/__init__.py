"""secagg core: encodings, PRF, wire format, the party/router/view seam, the round runner
and observations (what an observer can take from a view).

This package never imports torch, phe or tenseal; protocols live in ``protocols``,
attacks in ``leakage``.
"""

from secagg.encoding import FixedPoint
from secagg.errors import (
    ConfigError,
    EncodingOverflowError,
    IntegrityError,
    KeyMismatchError,
    NotEnoughClientsError,
    ProtocolStateError,
    SecAggError,
    UnknownProtocolError,
    WireFormatError,
)
from secagg.flat import FlatSpec, flatten, unflatten
from secagg.observe import Observation
from secagg.party import (
    KEY_HOLDER,
    SERVER,
    SERVER_B,
    Envelope,
    Holding,
    Inbound,
    Party,
    Revealed,
    View,
    ViewRecorder,
)
from secagg.protocol import Protocol, RoundSpec, ThreatModel, observe_round
from secagg.round import Costs, RoundResult, reference_aggregate, run_round
from secagg.router import Corrupt, Dropout, Inject, Replay

__version__ = "0.1.0"

__all__ = [
    "KEY_HOLDER",
    "SERVER",
    "SERVER_B",
    "ConfigError",
    "Corrupt",
    "Costs",
    "Dropout",
    "EncodingOverflowError",
    "Envelope",
    "FixedPoint",
    "FlatSpec",
    "Holding",
    "Inbound",
    "Inject",
    "IntegrityError",
    "KeyMismatchError",
    "NotEnoughClientsError",
    "Observation",
    "Party",
    "Protocol",
    "ProtocolStateError",
    "Replay",
    "Revealed",
    "RoundResult",
    "RoundSpec",
    "SecAggError",
    "ThreatModel",
    "UnknownProtocolError",
    "View",
    "ViewRecorder",
    "WireFormatError",
    "flatten",
    "observe_round",
    "reference_aggregate",
    "run_round",
    "unflatten",
]
