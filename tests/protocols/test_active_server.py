"""A server that deviates from the protocol, played against every protocol through the
harness in :mod:`tests.protocols.adversary`: withholding routed messages, lying about
dropouts to two halves of the survivors, swapping keys, grinding the neighbour graph,
replaying across rounds and sessions, asking for both share kinds of one client. Each
attempt must end in a typed error or a correct aggregate, and reveal nothing individual.

Per protocol: ``secagg``/SecAgg+ (withheld shares, dropout lies, both share kinds, a
ground graph, swapped and replayed keys); ``paillier`` (a relayed key swapped, stripped,
re-signed or replayed from another round; a withheld key; invented dropouts);
``paillier-threshold`` (a single upload passed off as a sum); ``ckks`` (a sum claimed
over one client; released decryptions with and without noise flooding); ``two-server``
(A asking B for a one-client or a second mask sum, B narrowing or shifting the sum,
invented dropouts; the cross-session replay is in ``test_two_server``); the plaintext
baseline (the server reads everyone, as declared). Two documented limits are kept as
tests that assert the break, so the day it changes is seen: single-key CKKS (and
Paillier) decrypt one client's ciphertext passed off as a sum, and server B can shift
the two-server sum undetected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import pytest
from phe import paillier as phe_paillier

from protocols import ckks, paillier, two_server
from protocols.paillier_threshold import SumCheckError, SumRequest
from protocols.pairwise import (
    AdvertiseKeys,
    ConsistencyRequest,
    KeyBroadcast,
    MaskedInput,
    PairwiseMasking,
    RoutedShares,
    UnmaskRequest,
    UnmaskShares,
    _pair_mask,
    _self_mask,
    graph_seed_for,
    neighbour_graph,
    pair_seed,
)
from protocols.two_server import TwoServer
from secagg.errors import (
    ConfigError,
    IntegrityError,
    NotEnoughClientsError,
    ProtocolStateError,
    SecAggError,
)
from secagg.party import KEY_HOLDER, SERVER, SERVER_B, Envelope, Inbound
from secagg.protocol import RoundSpec
from secagg.round import RoundResult, run_round
from secagg.router import Dropout
from secagg.shamir import reconstruct_secrets
from secagg.signing import generate_signing_keypair
from secagg.wire import Payload
from tests.conftest import fast_protocol, make_updates
from tests.protocols.adversary import (
    Tamper,
    adversarial,
    assert_typed_or_correct,
    chain,
    edit_payloads,
    honest,
    individual_exposures,
    relayed,
)

N_PARAMS = 24

# ------------------------------------------------ secagg / SecAgg+: what the server can compute


def _server_secrets(result: RoundResult, kind: str) -> dict[int, bytes]:
    """Every client secret (``kind`` 'b': self-mask seed, 's': key-agreement secret) the
    server can rebuild from all the unmasking shares in its view, whatever it asked for."""
    config = result.instance.config
    t = config.threshold_for(result.n_clients)
    found: dict[int, list[tuple[int, np.ndarray]]] = {}
    for received in result.views[SERVER].received:
        payload = received.payload
        if not isinstance(payload, UnmaskShares):
            continue
        holder = received.header.sender
        owners, rows = (
            (payload.self_mask_owners, payload.self_mask_shares)
            if kind == "b"
            else (payload.key_owners, payload.key_shares)
        )
        for owner, row in zip(owners, rows, strict=True):
            found.setdefault(int(owner), []).append((holder + 1, np.asarray(row, dtype=np.uint64)))
    truth_name = "self_mask_seed" if kind == "b" else "s_private"
    rebuilt: dict[int, bytes] = {}
    for owner, shares in found.items():
        if len(shares) < t:
            continue
        xs = [x for x, _ in shares[:t]]
        try:
            (secret,) = reconstruct_secrets(
                xs, np.stack([r for _, r in shares[:t]]), threshold=t, secret_bytes=[32]
            )
        except SecAggError:
            continue
        if secret == result.views[owner].holding(truth_name):
            rebuilt[owner] = secret
    return rebuilt


def pairwise_unmask(result: RoundResult, client: int) -> np.ndarray | None:
    """The server's reconstruction of ``client``'s update from its masked input, or None."""
    masked = [
        r.payload
        for r in result.views[SERVER].received
        if isinstance(r.payload, MaskedInput) and r.header.sender == client
    ]
    if not masked:
        return None
    b_seeds, s_secrets = _server_secrets(result, "b"), _server_secrets(result, "s")
    if client not in b_seeds:
        return None
    rid = result.round_id
    values = np.array(masked[0].masked, copy=True)
    bits = 8 * values.dtype.itemsize
    np.subtract(
        values,
        _self_mask(b_seeds[client], round_id=rid, client=client, n=values.size, ring_bits=bits),
        out=values,
    )
    peers = set(cast(tuple[int, ...], result.views[client].holding("shares_held_of"))) - {client}

    def s_public(party: int) -> bytes:
        return cast(bytes, result.views[party].holding("s_public"))

    for peer in peers:
        if client in s_secrets:
            seed = pair_seed(s_secrets[client], s_public(peer), round_id=rid, a=client, b=peer)
        elif peer in s_secrets:
            seed = pair_seed(s_secrets[peer], s_public(client), round_id=rid, a=peer, b=client)
        else:
            return None
        mask = _pair_mask(seed, round_id=rid, a=client, b=peer, n=values.size, ring_bits=bits)
        if peer > client:
            np.subtract(values, mask, out=values)
        else:
            np.add(values, mask, out=values)
    return result.instance.config.codec(result.n_clients).decode(values)


def _run(
    protocol: PairwiseMasking, n: int, *, round_id: int = 5, seed: int = 0
) -> tuple[RoundResult, list[np.ndarray]]:
    updates = make_updates(n, N_PARAMS, seed=seed)
    return run_round(protocol, updates, round_id=round_id), updates


def _exposed(result: RoundResult, updates: Sequence[np.ndarray]) -> set[int]:
    return individual_exposures(result, updates, unmask=pairwise_unmask)


def test_the_exposure_check_sees_a_client_whose_secrets_both_leak() -> None:
    # The check must be able to fail: with t = 2 of 4 (insecure), a server that asks two
    # disjoint pairs for different share kinds of client 0 rebuilds both and reads it.
    def split(recipient: int, payload: Payload) -> Payload | None:
        if not isinstance(payload, UnmaskRequest):
            return payload
        alive = [int(v) for v in payload.survivors]
        if recipient in (2, 3):
            return UnmaskRequest(
                np.array([c for c in alive if c != 0], dtype="<u4"), np.array([0], dtype="<u4")
            )
        return payload

    protocol = adversarial(
        PairwiseMasking(threshold=2, insecure_allow_low_threshold=True),
        edit_payloads("collect_signatures", split),
    )
    result, updates = _run(protocol, 4)  # type: ignore[arg-type]
    assert 0 in _exposed(result, updates)


# ---------------------------------------------------------------- withholding routed shares


def _withhold_shares_to(victim: int, keep: int = 0) -> Tamper:
    """Route the victim only ``keep`` of the shares addressed to it (the rest withheld)."""

    def edit(recipient: int, payload: Payload) -> Payload | None:
        if recipient == victim and isinstance(payload, RoutedShares):
            return RoutedShares(payload.senders[:keep], payload.ciphertexts[:keep])
        return payload

    def skip_victim(recipient: int, payload: Payload) -> Payload | None:
        # The victim is never asked to unmask (it would notice it holds no peer's share).
        return None if recipient == victim and isinstance(payload, UnmaskRequest) else payload

    return chain(edit_payloads("route_shares", edit), edit_payloads("collect_signatures", skip_victim))


@pytest.mark.parametrize(("n", "neighbours"), [(5, None), (10, 4)])
def test_withholding_a_victims_routed_shares_is_refused(n: int, neighbours: int | None) -> None:
    # Before the |U2| >= t check the victim masked with nobody, the server asked for its
    # b-shares and stripped its only mask: its update in the clear.
    protocol = adversarial(PairwiseMasking(neighbours=neighbours), _withhold_shares_to(victim=2))
    result, updates = _run(protocol, n)  # type: ignore[arg-type]
    assert isinstance(result.error, NotEnoughClientsError), result.error
    assert "client-2" in str(result.error)
    assert_typed_or_correct(result, updates)
    assert not _exposed(result, updates)
    assert not any(
        isinstance(r.payload, MaskedInput) and r.header.sender == 2 for r in result.views[SERVER].received
    )


@pytest.mark.parametrize("active", [False, True])
def test_withholding_below_t_minus_one_peers_is_refused_in_secagg_plus(active: bool) -> None:
    # neighbours = 4: g = 5, t = 4; routing the victim 2 of its 4 peers' shares leaves it 3 < t.
    protocol = adversarial(
        PairwiseMasking(neighbours=4, active_security=active), _withhold_shares_to(victim=3, keep=2)
    )
    result, updates = _run(protocol, 12)  # type: ignore[arg-type]
    assert isinstance(result.error, NotEnoughClientsError)
    assert not _exposed(result, updates)


def test_withholding_one_peer_leaves_the_victim_masked() -> None:
    # With t - 1 peers still routed the victim masks and sends; the server gets b_v but the
    # pair masks with honest peers stay (it may only spoil its own aggregate).
    protocol = adversarial(PairwiseMasking(), _withhold_shares_to(victim=1, keep=3))
    result, updates = _run(protocol, 5)  # type: ignore[arg-type]
    assert not _exposed(result, updates)


# ---------------------------------------------------------------- lying about dropouts


def _lie_about(victim: int, told_dropped: set[int]) -> Tamper:
    """Tell the holders in ``told_dropped`` that the victim dropped (send its s-share) and
    the others that it survived (send its b-share)."""

    def edit(recipient: int, payload: Payload) -> Payload | None:
        if isinstance(payload, UnmaskRequest) and recipient in told_dropped:
            alive = np.array([int(c) for c in payload.survivors if int(c) != victim], dtype="<u4")
            gone = np.array(sorted({*map(int, payload.dropped), victim}), dtype="<u4")
            return UnmaskRequest(alive, gone, payload.signers, payload.signatures)
        return payload

    return edit_payloads("collect_signatures", edit)


@pytest.mark.parametrize("active", [False, True])
def test_lying_about_a_dropout_to_two_halves_reveals_nothing(active: bool) -> None:
    protocol = adversarial(PairwiseMasking(active_security=active), _lie_about(victim=0, told_dropped={4, 5}))
    result, updates = _run(protocol, 6)  # type: ignore[arg-type]
    assert_typed_or_correct(result, updates)
    assert result.error is not None
    assert not _exposed(result, updates)
    assert 0 not in _server_secrets(result, "s")


def test_two_survivor_lists_fail_the_consistency_check() -> None:
    # Active security: the server shows half the survivors a U3 without client 0; those
    # sign it, the others sign the true U3; no holder sees t signatures over its own list.
    def edit(recipient: int, payload: Payload) -> Payload | None:
        if isinstance(payload, ConsistencyRequest) and recipient in (3, 4, 5):
            return ConsistencyRequest(np.array([c for c in payload.survivors if c != 0], dtype="<u4"))
        return payload

    protocol = adversarial(PairwiseMasking(active_security=True), edit_payloads("collect_masked", edit))
    result, updates = _run(protocol, 6)  # type: ignore[arg-type]
    assert isinstance(result.error, (NotEnoughClientsError, ProtocolStateError)), result.error
    assert not _exposed(result, updates)
    assert not any(isinstance(r.payload, UnmaskShares) for r in result.views[SERVER].received)


def test_forwarded_signatures_over_another_list_are_refused() -> None:
    # The server relays genuine signatures, but over a U3 the recipient never signed.
    lists: dict[int, bytes] = {}

    def tamper(stage: str, inbox: Sequence[Inbound], out: list[Envelope]) -> list[Envelope]:
        if stage == "collect_signatures":
            for message in inbox:
                lists[message.sender] = message.payload.signature  # type: ignore[attr-defined]
        return out

    def swap(recipient: int, payload: Payload) -> Payload | None:
        if isinstance(payload, UnmaskRequest) and recipient == 1 and payload.signatures:
            forged = tuple(lists[2] for _ in payload.signatures)
            return UnmaskRequest(payload.survivors, payload.dropped, payload.signers, forged)
        return payload

    protocol = adversarial(
        PairwiseMasking(active_security=True), chain(tamper, edit_payloads("collect_signatures", swap))
    )
    result, updates = _run(protocol, 5)  # type: ignore[arg-type]
    assert isinstance(result.error, IntegrityError), result.error
    assert not _exposed(result, updates)


def test_asking_for_both_share_kinds_of_one_client_is_refused() -> None:
    def both(recipient: int, payload: Payload) -> Payload | None:
        if isinstance(payload, UnmaskRequest):
            return UnmaskRequest(
                payload.survivors,
                np.concatenate([payload.dropped, np.array([1], dtype="<u4")]),
                payload.signers,
                payload.signatures,
            )
        return payload

    for active in (False, True):
        protocol = adversarial(
            PairwiseMasking(active_security=active), edit_payloads("collect_signatures", both)
        )
        result, updates = _run(protocol, 5)  # type: ignore[arg-type]
        assert isinstance(result.error, ProtocolStateError)
        assert "refused" in str(result.error)
        assert not _exposed(result, updates)


def test_threshold_at_or_below_half_the_group_is_refused_unless_declared_insecure() -> None:
    with pytest.raises(ConfigError, match="insecure_allow_low_threshold"):
        run_round(PairwiseMasking(threshold=3), make_updates(6, 4))
    with pytest.raises(ConfigError, match="not above half"):
        PairwiseMasking(neighbours=4, threshold=2).config.threshold_for(20)
    assert PairwiseMasking(threshold=3, insecure_allow_low_threshold=True).config.threshold_for(6) == 3
    assert PairwiseMasking(threshold=4).config.threshold_for(6) == 4


# ---------------------------------------------------------------- the neighbour graph


def test_the_graph_is_fixed_by_session_round_and_count_and_checked_by_every_client() -> None:
    protocol = PairwiseMasking(neighbours=4, session="enrolment-2026")
    result, updates = _run(protocol, 20, round_id=9)
    result.unwrap()
    groups = neighbour_graph(20, 4, graph_seed_for("enrolment-2026", 9, 20), 9)
    for client in range(20):
        broadcast = next(
            r.payload for r in result.views[client].received if isinstance(r.payload, KeyBroadcast)
        )
        assert tuple(broadcast.ids) == groups[client]
    assert result.views[SERVER].holding("graph_seed") == graph_seed_for("enrolment-2026", 9, 20)
    # Other sessions and rounds draw other graphs; nothing the server sends enters it.
    assert neighbour_graph(20, 4, graph_seed_for("other", 9, 20), 9) != groups
    assert neighbour_graph(20, 4, graph_seed_for("enrolment-2026", 10, 20), 10) != groups


def test_a_server_that_surrounds_a_victim_with_colluders_is_refused() -> None:
    # Grinding: the server presents the victim a share group of its choosing (colluders
    # 10..13) instead of the derived one. Every client derives the graph itself.
    victim, colluders = 0, (10, 11, 12, 13)
    keys: dict[int, tuple[bytes, bytes]] = {}

    def tamper(stage: str, inbox: Sequence[Inbound], out: list[Envelope]) -> list[Envelope]:
        if stage == "broadcast_keys":
            for message in inbox:
                advert = message.payload
                keys[message.sender] = (advert.c_public, advert.s_public)  # type: ignore[attr-defined]
            members = (victim, *colluders)
            forged = KeyBroadcast(
                members, tuple(keys[m][0] for m in members), tuple(keys[m][1] for m in members)
            )
            return [Envelope(e.recipient, forged) if e.recipient == victim else e for e in out]
        return out

    protocol = adversarial(PairwiseMasking(neighbours=4), tamper)
    result, updates = _run(protocol, 20)  # type: ignore[arg-type]
    assert isinstance(result.error, ProtocolStateError), result.error
    assert "share group" in str(result.error)
    assert not _exposed(result, updates)


def test_dropping_adverts_does_not_move_the_graph() -> None:
    # The server's other lever, which adverts to keep, changes only who is live.

    updates = make_updates(16, N_PARAMS)
    faults = [Dropout(3, "advertise"), Dropout(8, "advertise")]
    result = run_round(PairwiseMasking(neighbours=6), updates, faults=faults, round_id=5)
    assert_typed_or_correct(result, updates)
    groups = neighbour_graph(16, 6, graph_seed_for("", 5, 16), 5)
    for client in set(range(16)) - {3, 8}:
        broadcast = next(
            r.payload for r in result.views[client].received if isinstance(r.payload, KeyBroadcast)
        )
        assert tuple(broadcast.ids) == tuple(m for m in groups[client] if m not in (3, 8))


# ---------------------------------------------------------------- keys: swaps and replays (active security)


def _identities(n: int) -> list[bytes]:
    return [generate_signing_keypair()[0] for _ in range(n)]


def test_a_swapped_public_key_fails_the_signature_check() -> None:
    from secagg.sealing import generate_keypair

    _, fake = generate_keypair()

    def swap(recipient: int, payload: Payload) -> Payload | None:
        if isinstance(payload, KeyBroadcast) and recipient == 0:
            c_publics = list(payload.c_publics)
            c_publics[payload.ids.index(1)] = fake  # the server's own key in place of client 1's
            return KeyBroadcast(payload.ids, tuple(c_publics), payload.s_publics, payload.signatures)
        return payload

    protocol = adversarial(
        PairwiseMasking(active_security=True).with_identities(_identities(5)),
        edit_payloads("broadcast_keys", swap),
    )
    result, updates = _run(protocol, 5)  # type: ignore[arg-type]
    assert isinstance(result.error, IntegrityError), result.error
    assert "client-1" in str(result.error)
    assert not _exposed(result, updates)
    assert not any(isinstance(r.payload, MaskedInput) for r in result.views[SERVER].received)


def test_unsigned_keys_are_refused_under_active_security() -> None:
    def strip(recipient: int, payload: Payload) -> Payload | None:
        if isinstance(payload, KeyBroadcast):
            return KeyBroadcast(payload.ids, payload.c_publics, payload.s_publics, None)
        return payload

    protocol = adversarial(PairwiseMasking(active_security=True), edit_payloads("broadcast_keys", strip))
    result, _ = _run(protocol, 4)  # type: ignore[arg-type]
    assert isinstance(result.error, IntegrityError)


@pytest.mark.parametrize(("old_round", "old_session"), [(4, ""), (5, "last-week")])
def test_adverts_replayed_from_another_round_or_session_are_refused(old_round: int, old_session: str) -> None:
    identities = _identities(5)
    old, _ = _run(
        PairwiseMasking(active_security=True, session=old_session).with_identities(identities),
        5,
        round_id=old_round,
    )
    stale = next(
        r.payload
        for r in old.views[SERVER].received
        if isinstance(r.payload, AdvertiseKeys) and r.header.sender == 1
    )

    def replay(recipient: int, payload: Payload) -> Payload | None:
        if isinstance(payload, KeyBroadcast):
            index = payload.ids.index(1) if 1 in payload.ids else None
            if index is None or payload.signatures is None:
                return payload
            c_publics, s_publics, signatures = (
                list(payload.c_publics),
                list(payload.s_publics),
                list(payload.signatures),
            )
            c_publics[index], s_publics[index] = stale.c_public, stale.s_public
            signatures[index] = stale.signature  # type: ignore[assignment]
            return KeyBroadcast(payload.ids, tuple(c_publics), tuple(s_publics), tuple(signatures))
        return payload

    protocol = adversarial(
        PairwiseMasking(active_security=True).with_identities(identities),
        edit_payloads("broadcast_keys", replay),
    )
    result, updates = _run(protocol, 5, round_id=5)  # type: ignore[arg-type]
    assert isinstance(result.error, IntegrityError), result.error
    assert not _exposed(result, updates)


def test_active_security_gives_the_exact_sum_with_dropouts() -> None:

    protocol = PairwiseMasking(active_security=True, neighbours=6).with_identities(_identities(12))
    updates = make_updates(12, N_PARAMS, seed=3)
    faults = [Dropout(2, "masked_input"), Dropout(7, "consistency_check")]
    result = run_round(protocol, updates, faults=faults, round_id=2)
    assert result.included == tuple(c for c in range(12) if c != 2)
    assert_typed_or_correct(result, updates)
    assert result.error is None
    assert not _exposed(result, updates)
    assert isinstance(result.views[SERVER].holding("pinned_identities"), tuple)


# ---------------------------------------------------------------- Paillier: the relayed public key


def _paillier_upload(result: RoundResult, client: int) -> paillier.EncryptedUpdate | None:
    for received in result.views[SERVER].received:
        if isinstance(received.payload, paillier.EncryptedUpdate) and received.header.sender == client:
            return received.payload
    return None


class _KeySwap:
    """A server that hands ``victim`` a Paillier key of its own (so it could decrypt the
    victim's upload), with the holder's signature left on, stripped, or replaced by one
    under the server's own Ed25519 identity."""

    def __init__(self, victim: int, signature: str) -> None:
        self.victim = victim
        self.signature = signature
        self.public, self.private = phe_paillier.generate_paillier_keypair(n_length=512)
        self.identity = generate_signing_keypair()[0]

    def tamper(self) -> Tamper:
        def edit(recipient: int, payload: Payload) -> Payload | None:
            if recipient != self.victim or not isinstance(payload, paillier.PublicKeyMessage):
                return payload
            forged = paillier.PublicKeyMessage(payload.key_bits, self.public.n)
            if self.signature == "kept":
                return dataclasses.replace(forged, signature=payload.signature)
            if self.signature == "server's own":
                return paillier.sign_public_key(self.identity, 5, forged)
            return forged

        return edit_payloads("keys", edit)

    def unmask(self, result: RoundResult, client: int) -> np.ndarray | None:
        """The victim's update, if it encrypted under the server's key."""
        upload = _paillier_upload(result, client)
        return None if upload is None else self.read(upload)

    def read(self, upload: paillier.EncryptedUpdate) -> np.ndarray | None:
        if upload.key_fingerprint != paillier.fingerprint(self.public.n):
            return None
        ciphertexts = paillier.decode_ciphertexts(upload.ciphertexts, self.public.n, what="victim")
        plaintexts = [self.private.raw_decrypt(int(c)) for c in ciphertexts]
        mean, _ = paillier.decode_packed(plaintexts, upload.layout, max_total_weight=2**40)
        return mean


@pytest.mark.parametrize("signature", ["kept", "stripped", "server's own"])
def test_a_paillier_key_swapped_by_the_relay_is_refused_before_encrypting(signature: str) -> None:
    # Before the key holder signed its key, the victim encrypted under the server's key
    # and the server read its update while the round completed for the others.
    swap = _KeySwap(victim=1, signature=signature)
    protocol = relayed(fast_protocol("paillier"), swap.tamper(), sender=KEY_HOLDER)
    updates = make_updates(4, N_PARAMS, seed=21)
    result = run_round(protocol, updates, round_id=5)
    assert isinstance(result.error, IntegrityError), result.error
    assert "client-1" in str(result.error)
    assert _paillier_upload(result, 1) is None
    assert_typed_or_correct(result, updates)
    assert not individual_exposures(result, updates, unmask=swap.unmask)


def test_the_key_swap_check_can_fail() -> None:
    # The same reading recovers a victim that did encrypt under the server's key.
    swap = _KeySwap(victim=1, signature="stripped")
    protocol = fast_protocol("paillier")
    updates = make_updates(3, N_PARAMS, seed=22)
    upload = _paillier_upload(run_round(protocol, updates, round_id=5), 1)
    assert upload is not None
    plaintexts = paillier.encode_packed(updates[1], 1, upload.layout, protocol.config.codec)
    obfuscators = [swap.public.raw_encrypt(0) for _ in plaintexts]
    ciphertexts = paillier.encrypt_with(plaintexts, obfuscators, swap.public.n)
    forged = paillier.EncryptedUpdate(
        paillier.fingerprint(swap.public.n),
        upload.layout,
        paillier.ciphertexts_to_bytes(ciphertexts, upload.layout.width),
    )
    candidate = swap.read(forged)
    assert candidate is not None and np.allclose(candidate, updates[1], atol=1e-4)


def test_a_paillier_key_signed_for_another_round_is_refused() -> None:
    protocol = fast_protocol("paillier")
    updates = make_updates(3, N_PARAMS, seed=23)
    old = run_round(protocol, updates, round_id=4)
    stale = next(r.payload for r in old.views[0].received if isinstance(r.payload, paillier.PublicKeyMessage))
    replay = edit_payloads("keys", lambda r, p: stale if r == 0 else p)
    result = run_round(relayed(protocol, replay, sender=KEY_HOLDER), updates, round_id=5)
    assert isinstance(result.error, IntegrityError), result.error
    assert _paillier_upload(result, 0) is None


def test_a_paillier_client_without_a_pinned_key_refuses_any_key() -> None:
    updates = make_updates(2, 4)
    client = paillier.PaillierClient(
        0, updates[0], 1.0, RoundSpec(0, 2, 4), fast_protocol("paillier").config, naive=False
    )
    with pytest.raises(ConfigError, match="verification key"):
        client.step("precompute", [])


def test_withholding_the_paillier_key_from_a_client_is_a_typed_error() -> None:
    protocol = relayed(
        fast_protocol("paillier"),
        edit_payloads("keys", lambda r, p: None if r == 2 else p),
        sender=KEY_HOLDER,
    )
    updates = make_updates(3, N_PARAMS, seed=24)
    result = run_round(protocol, updates)
    assert isinstance(result.error, ProtocolStateError)
    assert_typed_or_correct(result, updates)


def _leave_out(*clients: int) -> Callable[[str, Sequence[Inbound]], Sequence[Inbound]]:
    """The server acts as if ``clients``' uploads never arrived (a dropout it invents)."""

    def before(stage: str, inbox: Sequence[Inbound]) -> Sequence[Inbound]:
        return [m for m in inbox if m.sender not in clients]

    return before


@pytest.mark.parametrize("name", ["paillier", "paillier-naive", "ckks", "paillier-threshold"])
def test_an_he_server_that_invents_dropouts_only_narrows_the_aggregate(name: str) -> None:
    # Leaving uploads out gives the aggregate over the rest; below min_clients it is refused.
    updates = make_updates(4, N_PARAMS, seed=25)
    for left_out, refused in (((0,), False), ((0, 1, 2), True)):
        protocol = adversarial(fast_protocol(name), honest, before=_leave_out(*left_out))
        result = run_round(protocol, updates)
        assert_typed_or_correct(result, updates)
        assert (result.error is not None) == refused, result.error
        if not refused:
            assert set(result.included) == {1, 2, 3}
        # The server alone, and with t - 1 decryptors (paillier-threshold), reads nobody.
        assert not individual_exposures(result, updates, pooled=lambda o: o.endswith("(t-1)"))


def test_the_plaintext_baseline_shows_a_deviating_server_every_update() -> None:
    # Nothing to defend: the baseline's server reads each update whatever it does.
    updates = make_updates(3, N_PARAMS, seed=26)
    result = run_round(adversarial(fast_protocol("plaintext-fedavg"), honest), updates)
    assert_typed_or_correct(result, updates)
    assert individual_exposures(result, updates) == {0, 1, 2}


# ---------------------------------------------------------------- CKKS: what a key holder decrypts


def _pass_off_one_ciphertext(victim: int, claimed: tuple[int, ...]) -> Tamper:
    """Send the key holder ``victim``'s ciphertext alone as the "sum" over ``claimed``."""
    uploads: dict[int, ckks.EncryptedUpdate] = {}

    def tamper(stage: str, inbox: Sequence[Inbound], out: list[Envelope]) -> list[Envelope]:
        if stage != "aggregate":
            return out
        for message in inbox:
            if isinstance(message.payload, ckks.EncryptedUpdate):
                uploads[message.sender] = message.payload
        forged = ckks.EncryptedSum(claimed, uploads[victim].ciphertexts)
        return [Envelope(KEY_HOLDER, forged)]

    return tamper


def test_a_single_ckks_ciphertext_passed_off_as_a_sum_is_decrypted() -> None:
    # A documented break, kept as a test so that it is seen the day it changes: the key
    # holder cannot tell one client's ciphertext from a sum (only paillier-threshold's
    # decryptors recompute the sum from signed uploads). What it releases is that client.
    updates = make_updates(3, N_PARAMS, seed=31)
    protocol = adversarial(fast_protocol("ckks"), _pass_off_one_ciphertext(0, (0, 1)))
    result = run_round(protocol, updates)
    assert result.error is None and result.aggregate is not None
    assert np.allclose(result.aggregate, updates[0], atol=1e-3)


def test_a_single_paillier_ciphertext_passed_off_as_a_sum_is_decrypted() -> None:
    # The same documented break under single-key Paillier: the product the key holder
    # gets is the server's word; the total weight slot even makes it a clean mean.
    uploads: dict[int, paillier.EncryptedUpdate] = {}

    def tamper(stage: str, inbox: Sequence[Inbound], out: list[Envelope]) -> list[Envelope]:
        if stage != "aggregate":
            return out
        for message in inbox:
            if isinstance(message.payload, paillier.EncryptedUpdate):
                uploads[message.sender] = message.payload
        (summed,) = out
        assert isinstance(summed.payload, paillier.EncryptedSum)
        forged = dataclasses.replace(summed.payload, ciphertexts=uploads[0].ciphertexts)
        return [Envelope(KEY_HOLDER, forged)]

    updates = make_updates(3, N_PARAMS, seed=34)
    result = run_round(adversarial(fast_protocol("paillier"), tamper), updates)
    assert result.error is None and result.aggregate is not None
    assert np.allclose(result.aggregate, updates[0], atol=1e-4)


def test_a_ckks_sum_claimed_over_one_client_is_refused() -> None:
    updates = make_updates(3, N_PARAMS, seed=32)
    protocol = adversarial(fast_protocol("ckks"), _pass_off_one_ciphertext(0, (0,)))
    result = run_round(protocol, updates)
    assert isinstance(result.error, NotEnoughClientsError)
    assert_typed_or_correct(result, updates)


def test_noise_flooding_hides_the_decryption_error_of_a_chosen_ciphertext() -> None:
    # IND-CPA^D: the server submits a ciphertext whose plaintext it knows (here a client's
    # it can predict, e.g. a replayed upload) and reads m + e. With flood_bits = s the
    # release carries uniform noise 2^s times the noise bound, so e is drowned; without
    # it the release is within the bound of m.
    updates = make_updates(3, N_PARAMS * 40, seed=33)
    for flood_bits in (0, 12):
        protocol = fast_protocol("ckks", flood_bits=flood_bits)
        assert isinstance(protocol, ckks.CKKS)
        result = run_round(adversarial(protocol, _pass_off_one_ciphertext(0, (0, 1))), updates)
        assert result.aggregate is not None
        error = result.aggregate - updates[0]
        bound = protocol.params.noise_bound(2)
        assert float(np.max(np.abs(error))) <= (2.0**flood_bits + 1) * bound
        if flood_bits:
            # Uniform on [-2^s B, 2^s B]: its spread is ~2^s B / sqrt(3), far past e's.
            assert float(np.std(error)) > 2.0 ** (flood_bits - 2) * bound
        else:
            assert float(np.max(np.abs(error))) <= bound


# ---------------------------------------------------------------- two-server: each server alone


def test_server_a_asking_b_for_a_one_client_mask_sum_is_refused() -> None:
    # A names one client as all it holds: B's mask sum would unmask that client alone.
    def one(recipient: int, payload: Payload) -> Payload | None:
        return two_server.HeldSet((0,)) if isinstance(payload, two_server.HeldSet) else payload

    updates = make_updates(4, N_PARAMS, seed=41)
    result = run_round(adversarial(TwoServer(), edit_payloads("collect", one)), updates)
    assert isinstance(result.error, NotEnoughClientsError)
    assert "server-b" in str(result.error)
    assert_typed_or_correct(result, updates)
    assert not individual_exposures(result, updates)
    assert not any(isinstance(r.payload, two_server.MaskSum) for r in result.views[SERVER].received)


def test_server_a_asking_b_for_a_second_set_is_refused() -> None:
    # Two held sets differing in one client would give that client by subtraction.
    def twice(stage: str, inbox: Sequence[Inbound], out: list[Envelope]) -> list[Envelope]:
        if stage != "collect":
            return out
        (request,) = out
        held = cast(two_server.HeldSet, request.payload).clients
        return [request, Envelope(SERVER_B, two_server.HeldSet(held[1:]))]

    updates = make_updates(4, N_PARAMS, seed=42)
    result = run_round(adversarial(TwoServer(), twice), updates)
    # The second request is a duplicate the delivery checks refuse; B answers one set.
    refused = [e for e in result.transcript if e.message == "HeldSet" and not e.delivered]
    assert len(refused) == 1 and "duplicate" in refused[0].note
    assert_typed_or_correct(result, updates)
    assert result.included == (0, 1, 2, 3)
    assert not individual_exposures(result, updates)


def test_server_b_naming_one_agreed_client_is_refused_by_a() -> None:
    def narrow(recipient: int, payload: Payload) -> Payload | None:
        if isinstance(payload, two_server.MaskSum):
            return two_server.MaskSum(payload.clients[:1], payload.mask_sum)
        return payload

    updates = make_updates(4, N_PARAMS, seed=43)
    result = run_round(adversarial(TwoServer(), edit_payloads("unmask", narrow), server=SERVER_B), updates)
    assert isinstance(result.error, NotEnoughClientsError)
    assert_typed_or_correct(result, updates)
    assert not individual_exposures(result, updates)


def test_server_b_shifting_the_mask_sum_spoils_the_aggregate_but_reads_nobody() -> None:
    # A documented limit (no validity proofs): B can move the revealed sum undetected.
    def shift(recipient: int, payload: Payload) -> Payload | None:
        if isinstance(payload, two_server.MaskSum):
            return two_server.MaskSum(payload.clients, payload.mask_sum + np.uint32(1 << 16))
        return payload

    updates = make_updates(4, N_PARAMS, seed=44)
    result = run_round(adversarial(TwoServer(), edit_payloads("unmask", shift), server=SERVER_B), updates)
    assert result.error is None and result.aggregate is not None
    assert np.allclose(result.aggregate - sum(updates), 1.0, atol=1e-3)
    assert not individual_exposures(result, updates)


def test_a_server_a_inventing_dropouts_only_narrows_the_two_server_sum() -> None:
    updates = make_updates(4, N_PARAMS, seed=45)
    result = run_round(adversarial(TwoServer(), honest, before=_leave_out(2)), updates)
    assert_typed_or_correct(result, updates)
    assert result.included == (0, 1, 3)
    assert not individual_exposures(result, updates)


# ------------------------------------------------------- paillier-threshold: the same attack, refused


@pytest.mark.parametrize("how", ["victim alone", "victim twice"])
def test_paillier_threshold_decryptors_refuse_a_single_upload_passed_off_as_a_sum(how: str) -> None:
    # The attack that single-key CKKS and Paillier cannot see (above): the committee
    # recomputes the product from uploads signed for this round by distinct clients.
    def forge(recipient: int, payload: Payload) -> Payload | None:
        if not isinstance(payload, SumRequest):
            return payload
        if how == "victim alone":
            return dataclasses.replace(
                payload, included=payload.included[:1], signatures=payload.signatures[:1],
                uploads=payload.uploads[:1],
            )  # fmt: skip
        victim = payload.uploads[0]
        return dataclasses.replace(payload, uploads=(victim, victim, *payload.uploads[2:]))

    updates = make_updates(4, N_PARAMS, seed=51)
    result = run_round(
        adversarial(fast_protocol("paillier-threshold"), edit_payloads("aggregate", forge)), updates
    )
    assert isinstance(result.error, SumCheckError), result.error
    assert_typed_or_correct(result, updates)
    assert not individual_exposures(result, updates, pooled=lambda o: o.endswith("(t-1)"))
