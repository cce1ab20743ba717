"""The CKKS parameter planner: the smallest ring and modulus chain for secure summation.

Pure Python (no TenSEAL). Clients only ever *add* ciphertexts (weights are pre-scaled by
the client, nothing is multiplied), so the modulus chain needs exactly one data level:
one data prime (or as few as hold the sum) plus the special prime SEAL keeps for key
switching. TenSEAL refuses a single-prime chain ("keyswitching is not supported"), so
two primes is the shortest chain. Serialised ciphertexts cost about half the data-level
modulus bits per slot (two polynomials of N coefficients carry N/2 slots), so the
planner's job is the smallest data modulus and scale that meet the precision.

Security follows the HomomorphicEncryption.org standard (Albrecht et al., "Homomorphic
Encryption Security Standard", 2018), table for ternary secrets at 128-bit classical
security: the total coefficient modulus (data primes and special prime) may hold at most
``MAX_COEFF_BITS_128[N]`` bits. The planner never proposes less; explicit parameters
below it are refused unless the caller passes ``insecure_allow_low_security=True``.

Noise model (SEAL's public-key encryption at the first data level). SEAL encrypts zero at
the key level and divides by the special prime P, so a fresh ciphertext decrypts to
Δ·m + e with e = e_enc + r0 + r1·s: e_enc the plaintext rounding (|coeff| <= 1/2), r0, r1
the rounding of the division by P (uniform in [-1/2, 1/2]), s the ternary secret, plus
(u·e_pk + e0 + e1·s)/P, negligible for P >= 2^14. A slot reads e at a 2N-th root of
unity ζ; conditional on the key, r1(ζ) is a sum of N independent terms, hence Gaussian,
and the real part of the slot error has variance (N/24)·(2 + |s(ζ)|^2). |s(ζ)|^2 is
(2N/3)·Exp(1) per slot, so over N/2 slots and with probability 1 - e^-KEY_TAIL over key
generation every slot has |s(ζ)|^2 <= (2N/3)·(ln(N/2) + KEY_TAIL). A sum of n fresh
ciphertexts then has, per slot, Gaussian error with std at most

    σ_n = sqrt(n · (N/24) · (2 + (2N/3)(ln(N/2) + KEY_TAIL) + special_prime_term))

and the declared bound is Z_TAIL·σ_n/Δ (P(|Z| > 7) = 2.6e-12 per value). Measured on
this machine (see benchmarks/ckks.py): the slot std is N/6 on average (the model's
average case) and the worst slot of a million sits well inside the bound.

>>> plan = plan_parameters(n_clients=100, clip=4.0, precision=1e-6)
>>> plan.poly_modulus_degree, plan.coeff_mod_bit_sizes, plan.slots
(2048, (40, 14), 1024)
>>> plan.noise_bound(100) <= 100 * 1e-6
True
>>> nvflare_parameters().coeff_mod_bit_sizes
(60, 40, 40)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from secagg.errors import ConfigError

# HomomorphicEncryption.org standard, 128-bit classical security, ternary secret:
# largest log2 of the whole coefficient modulus (special prime included) per ring degree N.
MAX_COEFF_BITS_128: dict[int, int] = {2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
# SEAL's limits on one prime of the chain.
MAX_PRIME_BITS = 60
# Gaussian tail per value and key-generation tail of the noise bound (module docstring).
Z_TAIL = 7.0
KEY_TAIL = 14.0
# Relative resolution of TenSEAL's float64 decoding (FFT over N values), with margin.
FLOAT_RESOLUTION = 1e-12
# Standard deviation of SEAL's error distribution (its default, 3.2).
SIGMA_ERROR = 3.2
# Protobuf, SEAL header and zstd frame of one serialised ciphertext.
_PER_CIPHERTEXT_OVERHEAD = 40


def compressed_word_bytes(bits: int) -> float:
    """Estimated bytes of one 64-bit coefficient word below a ``bits``-bit prime after
    SEAL's zstd: the byte entropy of the word (zstd codes literals with Huffman).

    Uniform residues fill ``bits // 8`` bytes, one byte holds the ``bits % 8`` top bits,
    the rest are zero; mixed over the 8 byte positions. Against TenSEAL 0.3.18 it is
    within 0.2 byte for 36..60-bit primes and 0.6 byte high at 30 bits.

    >>> round(compressed_word_bytes(40), 2)
    5.93
    """
    full, top = divmod(bits, 8)
    zero = 8 - full - (1 if top else 0)
    probability = [full / 256 / 8] * 256
    probability[0] += zero / 8
    if top:
        for value in range(1 << top):
            probability[value] += 1 / (1 << top) / 8
    entropy_bits = -sum(p * math.log2(p) for p in probability if p > 0)
    return min(8.0, entropy_bits)


def min_prime_bits(poly_modulus_degree: int) -> int:
    """Smallest prime SEAL can find for this ring: it must be 1 mod 2N and above 2N."""
    return int(math.log2(2 * poly_modulus_degree)) + 2


def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3e24 (fixed bases), enough for 60-bit primes."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in small:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def seal_primes(poly_modulus_degree: int, bit_sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The primes SEAL's ``CoeffModulus::Create`` picks: per bit size b, the largest
    primes below 2^b that are 1 mod 2N, in descending order, assigned in list order."""
    factor = 2 * poly_modulus_degree
    found: dict[int, list[int]] = {}
    for bits in sorted(set(bit_sizes)):
        want = bit_sizes.count(bits)
        value = (1 << bits) - factor + 1
        primes: list[int] = []
        while len(primes) < want and value > (1 << (bits - 1)):
            if _is_prime(value):
                primes.append(value)
            value -= factor
        if len(primes) < want:
            raise ConfigError(
                f"expected {want} primes of {bits} bits that are 1 mod {factor}, found {len(primes)}"
            )
        found[bits] = primes
    cursor = {bits: 0 for bits in found}
    chain = []
    for bits in bit_sizes:
        chain.append(found[bits][cursor[bits]])
        cursor[bits] += 1
    return tuple(chain)


@dataclass(frozen=True)
class CkksParameters:
    """One CKKS parameter set: ring degree N, modulus chain (last prime special), scale Δ.

    Values are encoded as round(Δ·x); a sum decrypts correctly while
    |sum|·Δ + noise < q/2 with q the product of the data primes.
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale: float
    name: str = "planned"
    insecure_allow_low_security: bool = False

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in MAX_COEFF_BITS_128:
            raise ConfigError(f"poly_modulus_degree must be one of {sorted(MAX_COEFF_BITS_128)}, got {n}")
        if len(self.coeff_mod_bit_sizes) < 2:
            raise ConfigError(
                "expected a chain of at least two primes (data + special; TenSEAL refuses one), "
                f"got {list(self.coeff_mod_bit_sizes)}"
            )
        low = min_prime_bits(n)
        for bits in self.coeff_mod_bit_sizes:
            if not low <= bits <= MAX_PRIME_BITS:
                raise ConfigError(
                    f"prime sizes for N={n} must lie in [{low}, {MAX_PRIME_BITS}] bits, got {bits}"
                )
        if not (math.isfinite(self.scale) and self.scale >= 1.0):
            raise ConfigError(f"scale must be a finite number >= 1, got {self.scale}")
        # SEAL's encoder refuses a scale that leaves no room for the sign bit.
        if math.log2(self.scale) + 1 >= self.data_bits:
            raise ConfigError(
                f"scale 2^{math.log2(self.scale):.2f} needs a data modulus above "
                f"{math.log2(self.scale) + 1:.2f} bits, got {self.data_bits}"
            )
        if self.total_bits > MAX_COEFF_BITS_128[n] and not self.insecure_allow_low_security:
            raise ConfigError(
                f"N={n} with {self.total_bits} modulus bits is below 128-bit security "
                f"(at most {MAX_COEFF_BITS_128[n]} bits); pass insecure_allow_low_security=True "
                "to use it anyway"
            )

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def data_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def special_bits(self) -> int:
        return self.coeff_mod_bit_sizes[-1]

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    @property
    def security_bits(self) -> int:
        """128 when the chain fits the standard's table for N, else 0 (unknown, below)."""
        return 128 if self.total_bits <= MAX_COEFF_BITS_128[self.poly_modulus_degree] else 0

    def primes(self) -> tuple[int, ...]:
        return seal_primes(self.poly_modulus_degree, self.coeff_mod_bit_sizes)

    def data_modulus(self) -> int:
        return math.prod(self.primes()[:-1])

    def noise_std(self, n_clients: int) -> float:
        """σ_n of the module docstring: per-slot error std of a sum of n fresh ciphertexts
        (in scaled units), for the worst slot under the key-tail assumption."""
        return _noise_std(self.poly_modulus_degree, n_clients, self.special_bits)

    def noise_bound(self, n_clients: int) -> float:
        """Declared max |decrypted sum - float64 sum| for ``n_clients`` fresh ciphertexts."""
        if n_clients < 1:
            raise ConfigError(f"expected n_clients >= 1, got {n_clients}")
        return Z_TAIL * self.noise_std(n_clients) / self.scale

    def capacity(self, n_clients: int) -> float:
        """Largest |sum| that decrypts without wrapping around q/2, noise bound included."""
        q = self.data_modulus()
        return (q / 2 - Z_TAIL * self.noise_std(n_clients)) / self.scale

    def estimated_bytes_per_param(self) -> float:
        """TenSEAL serialised bytes per slot of a full ciphertext (zstd-compressed)."""
        per_word = sum(compressed_word_bytes(bits) for bits in self.coeff_mod_bit_sizes[:-1])
        ciphertext = 2 * self.poly_modulus_degree * per_word + _PER_CIPHERTEXT_OVERHEAD
        return ciphertext / self.slots

    def describe(self) -> dict[str, object]:
        """The figures a report or a benchmark row wants."""
        return {
            "name": self.name,
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_log2": math.log2(self.scale),
            "slots": self.slots,
            "data_bits": self.data_bits,
            "total_bits": self.total_bits,
            "security_bits": self.security_bits,
            "estimated_bytes_per_param": self.estimated_bytes_per_param(),
        }


def _noise_std(poly_modulus_degree: int, n_clients: int, special_bits: int) -> float:
    n = poly_modulus_degree
    secret_sq = (2 * n / 3) * (math.log(n / 2) + KEY_TAIL)
    # (u·e_pk + e0 + e1·s) / P, per coefficient variance bound, carried like the rest.
    special = SIGMA_ERROR**2 * (1 + 4 * n / 3) / 2.0 ** (2 * (special_bits - 1)) * 12
    per_client = (n / 24) * (2 + secret_sq + special)
    return math.sqrt(n_clients * per_client)


def _split_bits(total: int) -> tuple[int, ...]:
    """Split data-modulus bits into as few primes of at most 60 bits as possible."""
    count = max(1, math.ceil(total / MAX_PRIME_BITS))
    base, extra = divmod(total, count)
    return tuple(base + 1 if i < extra else base for i in range(count))


def plan_parameters(
    *,
    n_clients: int,
    clip: float,
    precision: float = 1e-6,
) -> CkksParameters:
    """The cheapest 128-bit parameters that sum ``n_clients`` values of |x| <= ``clip``
    with a declared error of at most ``n_clients * precision``.

    For each ring degree N (ascending) the scale Δ must make the noise bound fit the
    precision, and the data modulus must hold n·clip·Δ plus the noise bound below q/2.
    The smallest data modulus that does so is taken, then Δ is raised to the largest
    value it still holds (free precision). Among the N that fit the 128-bit table the
    one with the fewest estimated bytes per parameter wins, ties to the smaller N
    (less noise, faster NTTs).
    """
    if not (isinstance(n_clients, int) and n_clients >= 1):
        raise ConfigError(f"n_clients must be an int >= 1, got {n_clients!r}")
    if not (math.isfinite(clip) and clip > 0):
        raise ConfigError(f"clip must be finite and > 0, got {clip}")
    if not (math.isfinite(precision) and precision > 0):
        raise ConfigError(f"precision must be finite and > 0, got {precision}")
    if precision < FLOAT_RESOLUTION * clip:
        raise ConfigError(
            f"precision must be at least {FLOAT_RESOLUTION:g} x clip ({FLOAT_RESOLUTION * clip:.3g}): "
            f"the float64 decoding resolves no finer, got {precision:g}"
        )
    target = n_clients * precision
    magnitude = n_clients * clip
    best: CkksParameters | None = None
    for degree in sorted(MAX_COEFF_BITS_128):
        planned = _plan_for_degree(degree, n_clients, magnitude, target)
        if planned is None:
            continue
        if best is None or planned.estimated_bytes_per_param() < best.estimated_bytes_per_param() - 1e-9:
            best = planned
    if best is None:
        raise ConfigError(
            f"no 128-bit CKKS parameters sum {n_clients} clients of |x| <= {clip} within "
            f"{target:.3g}; relax the precision or clip"
        )
    return best


def _primes_exist(degree: int, chain: tuple[int, ...]) -> bool:
    try:
        seal_primes(degree, chain)
    except ConfigError:
        return False
    return True


def _plan_for_degree(degree: int, n_clients: int, magnitude: float, target: float) -> CkksParameters | None:
    limit = MAX_COEFF_BITS_128[degree]
    low = min_prime_bits(degree)
    noise = Z_TAIL * _noise_std(degree, n_clients, low)
    scale_min = max(1.0, noise / target)
    needed = 2 * (magnitude * scale_min + noise)
    for data_bits in range(max(low, math.ceil(math.log2(needed))), limit - low + 1):
        data = _split_bits(data_bits)
        if min(data) < low:
            continue
        # The largest special prime the table allows (it divides the encryption noise
        # away), smaller when no prime of that size is 1 mod 2N.
        chain = next(
            (
                (*data, special)
                for special in range(min(MAX_PRIME_BITS, limit - data_bits), low - 1, -1)
                if _primes_exist(degree, (*data, special))
            ),
            None,
        )
        if chain is None:
            continue
        q = math.prod(seal_primes(degree, chain)[:-1])
        true_noise = Z_TAIL * _noise_std(degree, n_clients, chain[-1])
        # The largest scale that still holds the sum below q/2; SEAL also wants Δ < q/2.
        scale = min((q / 2 - true_noise) / magnitude, q / 4)
        # Round down to 1/16 of a bit so the scale is a short, reproducible number.
        scale = 2.0 ** (math.floor(math.log2(scale) * 16) / 16)
        if scale < scale_min:
            continue
        return CkksParameters(degree, chain, scale)
    return None


def nvflare_parameters() -> CkksParameters:
    """What NVFlare ships (and TenSEAL's tutorials use): N=8192, [60, 40, 40], Δ=2^40."""
    return CkksParameters(8192, (60, 40, 40), 2.0**40, name="nvflare")
