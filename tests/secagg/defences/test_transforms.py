"""Client-side defence transforms: exactness, round-trip bounds, noise statistics,
the spec parser and the pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from secagg.defences import transforms as T
from secagg.errors import ConfigError, EncodingOverflowError

finite_vectors = hnp.arrays(
    np.float32, st.integers(1, 200),
    elements=st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32),
)


@pytest.mark.parametrize("ratio, n", [(0.0, 10), (0.3, 10), (0.5, 7), (0.7, 1000), (0.99, 101)])
def test_prune_ratio_is_exact(ratio: float, n: int) -> None:
    update = np.random.default_rng(n).normal(size=n)  # no zeros, no ties
    out = T.Prune(ratio).apply(update)
    pruned = int(np.sum(out == 0))
    assert pruned == math.floor(ratio * n + 1e-9)
    kept = out != 0
    np.testing.assert_array_equal(out[kept], update[kept])
    if 0 < pruned < n:
        assert np.abs(update[~kept]).max() <= np.abs(update[kept]).min()


def test_prune_ties_prune_lower_index_first() -> None:
    update = np.array([0.5, -0.1, 0.1, 0.1, 2.0, -0.1])
    out = T.Prune(0.5).apply(update)  # 3 of the four |0.1| entries go, lowest indices first
    np.testing.assert_array_equal(out, [0.5, 0.0, 0.0, 0.0, 2.0, -0.1])


def test_topk_keeps_largest_and_breaks_ties_by_index() -> None:
    update = np.array([1.0, -3.0, 2.0, -2.0, 0.5])
    np.testing.assert_array_equal(T.TopK(2).apply(update), [0, -3.0, 2.0, 0, 0])
    np.testing.assert_array_equal(T.TopK(10).apply(update), update)


@settings(max_examples=60, deadline=None)
@given(finite_vectors)
def test_int8_round_trip_within_half_step(update: np.ndarray) -> None:
    int8 = T.Int8()
    codes, scales = int8.quantize(update)
    assert codes.dtype == np.int8 and np.abs(codes.astype(int)).max() <= 127
    out = int8.apply(update)
    step = float(np.abs(update.astype(np.float64)).max()) / 127
    assert out.dtype == update.dtype
    assert np.all(np.abs(out.astype(np.float64) - update) <= step / 2 * (1 + 1e-5) + 1e-30)


def test_int8_per_tensor_scales() -> None:
    update = np.concatenate([np.linspace(-1, 1, 50), np.linspace(-1e-3, 1e-3, 50)])
    whole = T.Int8().apply(update)
    per_tensor = T.Int8(segments=(50, 50)).apply(update)
    # One scale for both wipes out the small tensor; per-tensor keeps it.
    assert np.count_nonzero(whole[50:]) <= 2
    assert np.max(np.abs(per_tensor[50:] - update[50:])) <= 1e-3 / 127 / 2 + 1e-15
    with pytest.raises(T.UpdateError, match="segments"):
        T.Int8(segments=(10, 10)).apply(update)


def test_fp16_round_trip_and_overflow() -> None:
    update = np.array([1.0, 1 + 2**-11, 1e-8, -70000.0 / 2], dtype=np.float32)
    out = T.Float16().apply(update)
    assert out.dtype == np.float32
    # 1 + 2^-11 is a tie between 1 and 1 + 2^-10: to even, i.e. 1.
    np.testing.assert_array_equal(out[:2], [1.0, 1.0])
    assert out[2] == np.float32(np.float16(1e-8))  # subnormal, kept approximately
    with pytest.raises(EncodingOverflowError, match="65520"):
        T.Float16().apply(np.array([7e4]))


def test_bf16_round_to_nearest_even() -> None:
    ulp = 2.0**-7  # bf16 keeps 7 mantissa bits
    values = np.array([1.0 + ulp / 2, 1.0 + 1.5 * ulp, 1.0 + 0.51 * ulp, -3.0 - ulp / 4],
                      dtype=np.float32)
    np.testing.assert_array_equal(T.bfloat16_round(values),
                                  [1.0, 1.0 + 2 * ulp, 1.0 + ulp, -3.0])
    with pytest.raises(EncodingOverflowError):
        T.BFloat16().apply(np.array([3.4e38], dtype=np.float32))


@settings(max_examples=60, deadline=None)
@given(finite_vectors)
def test_bf16_matches_truncation_bounds(update: np.ndarray) -> None:
    out = T.BFloat16().apply(update)
    # bf16 keeps 8 significant bits: relative error at most 2^-8 (normal numbers).
    normal = np.abs(update) > 1e-37
    assert np.all(np.abs(out[normal] - update[normal]) <= np.abs(update[normal]) * 2.0**-8)
    assert np.all((out.view(np.uint32) & np.uint32(0xFFFF)) == 0)


@pytest.mark.parametrize("cls", [T.GaussianNoise, T.LaplaceNoise])
@pytest.mark.parametrize("source", ["pcg", "secure"])
def test_noise_has_the_requested_variance(cls: type, source: str) -> None:
    n, variance = 200_000, 1e-2
    rng = np.random.default_rng(5) if source == "pcg" else T.SecureRandom()
    noise = cls(variance).apply(np.zeros(n), rng)
    assert abs(noise.mean()) < 5 * math.sqrt(variance / n)
    assert noise.var() == pytest.approx(variance, rel=0.03)
    kurtosis = np.mean(noise**4) / noise.var() ** 2
    assert kurtosis == pytest.approx(3.0 if cls is T.GaussianNoise else 6.0, rel=0.15)


def test_noise_is_seeded_by_the_rng_argument_and_fresh_by_default() -> None:
    update = np.ones(16)
    a = T.GaussianNoise(1e-3).apply(update, np.random.default_rng(1))
    b = T.GaussianNoise(1e-3).apply(update, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    c = T.LaplaceNoise(1e-3).apply(update, T.SecureRandom(bytes(32)))
    d = T.LaplaceNoise(1e-3).apply(update, T.SecureRandom(bytes(32)))
    np.testing.assert_array_equal(c, d)
    assert not np.array_equal(T.GaussianNoise(1e-3).apply(update),
                              T.GaussianNoise(1e-3).apply(update))


def test_default_noise_is_the_keyed_prf_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    from secagg import prf

    seed = bytes(range(32))
    monkeypatch.setattr(prf, "random_seed", lambda: seed)
    update = np.zeros(7)
    for transform in (T.GaussianNoise(1e-2), T.LaplaceNoise(1e-2),
                      T.DPGaussian(clip=1.0, noise_multiplier=1.0),
                      T.parse_transforms("gaussian:variance=0.01+fp16")):
        np.testing.assert_array_equal(transform.apply(update),
                                      transform.apply(update, T.SecureRandom(seed)))
    # The uniforms are the stream's words: 53 bits each, in the open interval (0, 1).
    words = np.frombuffer(prf.keystream(seed, T._NOISE_LABEL, 8 * 4), dtype="<u8")
    expected = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    np.testing.assert_array_equal(T.SecureRandom(seed)._uniform_open(4), expected)
    source = T.SecureRandom(seed)
    assert not np.array_equal(source.normal(size=4), source.normal(size=4))  # never rewound
    with pytest.raises(ConfigError):
        T.SecureRandom(b"short")


def test_dp_clips_then_adds_calibrated_noise() -> None:
    update = np.full(10_000, 0.1)  # norm 10
    transform = T.DPGaussian(clip=1.0, noise_multiplier=0.0)
    np.testing.assert_allclose(np.linalg.norm(transform.apply(update)), 1.0)
    small = np.full(4, 0.1)
    np.testing.assert_array_equal(transform.apply(small), small)
    noisy = T.DPGaussian(clip=2.0, noise_multiplier=1.5).apply(update, np.random.default_rng(0))
    residual = noisy - update * (2.0 / 10.0)
    assert residual.std() == pytest.approx(1.5 * 2.0, rel=0.03)


def test_dp_reports_accountant_epsilon() -> None:
    from secagg.defences import dp

    transform = T.parse_transform("dp:clip=1.0,noise_multiplier=1.1,sample_rate=0.01,"
                                  "steps=100,delta=1e-5")
    assert isinstance(transform, T.DPGaussian)
    expected = dp.epsilon(noise_multiplier=1.1, sample_rate=0.01, steps=100, delta=1e-5)
    assert transform.epsilon == expected
    record = transform.describe()
    assert record["epsilon"] == expected
    # The server sees this client's update: no amplification by sampling against it.
    assert record["epsilon_against_server"] > record["epsilon"]


def test_relative_error() -> None:
    assert T.relative_error(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(1.0)
    assert T.relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert T.relative_error(np.ones(3), np.zeros(3)) == math.inf
    with pytest.raises(T.UpdateError):
        T.relative_error(np.ones(3), np.ones(4))


def test_aggregate_error_of_noise_shrinks_as_clients_average_it_out() -> None:
    rng = np.random.default_rng(3)
    updates = [rng.normal(size=5000) for _ in range(16)]
    noise = T.GaussianNoise(0.25)
    # Sum of n updates has norm ~ sqrt(n * d); the summed noise ~ sqrt(n * d * var): ratio 0.5.
    assert T.aggregate_error(noise, updates, np.random.default_rng(4)) == pytest.approx(0.5, rel=0.05)
    assert T.aggregate_error(T.Float16(), updates) < 1e-3
    assert T.aggregate_error(T.parse_transforms("none"), updates) == 0.0
    with pytest.raises(T.UpdateError):
        T.aggregate_error(noise, [])


@pytest.mark.parametrize("spec", [
    "gaussian:var=1e-3", "laplace:variance=0.01",
    "dp:clip=1.0,noise_multiplier=1.1,sample_rate=0.01,steps=100,delta=1e-5",
    "fp16", "bf16", "int8", "prune:ratio=0.3", "topk:k=100", "prune:ratio=0.2+int8+fp16",
])
def test_spec_round_trip(spec: str) -> None:
    pipeline = T.parse_transforms(spec)
    assert T.parse_transforms(pipeline.spec) == pipeline
    assert len(pipeline.transforms) == spec.count("+") + 1


@pytest.mark.parametrize("spec, message", [
    ("blur", "expected a transform"),
    ("gaussian", "variance"),
    ("gaussian:var=-1", "> 0"),
    ("gaussian:sigma=1", "key=value"),
    ("prune:ratio=1.0", r"\[0, 1\)"),
    ("topk:k=2.5", "int"),
    ("prune:ratio=0.1,ratio=0.2", "twice"),
    ("fp16++int8", "single"),
    ("dp:clip=1,noise_multiplier=1,sample_rate=0", "sample_rate"),
])
def test_bad_specs_raise_config_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        T.parse_transforms(spec)


def test_compose_applies_in_order_and_binds_segments() -> None:
    update = np.array([0.01, -4.0, 0.02, 3.0, 0.001, 0.5])
    pipeline = T.parse_transforms("topk:k=3+int8").with_segments((3, 3))
    out = pipeline.apply(update)
    assert np.count_nonzero(out) == 3
    assert pipeline.transforms[1] == T.Int8(segments=(3, 3))
    assert T.parse_transforms("none").apply(update).tolist() == update.tolist()


def test_stages_are_the_plain_transforms_in_order() -> None:
    from secagg.defences.ddp import DistributedDP, find_ddp

    assert T.Float16().stages == (T.Float16(),)
    assert T.parse_transforms("prune:ratio=0.5+int8").stages == (T.Prune(0.5), T.Int8())
    assert T.parse_transforms("none").stages == ()
    bare = DistributedDP(epsilon=3.0)
    assert find_ddp(bare) is bare


def test_bad_updates_are_refused() -> None:
    with pytest.raises(T.UpdateError, match="1-D"):
        T.Float16().apply(np.ones((2, 2)))
    with pytest.raises(T.UpdateError, match="finite"):
        T.Prune(0.1).apply(np.array([1.0, np.nan]))
