"""The threshold Paillier round: a committee decrypts only this round's signed sum, survives
committee dropouts down to t, names forged partials, and refuses anything that is not the sum."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import threshold_paillier as tp
from protocols.paillier_threshold import (
    PaillierNaiveThreshold,
    PaillierThreshold,
    PartialMessage,
    SumCheckError,
    SumRequest,
    ThresholdClient,
    ThresholdServer,
)
from secagg import signing
from secagg.errors import ConfigError, NotEnoughClientsError, WireFormatError
from secagg.party import SERVER, Envelope, Inbound, Party
from secagg.protocol import RoundSpec
from secagg.round import run_round
from secagg.router import Dropout
from tests.conftest import make_updates

SMALL = {"key_bits": 256, "insecure_allow_small_keys": True, "workers": 1}


def _protocol(**overrides: Any) -> PaillierThreshold:
    config = {**SMALL, "committee": 3, "threshold": 2, "keygen": tp.DEALER_INSECURE, **overrides}
    return PaillierThreshold(**config)


class _Swapped(PaillierThreshold):
    """The protocol with some parties replaced (a cheating server or committee member)."""

    def __init__(self, base: PaillierThreshold, replace: dict[int, Any]) -> None:
        super().__init__(base.config)
        self._federation = base._federation
        self._replace = replace

    def make_parties(
        self, updates: Sequence[np.ndarray], weights: Sequence[float] | None, spec: RoundSpec
    ) -> list[Party]:
        parties = super().make_parties(updates, weights, spec)
        federation = self.federation(spec.n_clients)
        out: list[Party] = []
        for party in parties:
            cls = self._replace.get(party.party_id)
            if cls is None:
                out.append(party)
            elif party.party_id == SERVER:
                out.append(cls(spec, self.config, federation, naive=False))
            else:
                i = party.party_id
                out.append(cls(i, updates[i], 1.0, spec, self.config, federation, naive=False))
        return out


def _mean(updates: list[np.ndarray]) -> np.ndarray:
    return np.mean(updates, axis=0)


def test_dealer_free_round_decrypts_the_mean_and_reuses_the_key() -> None:
    protocol = _protocol(keygen=tp.DEALER_DISTRIBUTED)
    updates = make_updates(4, 40, seed=1)
    first = run_round(protocol, updates, round_id=0)
    second = run_round(protocol, make_updates(4, 40, seed=2), round_id=1)
    assert first.error is None and second.error is None
    np.testing.assert_allclose(
        first.unwrap(), _mean(updates), atol=protocol.precision(n_clients=4, value_range=1)
    )
    keys = [r.views[SERVER].holding("threshold_public_key") for r in (first, second)]
    assert keys[0] is keys[1] and keys[0].dealer == tp.DEALER_DISTRIBUTED  # type: ignore[attr-defined]
    assert first.views[SERVER].holding("keygen") == "distributed"
    # No server-side holding is secret; every committee member holds its share as a secret.
    assert first.views[SERVER].secrets() == ()
    assert all("key_share" in first.views[j].secrets() for j in range(3))
    assert "key_share" not in first.views[3].secrets()


def test_naive_encoding_under_the_committee_key() -> None:
    protocol = PaillierNaiveThreshold(**SMALL, committee=3, threshold=2, keygen=tp.DEALER_INSECURE)
    updates = make_updates(3, 12, seed=3)
    result = run_round(protocol, updates, weights=[1.0, 2.0, 3.0])
    assert result.error is None
    expected = np.average(updates, axis=0, weights=[1, 2, 3])
    np.testing.assert_allclose(result.unwrap(), expected, atol=protocol.precision(n_clients=3, value_range=1))


def test_upload_per_parameter_is_that_of_single_key_packed_paillier() -> None:
    from protocols.paillier import PaillierPacked

    updates = make_updates(3, 500, seed=4)
    single = run_round(PaillierPacked(**SMALL), updates)
    threshold = run_round(_protocol(), updates)
    assert single.error is None and threshold.error is None

    # The same EncryptedUpdate, byte for byte in size, plus one 64-byte signature message.
    def sizes(result: Any, message: str) -> list[int]:
        return [e.nbytes for e in result.transcript if e.message == message and e.sender == 0]

    assert sizes(threshold, "EncryptedUpdate") == sizes(single, "EncryptedUpdate")
    assert len(sizes(threshold, "EncryptedUpdate")) == 1
    assert all(64 <= n < 128 for n in sizes(threshold, "UploadSignature"))


def test_round_completes_with_t_committee_members_and_fails_typed_below() -> None:
    protocol = _protocol()
    updates = make_updates(4, 30, seed=5)
    one_gone = run_round(protocol, updates, faults=[Dropout(2, "decrypt")])
    assert one_gone.error is None
    np.testing.assert_allclose(
        one_gone.unwrap(), _mean(updates), atol=protocol.precision(n_clients=4, value_range=1)
    )
    two_gone = run_round(protocol, updates, faults=[Dropout(1, "decrypt"), Dropout(2, "decrypt")])
    assert isinstance(two_gone.error, tp.NotEnoughDecryptorsError) and two_gone.aggregate is None
    assert isinstance(two_gone.error, NotEnoughClientsError)


class _Forger(ThresholdClient):
    def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
        out = super().step(stage, inbox)
        if stage == "decrypt":
            forged = []
            for envelope in out:
                p = envelope.payload
                assert isinstance(p, PartialMessage)
                values = (p.values[0] * 4 % (1 << (8 * p.width - 2)) or 1, *p.values[1:])
                forged.append(Envelope(envelope.recipient, dataclasses.replace(p, values=values)))
            return forged
        return out


def test_a_forged_partial_is_dropped_and_its_sender_named() -> None:
    base = _protocol()
    updates = make_updates(4, 30, seed=6)
    base.federation(4)
    result = run_round(_Swapped(base, {1: _Forger}), updates)
    assert result.error is None  # two honest members remain
    rejected = result.views[SERVER].holding("rejected_decryptors")
    assert list(rejected) == [1]  # type: ignore[call-overload]
    both = run_round(_Swapped(base, {1: _Forger, 2: _Forger}), updates)
    assert isinstance(both.error, tp.PartialDecryptionError) and both.aggregate is None
    assert both.error.party in (1, 2) and "client-1" in str(both.error) and "client-2" in str(both.error)


def test_a_member_with_a_wrong_key_share_is_named() -> None:
    base = _protocol()
    federation = base.federation(4)
    wrong = dataclasses.replace(federation.shares[0], secret=federation.shares[0].secret + 1)
    base._federation = dataclasses.replace(federation, shares=(wrong, *federation.shares[1:]))
    result = run_round(base, make_updates(4, 30, seed=7))
    assert result.error is None
    assert list(result.views[SERVER].holding("rejected_decryptors")) == [0]  # type: ignore[call-overload]
    with pytest.raises(tp.KeyShareError):
        wrong.check()


def _server_sending(edit: Any) -> type[ThresholdServer]:
    class Cheat(ThresholdServer):
        def _aggregate(self, inbox: Sequence[Inbound]) -> list[Envelope]:
            out = super()._aggregate(inbox)
            return [Envelope(e.recipient, edit(e.payload)) for e in out]

    return Cheat


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        # One client's ciphertexts presented as "the sum".
        (
            lambda r: dataclasses.replace(
                r, included=r.included[:1], signatures=r.signatures[:1], uploads=r.uploads[:1]
            ),
            "min_clients",
        ),
        # A ciphertext altered (the server's own choice of what to decrypt).
        (lambda r: dataclasses.replace(r, uploads=(r.uploads[1], *r.uploads[1:])), "not the one it signed"),
        # A client's upload attributed to another client.
        (
            lambda r: dataclasses.replace(
                r, signatures=(r.signatures[1], r.signatures[0], *r.signatures[2:])
            ),
            "not the one it signed",
        ),
    ],
)
def test_a_member_refuses_anything_but_the_signed_sum(edit: Any, match: str) -> None:
    base = _protocol()
    base.federation(4)
    result = run_round(_Swapped(base, {SERVER: _server_sending(edit)}), make_updates(4, 20, seed=8))
    error = result.error
    assert isinstance(error, SumCheckError), error
    assert error.party == SERVER and result.aggregate is None
    assert re.search(match, str(error)), str(error)


def test_a_sum_from_another_round_is_refused() -> None:
    base = _protocol()
    federation = base.federation(4)
    spec0 = RoundSpec(0, 4, 20)
    old = run_round(base, make_updates(4, 20, seed=9), round_id=0)
    request = next(r.payload for r in old.views[0].received if isinstance(r.payload, SumRequest))
    member = ThresholdClient(
        0, make_updates(1, 20)[0], 1.0, RoundSpec(1, 4, 20), base.config, federation, naive=False
    )
    with pytest.raises(SumCheckError) as info:
        member.check_request(request)
    assert info.value.party == SERVER
    same_round = ThresholdClient(0, make_updates(1, 20)[0], 1.0, spec0, base.config, federation, naive=False)
    assert len(same_round.check_request(request)) == request.layout.count


def test_a_client_with_a_bad_signature_is_left_out_not_fatal() -> None:
    class BadSigner(ThresholdClient):
        def step(self, stage: str, inbox: Sequence[Inbound]) -> list[Envelope]:
            if stage == "upload":  # signs with a key nobody pinned
                self._signing_key = signing.generate_signing_keypair()[0]
            return super().step(stage, inbox)

    base = _protocol()
    base.federation(4)
    updates = make_updates(4, 20, seed=10)
    result = run_round(_Swapped(base, {3: BadSigner}), updates)
    assert result.error is None and result.included == (0, 1, 2)
    np.testing.assert_allclose(result.unwrap(), _mean(updates[:3]), atol=1e-4)


def test_wire_messages_round_trip_and_refuse_truncation() -> None:
    base = _protocol()
    old = run_round(base, make_updates(4, 20, seed=11))
    request = next(r.payload for r in old.views[0].received if isinstance(r.payload, SumRequest))
    assert SumRequest.from_bytes(request.to_bytes()) == request
    twice = dataclasses.replace(
        request, included=(0, 0), signatures=request.signatures[:1] * 2, uploads=request.uploads[:1] * 2
    )
    with pytest.raises(WireFormatError, match="distinct"):
        SumRequest.from_bytes(twice.to_bytes())
    with pytest.raises(WireFormatError):
        SumRequest.from_bytes(request.to_bytes()[:-1])
    message = PartialMessage(2, (5, 7), 64, 123, 456)
    assert PartialMessage.from_bytes(message.to_bytes()) == message
    with pytest.raises(WireFormatError):
        PartialMessage.from_bytes(message.to_bytes()[:-1])
    with pytest.raises(WireFormatError):
        PartialMessage.from_bytes(message.to_bytes()[:9])


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="2t - 1"):
        PaillierThreshold(**SMALL, committee=3, threshold=3)
    with pytest.raises(ConfigError, match="keygen"):
        PaillierThreshold(**SMALL, keygen="dealer")
    with pytest.raises(ConfigError):
        run_round(_protocol(committee=5, threshold=3), make_updates(4, 10))


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=-4, max_value=4, allow_nan=False), st.integers(min_value=-8, max_value=0))
def test_phe_decode_agrees_with_phe(value: float, exponent: int) -> None:
    from phe import paillier as phe_paillier

    from protocols.paillier_threshold import phe_decode

    key = phe_paillier.PaillierPublicKey(_N_FOR_DECODE)
    encoded = phe_paillier.EncodedNumber.encode(key, value, precision=16.0**exponent)
    assert phe_decode(encoded.encoding, key.n, encoded.exponent) == encoded.decode()


_N_FOR_DECODE = (
    0xC5D1_5E0B_1F0F_2C6B_8D4A_A3E7_5A1E_3C4B_9F21_0D7A_6B5E_4C3D_2B1A_0F9E_8D7C_6B5A_4939_2817_0615_F4E3
)


def test_a_cost_probe_gets_keys_of_the_same_size_from_the_dealer() -> None:
    """secagg evaluate's observation probe throws its keys away: it makes them with the
    dealer (same size, same decryption cost), never with the dealer-free generation."""
    secure = PaillierThreshold()
    probe = secure.cost_probe()
    assert secure.config.keygen == tp.DEALER_DISTRIBUTED
    assert probe.config.keygen == tp.DEALER_INSECURE
    assert dataclasses.replace(probe.config, keygen=secure.config.keygen) == secure.config
    assert probe is not secure
