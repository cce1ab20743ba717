"""The ``secagg`` pairwise-masking protocol (Bonawitz et al. 2017, SecAgg+ option):
exact sums, dropouts at every stage, tampered and replayed shares, the minimum-clients
refusal, and what the server may hold."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocols
from protocols.pairwise import (
    LIMBS,
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShares,
    KeyBroadcast,
    MaskedInput,
    PairwiseConfig,
    PairwiseMasking,
    RoutedShares,
    UnmaskRequest,
    UnmaskShares,
    neighbour_graph,
)
from secagg.encoding import FixedPoint
from secagg.errors import (
    ConfigError,
    EncodingOverflowError,
    IntegrityError,
    NotEnoughClientsError,
    ProtocolStateError,
    SecAggError,
    WireFormatError,
)
from secagg.party import SERVER, Envelope, Inbound, Party
from secagg.protocol import RoundSpec
from secagg.round import RoundResult, reference_aggregate, run_round
from secagg.router import Dropout, Inject
from secagg.wire import Header
from tests.conftest import make_updates

N_PARAMS = 40
STAGES = PairwiseMasking.stages


def _run(
    n: int,
    *,
    faults: Sequence[Dropout | Inject] = (),
    round_id: int = 3,
    seed: int = 0,
    protocol: PairwiseMasking | None = None,
    **config: object,
) -> tuple[RoundResult, list[np.ndarray]]:
    protocol = protocol or PairwiseMasking(**config)
    updates = make_updates(n, N_PARAMS, seed=seed)
    return run_round(protocol, updates, faults=faults, round_id=round_id), updates


def _exact_sum(protocol: PairwiseMasking, updates: list[np.ndarray], included: Sequence[int]) -> np.ndarray:
    """The sum of the clients' encodings in Z_2^k, decoded: what the protocol must reveal bit for bit."""
    codec = protocol.config.codec(len(updates))
    total = np.zeros(N_PARAMS, dtype=codec.dtype)
    for i in included:
        np.add(total, codec.encode(updates[i]), out=total)
    return codec.decode(total)


def _tampering(protocol: PairwiseMasking, stage: str, edit: Callable[[list[Envelope]], list[Envelope]]):
    """The same protocol with a server that rewrites what it sends at ``stage``."""

    class Tampering(PairwiseMasking):
        def make_parties(self, updates, weights, spec):  # type: ignore[no-untyped-def]
            parties = super().make_parties(updates, weights, spec)
            server = parties[-1]
            honest = server.step

            def step(s: str, inbox: Sequence[Inbound]) -> list[Envelope]:
                out = honest(s, inbox)
                return edit(out) if s == stage else out

            server.step = step  # type: ignore[method-assign,assignment]
            return parties

    return Tampering(protocol.config)


# ---------------------------------------------------------------- correct sums


@pytest.mark.parametrize(
    ("n", "config"),
    [
        (2, {}),
        (5, {}),
        (6, {"ring_bits": 64}),
        (6, {"ring_bits": 16}),  # planned: 6 clients of |x| <= 1 get 12 fractional bits
        (9, {"neighbours": 4, "ring_bits": 16}),
        (9, {"neighbours": 4}),
        (7, {"neighbours": 2, "threshold": 2}),
        (5, {"neighbours": 4}),  # k >= n - 1: the full graph
    ],
)
def test_exact_sum(n: int, config: dict[str, object]) -> None:
    protocol = PairwiseMasking(**config)
    result, updates = _run(n, protocol=protocol)
    aggregate = result.unwrap()
    assert result.included == tuple(range(n))
    assert np.array_equal(aggregate, _exact_sum(protocol, updates, result.included))
    reference = reference_aggregate(updates, result.included, kind="sum")
    assert np.max(np.abs(aggregate - reference)) <= protocol.precision(n_clients=n, value_range=1.0)


def test_sixteen_bit_ring_masks_in_uint16_and_survives_a_dropout() -> None:
    """In Z_2^16 the masked inputs are 2 bytes per parameter, and the server's unmasking
    mod 2^16 (self masks of survivors, pair masks of a dropped client) is exact."""
    protocol = PairwiseMasking(ring_bits=16)
    n = 5
    result, updates = _run(n, protocol=protocol, faults=[Dropout(4, "masked_input")])
    assert result.included == (0, 1, 2, 3)
    assert np.array_equal(result.unwrap(), _exact_sum(protocol, updates, result.included))
    masked = [r for r in result.views[SERVER].received if isinstance(r.payload, MaskedInput)]
    assert len(masked) == 4
    for received in masked:
        assert isinstance(received.payload, MaskedInput) and received.payload.masked.dtype == np.dtype("<u2")
        assert received.header.payload_len == 2 * N_PARAMS + 9


def test_packed_ring_masks_twelve_bits_and_survives_a_dropout() -> None:
    protocol = PairwiseMasking(ring_bits=12)
    result, updates = _run(5, protocol=protocol, faults=[Dropout(1, "masked_input")])
    assert result.included == (0, 2, 3, 4)
    assert np.array_equal(result.unwrap(), _exact_sum(protocol, updates, result.included))
    masked = [r for r in result.views[SERVER].received if isinstance(r.payload, MaskedInput)]
    assert len(masked) == 4
    for received in masked:
        assert isinstance(received.payload, MaskedInput) and received.payload.bits == 12
        assert received.header.payload_len == 10 + (12 * N_PARAMS + 7) // 8
        assert int(received.payload.masked.max()) < 2**12


def test_modular_ring_reveals_the_sum_mod_2_to_the_k() -> None:
    protocol = PairwiseMasking(ring_bits=16, frac_bits=0, clip=2.0**15, modular=True)
    rng = np.random.default_rng(8)
    updates = [rng.integers(-(2**15), 2**15, N_PARAMS).astype(np.float64) for _ in range(5)]
    result = run_round(protocol, updates)
    total = np.sum(updates, axis=0).astype(np.int64)
    np.testing.assert_array_equal(result.unwrap(), (total + 2**15) % 2**16 - 2**15)
    with pytest.raises(EncodingOverflowError, match="frac_bits <= 8"):
        run_round(PairwiseMasking(ring_bits=16, frac_bits=9), make_updates(100, 4, seed=1))


def test_masked_inputs_differ_from_encodings_and_are_4_bytes_per_param() -> None:
    protocol = PairwiseMasking()
    result, updates = _run(4, protocol=protocol)
    codec = protocol.config.codec(4)
    server = result.views[SERVER]
    masked = [(r, r.payload) for r in server.received if isinstance(r.payload, MaskedInput)]
    assert len(masked) == 4
    for received, payload in masked:
        values = payload.masked
        assert values.dtype == np.dtype("<u4")
        assert received.header.payload_len == 4 * N_PARAMS + 9
        own = codec.encode(updates[received.header.sender])
        assert np.count_nonzero(values == own) <= 2


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(3, 7).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.sampled_from([None, *STAGES]), min_size=n, max_size=n),
        )
    ),
    st.sampled_from([None, 2]),
)
def test_dropouts_at_any_stage(case: tuple[int, list[str | None]], neighbours: int | None) -> None:
    n, drops = case
    protocol = PairwiseMasking(neighbours=neighbours)
    faults = [Dropout(c, stage) for c, stage in enumerate(drops) if stage is not None]
    result, updates = _run(n, faults=faults, protocol=protocol, seed=n)

    def alive(client: int, stage: str) -> bool:
        dropped = drops[client]
        return dropped is None or STAGES.index(dropped) > STAGES.index(stage)

    sent_input = [c for c in range(n) if alive(c, "masked_input")]
    if result.error is not None:
        assert isinstance(result.error, NotEnoughClientsError), result.error
        assert result.aggregate is None and result.views[SERVER].revealed is None
    else:
        assert result.included == tuple(sent_input)
        assert np.array_equal(result.unwrap(), _exact_sum(protocol, updates, sent_input))
    if neighbours is None:
        # Full graph: the outcome is predictable from the survivor counts per stage.
        t = protocol.config.threshold_for(n)
        counts = [sum(alive(c, s) for c in range(n)) for s in ("advertise", "share_keys", "unmasking")]
        expected_ok = counts[0] >= t and counts[1] >= t and len(sent_input) >= max(t, 2) and counts[2] >= t
        assert (result.error is None) == expected_ok, (drops, result.error)


def test_late_dropout_is_unmasked_from_key_shares() -> None:
    protocol = PairwiseMasking(threshold=4)
    result, updates = _run(6, faults=[Dropout(2, "masked_input"), Dropout(4, "unmasking")], protocol=protocol)
    assert result.included == (0, 1, 3, 4, 5)
    assert np.array_equal(result.unwrap(), _exact_sum(protocol, updates, result.included))


def test_neighbours_mode_with_dropouts() -> None:
    # Share groups of 5 with t = 3: any two dropouts leave every group 3 live members,
    # whatever graph the server draws.
    protocol = PairwiseMasking(neighbours=4, threshold=3)
    faults = [Dropout(1, "masked_input"), Dropout(6, "unmasking")]
    result, updates = _run(12, faults=faults, protocol=protocol)
    assert result.included == tuple(c for c in range(12) if c != 1)
    assert np.array_equal(result.unwrap(), _exact_sum(protocol, updates, result.included))


# ---------------------------------------------------------------- the neighbour graph


def test_neighbour_graph_is_regular_and_symmetric() -> None:
    groups = neighbour_graph(20, 6, bytes(range(32)), round_id=1)
    for i, group in enumerate(groups):
        assert i in group and len(group) == 7
        for j in group:
            assert i in groups[j]
    assert groups != neighbour_graph(20, 6, bytes(range(1, 33)), round_id=1)
    assert neighbour_graph(5, None, bytes(32), 0) == [tuple(range(5))] * 5


def test_neighbours_send_key_material_only_to_neighbours() -> None:
    result, _ = _run(16, neighbours=4)
    server = result.views[SERVER]
    uploads = [r.payload for r in server.received if isinstance(r.payload, EncryptedShares)]
    assert len(uploads) == 16 and all(len(u.recipients) == 4 for u in uploads)
    full, _ = _run(16)
    per_client_full = full.costs.bytes_up_per_client() - 4 * N_PARAMS
    per_client_k = result.costs.bytes_up_per_client() - 4 * N_PARAMS
    assert per_client_k < per_client_full / 2


# ---------------------------------------------------------------- tampering and replays


def _flip_share(recipient: int, sender: int) -> Callable[[list[Envelope]], list[Envelope]]:
    def edit(out: list[Envelope]) -> list[Envelope]:
        edited = []
        for envelope in out:
            payload = envelope.payload
            if envelope.recipient == recipient and isinstance(payload, RoutedShares):
                texts = list(payload.ciphertexts)
                index = payload.senders.index(sender)
                texts[index] = texts[index][:5] + bytes([texts[index][5] ^ 1]) + texts[index][6:]
                payload = RoutedShares(payload.senders, tuple(texts))
            edited.append(Envelope(envelope.recipient, payload))
        return edited

    return edit


def test_tampered_share_fails_gcm_and_names_the_sender() -> None:
    protocol = _tampering(PairwiseMasking(), "route_shares", _flip_share(recipient=2, sender=1))
    result, _ = _run(4, protocol=protocol)
    assert isinstance(result.error, IntegrityError)
    assert "client-1" in str(result.error) and "client-2" in str(result.error)
    assert result.aggregate is None


def test_share_replayed_from_a_previous_round_is_rejected() -> None:
    old, _ = _run(4, round_id=7)
    old_upload = next(
        r.payload
        for r in old.views[SERVER].received
        if isinstance(r.payload, EncryptedShares) and r.header.sender == 1
    )
    stale = old_upload.ciphertexts[old_upload.recipients.index(2)]

    def replay(out: list[Envelope]) -> list[Envelope]:
        edited = []
        for envelope in out:
            payload = envelope.payload
            if envelope.recipient == 2 and isinstance(payload, RoutedShares):
                texts = list(payload.ciphertexts)
                texts[payload.senders.index(1)] = stale
                payload = RoutedShares(payload.senders, tuple(texts))
            edited.append(Envelope(envelope.recipient, payload))
        return edited

    result, _ = _run(4, round_id=8, protocol=_tampering(PairwiseMasking(), "route_shares", replay))
    assert isinstance(result.error, IntegrityError)
    assert "client-1" in str(result.error)


def test_share_relabelled_to_another_sender_is_rejected() -> None:
    def swap(out: list[Envelope]) -> list[Envelope]:
        edited = []
        for envelope in out:
            payload = envelope.payload
            if envelope.recipient == 0 and isinstance(payload, RoutedShares):
                payload = RoutedShares(payload.senders, tuple(reversed(payload.ciphertexts)))
            edited.append(Envelope(envelope.recipient, payload))
        return edited

    result, _ = _run(4, protocol=_tampering(PairwiseMasking(), "route_shares", swap))
    assert isinstance(result.error, IntegrityError)


def test_old_round_message_is_refused_by_the_router() -> None:
    old, _ = _run(4, round_id=1)
    raw = next(r.raw for r in old.views[2].received if isinstance(r.payload, RoutedShares))
    protocol = PairwiseMasking()
    result, updates = _run(4, round_id=2, faults=[Inject(raw, 2, "route_shares")], protocol=protocol)
    assert any("another round" in e.note for e in result.transcript)
    assert np.array_equal(result.unwrap(), _exact_sum(protocol, updates, range(4)))


# ---------------------------------------------------------------- what the server may learn


def test_server_never_holds_both_share_sets_of_a_client() -> None:
    protocol = PairwiseMasking()
    n = 7
    result, _ = _run(n, faults=[Dropout(3, "masked_input"), Dropout(5, "masked_input")], protocol=protocol)
    result.unwrap()
    t = protocol.config.threshold_for(n)
    b_count: Counter[int] = Counter()
    s_count: Counter[int] = Counter()
    for received in result.views[SERVER].received:
        if isinstance(received.payload, UnmaskShares):
            b_count.update(int(v) for v in received.payload.self_mask_owners)
            s_count.update(int(v) for v in received.payload.key_owners)
    assert {3, 5} <= {c for c, k in s_count.items() if k >= t}  # the test can see key shares
    for client in range(n):
        assert not (b_count[client] >= t and s_count[client] >= t), client
        assert not (b_count[client] and s_count[client]), client
    server = result.views[SERVER]
    seeds, secrets = server.holding("self_mask_seeds"), server.holding("key_agreement_secrets")
    assert isinstance(seeds, dict) and isinstance(secrets, dict)
    assert set(seeds).isdisjoint(secrets)
    assert set(secrets) == {3, 5}


def test_client_refuses_a_request_for_both_shares() -> None:
    def greedy(out: list[Envelope]) -> list[Envelope]:
        edited = []
        for envelope in out:
            payload = envelope.payload
            if isinstance(payload, UnmaskRequest):
                both = np.array([1], dtype="<u4")
                payload = UnmaskRequest(payload.survivors, np.concatenate([payload.dropped, both]))
            edited.append(Envelope(envelope.recipient, payload))
        return edited

    result, _ = _run(4, protocol=_tampering(PairwiseMasking(), "collect_signatures", greedy))
    assert isinstance(result.error, ProtocolStateError)
    assert "refused" in str(result.error) and "client-1" in str(result.error)
    assert not any(isinstance(r.payload, UnmaskShares) for r in result.views[SERVER].received)


def test_client_refuses_a_request_that_leaves_out_a_holder() -> None:
    def omit(out: list[Envelope]) -> list[Envelope]:
        return [
            Envelope(e.recipient, UnmaskRequest(e.payload.survivors[:-1], e.payload.dropped))
            if isinstance(e.payload, UnmaskRequest)
            else e
            for e in out
        ]

    result, _ = _run(4, protocol=_tampering(PairwiseMasking(), "collect_signatures", omit))
    assert isinstance(result.error, ProtocolStateError)


# ---------------------------------------------------------------- minimum clients


def test_minimum_clients_refusal_reveals_nothing() -> None:
    faults = [Dropout(0, "masked_input"), Dropout(1, "masked_input")]
    result, _ = _run(5, faults=faults, min_clients=4, threshold=2, insecure_allow_low_threshold=True)
    assert isinstance(result.error, NotEnoughClientsError)
    assert "at least 4" in str(result.error)
    assert result.aggregate is None
    server = result.views[SERVER]
    assert server.revealed is None and not server.holding("self_mask_seeds")
    assert not any(e.message == "UnmaskRequest" for e in result.transcript)


def test_one_client_alone_is_never_revealed() -> None:
    result, _ = _run(3, faults=[Dropout(0, "masked_input"), Dropout(1, "masked_input")], threshold=2)
    assert isinstance(result.error, NotEnoughClientsError)
    single, _ = _run(1)
    assert isinstance(single.error, NotEnoughClientsError)


def test_fewer_than_t_survivors_is_a_typed_error() -> None:
    result, _ = _run(6, faults=[Dropout(c, "unmasking") for c in (0, 1, 2)])
    assert isinstance(result.error, NotEnoughClientsError)
    assert result.aggregate is None


# ---------------------------------------------------------------- config and wire


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="even"):
        PairwiseConfig(neighbours=3)
    with pytest.raises(ConfigError, match="threshold"):
        PairwiseConfig(threshold=1)
    with pytest.raises(ConfigError, match="ring_bits"):
        PairwiseConfig(ring_bits=7)
    with pytest.raises(ConfigError, match="min_clients"):
        PairwiseConfig(min_clients=0)
    # The CLI's --set hands strings for fields whose default is None.
    assert PairwiseConfig(neighbours="4", threshold="3").neighbours == 4  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="threshold 9 exceeds"):
        run_round(PairwiseMasking(threshold=9), make_updates(4, 8))
    assert PairwiseConfig().threshold_for(200) == 134
    assert PairwiseConfig(neighbours=8).threshold_for(200) == 7


def test_registered_under_secagg() -> None:
    assert protocols.get("secagg") is PairwiseMasking
    assert PairwiseMasking.wire_id == 40


def test_payloads_round_trip_and_reject_truncation() -> None:
    samples = [
        KeyBroadcast((0, 2), (bytes(32), bytes([1]) * 32), (bytes([2]) * 32, bytes([3]) * 32)),
        KeyBroadcast((0,), (bytes(32),), (bytes([2]) * 32,), (bytes([5]) * 64,)),
        AdvertiseKeys(bytes(32), bytes([1]) * 32),
        AdvertiseKeys(bytes(32), bytes([1]) * 32, bytes([4]) * 64),
        ConsistencyRequest(np.array([0, 3, 4], dtype="<u4")),
        ConsistencySignature(bytes([6]) * 64),
        UnmaskRequest(
            np.array([0, 1], dtype="<u4"),
            np.array([5], dtype="<u4"),
            np.array([1], dtype="<u4"),
            (bytes(64),),
        ),
        EncryptedShares(bytes(32), (1, 2), (bytes(88), bytes([7]) * 88)),
        RoutedShares((4,), (bytes([9]) * 88,)),
        UnmaskRequest(np.array([0, 1], dtype="<u4"), np.array([5], dtype="<u4")),
        UnmaskShares(
            np.array([0], dtype="<u4"),
            np.arange(LIMBS, dtype="<u4").reshape(1, LIMBS),
            np.array([], dtype="<u4"),
            np.zeros((0, LIMBS), dtype="<u4"),
        ),
    ]
    for payload in samples:
        raw = payload.to_bytes()
        decoded = type(payload).from_bytes(raw)
        assert decoded.to_bytes() == raw
        with pytest.raises(WireFormatError):
            type(payload).from_bytes(raw[:-1])
        with pytest.raises(WireFormatError):
            type(payload).from_bytes(raw + b"\0")


def test_share_values_outside_the_field_are_refused() -> None:
    bad = UnmaskShares(
        np.array([0], dtype="<u4"),
        np.full((1, LIMBS), 2**31 - 1, dtype="<u4"),
        np.array([], dtype="<u4"),
        np.zeros((0, LIMBS), dtype="<u4"),
    )
    with pytest.raises(WireFormatError, match="below"):
        UnmaskShares.from_bytes(bad.to_bytes())


def test_precision_is_the_fixed_point_bound() -> None:
    protocol = PairwiseMasking(frac_bits=16)
    assert protocol.precision(n_clients=10, value_range=1.0) == pytest.approx(10 * 2.0**-17)
    planned = PairwiseMasking()
    assert planned.config.codec(10) == FixedPoint.plan(clip=1.0, n_clients=10, ring_bits=32)


def test_every_failure_is_typed() -> None:
    # A client that cannot fit the budget: clip too large for the ring.
    with pytest.raises(SecAggError):
        run_round(PairwiseMasking(frac_bits=30, clip=4.0), make_updates(3, 8))
    spec = RoundSpec(round_id=0, n_clients=3, n_params=8)
    parties: list[Party] = PairwiseMasking().make_parties(make_updates(3, 8), None, spec)
    with pytest.raises(ProtocolStateError):
        parties[0].step("route_shares", [Inbound(Header(40, 4, 0, SERVER, 0, 4), RoutedShares((), ()))])
