"""Tests of the two-server protocol: exact sums, dropouts, tampering, replay, collusion."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocols
from protocols.two_server import (
    SEALED_SEED_BYTES,
    HeldSet,
    MaskedShare,
    MaskSum,
    SealedSeed,
    TwoServer,
    accumulate_mask,
    mask_label,
    mask_update,
)
from secagg.encoding import FixedPoint
from secagg.errors import (
    ConfigError,
    EncodingOverflowError,
    NotEnoughClientsError,
    WireFormatError,
)
from secagg.party import SERVER, SERVER_B, Envelope, Inbound, Party
from secagg.prf import expand
from secagg.protocol import RoundSpec
from secagg.round import RoundResult, reference_aggregate, run_round
from secagg.router import Dropout, Inject
from secagg.wire import HEADER_BYTES, decode_message, encode_message
from tests.conftest import make_updates

Edit = Callable[[list[Envelope]], list[Envelope]]


class _Edited(Party):
    """A party whose outgoing envelopes pass through ``edit`` (a faulty or hostile link)."""

    def __init__(self, inner: Party, edit: Edit) -> None:
        super().__init__(inner.party_id)
        self.role = inner.role
        self._inner = inner
        self._edit = edit

    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        return self._edit(self._inner.step(stage, inbox))


class _EditedTwoServer(TwoServer):
    edits: dict[int, Edit] = {}

    def make_parties(
        self, updates: Sequence[np.ndarray], weights: Sequence[float] | None, spec: RoundSpec
    ) -> list[Party]:
        parties = super().make_parties(updates, weights, spec)
        return [_Edited(p, self.edits[p.party_id]) if p.party_id in self.edits else p for p in parties]


def _only_to(server: int) -> Edit:
    return lambda envelopes: [e for e in envelopes if e.recipient == server]


def _exact_sum(updates: Sequence[np.ndarray], included: Sequence[int], codec: FixedPoint) -> np.ndarray:
    """The decoded ring sum of the included clients' encodings: what the protocol must equal bit for bit."""
    total = np.zeros(updates[0].size, dtype=codec.dtype)
    for i in included:
        total += codec.encode(updates[i])
    return codec.decode(total)


def _check_exact(result: RoundResult, updates: Sequence[np.ndarray], protocol: TwoServer) -> None:
    aggregate = result.unwrap()
    codec = protocol.config.codec()
    np.testing.assert_array_equal(aggregate, _exact_sum(updates, result.included, codec))
    reference = reference_aggregate(updates, result.included, kind="sum")
    bound = protocol.precision(n_clients=len(result.included), value_range=protocol.config.clip)
    assert float(np.max(np.abs(aggregate - reference))) <= bound


# --- the client kernel and wire format --------------------------------------------------------


@pytest.mark.parametrize("ring_bits", [8, 16, 32, 64])
@pytest.mark.parametrize("n", [0, 1, 1000, (1 << 15) + 7, 3 * (1 << 15)])
def test_mask_update_is_encode_minus_prf(ring_bits: int, n: int) -> None:
    codec = FixedPoint(ring_bits=ring_bits, frac_bits=min(20, ring_bits - 3), clip=2.0)
    update = np.random.default_rng(n).uniform(-2, 2, n)
    seed, label = bytes(range(32)), mask_label(3, 1)
    out = np.empty(n, dtype=codec.dtype)
    mask_update(update, codec, seed, label, out)
    mask = expand(seed, label, n, ring_bits=ring_bits)
    np.testing.assert_array_equal(out + mask, codec.encode(update))


@pytest.mark.parametrize("ring_bits", [16, 32, 64])
def test_accumulate_mask_adds_and_subtracts_the_prf_stream(ring_bits: int) -> None:
    n = 2 * (1 << 15) + 11
    dtype = FixedPoint(ring_bits=ring_bits, frac_bits=0).dtype
    start = np.random.default_rng(1).integers(0, 2**32, n).astype(dtype)
    total = start.copy()
    accumulate_mask(total, bytes(32), b"a")
    np.testing.assert_array_equal(total, start + expand(bytes(32), b"a", n, ring_bits=ring_bits))
    accumulate_mask(total, bytes(32), b"a", subtract=True)
    np.testing.assert_array_equal(total, start)


def test_mask_update_checks_range_and_output() -> None:
    codec = FixedPoint(clip=1.0)
    update = np.zeros(70_000)
    update[69_999] = 1.5  # in the last block: every block is checked
    with pytest.raises(EncodingOverflowError, match="within"):
        mask_update(update, codec, bytes(32), b"l", np.empty(70_000, dtype=np.uint32))
    with pytest.raises(ConfigError, match="expected 3 elements of uint32"):
        mask_update(np.zeros(3), codec, bytes(32), b"l", np.empty(3, dtype=np.uint64))


def test_prebuilt_share_has_the_documented_layout() -> None:
    share = MaskedShare.allocate(5, 32)
    share.values[:] = [1, 2, 3, 0xFFFFFFFF, 0]
    wire = bytes(share.to_bytes())
    assert wire == MaskedShare(np.array([1, 2, 3, 0xFFFFFFFF, 0], dtype=np.uint32)).to_bytes()
    assert len(wire) == 9 + 5 * 4
    np.testing.assert_array_equal(MaskedShare.from_bytes(wire).values, share.values)


def test_payload_round_trips_and_hostile_bytes() -> None:
    held = HeldSet((0, 3, 9))
    assert HeldSet.from_bytes(held.to_bytes()) == held
    answer = MaskSum((1, 2), np.arange(4, dtype=np.uint64))
    decoded = MaskSum.from_bytes(answer.to_bytes())
    assert decoded.clients == (1, 2)
    np.testing.assert_array_equal(decoded.mask_sum, answer.mask_sum)
    with pytest.raises(WireFormatError, match="strictly increasing"):
        HeldSet.from_bytes(HeldSet((3, 3)).to_bytes()[:9] + (3).to_bytes(4, "little") * 2)
    with pytest.raises(WireFormatError):
        SealedSeed.from_bytes(bytes(SEALED_SEED_BYTES - 1))
    with pytest.raises(WireFormatError, match="trailing"):
        SealedSeed.from_bytes(bytes(SEALED_SEED_BYTES + 1))
    with pytest.raises(WireFormatError, match="expected <u1/<u2/<u4/<u8"):
        MaskedShare.from_bytes(MaskedShare(np.zeros(3, dtype=np.float32)).to_bytes())
    with pytest.raises(WireFormatError):
        MaskedShare.from_bytes(MaskedShare.allocate(4, 32).to_bytes()[:-1])


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="min_clients"):
        TwoServer(min_clients=1)
    with pytest.raises(ConfigError, match="ring_bits"):
        TwoServer(ring_bits=40)
    with pytest.raises(EncodingOverflowError):
        TwoServer(ring_bits=32, frac_bits=31, clip=2.0)
    # The default 16 fractional bits overflow a 16-bit ring: the error says what fits.
    with pytest.raises(EncodingOverflowError, match="at most 14 fractional bits fit, or use ring_bits=32"):
        TwoServer(ring_bits=16)


# --- rounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("ring_bits", "frac_bits"), [(32, 16), (64, 40)])
def test_exact_sum_of_random_updates(ring_bits: int, frac_bits: int) -> None:
    protocol = TwoServer(ring_bits=ring_bits, frac_bits=frac_bits, clip=3.0)
    updates = make_updates(6, 1000, value_range=3.0, seed=ring_bits)
    result = run_round(protocol, updates, round_id=7)
    assert result.included == tuple(range(6))
    _check_exact(result, updates, protocol)


def test_upload_is_four_bytes_per_parameter_plus_constant() -> None:
    n = 2000
    result = run_round(TwoServer(), make_updates(3, n, seed=1))
    frame = HEADER_BYTES + 4
    for client in range(3):
        assert result.costs.bytes_sent[client] == (frame + 9 + 4 * n) + (frame + SEALED_SEED_BYTES)
        assert result.costs.bytes_received.get(client, 0) == 0


def test_sixteen_bit_ring_uploads_two_bytes_per_parameter_and_sums_exactly() -> None:
    n = 2000
    protocol = TwoServer(ring_bits=16, frac_bits=8, clip=1.0)
    updates = make_updates(5, n, seed=4)
    result = run_round(protocol, updates)
    _check_exact(result, updates, protocol)
    frame = HEADER_BYTES + 4
    for client in range(5):
        assert result.costs.bytes_sent[client] == (frame + 9 + 2 * n) + (frame + SEALED_SEED_BYTES)
    share = next(r.payload for r in result.views[SERVER].received if isinstance(r.payload, MaskedShare))
    assert share.values.dtype == np.dtype("<u2")


def test_packed_ring_uploads_k_bits_per_parameter_and_sums_exactly() -> None:
    """Z_2^12: shares travel bit-packed (1.5 B/param), only the low 12 bits of each value,
    the mask sum too; the round is exact and a share of another width is left out."""
    n = 2001
    protocol = TwoServer(ring_bits=12, frac_bits=6, clip=1.0)
    updates = make_updates(4, n, seed=9)
    result = run_round(protocol, updates)
    _check_exact(result, updates, protocol)
    frame = HEADER_BYTES + 4
    packed = 10 + (12 * n + 7) // 8
    for client in range(4):
        assert result.costs.bytes_sent[client] == (frame + packed) + (frame + SEALED_SEED_BYTES)
    shares = [r.payload for r in result.views[SERVER].received if isinstance(r.payload, MaskedShare)]
    assert all(s.bits == 12 and int(s.values.max()) < 2**12 for s in shares)
    answer = next(r.payload for r in result.views[SERVER].received if isinstance(r.payload, MaskSum))
    assert answer.bits == 12 and int(answer.mask_sum.max()) < 2**12
    share = MaskedShare(np.arange(6, dtype=np.uint16) * 1000, None, 12)
    decoded = MaskedShare.from_bytes(share.to_bytes())
    assert decoded.bits == 12 and decoded.values.tolist() == [0, 1000, 2000, 3000, 4000, 5000 % 4096]

    def whole_width(envelopes: list[Envelope]) -> list[Envelope]:
        out = []
        for e in envelopes:
            if isinstance(e.payload, MaskedShare):  # the same values, sent as 16-bit words
                e = dataclasses.replace(e, payload=MaskedShare(e.payload.values.copy()))
            out.append(e)
        return out

    edited = _EditedTwoServer(protocol.config)
    edited.edits = {0: whole_width}
    result = run_round(edited, updates)
    assert result.included == (1, 2, 3)
    rejected = result.views[SERVER].holding("rejected_clients")
    assert isinstance(rejected, dict) and "Z_2^12" in rejected[0] and "Z_2^16" in rejected[0]


def test_small_ring_budget_is_refused_with_what_fits() -> None:
    # 100 clients of |x| <= 1 in Z_2^16 take at most 8 fractional bits.
    with pytest.raises(EncodingOverflowError, match="frac_bits <= 8"):
        run_round(TwoServer(ring_bits=16, frac_bits=9, clip=1.0), make_updates(100, 4, seed=5))


def test_modular_ring_reveals_the_sum_mod_2_to_the_k() -> None:
    """Residues of Z_2^16 (what distributed DP sends): 6 clients near +-2^15 wrap the ring
    several times; the revealed sum is their integer sum mod 2^16, as a signed residue."""
    protocol = TwoServer(ring_bits=16, frac_bits=0, clip=2.0**15, modular=True)
    rng = np.random.default_rng(6)
    updates = [rng.integers(-(2**15), 2**15, 300).astype(np.float64) for _ in range(6)]
    updates[0][:2] = [2.0**15, -(2.0**15)]  # both ends of the accepted range
    result = run_round(protocol, updates)
    total = np.sum(updates, axis=0).astype(np.int64)
    np.testing.assert_array_equal(result.unwrap(), (total + 2**15) % 2**16 - 2**15)


def test_bit_budget_is_checked_before_the_round() -> None:
    protocol = TwoServer(frac_bits=29, clip=1.0)  # 2^29 per value: 3 clients fit in 2^31 - 1, 4 do not
    assert run_round(protocol, make_updates(3, 10, seed=2)).error is None
    with pytest.raises(EncodingOverflowError, match="at most 3 clients fit"):
        run_round(protocol, make_updates(4, 10, seed=2))


link = st.sampled_from(["both", "none", "a-only", "b-only"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(links=st.lists(link, min_size=2, max_size=8), min_clients=st.integers(2, 4), seed=st.integers(0, 99))
def test_any_dropout_pattern_gives_the_exact_sum_of_the_agreed_clients(
    links: list[str], min_clients: int, seed: int
) -> None:
    protocol = _EditedTwoServer(min_clients=min_clients)
    protocol.edits = {
        i: {"none": _only_to(-1), "a-only": _only_to(SERVER), "b-only": _only_to(SERVER_B)}[kind]
        for i, kind in enumerate(links)
        if kind != "both"
    }
    updates = make_updates(len(links), 50, seed=seed)
    result = run_round(protocol, updates, round_id=seed)
    both = tuple(i for i, kind in enumerate(links) if kind == "both")
    if len(both) < min_clients:
        assert isinstance(result.error, NotEnoughClientsError)
        assert result.aggregate is None
        assert result.views[SERVER].revealed is None
        return
    assert result.included == both
    _check_exact(result, updates, protocol)


def test_client_reaching_one_server_cannot_corrupt_the_sum() -> None:
    # Client 0 reaches A only (its share has no mask at B), client 1 reaches B only
    # (its mask has no share at A): both are left out and the rest sum exactly.
    protocol = _EditedTwoServer()
    protocol.edits = {0: _only_to(SERVER), 1: _only_to(SERVER_B)}
    updates = make_updates(4, 300, seed=5)
    result = run_round(protocol, updates)
    assert result.included == (2, 3)
    _check_exact(result, updates, protocol)


def test_minimum_clients_refusal() -> None:
    updates = make_updates(3, 20, seed=6)
    result = run_round(TwoServer(), updates, faults=[Dropout(0, "upload"), Dropout(1, "upload")])
    assert isinstance(result.error, NotEnoughClientsError)
    assert "expected at least 2" in str(result.error)
    assert result.aggregate is None and result.views[SERVER].revealed is None
    # A stricter minimum refuses a sum of two.
    result = run_round(TwoServer(min_clients=3), updates, faults=[Dropout(0, "upload")])
    assert isinstance(result.error, NotEnoughClientsError)
    assert run_round(TwoServer(min_clients=3), updates).error is None


def _left_out_by_b(result: RoundResult, client: int, updates: list[np.ndarray]) -> None:
    """B named ``client`` as rejected, both servers left it out, the others' sum is exact."""
    assert result.error is None, result.error
    assert client not in result.included
    rejected = result.views[SERVER_B].holding("rejected_clients")
    assert isinstance(rejected, dict) and "client-" + str(client) in rejected[client]
    reference = reference_aggregate(updates, result.included, kind="sum")
    bound = result.instance.precision(n_clients=result.n_clients, value_range=1.0)
    assert float(np.max(np.abs(result.unwrap() - reference))) <= bound


def test_a_tampered_sealed_seed_leaves_its_sender_out() -> None:
    def tamper(envelopes: list[Envelope]) -> list[Envelope]:
        edited = []
        for envelope in envelopes:
            payload = envelope.payload
            if isinstance(payload, SealedSeed):
                flipped = bytearray(payload.sealed)
                flipped[40] ^= 0x01  # inside the ciphertext; the CRC is recomputed on send
                payload = SealedSeed(bytes(flipped))
            edited.append(Envelope(envelope.recipient, payload))
        return edited

    protocol = _EditedTwoServer()
    protocol.edits = {1: tamper}
    updates = make_updates(3, 20, seed=7)
    # It used to abort the round (IntegrityError at B): one bad client stopped everyone.
    _left_out_by_b(run_round(protocol, updates), 1, updates)


def _reheader(raw: bytes, protocol: TwoServer, round_id: int) -> bytes:
    header, payload = decode_message(raw, protocol.payload_table(), protocol_id=protocol.wire_id)
    return encode_message(
        protocol_id=protocol.wire_id,
        round_id=round_id,
        sender=header.sender,
        recipient=header.recipient,
        payload=payload,
    )


def test_replay_from_a_previous_round_is_rejected() -> None:
    protocol = TwoServer()  # one B key across rounds, as in a deployment
    updates = make_updates(4, 30, seed=8)
    old = run_round(protocol, updates, round_id=1)
    old_seed = next(r.raw for r in old.views[SERVER_B].received if r.header.sender == 0)
    old_share = next(r.raw for r in old.views[SERVER].received if r.header.sender == 0)
    # Client 0 is silent in round 2; an attacker replays its round-1 messages.
    silent = Dropout(0, "upload")
    # As sent: the router refuses the other round's header.
    verbatim = run_round(
        protocol,
        updates,
        round_id=2,
        faults=[silent, Inject(old_seed, SERVER_B, "upload"), Inject(old_share, SERVER, "upload")],
    )
    assert sum("another round" in e.note for e in verbatim.transcript) == 2
    assert verbatim.included == (1, 2, 3)
    # Re-headed with a valid CRC: the sealed seed's associated data still names round 1.
    forged = run_round(
        protocol,
        updates,
        round_id=2,
        faults=[
            silent,
            Inject(_reheader(old_seed, protocol, 2), SERVER_B, "upload"),
            Inject(_reheader(old_share, protocol, 2), SERVER, "upload"),
        ],
    )
    _left_out_by_b(forged, 0, updates)


def test_a_seed_from_an_earlier_session_does_not_open_when_round_numbers_restart() -> None:
    # B keeps its key across sessions and the federation restarts at round 1: before the
    # session nonce, client 0's old (share, seed) pair replayed under the same header
    # opened, and the sum carried its *old* input (a server with colluding peers reads it).
    first = TwoServer()
    private, public = first._server_b_private, first.server_b_public_key
    updates = make_updates(4, 30, seed=18)
    old = run_round(first, updates, round_id=1)
    old_seed = next(r.raw for r in old.views[SERVER_B].received if r.header.sender == 0)
    old_share = next(r.raw for r in old.views[SERVER].received if r.header.sender == 0)
    second = first.with_server_b_key(private, public)
    assert second.server_b_public_key == public and second.session_nonce != first.session_nonce
    fresh = make_updates(4, 30, seed=19)
    replayed = run_round(
        second,
        fresh,
        round_id=1,
        faults=[
            Dropout(0, "upload"),
            Inject(old_seed, SERVER_B, "upload"),
            Inject(old_share, SERVER, "upload"),
        ],
    )
    _left_out_by_b(replayed, 0, fresh)
    # Every new session under the same key draws its own nonce.
    assert second.with_server_b_key(private, public).session_nonce != second.session_nonce


def test_servers_alone_see_no_update() -> None:
    updates = [np.zeros(4000), np.full(4000, 0.5)]
    result = run_round(TwoServer(), updates)
    for received in result.views[SERVER].received:
        if isinstance(received.payload, MaskedShare):
            share = received.payload.values.astype(np.float64)
            # A constant update masked: its share spreads over the whole ring.
            assert abs(share.mean() / 2**32 - 0.5) < 0.02
            assert share.std() / 2**32 > 0.25
    b_types = {type(r.payload) for r in result.views[SERVER_B].received}
    assert b_types == {SealedSeed, HeldSet}
    # B's only arrays are A's client ids: nothing that depends on an update.
    for received in result.views[SERVER_B].received:
        assert not received.payload.arrays() or isinstance(received.payload, HeldSet)


def test_colluding_servers_recover_every_update() -> None:
    """A's share plus the seed B opens gives each client's update, to the codec's precision."""
    protocol = TwoServer()
    updates = make_updates(3, 500, seed=9)
    result = run_round(protocol, updates, round_id=4)
    pooled = protocol.collude(result.server_views(), result.spec)
    assert [o.clients for o in pooled] == [(0,), (1,), (2,)]
    codec = protocol.codec_for(3)
    for observation, update in zip(pooled, updates, strict=True):
        assert observation.observer == "colluding" and observation.kind == "colluding"
        assert observation.vector is not None
        assert float(np.max(np.abs(observation.vector - update))) <= codec.error_bound
    # Either server alone recovers nothing: collusion needs both views.
    assert protocol.collude({SERVER: result.views[SERVER]}, result.spec) == []
    # The round's observations carry the same pooled reconstructions.
    from_round = [o for o in result.observations() if o.observer == "colluding"]
    assert len(from_round) == len(pooled)
    for a, b in zip(from_round, pooled, strict=True):
        assert a.vector is not None and b.vector is not None
        assert a.clients == b.clients and np.array_equal(a.vector, b.vector)


def test_registered_and_cli_shaped_config() -> None:
    assert "two-server" in protocols.available()
    cls = protocols.get("two-server")
    assert cls.wire_id == 30 and cls.server_ids == (SERVER, SERVER_B)
    protocol = protocols.create("two-server", clip=2.0, ring_bits=64, frac_bits=32)
    assert dataclasses.asdict(protocol.config)["clip"] == 2.0
    assert protocol.precision(n_clients=10, value_range=2.0) == pytest.approx(10 * 2.0**-33, rel=1e-3)


@pytest.mark.parametrize("what", ["short share", "seed to A", "share to B"])
def test_a_client_sending_a_malformed_or_misaddressed_share_is_left_out(what: str) -> None:
    # Each used to raise ProtocolStateError in A's or B's collection and end the round.
    def edit(envelopes: list[Envelope]) -> list[Envelope]:
        if not envelopes:
            return envelopes
        share = next(e for e in envelopes if e.recipient == SERVER)
        seed = next(e for e in envelopes if e.recipient == SERVER_B)
        if what == "short share":
            values = cast(MaskedShare, share.payload).values[:-1]
            return [Envelope(SERVER, MaskedShare(values)), seed]
        if what == "seed to A":
            return [Envelope(SERVER, seed.payload), seed]
        return [share, Envelope(SERVER_B, share.payload)]

    protocol = _EditedTwoServer()
    protocol.edits = {2: edit}
    updates = make_updates(4, 20, seed=11)
    result = run_round(protocol, updates)
    assert result.error is None, result.error
    assert result.included == (0, 1, 3)
    rejecting = SERVER_B if what == "share to B" else SERVER
    assert 2 in cast(dict, result.views[rejecting].holding("rejected_clients"))
    codec = protocol.codec_for(4)
    assert np.array_equal(result.unwrap(), _exact_sum(updates, (0, 1, 3), codec))
