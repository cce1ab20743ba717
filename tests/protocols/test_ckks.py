"""CKKS with TenSEAL: sums at and around the slot count, keys, the wire format, dropouts,
the parameter planner and its noise bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.ckks import (
    CKKS,
    ChunkedCiphertexts,
    CKKSConfig,
    EncryptedSum,
    EncryptedUpdate,
    check_ckks_vector_bytes,
    encrypt_update,
    load_ciphertexts,
    load_context,
    make_secret_context,
    observable_vector,
    public_context_bytes,
)
from protocols.ckks_params import (
    MAX_COEFF_BITS_128,
    CkksParameters,
    nvflare_parameters,
    plan_parameters,
    seal_primes,
)
from secagg.errors import (
    ConfigError,
    EncodingOverflowError,
    NotEnoughClientsError,
    WireFormatError,
)
from secagg.party import KEY_HOLDER, SERVER, Inbound
from secagg.protocol import Protocol, RoundSpec
from secagg.round import reference_aggregate, run_round
from secagg.router import Dropout, Inject
from secagg.wire import Header, encode_message
from tests.conftest import fast_protocol, make_updates

FAST = CKKS(**CKKS.fast_config)
SLOTS = FAST.params.slots


@pytest.fixture(scope="module")
def keys() -> tuple[object, object]:
    secret = make_secret_context(FAST.params)
    return secret, load_context(public_context_bytes(secret))


def _sum_error(
    protocol: Protocol, n_clients: int, n_params: int, seed: int, value_range: float = 1.0
) -> float:
    updates = make_updates(n_clients, n_params, value_range=value_range, seed=seed)
    result = run_round(protocol, updates, round_id=seed)
    reference = reference_aggregate(updates, result.included, kind="sum")
    return float(np.max(np.abs(result.unwrap() - reference)))


@pytest.mark.parametrize("n_params", [1, SLOTS - 1, SLOTS, SLOTS + 1, 2 * SLOTS + 7])
def test_sum_below_at_and_above_the_slot_count(n_params: int) -> None:
    error = _sum_error(FAST, 3, n_params, seed=n_params)
    assert error <= FAST.precision(n_clients=3, value_range=1.0)


def test_default_parameters_meet_the_issue_targets() -> None:
    # 100 clients with |w| <= 4 within 1e-4 of float64, at most 25 bytes/param, 128-bit.
    protocol = CKKS()
    assert protocol.params.security_bits == 128
    assert protocol.params.estimated_bytes_per_param() <= 25
    assert protocol.precision(n_clients=100, value_range=4.0) <= 1e-4
    updates = make_updates(100, 2 * protocol.params.slots, value_range=4.0, seed=9)
    result = run_round(protocol, updates)
    error = np.max(np.abs(result.unwrap() - reference_aggregate(updates, result.included, kind="sum")))
    assert error <= 1e-4
    assert result.costs.bytes_per_param() <= 25


def test_server_context_has_no_key(keys) -> None:
    result = run_round(FAST, make_updates(3, 10, seed=1))
    server = result.views[SERVER]
    context = server.holding("context")
    assert not context.has_secret_key()  # type: ignore[attr-defined]
    assert not context.is_private()  # type: ignore[attr-defined]
    assert not context.has_public_key()  # type: ignore[attr-defined]
    assert server.secrets() == ()
    # The clients and the key holder do hold it, and say so: the test above can fail.
    assert result.views[KEY_HOLDER].holding("context").has_secret_key()  # type: ignore[attr-defined]
    assert result.views[0].holding("context").is_private()  # type: ignore[attr-defined]
    assert result.views[KEY_HOLDER].secrets() == ("context",) == result.views[0].secrets()
    secret, public = keys
    assert public.is_public() and not public.has_secret_key()


def test_clients_never_see_ciphertexts() -> None:
    result = run_round(FAST, make_updates(3, 10, seed=2))
    for client in range(3):
        assert result.views[client].received == ()
    # The key holder sees only the server's sum, never a client's ciphertext.
    senders = {r.header.sender for r in result.views[KEY_HOLDER].received}
    assert senders == {SERVER}


def test_server_cannot_decrypt(keys) -> None:
    secret, public = keys
    chunked = encrypt_update(secret, FAST.params, np.ones(5))
    (vector,) = load_ciphertexts(public, FAST.params, chunked, n_params=5, what="test")
    with pytest.raises(ValueError):
        vector.decrypt()


def test_truncated_ciphertext_raises(keys) -> None:
    secret, _ = keys
    payload = EncryptedUpdate(encrypt_update(secret, FAST.params, np.linspace(-1, 1, 50)))
    data = payload.to_bytes()
    assert EncryptedUpdate.from_bytes(data).ciphertexts == payload.ciphertexts
    for cut in (1, 8, 100, len(data) // 2, len(data) - 9, len(data) - 1):
        with pytest.raises(WireFormatError):
            EncryptedUpdate.from_bytes(data[:cut])
    # A truncated chunk re-framed with a consistent length is caught before TenSEAL.
    blob = payload.ciphertexts.chunks[0]
    with pytest.raises(WireFormatError, match="SEAL header says|overruns|ciphertext of"):
        check_ckks_vector_bytes(blob[:-200] + blob[-9:], expected_size=50, max_bytes=10**6, what="cut")
    with pytest.raises(WireFormatError, match="expected 49 values, got 50"):
        check_ckks_vector_bytes(blob, expected_size=49, max_bytes=10**6, what="count")


def test_foreign_bytes_raise_wire_format_error(keys) -> None:
    secret, public = keys
    chunked = encrypt_update(secret, FAST.params, np.zeros(10))
    blob = bytearray(chunked.chunks[0])
    tag = blob.index(b"\x5e\xa1")  # SEAL magic inside the protobuf
    blob[tag] ^= 0xFF
    with pytest.raises(WireFormatError, match="SEAL header"):
        check_ckks_vector_bytes(bytes(blob), expected_size=10, max_bytes=10**6, what="magic")
    # Structurally valid but with a body TenSEAL rejects: typed error, no crash.
    body = bytearray(chunked.chunks[0])
    body[tag + 16 : tag + 40] = bytes(24)
    broken = ChunkedCiphertexts(10, SLOTS, (bytes(body),))
    with pytest.raises(WireFormatError):
        load_ciphertexts(public, FAST.params, broken, n_params=10, what="body")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_random_bytes_only_raise_wire_format_error(data: bytes) -> None:
    for payload_type in (EncryptedUpdate, EncryptedSum):
        with pytest.raises(WireFormatError):
            payload_type.from_bytes(data)


def test_layout_mismatch_is_refused(keys) -> None:
    secret, public = keys
    chunked = encrypt_update(secret, FAST.params, np.zeros(10))
    with pytest.raises(WireFormatError, match="expected 11 values"):
        load_ciphertexts(public, FAST.params, chunked, n_params=11, what="layout")
    wrong_chunks = EncryptedUpdate(ChunkedCiphertexts(SLOTS + 1, SLOTS, chunked.chunks))
    with pytest.raises(WireFormatError, match="chunks"):
        EncryptedUpdate.from_bytes(wrong_chunks.to_bytes())


def test_dropouts_leave_the_others_sum() -> None:
    updates = make_updates(5, 40, seed=4)
    result = run_round(FAST, updates, faults=[Dropout(1, "upload"), Dropout(3, "upload")])
    assert result.included == (0, 2, 4)
    error = np.max(np.abs(result.unwrap() - reference_aggregate(updates, (0, 2, 4), kind="sum")))
    assert error <= FAST.precision(n_clients=3, value_range=1.0)


def test_key_holder_refuses_a_sum_of_one_client() -> None:
    result = run_round(FAST, make_updates(3, 40, seed=5), faults=[Dropout(1, "upload"), Dropout(2, "upload")])
    assert isinstance(result.error, NotEnoughClientsError)
    assert result.aggregate is None
    # min_clients=1 would reveal client 0's update as the "sum": no configuration allows it.
    with pytest.raises(ConfigError, match="min_clients"):
        fast_protocol("ckks", min_clients=1)


def test_explicit_parameters_that_would_wrap_raise_before_encrypting() -> None:
    # N=2048, [40, 14], Δ=2^36 holds |sum| < ~8: three clients at 3.9 wrapped to -4.3.
    protocol = CKKS(poly_modulus_degree=2048, coeff_mod_bit_sizes="40,14", scale_bits=36, clip=3.9)
    updates = [np.full(8, 3.9) for _ in range(3)]
    with pytest.raises(EncodingOverflowError, match="capacity"):
        run_round(protocol, updates)
    # Two clients fit the same parameters, and their sum comes back right.
    result = run_round(protocol, updates[:2])
    assert np.allclose(result.unwrap(), 7.8, atol=1e-3)


def test_nvflare_preset_checks_its_capacity_too() -> None:
    protocol = CKKS(preset="nvflare", clip=1e17)
    with pytest.raises(EncodingOverflowError, match="nvflare"):
        protocol.make_parties(make_updates(8, 4), None, RoundSpec(round_id=0, n_clients=8, n_params=4))
    protocol.check_capacity(5)


def test_key_holder_checks_the_claimed_clients(keys) -> None:
    secret, _ = keys
    spec = RoundSpec(round_id=0, n_clients=4, n_params=10)
    parties = FAST.make_parties(make_updates(4, 10, seed=6), None, spec)
    holder = next(p for p in parties if p.party_id == KEY_HOLDER)
    chunked = encrypt_update(secret, FAST.params, np.zeros(10))
    header = Header(FAST.wire_id, EncryptedSum.msg_type, 0, SERVER, KEY_HOLDER, 0)
    with pytest.raises(NotEnoughClientsError, match="at least 2 clients, got 1"):
        holder.step("decrypt", [Inbound(header, EncryptedSum((3,), chunked))])


def test_a_ciphertext_that_does_not_load_is_left_out() -> None:
    updates = make_updates(4, 30, seed=7)
    # Client 3 "sends" a ciphertext at another scale (its real message is dropped).
    other = make_secret_context(CkksParameters(2048, FAST.params.coeff_mod_bit_sizes, 2.0**20))
    forged = EncryptedUpdate(encrypt_update(other, FAST.params, updates[3]))
    raw = encode_message(protocol_id=FAST.wire_id, round_id=3, sender=3, recipient=SERVER, payload=forged)
    result = run_round(
        FAST, updates, round_id=3, faults=[Dropout(3, "upload"), Inject(raw, SERVER, "upload")]
    )
    assert result.included == (0, 1, 2)
    assert "scale" in result.views[SERVER].holding("left_out")[3]  # type: ignore[index]
    error = np.max(np.abs(result.unwrap() - reference_aggregate(updates, (0, 1, 2), kind="sum")))
    assert error <= FAST.precision(n_clients=3, value_range=1.0)


def test_values_beyond_clip_are_refused() -> None:
    updates = make_updates(3, 20, seed=8)
    updates[1][4] = 1.5
    result = run_round(FAST, updates)
    assert isinstance(result.error, EncodingOverflowError)
    assert "clip 1.0" in str(result.error)


def test_too_many_clients_for_the_plan() -> None:
    with pytest.raises(ConfigError, match="at most 16 clients"):
        run_round(FAST, make_updates(17, 5, seed=1))


def test_declared_precision_is_sound_and_tight() -> None:
    # 20 clients over 8 chunks: the error stays below the bound, and the bound is within
    # 10x of what is measured (not a vacuous number).
    protocol = fast_protocol("ckks")
    error = _sum_error(protocol, 16, 8 * SLOTS, seed=12)
    bound = protocol.precision(n_clients=16, value_range=1.0)
    assert error <= bound
    assert bound <= 10 * error


def test_slot_noise_matches_the_model(keys) -> None:
    # The model's average slot std is N/6 in scaled units (planner docstring).
    secret, _ = keys
    values = np.random.default_rng(3).uniform(-1, 1, 4 * SLOTS)
    chunked = encrypt_update(secret, FAST.params, values)
    vectors = load_ciphertexts(secret, FAST.params, chunked, n_params=values.size, what="noise")
    decrypted = np.concatenate([np.asarray(v.decrypt()) for v in vectors])
    std = float(np.std((decrypted - values) * FAST.params.scale))
    assert std == pytest.approx(FAST.params.poly_modulus_degree / 6, rel=0.2)


def test_precision_is_infinite_beyond_capacity() -> None:
    assert math.isinf(FAST.precision(n_clients=4, value_range=2.0))  # beyond clip 1
    assert FAST.precision(n_clients=4, value_range=1.0) < 1e-4


def test_observable_vector_is_noise(keys) -> None:
    secret, _ = keys
    update = np.sin(np.linspace(0, 20, 3000))
    chunked = encrypt_update(secret, FAST.params, update)
    seen = observable_vector(EncryptedUpdate(chunked), update.size)
    assert seen.shape == update.shape and seen.dtype == np.float64
    assert np.all(np.abs(seen) <= 1.0)
    assert abs(np.corrcoef(seen, update)[0, 1]) < 0.1
    assert observable_vector(chunked, 10**6).size == 10**6
    payload = EncryptedSum((0, 1), chunked)
    assert np.array_equal(observable_vector(payload.to_bytes(), 100), observable_vector(payload, 100))
    with pytest.raises(WireFormatError):
        observable_vector(b"not a ciphertext", 10)


# --------------------------------------------------------------------------- the planner


def test_planner_default_and_nvflare_preset() -> None:
    plan = plan_parameters(n_clients=100, clip=4.0, precision=1e-6)
    assert plan.poly_modulus_degree == 2048 and plan.coeff_mod_bit_sizes == (40, 14)
    assert plan.total_bits <= MAX_COEFF_BITS_128[2048]
    assert plan.noise_bound(100) <= 1e-4
    assert plan.capacity(100) >= 400
    nvflare = CKKS(preset="nvflare").params
    assert nvflare == nvflare_parameters()
    assert nvflare.estimated_bytes_per_param() > 2.2 * plan.estimated_bytes_per_param()


@pytest.mark.parametrize(
    ("n_clients", "clip", "precision"),
    [
        (2, 1.0, 1e-3),
        (10, 1.0, 1e-6),
        (100, 4.0, 1e-6),
        (1000, 4.0, 1e-6),
        (100, 4.0, 1e-9),
        (50, 100.0, 1e-8),
    ],
)
def test_planner_meets_its_targets(n_clients: int, clip: float, precision: float) -> None:
    plan = plan_parameters(n_clients=n_clients, clip=clip, precision=precision)
    assert plan.security_bits == 128
    assert plan.noise_bound(n_clients) <= n_clients * precision
    assert plan.capacity(n_clients) >= n_clients * clip
    # Looser requirements never cost more bytes.
    looser = plan_parameters(n_clients=n_clients, clip=clip, precision=precision * 10)
    assert looser.estimated_bytes_per_param() <= plan.estimated_bytes_per_param()


def test_planner_refuses_the_impossible_and_the_insecure() -> None:
    with pytest.raises(ConfigError, match="float64"):
        plan_parameters(n_clients=10, clip=1.0, precision=1e-30)
    with pytest.raises(ConfigError, match="n_clients"):
        plan_parameters(n_clients=0, clip=1.0)
    with pytest.raises(ConfigError, match="clip"):
        plan_parameters(n_clients=3, clip=-1.0)
    with pytest.raises(ConfigError, match="below 128-bit security"):
        CkksParameters(2048, (40, 30), 2.0**20)
    with pytest.raises(ConfigError, match="below 128-bit"):
        CKKSConfig(poly_modulus_degree=2048, coeff_mod_bit_sizes="40,30", scale_bits=20)
    insecure = CkksParameters(2048, (40, 30), 2.0**20, insecure_allow_low_security=True)
    assert insecure.security_bits == 0
    # SEAL (as TenSEAL builds it) enforces the same table: the context is refused too.
    with pytest.raises(ConfigError, match="TenSEAL refused"):
        make_secret_context(insecure)


def test_config_parses_and_checks_explicit_parameters() -> None:
    config = CKKSConfig(poly_modulus_degree=4096, coeff_mod_bit_sizes="40,60", scale_bits=30)
    assert config.coeff_mod_bit_sizes == (40, 60)
    assert config.parameters().slots == 2048
    with pytest.raises(ConfigError, match="together"):
        CKKSConfig(poly_modulus_degree=4096)
    with pytest.raises(ConfigError, match="preset"):
        CKKSConfig(preset="fast")
    with pytest.raises(ConfigError, match="min_clients"):
        CKKSConfig(min_clients=0)
    with pytest.raises(ConfigError, match="two primes"):
        CkksParameters(4096, (40,), 2.0**20)


def test_seal_primes_match_what_seal_uses() -> None:
    plan = plan_parameters(n_clients=16, clip=1.0)
    for prime, bits in zip(plan.primes(), plan.coeff_mod_bit_sizes, strict=True):
        assert prime.bit_length() == bits and prime % (2 * plan.poly_modulus_degree) == 1
    assert seal_primes(8192, (60, 40, 40))[1] > seal_primes(8192, (60, 40, 40))[2]
    # The computed data modulus is SEAL's: a sum just inside q/2 decrypts, just outside wraps.
    import tenseal as ts

    context = make_secret_context(plan)
    edge = plan.data_modulus() / 2 / plan.scale
    inside = ts.ckks_vector(context, [0.245 * edge] * plan.slots)
    outside = ts.ckks_vector(context, [0.26 * edge] * plan.slots)
    assert (inside + inside + inside + inside).decrypt()[0] == pytest.approx(0.98 * edge, rel=1e-6)
    assert (outside + outside + outside + outside).decrypt()[0] == pytest.approx(-0.96 * edge, rel=1e-6)


def test_flood_bits_is_validated_and_widens_the_declared_precision() -> None:
    from protocols.ckks import CKKS, CKKSConfig, flooding_noise

    for bad in (-1, 65, True, 2.0):
        with pytest.raises(ConfigError, match="flood_bits"):
            CKKSConfig(flood_bits=bad)  # type: ignore[arg-type]
    plain, flooded = CKKS(max_clients=4, clip=1.0), CKKS(max_clients=4, clip=1.0, flood_bits=10)
    bound = plain.params.noise_bound(4)
    assert flooded.precision(n_clients=4, value_range=1.0) == pytest.approx(
        plain.precision(n_clients=4, value_range=1.0) + 1024 * bound
    )
    noise = flooding_noise(100_000, 3.0)
    assert noise.shape == (100_000,) and float(np.max(np.abs(noise))) <= 3.0
    assert abs(float(np.mean(noise))) < 0.05 and abs(float(np.std(noise)) - 3.0 / np.sqrt(3)) < 0.05


def test_a_client_sending_the_wrong_message_type_is_left_out() -> None:
    # It used to raise ProtocolStateError inside the server's aggregation: one client's
    # bad message ended everyone's round.
    updates = make_updates(4, 30, seed=8)
    decoy = EncryptedSum((0, 1), encrypt_update(make_secret_context(FAST.params), FAST.params, updates[3]))
    raw = encode_message(protocol_id=FAST.wire_id, round_id=3, sender=3, recipient=SERVER, payload=decoy)
    result = run_round(
        FAST, updates, round_id=3, faults=[Dropout(3, "upload"), Inject(raw, SERVER, "upload")]
    )
    assert result.error is None and result.included == (0, 1, 2)
    assert "EncryptedSum" in result.views[SERVER].holding("left_out")[3]  # type: ignore[index]
    error = np.max(np.abs(result.unwrap() - reference_aggregate(updates, (0, 1, 2), kind="sum")))
    assert error <= FAST.precision(n_clients=3, value_range=1.0)
