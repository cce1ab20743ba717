"""Threshold Paillier: distributed key generation, key shares, partial decryption, combination.

What it is. The decryption key of a Paillier modulus N is shared among a committee of
``parties`` decryptors (indices 1..c) so that any ``threshold`` t of them decrypt a
ciphertext together and any t - 1 learn nothing about the key. It is the math layer:
pure functions and per-party state objects over Python/gmpy2 integers; the round
(who sends what to whom, as bytes) lives in :mod:`protocols.paillier`.

Key generation without a dealer (semi-honest parties, honest majority 2(t-1) < c):

1. Modulus (Boneh and Franklin, "Efficient generation of shared RSA keys", CRYPTO 1997).
   Party i draws additive shares p_i, q_i (party 1's are 3 mod 4, the others' 0 mod 4,
   so p = sum p_i and q = sum q_i are 3 mod 4), Shamir-shares them with degree t - 1
   over a public prime field, multiplies its two summed shares locally (BGW, Ben-Or,
   Goldwasser and Wigderson 1988) and adds a share of a random degree-2(t-1) sharing of
   zero, so that the 2t - 1 product shares reveal N = p q and nothing else. Candidates
   with a prime factor below ``sieve_bound`` are thrown away by trial division of N (the
   cheap filter Boneh-Franklin use before the expensive test), then the distributed
   biprimality test: for a jointly drawn g with Jacobi symbol (g | N) = 1, party 1
   publishes g^((N + 1 - p_1 - q_1) / 4) and party i > 1 publishes g^((p_i + q_i) / 4);
   N is a product of two primes (with overwhelming probability after ``biprimality_rounds``
   tests) when the first equals plus or minus the product of the others. We omit the
   paper's second test against N = p^a q^b (negligible for random shares) and its
   distributed sieving (a 2048-bit key takes ~10^5 candidate moduli instead).
2. Decryption exponent (after Nishide and Sakurai, "Distributed Paillier cryptosystem
   without trusted dealer", WISA 2010). The parties hold additive shares of
   phi = N + 1 - p - q. Each draws beta_i < 2^k N and R_i < 2^2k N (k = ``STAT_BITS``),
   and with one more BGW multiplication they open D = beta phi + N R, where
   beta = sum beta_i, R = sum R_i; N R hides beta phi statistically. theta = D mod N =
   beta phi mod N is public and uniform in Z_N^*; d = beta phi = D - N R is then held
   in additive integer shares (party 1: D - N R_1, others: -N R_i). d = 0 mod lambda(N)
   and d = theta mod N, which is all decryption needs.
3. Key shares. Each party re-shares its additive share with a degree-(t-1) integer
   polynomial (Rabin 1998: coefficients 2^k Delta^2 times the secret's range, so t - 1
   shares hide it statistically; Delta = c!), publishes Feldman-style commitments
   v^{a_ik} mod N^2 to its coefficients under a public random square v, and party j's key
   share is s_j = sum_i f_i(j). A party checks every sub-share it receives against its
   sender's commitments and names a sender whose sub-share does not match
   (:class:`KeyShareError`); everyone computes every verification key v^{s_j} from the
   commitments, so no party can lie about its own.

No party ever holds p, q, phi, lambda or d: each holds additive or Shamir shares only.
:func:`insecure_trusted_dealer` makes keys of the same shape in one process that does
know the factors (fast, for tests and benchmarks; every report that uses it says so).

Decryption (Shoup, "Practical threshold signatures", EUROCRYPT 2000; Damgard and Jurik,
PKC 2001). Decryptor j publishes x = c^(2 Delta s_j) mod N^2 for each ciphertext c. For
t distinct indices S, the integer Lagrange coefficients lambda_j = Delta prod j'/(j'-j)
give prod x_j^(2 lambda_j) = c^(4 Delta^2 d) = 1 + m 4 Delta^2 theta N (mod N^2), so
m = L(.) (4 Delta^2 theta)^-1 mod N. Each decryptor proves its partials correct with one
Chaum-Pedersen/Shoup proof of equal discrete logarithms, log_{C^(4 Delta)} X^2 =
log_v v^(s_j) (Fiat-Shamir), made over a random linear combination C = prod c_k^rho_k,
X = prod x_k^rho_k of all its partials (small-exponent batch verification, Bellare,
Garay and Rabin 1998): a forged partial fails the proof except with probability about
2^-128, and :class:`PartialDecryptionError` names the decryptor. Fewer than t valid
partials raise :class:`NotEnoughDecryptorsError` and nothing is combined.

Why our own implementation and not ``tno.mpc.protocols.distributed_keygen`` (TNO's
package, which implements the same Nishide-Sakurai style generation with Shoup
decryption): it is built around its own asyncio networking (``tno.mpc.communication``
pools of HTTP servers and clients) and its own Paillier objects, so its parties cannot run
as our byte-counted, fault-injecting state machines, and its decryption has no proofs of
correct partial decryption (a bad partial is not detected, let alone named). It is also
not installed here. The math above is ~500 lines over gmpy2.

Key reuse across rounds. Keys are generated once per federation and reused: the
committee decrypts, in each round, only that round's attested sum (see
:mod:`protocols.paillier`). Reuse is safe because threshold Paillier is IND-CPA under the
DCR assumption for any number of encryptions under one key, and a partial decryption
with its proof is simulatable from the plaintext it opens (Shoup's and Damgard-Jurik's
proofs), so the t - 1 colluders' views of many rounds reveal nothing beyond the sums
that were opened. What reuse does not survive: a coalition of t decryptors (in any round)
learns the key for all rounds, and a committee member that leaves keeps its share; a
changing committee needs a fresh key (or proactive resharing, not implemented).

Sizes. Key shares have about 2 |N| + 3k bits, so one partial decryption is an
exponentiation modulo N^2 with a ~4500-bit exponent at |N| = 2048: several times the
cost of a single-key CRT decryption (two 1024-bit exponents modulo p^2 and q^2). The
benchmark reports the ratio.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import gmpy2

from secagg.errors import ConfigError, IntegrityError, NotEnoughClientsError, ProtocolStateError

STAT_BITS = 128  # k: statistical hiding of integer shares and of beta phi in D
CHALLENGE_BITS = 128  # Fiat-Shamir challenge and batch-verification exponents
DEFAULT_SIEVE_BOUND = 1 << 16
DEFAULT_BIPRIMALITY_ROUNDS = 40
DEALER_DISTRIBUTED = "distributed"
DEALER_INSECURE = "insecure_trusted_dealer"

mpz = gmpy2.mpz


# ---------------------------------------------------------------------------------
# Errors (each names the party at fault)


class KeyShareError(IntegrityError):
    """A key sub-share does not match its sender's commitments (a wrong key share)."""

    def __init__(self, message: str, *, party: int) -> None:
        super().__init__(message)
        self.party = party


class PartialDecryptionError(IntegrityError):
    """A decryptor's partial decryptions fail their proof of correctness (forged or wrong)."""

    def __init__(self, message: str, *, party: int) -> None:
        super().__init__(message)
        self.party = party


class NotEnoughDecryptorsError(NotEnoughClientsError):
    """Fewer than t valid partial decryptions: nothing is combined, nothing revealed."""


class KeyGenerationError(ProtocolStateError):
    """Distributed key generation could not finish (a party misbehaved or tries ran out)."""

    def __init__(self, message: str, *, party: int | None = None) -> None:
        super().__init__(message)
        self.party = party


# ---------------------------------------------------------------------------------
# Public key and key shares


@dataclass(frozen=True)
class ThresholdPublicKey:
    """What everyone holds: N, (t, c), theta = d mod N, the base v and v^(s_j) for every j.

    ``dealer`` says how the key was made: "distributed" (no party ever held the key) or
    "insecure_trusted_dealer" (one process knew the factors).
    """

    n: int
    threshold: int
    parties: int
    theta: int
    v: int
    verification_keys: tuple[int, ...]
    dealer: str = DEALER_DISTRIBUTED

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= self.parties:
            raise ConfigError(f"threshold must be in [1, parties={self.parties}], got {self.threshold}")
        if len(self.verification_keys) != self.parties:
            raise ConfigError(f"expected {self.parties} verification keys, got {len(self.verification_keys)}")
        if math.gcd(self.theta, self.n) != 1:
            raise ConfigError("theta must be a unit modulo n")
        if self.dealer not in (DEALER_DISTRIBUTED, DEALER_INSECURE):
            raise ConfigError(
                f"dealer must be {DEALER_DISTRIBUTED!r} or {DEALER_INSECURE!r}, got {self.dealer!r}"
            )

    @property
    def nsquare(self) -> int:
        return self.n * self.n

    @property
    def delta(self) -> int:
        return math.factorial(self.parties)

    @property
    def key_bits(self) -> int:
        return self.n.bit_length()

    def fingerprint(self) -> bytes:
        """SHA-256 over every public field: names this committee key."""
        return hashlib.sha256(
            b"secagg/threshold-paillier/public-key/v1"
            + _encode_ints(self.n, self.threshold, self.parties, self.theta, self.v, *self.verification_keys)
            + self.dealer.encode()
        ).digest()

    def encrypt(self, m: int, r: int | None = None) -> int:
        """Paillier encryption with g = N + 1: (1 + m N) r^N mod N^2 (r from the OS CSPRNG)."""
        n, n2 = self.n, self.nsquare
        if not 0 <= m < n:
            raise ConfigError(f"plaintext must be in [0, n), got {m.bit_length()} bits")
        if r is None:
            r = _random_unit(n)
        return int((1 + m * n) * gmpy2.powmod(mpz(r), n, n2) % n2)


@dataclass(frozen=True)
class KeyShare:
    """Decryptor ``index``'s secret share s_j (never printed) and the public key."""

    index: int
    secret: int = field(repr=False)
    public: ThresholdPublicKey

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.public.parties:
            raise ConfigError(f"share index must be in [1, {self.public.parties}], got {self.index}")

    def check(self) -> None:
        """Raise :class:`KeyShareError` when s_j does not match the public verification key."""
        pk = self.public
        if int(gmpy2.powmod(mpz(pk.v), mpz(self.secret), pk.nsquare)) != pk.verification_keys[self.index - 1]:
            raise KeyShareError(
                f"key share of decryptor {self.index} does not match its verification key "
                f"(expected v^s_j = the published value, got another)",
                party=self.index,
            )


# ---------------------------------------------------------------------------------
# Small helpers


def _encode_ints(*values: int) -> bytes:
    out = bytearray()
    for value in values:
        value = int(value)
        sign = b"-" if value < 0 else b"+"
        raw = abs(value).to_bytes((abs(value).bit_length() + 7) // 8 or 1, "big")
        out += sign + len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def _hash_to_int(domain: bytes, data: bytes, bits: int) -> int:
    digest = hashlib.shake_256(domain + len(data).to_bytes(8, "big") + data).digest((bits + 7) // 8)
    return int.from_bytes(digest, "big") >> (8 * len(digest) - bits)


def _random_unit(n: int) -> int:
    while True:
        r = secrets.randbelow(n)
        if r > 1 and math.gcd(r, n) == 1:
            return r


def _random_below(bound: int) -> int:
    return secrets.randbelow(bound)


def verification_base(n: int) -> int:
    """The public random square v modulo N^2, derived from N alone (nobody chooses it)."""
    n2 = n * n
    counter = 0
    while True:
        x = _hash_to_int(b"secagg/threshold-paillier/v", _encode_ints(n, counter), 2 * n2.bit_length())
        x %= n2
        if x > 1 and math.gcd(x, n) == 1:
            return int(x * x % n2)
        counter += 1


def lagrange_at_zero_integer(indices: Sequence[int], delta: int) -> dict[int, int]:
    """Integer coefficients Delta * prod_{j' != j} j' / (j' - j): sum l_j f(j) = Delta f(0)."""
    out = {}
    for j in indices:
        num, den = delta, 1
        for other in indices:
            if other != j:
                num *= other
                den *= other - j
        if num % den:
            raise ConfigError(f"Delta={delta} does not clear the Lagrange denominators of {sorted(indices)}")
        out[j] = num // den
    return out


def _interpolate_mod(points: Mapping[int, int], prime: int) -> int:
    """f(0) over GF(prime) from {x: f(x)}."""
    total = 0
    for j, y in points.items():
        num, den = 1, 1
        for other in points:
            if other != j:
                num = num * other % prime
                den = den * (other - j) % prime
        total = (total + y * num * pow(den, -1, prime)) % prime
    return total


def _eval_poly(coefficients: Sequence[int], x: int, modulus: int | None = None) -> int:
    acc = 0
    for a in reversed(coefficients):
        acc = acc * x + a
        if modulus is not None:
            acc %= modulus
    return acc


def _open_product(shares: Mapping[int, int], degree: int, prime: int, what: str) -> int:
    """Open a degree-``degree`` sharing from all shares; extra shares must lie on the same polynomial."""
    if len(shares) < degree + 1:
        raise KeyGenerationError(f"{what}: need {degree + 1} product shares, got {len(shares)}")
    ordered = sorted(shares)
    base = {j: shares[j] for j in ordered[: degree + 1]}
    value = _interpolate_mod(base, prime)
    # Extra shares (c > 2t - 1) must agree: a party whose share is off the curve is named.
    for j in ordered[degree + 1 :]:
        subset = {k: shares[k] for k in ordered[:degree]}
        subset[j] = shares[j]
        if _interpolate_mod(subset, prime) != value:
            raise KeyGenerationError(f"{what}: product share of party {j} is inconsistent", party=j)
    return value


def _small_primes(bound: int) -> list[int]:
    sieve = bytearray([1]) * bound
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(bound**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return [i for i in range(3, bound) if sieve[i]]


_PRIMORIAL_CACHE: dict[int, int] = {}


def has_small_factor(n: int, bound: int) -> bool:
    """Trial division of N by every odd prime below ``bound`` (one big gcd)."""
    if bound not in _PRIMORIAL_CACHE:
        product = mpz(1)
        for p in _small_primes(bound):
            product *= p
        _PRIMORIAL_CACHE[bound] = int(product)
    return gmpy2.gcd(mpz(n), _PRIMORIAL_CACHE[bound]) != 1


# ---------------------------------------------------------------------------------
# Distributed key generation: one party's state and steps


@dataclass
class DkgStats:
    """What key generation cost: candidate moduli tried, how many passed trial division, time."""

    candidates: int = 0
    sieved: int = 0
    biprimality_tests: int = 0
    seconds: float = 0.0
    dealer: str = DEALER_DISTRIBUTED


class DkgParty:
    """Party ``index`` (1..c) of the distributed key generation; holds only its own shares.

    Each method is one step: it takes what this party received and returns what it sends
    (``{recipient: value}`` for private messages, a value for broadcasts). The driver
    :func:`distributed_keygen` delivers the messages; a test may subclass a party to
    misbehave.
    """

    def __init__(self, index: int, parties: int, threshold: int, key_bits: int) -> None:
        self.index = index
        self.parties = parties
        self.threshold = threshold
        self.key_bits = key_bits
        self.degree = threshold - 1
        self._p = 0
        self._q = 0
        self._beta = 0
        self._r = 0
        self._phi = 0
        self._d = 0
        self._share_sum = 0
        self.n = 0

    # -- modulus -------------------------------------------------------------------

    def _additive_prime_share(self) -> int:
        half = self.key_bits // 2
        # p = sum of c shares lands in [1.5 * 2^(half-1), 2^half): N has exactly key_bits bits.
        low = (3 << (half - 2)) // self.parties
        high = (1 << half) // self.parties
        value = low + _random_below(high - low)
        if self.index == 1:
            return value - (value % 4) + 3
        return value - (value % 4)

    def modulus_shares(self, prime: int) -> dict[int, tuple[int, int, int]]:
        """Draw p_i, q_i; send party j (f_p(j), f_q(j), z(j)) with z a degree-2(t-1) sharing of 0."""
        self._p = self._additive_prime_share()
        self._q = self._additive_prime_share()
        fp = [self._p] + [_random_below(prime) for _ in range(self.degree)]
        fq = [self._q] + [_random_below(prime) for _ in range(self.degree)]
        fz = [0] + [_random_below(prime) for _ in range(2 * self.degree)]
        return {
            j: (_eval_poly(fp, j, prime), _eval_poly(fq, j, prime), _eval_poly(fz, j, prime))
            for j in range(1, self.parties + 1)
        }

    def modulus_product_share(self, received: Mapping[int, tuple[int, int, int]], prime: int) -> int:
        p_share = sum(v[0] for v in received.values()) % prime
        q_share = sum(v[1] for v in received.values()) % prime
        zero = sum(v[2] for v in received.values()) % prime
        return (p_share * q_share + zero) % prime

    def biprimality_share(self, n: int, g: int) -> int:
        """g^((N + 1 - p_1 - q_1)/4) for party 1, g^((p_i + q_i)/4) for the others, mod N."""
        if self.index == 1:
            exponent = (n + 1 - self._p - self._q) // 4
        else:
            exponent = (self._p + self._q) // 4
        return int(gmpy2.powmod(mpz(g), mpz(exponent), mpz(n)))

    # -- decryption exponent ---------------------------------------------------------

    def exponent_shares(self, n: int, prime: int) -> dict[int, tuple[int, int, int, int]]:
        """Draw beta_i, R_i; share beta_i, phi_i, R_i (degree t-1) and 0 (degree 2(t-1)) over GF(prime)."""
        self.n = n
        self._phi = n + 1 - self._p - self._q if self.index == 1 else -(self._p + self._q)
        self._beta = _random_below(n << STAT_BITS)
        self._r = _random_below(n << (2 * STAT_BITS))
        f_beta, f_phi, f_r = (
            [value % prime] + [_random_below(prime) for _ in range(self.degree)]
            for value in (self._beta, self._phi, self._r)
        )
        fz = [0] + [_random_below(prime) for _ in range(2 * self.degree)]
        return {
            j: (_eval_poly(f_beta, j, prime), _eval_poly(f_phi, j, prime), _eval_poly(f_r, j, prime),
                _eval_poly(fz, j, prime))
            for j in range(1, self.parties + 1)
        }

    def exponent_product_share(self, received: Mapping[int, tuple[int, int, int, int]], prime: int) -> int:
        beta = sum(v[0] for v in received.values()) % prime
        phi = sum(v[1] for v in received.values()) % prime
        r = sum(v[2] for v in received.values()) % prime
        zero = sum(v[3] for v in received.values()) % prime
        return (beta * phi + self.n * r + zero) % prime

    # -- key shares ------------------------------------------------------------------

    def key_subshares(self, opened: int, v: int) -> tuple[dict[int, int], tuple[int, ...]]:
        """Re-share d_i (D - N R_1 for party 1, -N R_i otherwise) with commitments v^a_k mod N^2."""
        n2 = self.n * self.n
        self._d = opened - self.n * self._r if self.index == 1 else -self.n * self._r
        delta = math.factorial(self.parties)
        bound = (delta * delta) << (STAT_BITS + opened.bit_length() + 2)
        coefficients = [self._d] + [_random_below(bound) for _ in range(self.degree)]
        commitments = tuple(int(gmpy2.powmod(mpz(v), mpz(a), n2)) for a in coefficients)
        subshares = {j: _eval_poly(coefficients, j) for j in range(1, self.parties + 1)}
        # Forget what is no longer needed.
        self._p = self._q = self._phi = self._beta = self._r = self._d = 0
        return subshares, commitments

    def receive_subshares(
        self, subshares: Mapping[int, int], commitments: Mapping[int, Sequence[int]], v: int
    ) -> int:
        """Check each sub-share against its sender's commitments; return s_j = sum of them."""
        n2 = self.n * self.n
        for sender in sorted(subshares):
            expected = _committed_value(commitments[sender], self.index, n2)
            if int(gmpy2.powmod(mpz(v), mpz(subshares[sender]), n2)) != expected:
                raise KeyShareError(
                    f"key sub-share from party {sender} to party {self.index} does not match "
                    f"party {sender}'s commitments (expected v^f_{sender}({self.index}), got another value)",
                    party=sender,
                )
        self._share_sum = sum(subshares.values())
        return self._share_sum


def _committed_value(commitments: Sequence[int], x: int, n2: int) -> int:
    """prod_k A_k^(x^k) mod N^2 = v^f(x) for a committed polynomial f."""
    acc = mpz(1)
    for k, a in enumerate(commitments):
        acc = acc * gmpy2.powmod(mpz(a), x**k, n2) % n2
    return int(acc)


def _field_prime(bits: int) -> int:
    """A public prime just above 2^bits (the BGW field)."""
    return int(gmpy2.next_prime(mpz(1) << bits))


def _joint_g(n: int, nonces: Iterable[bytes], counter: int) -> int:
    """A public g in Z_N with Jacobi symbol 1, from every party's nonce (no party chooses it)."""
    seed = b"".join(nonces) + _encode_ints(n, counter)
    attempt = 0
    while True:
        g = (
            _hash_to_int(b"secagg/threshold-paillier/g", seed + _encode_ints(attempt), n.bit_length() + 64)
            % n
        )
        if g > 1 and gmpy2.jacobi(mpz(g), mpz(n)) == 1:
            return g
        attempt += 1


def check_committee(parties: int, threshold: int, *, distributed: bool) -> None:
    if not isinstance(parties, int) or not isinstance(threshold, int) or parties < 1 or threshold < 1:
        raise ConfigError(f"parties and threshold must be ints >= 1, got {parties!r}, {threshold!r}")
    if threshold > parties:
        raise ConfigError(f"threshold must be <= parties={parties}, got {threshold}")
    if distributed and 2 * (threshold - 1) + 1 > parties:
        raise ConfigError(
            f"distributed key generation multiplies degree-(t-1) sharings (BGW), so it needs "
            f"parties >= 2t - 1 = {2 * threshold - 1}; got parties={parties}, threshold={threshold}"
        )


def distributed_keygen(
    parties: int,
    threshold: int,
    key_bits: int,
    *,
    sieve_bound: int = DEFAULT_SIEVE_BOUND,
    biprimality_rounds: int = DEFAULT_BIPRIMALITY_ROUNDS,
    max_candidates: int = 10_000_000,
    party_factory: Callable[[int, int, int, int], DkgParty] = DkgParty,
) -> tuple[ThresholdPublicKey, list[KeyShare], DkgStats]:
    """Run the dealer-free generation among ``parties`` in-process party objects.

    Every party sees only its own draws and what the others send it; the driver only
    delivers messages and opens broadcast values. Returns the public key, each party's
    key share and the cost.
    """
    check_committee(parties, threshold, distributed=True)
    if key_bits < 128 or key_bits % 8:
        raise ConfigError(f"key_bits must be a multiple of 8 >= 128, got {key_bits}")
    start = time.perf_counter()
    stats = DkgStats()
    members = [party_factory(j, parties, threshold, key_bits) for j in range(1, parties + 1)]
    degree = threshold - 1
    prime_n = _field_prime(key_bits + 2)
    ids = range(1, parties + 1)
    n = 0
    while stats.candidates < max_candidates:
        stats.candidates += 1
        outgoing = {m.index: m.modulus_shares(prime_n) for m in members}
        product_shares = {
            m.index: m.modulus_product_share({i: outgoing[i][m.index] for i in ids}, prime_n) for m in members
        }
        candidate = _open_product(product_shares, 2 * degree, prime_n, "modulus")
        if candidate.bit_length() != key_bits or has_small_factor(candidate, sieve_bound):
            continue
        stats.sieved += 1
        nonces = [secrets.token_bytes(32) for _ in members]  # each party's contribution to g
        biprime = True
        for test in range(biprimality_rounds):
            stats.biprimality_tests += 1
            g = _joint_g(candidate, nonces, test)
            values = [m.biprimality_share(candidate, g) for m in members]
            rest = mpz(1)
            for value in values[1:]:
                rest = rest * value % candidate
            if values[0] != rest and values[0] != candidate - rest:
                biprime = False
                break
        if biprime:
            n = candidate
            break
    if not n:
        raise KeyGenerationError(f"no biprime modulus within {max_candidates} candidates")

    prime_d = _field_prime(2 * key_bits + 3 * STAT_BITS + 2 * parties.bit_length() + 8)
    while True:
        outgoing_d = {m.index: m.exponent_shares(n, prime_d) for m in members}
        d_shares = {
            m.index: m.exponent_product_share({i: outgoing_d[i][m.index] for i in ids}, prime_d)
            for m in members
        }
        opened = _open_product(d_shares, 2 * degree, prime_d, "decryption exponent")
        theta = opened % n
        if math.gcd(theta, n) == 1:
            break
    v = verification_base(n)
    dealt = {m.index: m.key_subshares(opened, v) for m in members}
    commitments = {i: dealt[i][1] for i in ids}
    secrets_by_party = {
        m.index: m.receive_subshares({i: dealt[i][0][m.index] for i in ids}, commitments, v) for m in members
    }
    n2 = n * n
    verification_keys = tuple(
        _product_mod([_committed_value(commitments[i], j, n2) for i in ids], n2) for j in ids
    )
    public = ThresholdPublicKey(n, threshold, parties, theta, v, verification_keys, DEALER_DISTRIBUTED)
    shares = [KeyShare(j, secrets_by_party[j], public) for j in ids]
    stats.seconds = time.perf_counter() - start
    return public, shares, stats


def _product_mod(values: Iterable[int], modulus: int) -> int:
    acc = mpz(1)
    for value in values:
        acc = acc * value % modulus
    return int(acc)


def insecure_trusted_dealer(
    parties: int, threshold: int, key_bits: int
) -> tuple[ThresholdPublicKey, list[KeyShare], DkgStats]:
    """INSECURE: one process draws p, q and deals the shares (it held the whole key).

    Same key shape as :func:`distributed_keygen` (so the same decryption code), any
    t <= c. For tests and benchmarks; the round's report names it whenever it was used.
    """
    check_committee(parties, threshold, distributed=False)
    if key_bits < 128 or key_bits % 8:
        raise ConfigError(f"key_bits must be a multiple of 8 >= 128, got {key_bits}")
    start = time.perf_counter()
    half = key_bits // 2
    while True:
        p = int(gmpy2.next_prime(mpz(secrets.randbits(half)) | (3 << (half - 2))))
        q = int(gmpy2.next_prime(mpz(secrets.randbits(half)) | (3 << (half - 2))))
        n = p * q
        if p != q and n.bit_length() == key_bits and math.gcd(n, (p - 1) * (q - 1)) == 1:
            break
    phi = (p - 1) * (q - 1)
    while True:
        d = _random_below(n << STAT_BITS) * phi
        theta = d % n
        if math.gcd(theta, n) == 1:
            break
    delta = math.factorial(parties)
    bound = (delta * delta) << (STAT_BITS + d.bit_length() + 2)
    coefficients = [d] + [_random_below(bound) for _ in range(threshold - 1)]
    v = verification_base(n)
    n2 = n * n
    secret_shares = {j: _eval_poly(coefficients, j) for j in range(1, parties + 1)}
    verification_keys = tuple(
        int(gmpy2.powmod(mpz(v), mpz(secret_shares[j]), n2)) for j in range(1, parties + 1)
    )
    public = ThresholdPublicKey(n, threshold, parties, theta, v, verification_keys, DEALER_INSECURE)
    shares = [KeyShare(j, secret_shares[j], public) for j in range(1, parties + 1)]
    return public, shares, DkgStats(seconds=time.perf_counter() - start, dealer=DEALER_INSECURE)


# ---------------------------------------------------------------------------------
# Partial decryption, proofs, combination


@dataclass(frozen=True)
class PartialDecryption:
    """Decryptor ``index``'s c_k^(2 Delta s_j) for every ciphertext, and its batch proof (e, z)."""

    index: int
    values: tuple[int, ...]
    challenge: int
    response: int


def _powmod_list(bases: Sequence[int], exponent: int, modulus: int) -> list[int]:
    e, m = mpz(exponent), mpz(modulus)
    return [int(gmpy2.powmod(mpz(b), e, m)) for b in bases]


def _parallel_powmod(bases: Sequence[int], exponent: int, modulus: int, workers: int) -> list[int]:
    if workers <= 1 or len(bases) < 2 * workers:
        return _powmod_list(bases, exponent, modulus)
    size = -(-len(bases) // workers)
    chunks = [list(bases[i : i + size]) for i in range(0, len(bases), size)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = pool.map(_powmod_list, chunks, [exponent] * len(chunks), [modulus] * len(chunks))
        return [value for part in parts for value in part]


def _batch_weights(
    public: ThresholdPublicKey, index: int, ciphertexts: Sequence[int], values: Sequence[int], context: bytes
) -> list[int]:
    width = (public.nsquare.bit_length() + 7) // 8
    h = hashlib.sha256(
        b"secagg/threshold-paillier/batch" + public.fingerprint() + context + _encode_ints(index)
    )
    for c in ciphertexts:
        h.update(int(c).to_bytes(width, "big"))
    for x in values:
        h.update(int(x).to_bytes(width, "big"))
    stream = hashlib.shake_256(h.digest()).digest(len(ciphertexts) * CHALLENGE_BITS // 8)
    step = CHALLENGE_BITS // 8
    return [int.from_bytes(stream[k * step : (k + 1) * step], "big") | 1 for k in range(len(ciphertexts))]


def _combine_weighted(bases: Sequence[int], weights: Sequence[int], modulus: int) -> int:
    acc = mpz(1)
    m = mpz(modulus)
    for b, w in zip(bases, weights, strict=True):
        acc = acc * gmpy2.powmod(mpz(b), w, m) % m
    return int(acc)


def _proof_challenge(
    public: ThresholdPublicKey, index: int, base: int, image: int, a: int, b: int, context: bytes
) -> int:
    data = (
        public.fingerprint()
        + context
        + _encode_ints(index, base, image, public.verification_keys[index - 1], a, b)
    )
    return _hash_to_int(b"secagg/threshold-paillier/dleq", data, CHALLENGE_BITS)


def _check_ciphertexts(public: ThresholdPublicKey, ciphertexts: Sequence[int]) -> None:
    n, n2 = public.n, public.nsquare
    for k, c in enumerate(ciphertexts):
        if not 0 < c < n2 or math.gcd(c, n) != 1:
            raise ConfigError(f"ciphertext {k} is not a unit modulo N^2")


def share_powers(share: KeyShare, ciphertexts: Sequence[int], *, workers: int = 1) -> list[int]:
    """c^(2 Delta s_j) mod N^2 for each ciphertext: decryptor j's partials without the
    proof (what :func:`partial_decrypt` sends, and all a coalition pooling its own key
    shares needs)."""
    return _parallel_powmod(ciphertexts, 2 * share.public.delta * share.secret, share.public.nsquare, workers)


def interpolate_partials(
    public: ThresholdPublicKey, values: Mapping[int, Sequence[int]], *, strict: bool = True
) -> list[int]:
    """Plaintexts from the partials of the decryptors ``values`` names (index -> their
    partials), Lagrange-combined at 0 over exactly those indices. With t of them this is
    the decryption; with fewer, what that coalition gets. ``strict``: raise
    :class:`IntegrityError` when a combination is not 1 mod N (inconsistent partials)."""
    indices = sorted(values)
    coefficients = lagrange_at_zero_integer(indices, public.delta)
    n, n2 = mpz(public.n), mpz(public.nsquare)
    exponents = {j: mpz(2 * coefficients[j]) for j in indices}
    scale_inverse = mpz(pow(4 * public.delta * public.delta * public.theta % public.n, -1, public.n))
    count = len(values[indices[0]]) if indices else 0
    out = []
    for k in range(count):
        acc = mpz(1)
        for j in indices:
            acc = acc * gmpy2.powmod(mpz(values[j][k]), exponents[j], n2) % n2
        if strict and acc % n != 1:
            raise IntegrityError(f"combined partial decryption {k} is not 1 mod N (inconsistent partials)")
        out.append(int((acc - 1) // n * scale_inverse % n))
    return out


def partial_decrypt(
    share: KeyShare, ciphertexts: Sequence[int], *, context: bytes = b"", workers: int = 1
) -> PartialDecryption:
    """Decryptor j's share of the decryption of each ciphertext, with one batch proof of correctness.

    ``context`` binds the proof to a round (its id and the attested sum's digest), so a
    partial cannot be replayed into another round.
    """
    public = share.public
    _check_ciphertexts(public, ciphertexts)
    n2 = public.nsquare
    values = share_powers(share, ciphertexts, workers=workers)
    weights = _batch_weights(public, share.index, ciphertexts, values, context)
    base = int(gmpy2.powmod(_combine_weighted(ciphertexts, weights, n2), 4 * public.delta, n2))
    image = int(gmpy2.powmod(_combine_weighted(values, weights, n2), 2, n2))
    r = _random_below(1 << (share.secret.bit_length() + CHALLENGE_BITS + STAT_BITS))
    a = int(gmpy2.powmod(mpz(base), mpz(r), n2))
    b = int(gmpy2.powmod(mpz(public.v), mpz(r), n2))
    challenge = _proof_challenge(public, share.index, base, image, a, b, context)
    response = r + challenge * share.secret
    # Send (challenge, response); the verifier recomputes a and b from them.
    return PartialDecryption(share.index, tuple(values), challenge, response)


def verify_partial(
    public: ThresholdPublicKey,
    ciphertexts: Sequence[int],
    partial: PartialDecryption,
    *,
    context: bytes = b"",
) -> None:
    """Raise :class:`PartialDecryptionError` naming the decryptor unless its partials are proven correct."""
    j = partial.index
    if not 1 <= j <= public.parties:
        raise PartialDecryptionError(f"partial decryption from unknown decryptor index {j}", party=j)
    if len(partial.values) != len(ciphertexts):
        raise PartialDecryptionError(
            f"decryptor {j}: expected {len(ciphertexts)} partial decryptions, got {len(partial.values)}",
            party=j,
        )
    n, n2 = public.n, public.nsquare
    for x in partial.values:
        if not 0 < x < n2 or math.gcd(x, n) != 1:
            raise PartialDecryptionError(
                f"decryptor {j}: a partial decryption is not a unit modulo N^2", party=j
            )
    if not 0 <= partial.challenge < (1 << CHALLENGE_BITS) or partial.response < 0:
        raise PartialDecryptionError(f"decryptor {j}: proof values out of range", party=j)
    weights = _batch_weights(public, j, ciphertexts, partial.values, context)
    base = int(gmpy2.powmod(_combine_weighted(ciphertexts, weights, n2), 4 * public.delta, n2))
    image = int(gmpy2.powmod(_combine_weighted(partial.values, weights, n2), 2, n2))
    z, e = mpz(partial.response), mpz(partial.challenge)
    # a = base^z / image^e and b = v^z / vk^e; the challenge must be the hash of them.
    a = gmpy2.powmod(mpz(base), z, n2) * gmpy2.powmod(mpz(image), -e, n2) % n2
    b = gmpy2.powmod(mpz(public.v), z, n2) * gmpy2.powmod(mpz(public.verification_keys[j - 1]), -e, n2) % n2
    if _proof_challenge(public, j, base, image, int(a), int(b), context) != partial.challenge:
        raise PartialDecryptionError(
            f"decryptor {j}: proof of correct partial decryption failed (expected c^(2 Delta s_{j}) under "
            f"verification key {j}; got forged or wrong partials)",
            party=j,
        )


def combine(
    public: ThresholdPublicKey,
    ciphertexts: Sequence[int],
    partials: Sequence[PartialDecryption],
    *,
    context: bytes = b"",
    verify: bool = True,
) -> list[int]:
    """Plaintexts from >= t verified partial decryptions (bad ones raise, naming the decryptor).

    Raises :class:`PartialDecryptionError` for the first partial that fails its proof,
    :class:`NotEnoughDecryptorsError` when fewer than t distinct decryptors answered.
    """
    by_index: dict[int, PartialDecryption] = {}
    for partial in partials:
        if partial.index in by_index:
            raise PartialDecryptionError(f"decryptor {partial.index} answered twice", party=partial.index)
        by_index[partial.index] = partial
    if len(by_index) < public.threshold:
        raise NotEnoughDecryptorsError(
            f"expected partial decryptions from >= t={public.threshold} of {public.parties} decryptors, "
            f"got {len(by_index)} ({sorted(by_index)}); nothing is decrypted"
        )
    if verify:
        for index in sorted(by_index):
            verify_partial(public, ciphertexts, by_index[index], context=context)
    chosen = sorted(by_index)[: public.threshold]
    return interpolate_partials(public, {j: by_index[j].values for j in chosen})
