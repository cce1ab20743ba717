"""The in-process router: every message crosses it as bytes.

The router serialises each envelope with the wire format, counts its bytes, checks it
on arrival (header, CRC, round, recipient, duplicates), records it in the recipient's
view and queues it for the recipient's next step. It is also where faults are
injected: a client that drops out before a stage, a corrupted message, a replayed
message, foreign bytes from another round. A message that fails the checks is
refused, recorded as such in the transcript and the recipient's view, and never
reaches the party, so a bad message cannot corrupt anyone else's state; the protocol
then treats its sender as having dropped out at that stage.

A transport for a real engine (Flower) can take the router's place: it only has to
carry the same bytes. The router's two reusable pieces are what such a transport calls
so that it checks and counts exactly as the router does: :class:`DeliveryChecks` (the
delivery checks for the parties one side hosts) and :class:`Ledger` (bytes per party and
the transcript, turned into the round's :class:`secagg.round.Costs`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from secagg.errors import ConfigError, SecAggError
from secagg.party import Envelope, Inbound, Received, Rejected, ViewRecorder, party_name
from secagg.protocol import Protocol
from secagg.wire import HEADER_BYTES, TRAILER_BYTES, decode_message, encode_message, peek_header

if TYPE_CHECKING:
    from secagg.round import Costs


@dataclass(frozen=True)
class Dropout:
    """``party`` stops before ``stage``: it sends nothing from then on."""

    party: int
    before_stage: str


@dataclass(frozen=True)
class Corrupt:
    """Flip one byte of every message ``sender`` sends during ``stage``.

    ``offset`` counts into the payload (negative from its end); the default hits its
    middle.
    """

    sender: int
    stage: str
    offset: int | None = None


@dataclass(frozen=True)
class Replay:
    """Deliver every message ``sender`` sends during ``stage`` a second time."""

    sender: int
    stage: str


@dataclass(frozen=True)
class Inject:
    """Deliver ``raw`` bytes to ``recipient`` as if sent during ``stage`` (e.g. an old round's)."""

    raw: bytes
    recipient: int
    stage: str


Fault = Dropout | Corrupt | Replay | Inject


@dataclass(frozen=True)
class TranscriptEntry:
    """One message on the wire."""

    stage: str
    sender: int
    recipient: int
    msg_type: int
    message: str
    nbytes: int
    delivered: bool
    note: str = ""


class Refused(SecAggError):
    """A message that is well formed but must not be delivered (another round's, a
    replay, misaddressed, from an unknown sender), or one that does not decode."""


@dataclass
class DeliveryChecks:
    """The router's delivery checks, for the parties one side (the router, a node, a
    server process) hosts: header and CRC, protocol id, round, recipient, known sender,
    one message per (sender, recipient, type) per round.

    ``seen`` holds (sender, recipient, type, round) of every accepted message; a side
    that keeps it between calls refuses a replay across them too.
    """

    protocol: Protocol[Any]
    round_id: int
    known: frozenset[int]
    seen: set[tuple[int, int, int, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._table = self.protocol.payload_table()

    def accept(self, raw: bytes, recipient: int) -> Inbound:
        """Decode ``raw`` for ``recipient`` or raise :class:`Refused` saying why."""
        try:
            header, payload = decode_message(raw, self._table, protocol_id=self.protocol.wire_id)
        except SecAggError as exc:
            raise Refused(str(exc)) from exc
        if header.round_id != self.round_id:
            raise Refused(
                f"expected round {self.round_id}, got round {header.round_id} (replay from another round)"
            )
        if header.recipient != recipient:
            raise Refused(
                f"addressed to {party_name(header.recipient)}, delivered to {party_name(recipient)}"
            )
        if header.sender not in self.known or header.sender == recipient:
            raise Refused(f"unknown sender {party_name(header.sender)}")
        key = (header.sender, header.recipient, header.msg_type, header.round_id)
        if key in self.seen:
            raise Refused(
                f"duplicate {self.protocol.message_name(header.msg_type)} from "
                f"{party_name(header.sender)} in round {header.round_id} (replay)"
            )
        self.seen.add(key)
        return Inbound(header, payload)


@dataclass
class Ledger:
    """Bytes and transcript of one round: what was sent, what was delivered or refused.

    A message counts towards its sender's ``bytes_sent`` when sent (:meth:`sent`) and
    towards its recipient's ``bytes_received`` when it reaches a live recipient, refused
    or not (:meth:`delivered`); each delivery attempt is one transcript entry.
    """

    protocol: Protocol[Any]
    transcript: list[TranscriptEntry] = field(default_factory=list)
    bytes_sent: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    bytes_received: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def sent(self, sender: int, raw: bytes) -> None:
        self.bytes_sent[sender] += len(raw)

    def delivered(
        self, stage: str, recipient: int, raw: bytes, *, accepted: bool, note: str = "", count: bool = True
    ) -> None:
        """Record a delivery; ``count=False`` for a recipient that dropped out (no bytes reach it)."""
        if count:
            self.bytes_received[recipient] += len(raw)
        header = peek_header(raw)
        msg_type = header.msg_type if header is not None else -1
        self.transcript.append(
            TranscriptEntry(
                stage=stage,
                sender=header.sender if header is not None else -1,
                recipient=recipient,
                msg_type=msg_type,
                message=self.protocol.message_name(msg_type) if header is not None else "?",
                nbytes=len(raw),
                delivered=accepted,
                note=note,
            )
        )

    def costs(
        self,
        *,
        n_clients: int,
        n_params: int,
        seconds: Mapping[int, Mapping[str, float]],
        setup_seconds: float = 0.0,
    ) -> Costs:
        """The round's :class:`secagg.round.Costs` from this ledger and the time per party."""
        from secagg.round import Costs

        return Costs(
            seconds={pid: dict(per) for pid, per in seconds.items()},
            bytes_sent=dict(self.bytes_sent),
            bytes_received=dict(self.bytes_received),
            n_clients=n_clients,
            n_params=n_params,
            offline_stages=self.protocol.offline_stages,
            finalize_stages=self.protocol.finalize_stages,
            server_ids=self.protocol.server_ids,
            setup_seconds=setup_seconds,
        )


@dataclass
class _Pending:
    raw: bytes
    stage: str


@dataclass
class Router:
    """Serialises, counts, checks, records and delivers the messages of one round."""

    protocol: Protocol[Any]
    round_id: int
    parties: Sequence[int]
    faults: Sequence[Fault] = ()
    views: dict[int, ViewRecorder] = field(default_factory=dict)
    decode_seconds: dict[tuple[int, str], float] = field(default_factory=lambda: defaultdict(float))

    def __post_init__(self) -> None:
        self._queues: dict[int, list[_Pending]] = {p: [] for p in self.parties}
        self._known = frozenset(self.parties)
        self.checks = DeliveryChecks(self.protocol, self.round_id, self._known)
        self.ledger = Ledger(self.protocol)
        for pid in self.parties:
            self.views.setdefault(pid, ViewRecorder(pid, "party"))
        stages = set(self.protocol.stages)
        for fault in self.faults:
            stage = fault.before_stage if isinstance(fault, Dropout) else fault.stage
            if stage not in stages:
                raise ConfigError(
                    f"fault {fault!r}: expected a stage of {self.protocol.name} "
                    f"({', '.join(self.protocol.stages)}), got {stage!r}"
                )

    @property
    def transcript(self) -> list[TranscriptEntry]:
        return self.ledger.transcript

    @property
    def bytes_sent(self) -> dict[int, int]:
        return self.ledger.bytes_sent

    @property
    def bytes_received(self) -> dict[int, int]:
        return self.ledger.bytes_received

    def dropped(self, party: int, stage: str) -> bool:
        """Has ``party`` dropped out by ``stage``?"""
        order = self.protocol.stages.index(stage)
        return any(
            isinstance(f, Dropout)
            and f.party == party
            and self.protocol.stages.index(f.before_stage) <= order
            for f in self.faults
        )

    def send(self, sender: int, stage: str, envelopes: Iterable[Envelope]) -> None:
        """Serialise and queue what ``sender`` sent during ``stage``."""
        for envelope in envelopes:
            if envelope.recipient not in self._known:
                raise ConfigError(f"{party_name(sender)} addressed unknown party {envelope.recipient:#x}")
            raw = encode_message(
                protocol_id=self.protocol.wire_id,
                round_id=self.round_id,
                sender=sender,
                recipient=envelope.recipient,
                payload=envelope.payload,
            )
            self.ledger.sent(sender, raw)
            for fault in self.faults:
                if isinstance(fault, Corrupt) and fault.sender == sender and fault.stage == stage:
                    raw = _flip(raw, fault.offset)
            copies = 1 + sum(
                isinstance(f, Replay) and f.sender == sender and f.stage == stage for f in self.faults
            )
            for _ in range(copies):
                self._queues[envelope.recipient].append(_Pending(raw, stage))

    def inject(self, stage: str) -> None:
        """Queue the foreign bytes of every :class:`Inject` fault of ``stage``."""
        for fault in self.faults:
            if isinstance(fault, Inject) and fault.stage == stage:
                if fault.recipient not in self._known:
                    raise ConfigError(f"inject: unknown recipient {fault.recipient:#x}")
                self._queues[fault.recipient].append(_Pending(fault.raw, stage))

    def deliver(self, recipient: int, stage: str, *, alive: bool) -> list[Inbound]:
        """Check and hand over what waits for ``recipient``; record it in its view."""
        # Only what was sent in earlier stages: a message sent during this stage waits.
        queue = self._queues[recipient]
        pending = [item for item in queue if item.stage != stage]
        self._queues[recipient] = [item for item in queue if item.stage == stage]
        view = self.views[recipient]
        inbox: list[Inbound] = []
        started = time.perf_counter()
        for item in pending:
            if not alive:
                self.ledger.delivered(
                    item.stage, recipient, item.raw, accepted=False, note="recipient dropped out", count=False
                )
                continue
            try:
                inbound = self.checks.accept(item.raw, recipient)
            except Refused as exc:
                view.rejected.append(Rejected(stage, item.raw, str(exc)))
                self.ledger.delivered(item.stage, recipient, item.raw, accepted=False, note=str(exc))
                continue
            view.received.append(Received(item.stage, inbound.header, item.raw, inbound.payload))
            inbox.append(inbound)
            self.ledger.delivered(item.stage, recipient, item.raw, accepted=True)
        if pending:
            self.decode_seconds[(recipient, stage)] += time.perf_counter() - started
        return inbox


def _flip(raw: bytes, offset: int | None) -> bytes:
    payload_len = max(1, len(raw) - HEADER_BYTES - TRAILER_BYTES)
    position = payload_len // 2 if offset is None else offset % payload_len
    index = min(HEADER_BYTES + position, len(raw) - 1)
    data = bytearray(raw)
    data[index] ^= 0xFF
    return bytes(data)
