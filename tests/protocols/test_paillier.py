"""Paillier (packed and naive): exact slot sums at the boundaries, the overflow guard,
dropouts, hostile ciphertexts, key mismatch, the wire codecs and the offline phase."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier as phe_paillier

import protocols
from protocols import paillier
from secagg.cli import main
from secagg.errors import (
    ConfigError,
    EncodingOverflowError,
    IntegrityError,
    NotEnoughClientsError,
    WireFormatError,
)
from secagg.party import KEY_HOLDER, SERVER
from secagg.round import RoundResult, reference_aggregate, run_round
from secagg.router import Dropout, Inject
from secagg.wire import HEADER_BYTES, decode_header, encode_message
from tests.conftest import fast_protocol, make_updates

KEY_BITS = 512
_KEYS = {
    "a": phe_paillier.generate_paillier_keypair(n_length=KEY_BITS),
    "b": phe_paillier.generate_paillier_keypair(n_length=KEY_BITS),
}


@pytest.fixture
def fixed_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Rounds use key 'a' (or whichever ``choice['key']`` names) instead of a fresh one."""
    choice = {"key": "a"}
    monkeypatch.setattr(paillier, "generate_keypair", lambda bits: _KEYS[choice["key"]])
    yield choice


def _packed(**overrides: object) -> paillier.PaillierPacked:
    protocol = fast_protocol("paillier", **overrides)
    assert isinstance(protocol, paillier.PaillierPacked)
    return protocol


def _check(result: RoundResult, updates: list[np.ndarray], weights: list[float] | None, bound: float) -> None:
    reference = reference_aggregate(updates, result.included, kind="weighted_mean", weights=weights)
    assert float(np.max(np.abs(result.unwrap() - reference))) <= bound


# ---------------------------------------------------------------------------- config


def test_small_keys_need_the_insecure_flag() -> None:
    with pytest.raises(ConfigError, match="insecure_allow_small_keys"):
        paillier.PaillierConfig(key_bits=512)
    with pytest.raises(ConfigError, match="multiple of 64"):
        paillier.PaillierConfig(key_bits=1000, insecure_allow_small_keys=True)
    assert paillier.PaillierConfig().security_bits == 112
    assert paillier.PaillierConfig(key_bits=3072).security_bits == 128
    assert paillier.PaillierConfig(key_bits=512, insecure_allow_small_keys=True).security_bits == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_weight", 0),
        ("min_clients", 0),
        ("min_clients", 1),
        ("workers", -1),
        ("obfuscation", "fast"),
        ("clip", -1.0),
    ],  # fmt: skip
)
def test_config_rejects_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigError):
        paillier.PaillierConfig(**{field: value})


def test_both_encodings_are_registered_weighted_mean() -> None:
    for name, wire_id in (("paillier", 10), ("paillier-naive", 11)):
        cls = protocols.get(name)
        assert cls.wire_id == wire_id
        assert cls.aggregate_kind == "weighted_mean"
        assert cls.aggregate_holder == KEY_HOLDER
        assert cls.offline_stages == frozenset({"precompute"})


# ---------------------------------------------------------------------------- layout


@pytest.mark.parametrize("n_clients, max_weight", [(2, 1), (4, 1024), (100, 100), (3, 7)])
def test_slot_budget_is_tight(n_clients: int, max_weight: int) -> None:
    config = paillier.PaillierConfig(max_weight=max_weight)
    n = _KEYS["a"][0].n
    layout = paillier.plan_layout(config, n=n, n_clients=n_clients, n_params=1000, naive=False)
    worst = n_clients * max_weight * 2 * layout.offset
    # Fits, and one bit fewer would not.
    assert worst < 2**layout.slot_bits <= 2 * worst
    assert layout.slots * layout.slot_bits < n.bit_length()
    assert layout.count == -(-1001 // layout.slots)


def test_impossible_budget_raises_before_the_round(fixed_key: dict[str, str]) -> None:
    protocol = _packed(frac_bits=40, max_weight=2**20)
    updates = make_updates(3, 10, seed=1)
    with pytest.raises(EncodingOverflowError, match="slot"):
        run_round(protocol, updates, weights=[1.0, 1.0, 1.0])


@settings(max_examples=40, deadline=None)
@given(
    slot_bits=st.integers(1, 64),
    slots=st.integers(1, 40),
    data=st.data(),
)
def test_pack_unpack_roundtrip(slot_bits: int, slots: int, data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 3 * slots))
    values = data.draw(st.lists(st.integers(0, 2**slot_bits - 1), min_size=count, max_size=count))
    array = np.array(values, dtype=np.uint64)
    packed = paillier.pack(array, slot_bits=slot_bits, slots=slots)
    assert len(packed) == -(-count // slots)
    assert all(p.bit_length() <= slot_bits * slots for p in packed)
    back = paillier.unpack(packed, slot_bits=slot_bits, slots=slots, count=count)
    assert back.tolist() == values


def test_unpack_refuses_a_plaintext_wider_than_the_layout() -> None:
    with pytest.raises(IntegrityError, match="bits"):
        paillier.unpack([2**40], slot_bits=8, slots=4, count=4)


# ---------------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    "values",
    [
        [4.0, 4.0, 4.0],  # every client at the largest value
        [-4.0, -4.0, -4.0],  # every client at the most negative value
        [4.0, -4.0, 4.0],  # mixed extremes
    ],
)
def test_slot_boundaries_are_exact(values: list[float], fixed_key: dict[str, str]) -> None:
    protocol = _packed(max_weight=9)
    n_params = 50
    # Slot 0 and the last value slot of a ciphertext sit at the ends of a plaintext.
    updates = [np.full(n_params, v) for v in values]
    weights = [9.0, 9.0, 9.0]  # the largest weight: the slot sum is the budget's worst case
    result = run_round(protocol, updates, weights=weights)
    reference = reference_aggregate(updates, result.included, kind="weighted_mean", weights=weights)
    # Values on the fixed-point grid: the weighted mean comes back exactly.
    assert np.array_equal(result.unwrap(), reference)
    holder = result.views[KEY_HOLDER]
    assert holder.revealed is not None and holder.revealed.included == (0, 1, 2)


def test_smallest_step_survives_packing(fixed_key: dict[str, str]) -> None:
    protocol = _packed()
    quantum = 2.0**-protocol.config.frac_bits
    updates = [np.array([quantum, -quantum, 0.0, 4.0 - quantum]), np.array([0.0, 0.0, quantum, -4.0])]
    result = run_round(protocol, updates, weights=[3.0, 1.0])
    expected = np.array([0.75 * quantum, -0.75 * quantum, 0.25 * quantum, 0.75 * (4 - quantum) - 1.0])
    assert np.array_equal(result.unwrap(), expected)


@pytest.mark.parametrize("name", ["paillier", "paillier-naive"])
def test_random_updates_within_precision(name: str, fixed_key: dict[str, str]) -> None:
    protocol = fast_protocol(name)
    updates = make_updates(5, 40, value_range=4.0, seed=7)
    weights = [1.0, 50.0, 3.0, 1024.0, 17.0]
    result = run_round(protocol, updates, weights=weights)
    _check(result, updates, weights, protocol.precision(n_clients=5, value_range=4.0))
    assert protocol.precision(n_clients=5, value_range=4.0) < 2.0**-16


def test_fractional_weights_need_weight_frac_bits(fixed_key: dict[str, str]) -> None:
    updates = make_updates(2, 8, seed=2)
    result = run_round(_packed(), updates, weights=[1.5, 2.0])
    assert isinstance(result.error, ConfigError)
    result = run_round(_packed(weight_frac_bits=1), updates, weights=[1.5, 2.0])
    _check(result, updates, [1.5, 2.0], _packed().precision(n_clients=2, value_range=1.0))


# ---------------------------------------------------------------------------- overflow guard


def test_value_beyond_clip_raises_before_sending(fixed_key: dict[str, str]) -> None:
    updates = make_updates(3, 20, seed=4)
    updates[1][5] = 4.5
    result = run_round(_packed(), updates, weights=[1.0, 1.0, 1.0])
    assert isinstance(result.error, EncodingOverflowError)
    assert not any(entry.sender == 1 and entry.stage == "upload" for entry in result.transcript)


def test_weight_above_max_weight_raises_before_sending(fixed_key: dict[str, str]) -> None:
    updates = make_updates(3, 20, seed=4)
    result = run_round(_packed(max_weight=10), updates, weights=[1.0, 11.0, 1.0])
    assert isinstance(result.error, EncodingOverflowError)
    assert "max_weight" in str(result.error)
    assert not any(entry.sender == 1 and entry.stage == "upload" for entry in result.transcript)


def test_naive_value_beyond_clip_raises(fixed_key: dict[str, str]) -> None:
    updates = make_updates(2, 5, seed=4)
    updates[0][0] = -7.0
    result = run_round(fast_protocol("paillier-naive"), updates, weights=[1.0, 1.0])
    assert isinstance(result.error, EncodingOverflowError)


# ---------------------------------------------------------------------------- dropouts


@pytest.mark.parametrize("name", ["paillier", "paillier-naive"])
def test_dropout_is_left_out_of_the_mean(name: str, fixed_key: dict[str, str]) -> None:
    protocol = fast_protocol(name)
    updates = make_updates(4, 30, seed=5)
    weights = [2.0, 5.0, 1.0, 8.0]
    result = run_round(protocol, updates, weights=weights, faults=[Dropout(2, "upload")])
    assert result.included == (0, 1, 3)
    _check(result, updates, weights, protocol.precision(n_clients=4, value_range=1.0))


def test_key_holder_refuses_fewer_than_min_clients(fixed_key: dict[str, str]) -> None:
    updates = make_updates(3, 10, seed=6)
    faults = [Dropout(0, "upload"), Dropout(2, "upload")]
    result = run_round(_packed(), updates, weights=[1.0, 1.0, 1.0], faults=faults)
    assert isinstance(result.error, NotEnoughClientsError)
    assert result.aggregate is None
    # The key holder decrypted nothing: it revealed nothing.
    assert result.views[KEY_HOLDER].revealed is None
    # And no configuration lowers the guard to one client: its "sum" is its update.
    with pytest.raises(ConfigError, match="min_clients"):
        _packed(min_clients=1)


def test_everyone_dropped_is_a_typed_error(fixed_key: dict[str, str]) -> None:
    updates = make_updates(2, 10, seed=6)
    faults = [Dropout(0, "keys"), Dropout(1, "keys")]
    result = run_round(_packed(), updates, faults=faults)
    assert isinstance(result.error, NotEnoughClientsError)


# ---------------------------------------------------------------------------- hostile ciphertexts


def _upload_raw(result: RoundResult, client: int) -> bytes:
    return next(r.raw for r in result.views[SERVER].received if r.header.sender == client)


def _retamper(raw: bytes, index: int, value: int) -> bytes:
    """Replace ciphertext ``index`` of an upload and re-seal the message (a valid CRC)."""
    header = decode_header(raw)
    payload = paillier.EncryptedUpdate.from_bytes(raw[HEADER_BYTES:-4])
    width = payload.layout.width
    blob = bytearray(payload.ciphertexts)
    blob[index * width : (index + 1) * width] = value.to_bytes(width, "big")
    tampered = dataclasses.replace(payload, ciphertexts=bytes(blob))
    return encode_message(
        protocol_id=header.protocol_id,
        round_id=header.round_id,
        sender=header.sender,
        recipient=header.recipient,
        payload=tampered,
    )


def _left_out(result: RoundResult, client: int, match: str) -> None:
    """``client`` was left out like a dropout (with the reason), the others' mean completed."""
    assert result.error is None, result.error
    assert client not in result.included and len(result.included) >= 2
    rejected = result.views[SERVER].holding("rejected_clients")
    assert isinstance(rejected, dict) and match in rejected[client]


@pytest.mark.parametrize("what", ["n_squared", "all_ones", "zero", "multiple_of_n"])
def test_a_tampered_ciphertext_leaves_its_sender_out(what: str, fixed_key: dict[str, str]) -> None:
    # One bad client used to abort the whole round (WireFormatError inside the server's
    # aggregation); it is now left out like a dropout and the others' mean completes.
    updates = make_updates(3, 20, seed=8)
    clean = run_round(_packed(), updates, round_id=3)
    n = _KEYS["a"][0].n
    width = paillier.ciphertext_width(n)
    value = {"n_squared": n * n, "all_ones": 2 ** (8 * width) - 1, "zero": 0, "multiple_of_n": 3 * n}[what]
    forged = _retamper(_upload_raw(clean, 0), 1, value)
    result = run_round(
        _packed(), updates, round_id=3, faults=[Dropout(0, "upload"), Inject(forged, SERVER, "upload")]
    )
    _left_out(result, 0, "ciphertext 1")
    _check(result, updates, None, _packed().precision(n_clients=3, value_range=1.0))
    with pytest.raises(WireFormatError):
        paillier.decode_ciphertexts(
            paillier.EncryptedUpdate.from_bytes(forged[HEADER_BYTES:-4]).ciphertexts, n, what="x"
        )


def test_decode_ciphertexts_accepts_honest_ones() -> None:
    public_key = _KEYS["a"][0]
    n = public_key.n
    ciphertexts = [public_key.raw_encrypt(m) for m in (0, 1, n - 1)]
    blob = paillier.ciphertexts_to_bytes(ciphertexts, paillier.ciphertext_width(n))
    assert [int(c) for c in paillier.decode_ciphertexts(blob, n, what="test")] == ciphertexts
    with pytest.raises(WireFormatError, match="multiple"):
        paillier.decode_ciphertexts(blob[:-1], n, what="test")


def test_a_ciphertext_under_another_key_leaves_its_sender_out(fixed_key: dict[str, str]) -> None:
    updates = make_updates(3, 20, seed=9)
    fixed_key["key"] = "b"
    foreign = _upload_raw(run_round(_packed(), updates, round_id=4), 0)
    fixed_key["key"] = "a"
    result = run_round(
        _packed(), updates, round_id=4, faults=[Dropout(0, "upload"), Inject(foreign, SERVER, "upload")]
    )
    _left_out(result, 0, "another public key")
    _check(result, updates, None, _packed().precision(n_clients=3, value_range=1.0))


def test_two_bad_senders_of_three_leave_too_few_to_decrypt(fixed_key: dict[str, str]) -> None:
    updates = make_updates(3, 20, seed=9)
    fixed_key["key"] = "b"
    old = run_round(_packed(), updates, round_id=4)
    fixed_key["key"] = "a"
    faults = [Dropout(c, "upload") for c in (0, 1)] + [
        Inject(_upload_raw(old, c), SERVER, "upload") for c in (0, 1)
    ]
    result = run_round(_packed(), updates, round_id=4, faults=faults)
    assert isinstance(result.error, NotEnoughClientsError)
    assert result.aggregate is None


# ---------------------------------------------------------------------------- wire


def test_public_key_message_is_fixed_width() -> None:
    n = _KEYS["a"][0].n
    message = paillier.PublicKeyMessage(KEY_BITS, n)
    assert len(message.to_bytes()) == 2 + KEY_BITS // 8 + 1 + 64
    assert paillier.PublicKeyMessage.from_bytes(message.to_bytes()) == message
    even = paillier.PublicKeyMessage(KEY_BITS, n - 1).to_bytes()
    with pytest.raises(WireFormatError, match="odd"):
        paillier.PublicKeyMessage.from_bytes(even)


def test_layout_count_must_match(fixed_key: dict[str, str]) -> None:
    result = run_round(_packed(), make_updates(2, 30, seed=10))
    payload = next(r.payload for r in result.views[SERVER].received if r.header.sender == 0)
    assert isinstance(payload, paillier.EncryptedUpdate)
    bad = dataclasses.replace(
        payload, layout=dataclasses.replace(payload.layout, count=payload.layout.count + 1)
    )
    with pytest.raises(WireFormatError, match="ciphertexts"):
        paillier.EncryptedUpdate.from_bytes(bad.to_bytes())


# ---------------------------------------------------------------------------- views


def test_server_holds_only_the_public_key(fixed_key: dict[str, str]) -> None:
    result = run_round(_packed(), make_updates(3, 30, seed=12), weights=[1.0, 2.0, 3.0])
    server = result.views[SERVER]
    assert [h.name for h in server.holdings] == ["public_key", "rejected_clients"]
    assert server.secrets() == ()
    assert not any(isinstance(h.value, phe_paillier.PaillierPrivateKey) for h in server.holdings)
    assert server.revealed is None
    kinds = {type(r.payload) for r in server.received}
    assert kinds == {paillier.PublicKeyMessage, paillier.EncryptedUpdate}
    holder = result.views[KEY_HOLDER]
    assert isinstance(holder.holding("private_key"), phe_paillier.PaillierPrivateKey)
    assert holder.secrets() == ("private_key", "signing_key")
    assert {type(r.payload) for r in holder.received} == {paillier.EncryptedSum}


def test_observable_vector_is_in_the_update_shape(fixed_key: dict[str, str]) -> None:
    for name in ("paillier", "paillier-naive"):
        updates = make_updates(2, 40, seed=13)
        result = run_round(fast_protocol(name), updates)
        payload = next(r.payload for r in result.views[SERVER].received if r.header.sender == 0)
        vector = paillier.observable_vector(payload, 40)
        assert vector.shape == (40,) and vector.dtype == np.float64
        assert np.all(vector >= -1.0) and np.all(vector < 1.0)
        # It carries nothing of the update: no useful correlation.
        assert abs(np.corrcoef(vector, updates[0])[0, 1]) < 0.6
        assert np.array_equal(paillier.observable_vector(payload.to_bytes(), 40), vector)
    summed = next(r.payload for r in result.views[KEY_HOLDER].received)
    assert paillier.observable_vector(summed, 40).shape == (40,)
    with pytest.raises(ConfigError):
        paillier.observable_vector(paillier.PublicKeyMessage(KEY_BITS, _KEYS["a"][0].n), 4)


# ---------------------------------------------------------------------------- speed paths


def test_process_pool_and_djn_paths_agree(fixed_key: dict[str, str]) -> None:
    updates = make_updates(3, 200, value_range=2.0, seed=14)
    weights = [4.0, 1.0, 2.0]
    bound = _packed().precision(n_clients=3, value_range=2.0)
    pooled = run_round(_packed(workers=2, parallel_min_ciphertexts=1), updates, weights=weights)
    _check(pooled, updates, weights, bound)
    djn = run_round(_packed(obfuscation="djn"), updates, weights=weights)
    _check(djn, updates, weights, bound)
    key_message = next(r.payload for r in djn.views[0].received)
    assert isinstance(key_message, paillier.PublicKeyMessage) and key_message.djn_base > 0


def test_precomputed_obfuscators_encrypt_correctly() -> None:
    public_key, private_key = _KEYS["a"]
    key = paillier.PublicKeyMessage(KEY_BITS, public_key.n)
    config = paillier.PaillierConfig(key_bits=KEY_BITS, insecure_allow_small_keys=True)
    obfuscators = paillier.precompute_obfuscators(3, key, config)
    assert len({int(r) for r in obfuscators}) == 3
    ciphertexts = paillier.encrypt_with([0, 5, public_key.n - 1], obfuscators, public_key.n)
    assert [private_key.raw_decrypt(int(c)) for c in ciphertexts] == [0, 5, public_key.n - 1]


def test_cli_reports_offline_time(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["aggregate", "--protocol", "paillier", "--clients", "3", "--params", "200", "--json"]
    args += ["--set", "key_bits=512", "--set", "insecure_allow_small_keys=true", "--range", "2"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 < report["client_offline_s"] <= report["client_s"]
    assert report["max_abs_error"] <= report["declared_precision"]
    assert report["config"]["clip"] == 2.0


@pytest.mark.slow
def test_2048_bit_round() -> None:
    protocol = protocols.create("paillier")
    assert protocol.config.key_bits == 2048
    updates = make_updates(3, 300, value_range=4.0, seed=15)
    weights = [10.0, 1.0, 100.0]
    result = run_round(protocol, updates, weights=weights)
    _check(result, updates, weights, 2.0**-16)
    assert result.costs.bytes_per_param() < 9.5


def test_decode_refuses_an_impossible_total_weight() -> None:
    config = paillier.PaillierConfig(max_weight=4)
    layout = paillier.plan_layout(config, n=_KEYS["a"][0].n, n_clients=2, n_params=3, naive=False)
    slots = np.array([layout.offset * 9] * 3 + [9], dtype=np.uint64)  # T = 9 > 2 clients x 4
    plaintexts = paillier.pack(slots, slot_bits=layout.slot_bits, slots=layout.slots)
    with pytest.raises(IntegrityError, match="total weight"):
        paillier.decode_packed(plaintexts, layout, max_total_weight=8)
    mean, total = paillier.decode_packed(plaintexts, layout, max_total_weight=9)
    assert total == 9 and np.array_equal(mean, np.zeros(3))


def test_naive_refuses_djn(fixed_key: dict[str, str]) -> None:
    protocol = fast_protocol("paillier-naive", obfuscation="djn")
    with pytest.raises(ConfigError, match="standard"):
        run_round(protocol, make_updates(2, 4, seed=1))
