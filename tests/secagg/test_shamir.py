"""Shamir t-of-n sharing over GF(2^31 - 1): any t shares reconstruct, t - 1 pin nothing down,
bad indices and short share sets are refused."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import ConfigError, IntegrityError, NotEnoughClientsError
from secagg.shamir import (
    PRIME,
    lagrange_at_zero,
    limbs_per_secret,
    limbs_to_secret,
    random_elements,
    reconstruct,
    reconstruct_secrets,
    secret_to_limbs,
    share,
    share_secrets,
)


@st.composite
def sharings(draw: st.DrawFn) -> tuple[int, list[int], list[bytes], list[int]]:
    n = draw(st.integers(1, 30))
    threshold = draw(st.integers(1, n))
    xs = draw(st.lists(st.integers(1, PRIME - 1), min_size=n, max_size=n, unique=True))
    secrets = draw(st.lists(st.binary(min_size=1, max_size=48), min_size=1, max_size=3))
    chosen = draw(st.permutations(range(n)))
    return threshold, xs, secrets, list(chosen)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(sharings())
def test_any_t_shares_reconstruct(case: tuple[int, list[int], list[bytes], list[int]]) -> None:
    threshold, xs, secrets, order = case
    shares = share_secrets(secrets, threshold=threshold, xs=xs)
    assert shares.shape == (len(xs), sum(limbs_per_secret(len(s)) for s in secrets))
    assert int(shares.max()) < PRIME
    picked = order[:threshold]
    rebuilt = reconstruct_secrets(
        [xs[i] for i in picked], shares[picked], threshold=threshold, secret_bytes=[len(s) for s in secrets]
    )
    assert rebuilt == secrets


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    st.integers(2, 12).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(2, n), st.binary(min_size=32, max_size=32))
    ),
    st.binary(min_size=32, max_size=32),
)
def test_t_minus_one_shares_fit_every_secret(case: tuple[int, int, bytes], other: bytes) -> None:
    """Any t - 1 shares are consistent with any other secret: a polynomial through
    (0, other) and those shares exists, and it reconstructs ``other``."""
    n, threshold, secret = case
    xs = list(range(1, n + 1))
    shares = share_secrets([secret], threshold=threshold, xs=xs)
    seen = shares[: threshold - 1]
    # Interpolate the unique degree t - 1 polynomial through (0, other) and the seen shares,
    # evaluate it at x = n + 1, and rebuild from the seen shares plus that forged one.
    points = [0] + xs[: threshold - 1]
    values = np.vstack([secret_to_limbs(other)[None, :], seen])
    target = n + 1
    forged = np.zeros(values.shape[1], dtype=np.uint64)
    for r, x_r in enumerate(points):
        weight = 1
        for s, x_s in enumerate(points):
            if s != r:
                weight = weight * (target - x_s) * pow(x_r - x_s, PRIME - 2, PRIME) % PRIME
        forged = (forged + values[r] * np.uint64(weight) % np.uint64(PRIME)) % np.uint64(PRIME)
    xs_used = xs[: threshold - 1] + [target]
    rows = np.vstack([seen, forged[None, :]])
    assert reconstruct_secrets(xs_used, rows, threshold=threshold, secret_bytes=[32]) == [other]


def test_t_minus_one_shares_are_refused() -> None:
    shares = share_secrets([os.urandom(32)], threshold=3, xs=[1, 2, 3, 4])
    with pytest.raises(NotEnoughClientsError, match="at least 3 shares"):
        reconstruct([1, 2], shares[:2], threshold=3)


def test_shares_of_equal_secrets_differ_between_sharings() -> None:
    secret = bytes(32)
    first = share_secrets([secret], threshold=2, xs=[1, 2, 3])
    second = share_secrets([secret], threshold=2, xs=[1, 2, 3])
    assert not np.array_equal(first, second)
    # No share equals the secret's limbs (they would, were the coefficients zero).
    assert not any(np.array_equal(row, secret_to_limbs(secret)) for row in first)


@pytest.mark.parametrize(
    ("xs", "message"),
    [
        ([0, 1, 2], "share indices in"),
        ([1, PRIME, 2], "share indices in"),
        ([-1, 1, 2], "share indices in"),
        ([1, 1, 2], "distinct"),
    ],
)
def test_bad_share_indices_raise(xs: list[int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        share(np.array([5], dtype=np.uint64), threshold=2, xs=xs)
    with pytest.raises(ConfigError, match=message):
        reconstruct(xs, np.ones((3, 1), dtype=np.uint64), threshold=2)


def test_bad_threshold_and_values_raise() -> None:
    with pytest.raises(ConfigError, match="threshold"):
        share(np.array([1], dtype=np.uint64), threshold=4, xs=[1, 2, 3])
    with pytest.raises(ConfigError, match="threshold"):
        share(np.array([1], dtype=np.uint64), threshold=0, xs=[1, 2, 3])
    with pytest.raises(ConfigError, match="field elements"):
        share(np.array([PRIME], dtype=np.uint64), threshold=2, xs=[1, 2, 3])
    with pytest.raises(ConfigError, match="field elements"):
        reconstruct([1, 2], np.full((2, 1), PRIME, dtype=np.uint64), threshold=2)
    with pytest.raises(ConfigError, match="shape"):
        reconstruct([1, 2], np.ones((3, 1), dtype=np.uint64), threshold=2)


def test_out_of_range_limbs_are_an_integrity_error() -> None:
    limbs = secret_to_limbs(bytes(range(32)))
    limbs[-1] = 2**20  # the top limb of a 32-byte secret holds 16 bits
    with pytest.raises(IntegrityError, match="inconsistent"):
        limbs_to_secret(limbs, 32)


def test_wrong_share_gives_integrity_error_or_other_secret() -> None:
    secret = os.urandom(32)
    shares = share_secrets([secret], threshold=2, xs=[1, 2, 3])
    shares[0, 0] = (shares[0, 0] + 1) % PRIME
    try:
        rebuilt = reconstruct_secrets([1, 2], shares[:2], threshold=2, secret_bytes=[32])
    except IntegrityError:
        return
    assert rebuilt != [secret]


def test_lagrange_weights_sum_to_one() -> None:
    # f = constant c gives c = sum l_r c, so the weights sum to 1 mod p.
    weights = lagrange_at_zero([3, 17, 99, 1000])
    assert int(weights.sum()) % PRIME == 1


def test_random_elements_are_in_the_field_and_vary() -> None:
    values = random_elements((4, 1000))
    assert values.shape == (4, 1000) and int(values.max()) < PRIME
    assert len(np.unique(values)) > 3990


def test_limb_layout_of_a_32_byte_secret() -> None:
    assert limbs_per_secret(32) == 9
    secret = bytes([0xFF] * 32)
    limbs = secret_to_limbs(secret)
    assert limbs[:8].tolist() == [2**30 - 1] * 8 and int(limbs[8]) == 2**16 - 1
    assert limbs_to_secret(limbs, 32) == secret
