"""Parties, envelopes and views: the state-machine half of the seam.

A protocol is a few :class:`Party` subclasses. At each stage of a round the runner
hands every live party the messages delivered to it since its last step; the party
returns the :class:`Envelope` objects it sends. No party calls another: messages go
through the router as bytes.

A :class:`View` is what one party could see: every message it received (bytes and the
decoded payload), what the router refused to deliver to it, and what it holds at the
end (the revealed aggregate, and its :class:`Holding` list: keys and contexts, each
declared secret or not by the party that holds it). The server's view is the attacker's
whole input. While a round runs, the router (or a transport) fills a
:class:`ViewRecorder`; when the round ends it is frozen into a :class:`View`, whose
fields are tuples, so nothing downstream (an observer, an attack) can add to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from secagg.errors import ConfigError
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


@dataclass(frozen=True, eq=False)
class Holding:
    """Something a party holds at the end of a round beyond its messages.

    ``secret`` is the holder's own declaration: true for anything whose disclosure
    breaks the protocol's guarantee for someone (a private key, a secret context, a
    seed, reconstructed secrets of other parties), false for public material (public
    keys, parameters, lists of ids). The holdings contract checks every server's secret
    holdings against :attr:`secagg.protocol.Protocol.server_secrets`.
    """

    name: str
    value: object
    secret: bool


@dataclass(frozen=True)
class Revealed:
    """What a party learns at the end of a round: the aggregate and whose inputs it holds."""

    aggregate: np.ndarray
    included: tuple[int, ...]


class Party:
    """Base of every protocol party: a state machine driven stage by stage."""

    role: str = "party"
    # The digest of the model a client trained on (secagg.binding); empty: unbound.
    binding: bytes = b""

    def __init__(self, party_id: int) -> None:
        self.party_id = party_id

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        """React to this stage's delivered messages; return the messages to send."""
        raise NotImplementedError

    def output(self) -> Revealed | None:
        """The aggregate this party learned, if it learns one."""
        return None

    def holdings(self) -> list[Holding]:
        """What the party holds at the end beyond its messages (keys, contexts, seeds).

        A party reports every key-like object it has, and says of each whether it is
        secret: the holdings contract proves from these that no server holds a secret
        its protocol does not declare, and a transport keeps secret holdings off the
        server side.
        """
        return []

    @property
    def name(self) -> str:
        return party_name(self.party_id)


@dataclass(frozen=True)
class Received:
    """A message delivered to a party: the stage it was sent in, its header, raw bytes, payload."""

    stage: str
    header: Header
    raw: bytes
    payload: Payload


@dataclass(frozen=True)
class Rejected:
    """Bytes the router (or a transport) refused to deliver, and why."""

    stage: str
    raw: bytes
    reason: str


@dataclass(frozen=True, eq=False)
class View:
    """Everything one party saw in a round, frozen when the round ended."""

    party_id: int
    role: str
    received: tuple[Received, ...] = ()
    rejected: tuple[Rejected, ...] = ()
    revealed: Revealed | None = None
    holdings: tuple[Holding, ...] = ()

    @property
    def name(self) -> str:
        return party_name(self.party_id)

    def raw_bytes(self) -> bytes:
        """All bytes this party received, concatenated (for searching)."""
        return b"".join(r.raw for r in self.received) + b"".join(r.raw for r in self.rejected)

    def from_sender(self, sender: int) -> list[Received]:
        return [r for r in self.received if r.header.sender == sender]

    def holding(self, name: str) -> object:
        """The value of the holding ``name``; ConfigError naming the holdings there are."""
        for item in self.holdings:
            if item.name == name:
                return item.value
        raise ConfigError(
            f"{self.name}: expected a holding named {name!r}, got {[h.name for h in self.holdings]}"
        )

    def secrets(self) -> tuple[str, ...]:
        """Names of the holdings this party declared secret."""
        return tuple(item.name for item in self.holdings if item.secret)


@dataclass
class ViewRecorder:
    """A view while the round runs: the router (or a transport) appends, :meth:`freeze` ends it."""

    party_id: int
    role: str
    received: list[Received] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def freeze(self, *, revealed: Revealed | None = None, holdings: Iterable[Holding] = ()) -> View:
        """The finished :class:`View`, with what the party revealed and holds at the end."""
        held = tuple(holdings)
        for item in held:
            if not isinstance(item, Holding):
                raise ConfigError(
                    f"{party_name(self.party_id)}: expected Holding entries, got {type(item).__name__}"
                )
        return View(
            self.party_id, self.role, tuple(self.received), tuple(self.rejected), revealed, held
        )
