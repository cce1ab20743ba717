"""Parties, envelopes and views: the state-machine half of the seam.

A protocol is a few :class:`Party` subclasses. At each stage of a round the runner
hands every live party the messages delivered to it since its last step; the party
returns the :class:`Envelope` objects it sends. No party calls another: messages go
through the router as bytes.

A :class:`View` is what one party could see: every message it received (bytes and the
decoded payload), what the router refused to deliver to it, and what it holds at the
end (the revealed aggregate, public keys). The server's view is the attacker's whole
input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from secagg.wire import Header, Payload

# Party ids: clients are 0 .. n-1; the fixed roles sit at the top of the u32 space.
SERVER = 0xFFFF_FF00
SERVER_B = 0xFFFF_FF01
KEY_HOLDER = 0xFFFF_FF02
MAX_CLIENTS = 0xFFFF_0000

_ROLE_NAMES = {SERVER: "server", SERVER_B: "server-b", KEY_HOLDER: "key-holder"}


def party_name(party_id: int) -> str:
    """A readable name: ``client-3``, ``server``, ``server-b``, ``key-holder``."""
    if party_id in _ROLE_NAMES:
        return _ROLE_NAMES[party_id]
    if 0 <= party_id < MAX_CLIENTS:
        return f"client-{party_id}"
    return f"party-{party_id:#x}"


def is_client(party_id: int) -> bool:
    return 0 <= party_id < MAX_CLIENTS


@dataclass(frozen=True)
class Envelope:
    """A message a party sends: recipient and payload (the router fills in the rest)."""

    recipient: int
    payload: Payload


@dataclass(frozen=True)
class Inbound:
    """A message delivered to a party: the checked header and the decoded payload."""

    header: Header
    payload: Payload

    @property
    def sender(self) -> int:
        return self.header.sender


@dataclass(frozen=True)
class Revealed:
    """What a party learns at the end of a round: the aggregate and whose inputs it holds."""

    aggregate: np.ndarray
    included: tuple[int, ...]


class Party:
    """Base of every protocol party: a state machine driven stage by stage."""

    role: str = "party"

    def __init__(self, party_id: int) -> None:
        self.party_id = party_id

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        """React to this stage's delivered messages; return the messages to send."""
        raise NotImplementedError

    def output(self) -> Revealed | None:
        """The aggregate this party learned, if it learns one."""
        return None

    def holdings(self) -> dict[str, object]:
        """What the party holds at the end beyond its messages (public keys, contexts).

        Tests inspect a server's holdings to prove it never held a secret key, so a
        party reports every key-like object it has, secret or not.
        """
        return {}

    @property
    def name(self) -> str:
        return party_name(self.party_id)


@dataclass
class Received:
    stage: str
    header: Header
    raw: bytes
    payload: Payload


@dataclass
class Rejected:
    stage: str
    raw: bytes
    reason: str


@dataclass
class View:
    """Everything one party saw in a round."""

    party_id: int
    role: str
    received: list[Received] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    revealed: Revealed | None = None
    holdings: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return party_name(self.party_id)

    def raw_bytes(self) -> bytes:
        """All bytes this party received, concatenated (for searching)."""
        return b"".join(r.raw for r in self.received) + b"".join(r.raw for r in self.rejected)

    def from_sender(self, sender: int) -> list[Received]:
        return [r for r in self.received if r.header.sender == sender]
