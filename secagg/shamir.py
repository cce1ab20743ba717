"""Shamir t-of-n secret sharing over the prime field GF(2^31 - 1), vectorised with numpy.

Shamir 1979: a secret s is the constant term of a random polynomial f of degree t - 1
over a prime field; party x receives f(x). Any t shares determine f (Lagrange
interpolation at 0), any t - 1 shares are uniformly distributed whatever s is, so
they reveal nothing. Bonawitz et al. 2017 (Practical Secure Aggregation) share each
client's self-mask seed b_i and key-agreement secret this way.

Field and encoding (our choice, documented here):

- The field is GF(p), p = 2^31 - 1 (a Mersenne prime). Elements are held in uint64
  arrays, so a product of two elements (< 2^62) and a sum of up to 4 such products
  fit without overflow: every step is a whole-array numpy operation, no Python big
  integers on the hot path. Share indices (x-coordinates) are 1 .. p - 1; x = 0 is the
  secret itself and is refused.
- A byte string secret is cut into 30-bit limbs (little-endian), each limb < 2^30 < p,
  and every limb is shared with its own independent polynomial. A 32-byte secret
  (a seed, an X25519 private key) is 9 limbs; its share is 9 field elements, 36 bytes
  on the wire as little-endian uint32. Many secrets are shared at once by stacking
  their limbs: one Horner pass evaluates all polynomials at all indices.
- Coefficients are uniform in GF(p): 31 random bits from the OS CSPRNG per element,
  the single value p = 2^31 - 1 rejected and redrawn, so there is no modular bias.

What it does not give: integrity. Shamir shares are not authenticated; a wrong share
reconstructs a wrong secret. Callers authenticate shares in transit (AES-GCM) and, where
they can, check the reconstructed secret (a commitment, a public key).
:func:`limbs_to_secret` at least refuses limbs out of the encoding's range.

>>> shares = share_secrets([bytes(range(32))], threshold=2, xs=[1, 2, 3])
>>> reconstruct_secrets([3, 1], shares[[2, 0]], threshold=2, secret_bytes=[32])
[b'\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08\\t\\n\\x0b\\x0c\\r\\x0e\\x0f\\x10\\x11\\x12\\x13\\x14\\x15\\x16\\x17\\x18\\x19\\x1a\\x1b\\x1c\\x1d\\x1e\\x1f']
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from secagg.errors import ConfigError, IntegrityError, NotEnoughClientsError

PRIME = 2**31 - 1
LIMB_BITS = 30
_P = np.uint64(PRIME)


def limbs_per_secret(n_bytes: int) -> int:
    """Field elements that hold an ``n_bytes`` secret (9 for 32 bytes)."""
    if n_bytes < 1:
        raise ConfigError(f"secret length must be >= 1 byte, got {n_bytes}")
    return -(-8 * n_bytes // LIMB_BITS)


def random_elements(shape: int | tuple[int, ...]) -> np.ndarray:
    """Uniform elements of GF(p) from the OS CSPRNG (rejection sampling, no bias)."""
    size = int(np.prod(shape))
    raw = np.frombuffer(os.urandom(4 * size), dtype="<u4") & np.uint32(0x7FFF_FFFF)
    out = raw.astype(np.uint64)
    bad = np.flatnonzero(out == _P)
    while bad.size:  # probability 2^-31 per element: almost never taken
        fresh = np.frombuffer(os.urandom(4 * bad.size), dtype="<u4") & np.uint32(0x7FFF_FFFF)
        out[bad] = fresh
        bad = bad[out[bad] == _P]
    return out.reshape(shape)


def secret_to_limbs(secret: bytes) -> np.ndarray:
    """A byte string as 30-bit limbs (uint64 field elements), least significant first."""
    if not isinstance(secret, (bytes, bytearray)) or not secret:
        raise ConfigError(f"secret: expected non-empty bytes, got {type(secret).__name__}")
    value = int.from_bytes(secret, "little")
    mask = (1 << LIMB_BITS) - 1
    count = limbs_per_secret(len(secret))
    return np.array([(value >> (LIMB_BITS * k)) & mask for k in range(count)], dtype=np.uint64)


def limbs_to_secret(limbs: np.ndarray, n_bytes: int) -> bytes:
    """Inverse of :func:`secret_to_limbs`; limbs outside the encoding raise IntegrityError."""
    count = limbs_per_secret(n_bytes)
    array = np.asarray(limbs, dtype=np.uint64).reshape(-1)
    if array.size != count:
        raise ConfigError(f"expected {count} limbs for a {n_bytes}-byte secret, got {array.size}")
    top_bits = 8 * n_bytes - LIMB_BITS * (count - 1)
    if (array[:-1] >= 2**LIMB_BITS).any() or int(array[-1]) >= 2**top_bits:
        raise IntegrityError(
            f"reconstructed {n_bytes}-byte secret has limbs outside [0, 2^{LIMB_BITS}): "
            "expected consistent shares, got inconsistent or altered ones"
        )
    value = 0
    for k, limb in enumerate(array.tolist()):
        value |= int(limb) << (LIMB_BITS * k)
    return value.to_bytes(n_bytes, "little")


def _check_indices(xs: Sequence[int], what: str) -> np.ndarray:
    values = [int(x) for x in xs]
    for x in values:
        if not 1 <= x < PRIME:
            raise ConfigError(f"{what}: expected share indices in [1, {PRIME - 1}], got {x}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{what}: expected distinct share indices, got duplicates in {sorted(values)}")
    return np.array(values, dtype=np.uint64)


def share(secrets: np.ndarray, *, threshold: int, xs: Sequence[int]) -> np.ndarray:
    """Shares of every field element of ``secrets`` (shape (m,)) at indices ``xs``.

    Returns a uint64 array of shape (len(xs), m): row r is the share of party xs[r].
    One Horner pass of ``threshold`` whole-array steps evaluates all m polynomials.
    """
    points = _check_indices(xs, "share")
    if not 1 <= threshold <= len(points):
        raise ConfigError(f"threshold must be in [1, {len(points)}] (the number of shares), got {threshold}")
    values = np.asarray(secrets, dtype=np.uint64).reshape(-1)
    if (values >= _P).any():
        raise ConfigError(f"secrets must be field elements below {PRIME}")
    coefficients = random_elements((threshold - 1, values.size))
    acc = np.zeros((points.size, values.size), dtype=np.uint64)
    column = points[:, None]
    # Horner from the top coefficient down; the secret is the constant term.
    for row in coefficients[::-1]:
        acc += row
        acc *= column
        acc %= _P
    acc += values
    acc %= _P
    return acc


def lagrange_at_zero(xs: Sequence[int]) -> np.ndarray:
    """Lagrange coefficients l_r with f(0) = sum_r l_r f(xs[r]) mod p (uint64 array)."""
    points = _check_indices(xs, "reconstruct")
    count = points.size
    # denominators prod_{s != r} (x_s - x_r), numerators prod_{s != r} x_s: whole-array products.
    diffs = (points[None, :] + _P - points[:, None]) % _P
    np.fill_diagonal(diffs, 1)
    others = np.broadcast_to(points[None, :], (count, count)).copy()
    np.fill_diagonal(others, 1)
    numerators = np.ones(count, dtype=np.uint64)
    denominators = np.ones(count, dtype=np.uint64)
    for s in range(count):
        numerators = numerators * others[:, s] % _P
        denominators = denominators * diffs[:, s] % _P
    inverses = np.array([pow(int(d), PRIME - 2, PRIME) for d in denominators.tolist()], dtype=np.uint64)
    return numerators * inverses % _P


def reconstruct(xs: Sequence[int], shares: np.ndarray, *, threshold: int) -> np.ndarray:
    """The secrets (shape (m,)) from shares (shape (len(xs), m)) of at least ``threshold`` parties.

    Uses the first ``threshold`` shares given; fewer raise NotEnoughClientsError.
    """
    if threshold < 1:
        raise ConfigError(f"threshold must be >= 1, got {threshold}")
    rows = np.asarray(shares)
    if rows.ndim != 2 or rows.shape[0] != len(xs):
        raise ConfigError(f"expected shares of shape ({len(xs)}, m), got {rows.shape}")
    _check_indices(xs, "reconstruct")
    if len(xs) < threshold:
        raise NotEnoughClientsError(f"expected at least {threshold} shares to reconstruct, got {len(xs)}")
    used = rows[:threshold].astype(np.uint64)
    if (used >= _P).any():
        raise ConfigError(f"shares must be field elements below {PRIME}")
    weights = lagrange_at_zero(list(xs)[:threshold])
    # Each product < 2^62; reduce each before summing so threshold terms cannot overflow.
    terms = used * weights[:, None] % _P
    return terms.sum(axis=0, dtype=np.uint64) % _P if threshold < 2**33 else _slow_sum(terms)


def _slow_sum(terms: np.ndarray) -> np.ndarray:  # pragma: no cover - thresholds beyond 2^33
    acc = np.zeros(terms.shape[1], dtype=np.uint64)
    for row in terms:
        acc = (acc + row) % _P
    return acc


def share_secrets(secrets: Sequence[bytes], *, threshold: int, xs: Sequence[int]) -> np.ndarray:
    """Share several byte-string secrets at once; row r holds party xs[r]'s limbs of all of them."""
    limbs = np.concatenate([secret_to_limbs(s) for s in secrets])
    return share(limbs, threshold=threshold, xs=xs)


def reconstruct_secrets(
    xs: Sequence[int], shares: np.ndarray, *, threshold: int, secret_bytes: Sequence[int]
) -> list[bytes]:
    """Inverse of :func:`share_secrets`: the byte strings, given each one's length."""
    values = reconstruct(xs, shares, threshold=threshold)
    sizes = [limbs_per_secret(n) for n in secret_bytes]
    if sum(sizes) != values.size:
        raise ConfigError(
            f"expected {sum(sizes)} limbs for secrets of {list(secret_bytes)} bytes, got {values.size}"
        )
    out = []
    start = 0
    for n_bytes, size in zip(secret_bytes, sizes, strict=True):
        out.append(limbs_to_secret(values[start : start + size], n_bytes))
        start += size
    return out
