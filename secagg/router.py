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
carry the same bytes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from secagg.errors import ConfigError, SecAggError
from secagg.party import Envelope, Inbound, Received, Rejected, View, party_name
from secagg.protocol import Protocol
from secagg.wire import HEADER_BYTES, decode_message, encode_message


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


@dataclass
class _Pending:
    raw: bytes
    stage: str


@dataclass
class Router:
    """Serialises, counts, checks, records and delivers the messages of one round."""

    protocol: Protocol
    round_id: int
    parties: Sequence[int]
    faults: Sequence[Fault] = ()
    transcript: list[TranscriptEntry] = field(default_factory=list)
    views: dict[int, View] = field(default_factory=dict)
    bytes_sent: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    bytes_received: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    decode_seconds: dict[tuple[int, str], float] = field(default_factory=lambda: defaultdict(float))

    def __post_init__(self) -> None:
        self._table = self.protocol.payload_table()
        self._queues: dict[int, list[_Pending]] = {p: [] for p in self.parties}
        self._seen: set[tuple[int, int, int, int]] = set()
        self._known = set(self.parties)
        stages = set(self.protocol.stages)
        for fault in self.faults:
            stage = fault.before_stage if isinstance(fault, Dropout) else fault.stage
            if stage not in stages:
                raise ConfigError(
                    f"fault {fault!r}: expected a stage of {self.protocol.name} "
                    f"({', '.join(self.protocol.stages)}), got {stage!r}"
                )

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
            self.bytes_sent[sender] += len(raw)
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
                self._record(item, recipient, None, False, "recipient dropped out")
                continue
            self.bytes_received[recipient] += len(item.raw)
            try:
                header, payload = decode_message(item.raw, self._table, protocol_id=self.protocol.wire_id)
                self._check(header.round_id, header.sender, header.recipient, recipient)
                key = (header.sender, header.recipient, header.msg_type, header.round_id)
                if key in self._seen:
                    raise _Refused(
                        f"duplicate {self.protocol.message_name(header.msg_type)} from "
                        f"{party_name(header.sender)} in round {header.round_id} (replay)"
                    )
                self._seen.add(key)
            except (SecAggError, _Refused) as exc:
                view.rejected.append(Rejected(stage, item.raw, str(exc)))
                self._record(item, recipient, None, False, str(exc))
                continue
            view.received.append(Received(item.stage, header, item.raw, payload))
            inbox.append(Inbound(header, payload))
            self._record(item, recipient, header.msg_type, True, "")
        if pending:
            self.decode_seconds[(recipient, stage)] += time.perf_counter() - started
        return inbox

    def _check(self, round_id: int, sender: int, addressed_to: int, recipient: int) -> None:
        if round_id != self.round_id:
            raise _Refused(
                f"expected round {self.round_id}, got round {round_id} (replay from another round)"
            )
        if addressed_to != recipient:
            raise _Refused(f"addressed to {party_name(addressed_to)}, delivered to {party_name(recipient)}")
        if sender not in self._known or sender == recipient:
            raise _Refused(f"unknown sender {party_name(sender)}")

    def _record(
        self, item: _Pending, recipient: int, msg_type: int | None, delivered: bool, note: str
    ) -> None:
        sender = int.from_bytes(item.raw[14:18], "big") if len(item.raw) >= HEADER_BYTES else -1
        if msg_type is None and len(item.raw) >= HEADER_BYTES:
            msg_type = int.from_bytes(item.raw[8:10], "big")
        self.transcript.append(
            TranscriptEntry(
                stage=item.stage,
                sender=sender,
                recipient=recipient,
                msg_type=msg_type if msg_type is not None else -1,
                message=self.protocol.message_name(msg_type) if msg_type is not None else "?",
                nbytes=len(item.raw),
                delivered=delivered,
                note=note,
            )
        )


class _Refused(Exception):
    """A message that is well formed but must not be delivered."""


def _flip(raw: bytes, offset: int | None) -> bytes:
    payload_len = max(1, len(raw) - HEADER_BYTES - 4)
    position = payload_len // 2 if offset is None else offset % payload_len
    index = min(HEADER_BYTES + position, len(raw) - 1)
    data = bytearray(raw)
    data[index] ^= 0xFF
    return bytes(data)
