"""Distributed DP: client transform, server decoding, composition with secure sums, typed errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import protocols
from secagg.defences.ddp import (
    BitWidthTooSmallError,
    DDPConfigError,
    DDPRound,
    DimensionNotPowerOfTwoError,
    DistributedDP,
    NoiseTooSmallError,
    decode_observations,
    find_ddp,
    hadamard,
    rotate,
    unrotate,
)
from secagg.defences.ddp_accounting import rounded_l2_bound
from secagg.defences.ddp_sampling import SecureBits
from secagg.defences.transforms import UpdateError, parse_transforms
from secagg.round import run_round

SEED = bytes(range(32))


def _updates(n: int, d: int, scale: float = 0.05, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, scale, d) for _ in range(n)]


def _clipped_sum(updates: list[np.ndarray], clip: float) -> np.ndarray:
    return np.sum([u * min(1.0, clip / np.linalg.norm(u)) for u in updates], axis=0)


@pytest.mark.parametrize("d", [1, 2, 64, 100, 1000])
def test_rotation_is_orthogonal_and_inverted(d: int) -> None:
    x = np.random.default_rng(d).normal(size=d)
    y = rotate(x, SEED)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x))
    assert np.allclose(unrotate(y, SEED), x)
    assert d < 4 or not np.allclose(rotate(x, bytes(32)), y)  # the seed matters


@pytest.mark.parametrize("log_d", [0, 1, 3, 6, 9])
def test_hadamard_matches_the_sylvester_matrix(log_d: int) -> None:
    h = np.array([[1.0]])
    for _ in range(log_d):
        h = np.block([[h, h], [h, -h]])
    x = np.random.default_rng(log_d).normal(size=1 << log_d)
    assert np.allclose(hadamard(x), h @ x / math.sqrt(1 << log_d))


def test_rotation_flattens_a_spike() -> None:
    spike = np.zeros(1000)
    spike[7] = 1.0
    assert np.abs(rotate(spike, SEED)).max() <= math.sqrt(2.0 / 512) + 1e-12


def test_unbound_config_is_refused() -> None:
    with pytest.raises(DDPConfigError, match="bound to a round"):
        DistributedDP().plan(10)


def test_messages_are_ring_integers_and_the_sum_decodes() -> None:
    n, d = 5, 1000
    ddp = DistributedDP(epsilon=3.0, clip=1.0, bits=16).for_round(n_clients=n, round_seed=SEED)
    updates = _updates(n, d)
    messages = [ddp.encode(u, SecureBits(bytes([i]) * 32)).astype(float) for i, u in enumerate(updates)]
    plan = ddp.plan(d)
    for message in messages:
        assert message.shape == (d,) and np.all(message == np.rint(message))
        assert message.min() >= -plan.modulus // 2 and message.max() < plan.modulus // 2
    estimate = ddp.decode_sum(np.sum(messages, axis=0), n_params=d)
    mse = float(np.mean((estimate - _clipped_sum(updates, 1.0)) ** 2))
    assert 0.8 * plan.expected_mse() < mse < 1.25 * plan.expected_mse()
    assert plan.spent.epsilon <= 3.0


def test_decoding_survives_wrap_around_in_the_ring() -> None:
    # Reduced mod 2^bits or summed as plain integers: the same decoded estimate.
    n, d = 4, 256
    ddp = DistributedDP(epsilon=3.0, clip=1.0, bits=12).for_round(n_clients=n, round_seed=SEED)
    messages = [ddp.apply(u) for u in _updates(n, d, seed=2)]
    total = np.sum(messages, axis=0)
    wrapped = np.mod(total, 2**12)
    in_z32 = np.mod(total, 2**32)
    assert np.allclose(ddp.decode_sum(total, n_params=d), ddp.decode_sum(wrapped, n_params=d))
    assert np.allclose(ddp.decode_sum(total, n_params=d), ddp.decode_sum(in_z32, n_params=d))


def test_rounding_respects_the_accounted_bound() -> None:
    d = 512
    ddp = DistributedDP(epsilon=3.0, clip=1.0, bits=16).for_round(n_clients=3, round_seed=SEED)
    plan = ddp.plan(d)
    big = np.ones(d)  # clipped to norm 1
    assert plan.l2_bound == pytest.approx(rounded_l2_bound(l2=1.0 / plan.gamma, dim=d, beta=ddp.beta))
    assert plan.l2_bound < 1.0 / plan.gamma + math.sqrt(d)
    message = ddp.apply(big)
    assert message.shape == (d,)


@pytest.mark.parametrize("name", ["two-server", "secagg"])
@pytest.mark.parametrize("bits", [14, 20])
def test_composes_with_secure_sum_protocols(name: str, bits: int) -> None:
    n, d = 3, 200
    pipeline = parse_transforms(f"prune:ratio=0.1+ddp:eps=4,bits={bits}")
    bound = DDPRound.bind(pipeline, n_clients=n, n_params=d, round_seed=SEED)
    assert bound is not None
    ddp = bound.ddp
    updates = _updates(n, d, seed=3)
    messages = bound.encode(updates)
    protocol, note = bound.protocol(protocols.get(name), fast=True)
    # The protocol's ring is Z_2^bits itself: 14 and 20 bits travel bit-packed.
    assert "frac_bits 0" in note and f"modular ring Z_2^{bits}" in note
    result = run_round(protocol, messages)
    assert result.error is None and result.aggregate is not None
    # The protocol's exact sum decodes like the plain sum of the messages.
    assert np.allclose(ddp.decode_sum(result.aggregate, n_params=d),
                       ddp.decode_sum(np.sum(messages, axis=0), n_params=d))
    observed = bound.observations(result.observations())
    assert len(observed) == len(decode_observations(result.observations(), ddp, n_params=d))
    aggregate = [o for o in observed if o.kind == "aggregate"]
    assert aggregate, "the server that reveals the sum observes it"
    mean = ddp.decode_sum(np.sum(messages, axis=0), n_params=d) / n
    for observation in aggregate:
        assert observation.vector is not None and np.allclose(observation.vector, mean)
        assert "decoded" in observation.note


@pytest.mark.parametrize("name", ["two-server", "secagg"])
@pytest.mark.parametrize("bits", [12, 16])
def test_bits_travel_as_bits_over_8_bytes_per_parameter(name: str, bits: int) -> None:
    """The protocol carries the messages in its modular ring Z_2^bits: every masked message
    is bits/8 bytes per value (uint16 at 16 bits, bit-packed at 12), the measured upload is
    that plus fixed costs (4 B/param in a 32-bit ring), and the wrapped sum decodes exactly."""
    from secagg.costs import round_costs
    from secagg.wire import HEADER_BYTES, TRAILER_BYTES

    n, d = 3, 4000
    spec = f"ddp:eps=3,bits={bits}"
    bound = DDPRound.bind(parse_transforms(spec), n_clients=n, n_params=d, round_seed=SEED)
    assert bound is not None
    messages = bound.encode(_updates(n, d, seed=5))
    protocol, _ = bound.protocol(protocols.get(name), fast=True)
    result = run_round(protocol, messages)
    costs = round_costs(result, messages)
    assert costs.max_abs_error == 0.0
    arrays = [r for r in result.views[protocol.aggregate_holder].received
              if r.header.sender < n and any(a.size == d for a in r.payload.arrays().values())]
    assert len(arrays) == n
    vector = (9 + 2 * d) if bits == 16 else (10 + (bits * d + 7) // 8)
    assert all(r.header.payload_len == vector for r in arrays)
    fixed = costs.bytes_up_per_client - (HEADER_BYTES + TRAILER_BYTES + vector)
    assert 0 < fixed < 0.25 * d  # sealed seed or keys and shares: a few hundred bytes
    assert bits / 8 < costs.bytes_per_param < bits / 8 + 0.25
    assert np.array_equal(bound.ddp.decode_sum(result.unwrap(), n_params=d),
                          bound.ddp.decode_sum(np.sum(messages, axis=0), n_params=d))


def test_noise_too_small_says_what_fits() -> None:
    ddp = DistributedDP(epsilon=1.0, clip=1.0, bits=20, noise_multiplier=0.5).for_round(
        n_clients=10, round_seed=SEED)
    with pytest.raises(NoiseTooSmallError, match=r"noise_multiplier of at least (\d+\.?\d*)") as caught:
        ddp.plan(1024)
    needed = float(str(caught.value).split("at least ")[1].split(" ")[0])
    fixed = DistributedDP(epsilon=1.0, clip=1.0, bits=20, noise_multiplier=needed * 1.01).for_round(
        n_clients=10, round_seed=SEED)
    assert fixed.plan(1024).spent.epsilon <= 1.0


def test_bit_width_too_small_says_what_fits() -> None:
    ddp = DistributedDP(epsilon=3.0, clip=1.0, bits=6).for_round(n_clients=100, round_seed=SEED)
    with pytest.raises(BitWidthTooSmallError, match=r"at least (\d+) bits fit") as caught:
        ddp.plan(4096)
    bits = int(str(caught.value).split("at least ")[1].split(" ")[0])
    assert bits > 6
    ok = DistributedDP(epsilon=3.0, clip=1.0, bits=bits).for_round(n_clients=100, round_seed=SEED)
    assert ok.plan(4096).bits == bits
    with pytest.raises(BitWidthTooSmallError):
        DistributedDP(epsilon=3.0, clip=1.0, bits=bits - 1).for_round(
            n_clients=100, round_seed=SEED).plan(4096)


def test_dimension_not_a_power_of_two() -> None:
    strict = DistributedDP(pad="no").for_round(n_clients=4, round_seed=SEED)
    with pytest.raises(DimensionNotPowerOfTwoError, match="pad=zeros to zero-pad to 128"):
        strict.plan(100)
    assert strict.plan(128).dim == 128
    padded = DistributedDP(pad="zeros").for_round(n_clients=4, round_seed=SEED)
    assert padded.plan(100).dim == 128 and padded.plan(100).bytes_per_param == pytest.approx(2 * 1.28)
    overlap = DistributedDP(pad="overlap").for_round(n_clients=4, round_seed=SEED)
    assert overlap.plan(100).dim == 100 and overlap.plan(100).bytes_per_param == 2.0
    message = padded.apply(np.full(100, 0.01))
    assert message.shape == (128,)
    assert padded.decode_sum(message, n_params=100).shape == (100,)


def test_skellam_round_trip() -> None:
    n, d = 50, 64
    ddp = DistributedDP(epsilon=8.0, clip=1.0, bits=16, noise="skellam").for_round(
        n_clients=n, round_seed=SEED)
    updates = _updates(n, d, scale=0.1, seed=4)
    messages = [ddp.apply(u) for u in updates]
    plan = ddp.plan(d)
    estimate = ddp.decode_sum(np.sum(messages, axis=0), n_params=d)
    mse = float(np.mean((estimate - _clipped_sum(updates, 1.0)) ** 2))
    assert 0.6 * plan.expected_mse() < mse < 1.5 * plan.expected_mse()


def test_skellam_plans_the_noise_the_discrete_gaussian_does() -> None:
    # The exact Skellam sampler no longer costs O(variance), so its std is not capped: at a
    # variance of millions its accounting overhead is negligible and it plans the same noise.
    plans = {noise: DistributedDP(epsilon=1.0, noise=noise).for_round(n_clients=2, round_seed=SEED).plan(4096)
             for noise in ("dgauss", "skellam")}
    assert plans["skellam"].client_std > 1000 * plans["skellam"].gamma
    assert plans["skellam"].client_std == pytest.approx(plans["dgauss"].client_std, rel=1e-3)
    assert plans["skellam"].spent.epsilon <= 1.0


def test_epsilon_grows_when_fewer_clients_are_summed() -> None:
    ddp = DistributedDP(epsilon=3.0, bits=16).for_round(n_clients=10, round_seed=SEED)
    assert ddp.privacy_spent(256).epsilon <= 3.0
    assert ddp.privacy_spent(256, n_summed=5).epsilon > 3.0


def test_spec_parses_and_round_trips() -> None:
    pipeline = parse_transforms("ddp:eps=2,k=18,noise=skellam,pad=zeros")
    stage = find_ddp(pipeline)
    assert stage is not None and stage.epsilon == 2.0 and stage.bits == 18 and stage.noise == "skellam"
    assert find_ddp(parse_transforms(pipeline.spec)) == stage
    assert find_ddp(parse_transforms("prune:ratio=0.1")) is None
    with pytest.raises(DDPConfigError, match="last"):
        find_ddp(parse_transforms("ddp:eps=2+fp16"))
    with pytest.raises(DDPConfigError, match="noise"):
        parse_transforms("ddp:noise=laplace")


def test_describe_reports_epsilon_and_bytes() -> None:
    ddp = DistributedDP(epsilon=3.0, bits=16).for_round(n_clients=8, round_seed=SEED)
    info = ddp.describe(1000)
    assert info["epsilon"] <= 3.0 and info["bytes_per_param"] == 2.0
    assert info["expected_mse"] > info["central_gaussian_mse"] * 0.99


def test_bind_refuses_a_weighted_mean_and_passes_plain_pipelines() -> None:
    assert DDPRound.bind(parse_transforms("fp16"), n_clients=2, n_params=8) is None
    with pytest.raises(DDPConfigError, match="reveals a sum"):
        DDPRound.bind(parse_transforms("ddp"), n_clients=2, n_params=8, aggregate_kind="weighted_mean")


def test_precomputed_noise_gives_the_same_message() -> None:
    ddp = DistributedDP(epsilon=3.0, bits=16).for_round(n_clients=4, round_seed=SEED)
    update = np.full(300, 0.02)
    noise = ddp.sample_noise(300, SecureBits(bytes(32)))
    rounding = SecureBits(bytes([9]) * 32)
    precomputed = ddp.encode(update, rounding, noise=noise)
    plain = ddp.encode(update - 0.0, SecureBits(bytes([9]) * 32), noise=np.zeros(300, dtype=np.int64))
    assert np.array_equal(precomputed, np.mod(plain + noise + 2**15, 2**16) - 2**15)
    with pytest.raises(UpdateError, match="precomputed int64 noise"):
        ddp.encode(update, noise=np.zeros(299, dtype=np.int64))
