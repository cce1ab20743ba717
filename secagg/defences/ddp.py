"""Distributed differential privacy on top of secure aggregation: the revealed sum is DP too.

What it is: the distributed discrete Gaussian mechanism (Kairouz, Liu, Steinke, ICML 2021)
and its Skellam variant (Agarwal, Kairouz, Liu, NeurIPS 2021) as a client-side transform
whose output any exact-sum protocol (``two-server``, ``secagg``, the plaintext baseline)
aggregates unchanged, plus the server-side decoding of the revealed sum.

Client, per round (:meth:`DistributedDP.encode`):

1. clip the flat update's L2 norm to ``clip``;
2. rotate with the randomised Walsh-Hadamard transform ``H D / sqrt(d)`` (``D`` diagonal
   random signs from the PRF under the round's PUBLIC seed: the rotation spreads a spiky
   vector over all coordinates, so the modular ring wraps rarely) and divide by the
   granularity ``gamma``. A length that is not a power of two is handled as ``pad`` says:
   ``zeros`` pads with zeros to the next power of two (the paper's choice; the upload
   grows by up to 2x), ``overlap`` (default) rotates two overlapping power-of-two windows
   (first and last ``2^floor(log2 d)`` coordinates; no padding, the same upload as the
   update), ``no`` refuses it;
3. conditional randomised rounding: each coordinate rounds up with probability its
   fractional part, redrawn until the rounded vector's norm is within the paper's bound
   ``Delta_2`` (:func:`secagg.defences.ddp_accounting.rounded_l2_bound`), which is what
   the accountant charges for;
4. add integer noise per coordinate: the discrete Gaussian N_Z(0, sigma^2) (default) or
   Skellam of variance sigma^2, sampled EXACTLY from the AES-CTR keyed CSPRNG of
   :mod:`secagg.defences.ddp_sampling` (CDF inversion against certified enclosures, one
   keystream word per coordinate; Canonne-Kamath-Steinke rejection samplers as the
   reference; no floating-point noise). The noise does not depend on the update, so a
   client can draw it before the round (:meth:`DistributedDP.sample_noise`);
5. reduce into Z_m, ``m = 2^bits``, as signed values in ``[-m/2, m/2)``.

Server (:meth:`DistributedDP.decode_sum`): reduce the revealed integer sum into
``[-m/2, m/2)``, multiply by ``gamma``, undo the rotation (``D H / sqrt(d)``), drop the
padding. The result estimates the sum of the clipped updates.

Parameters from the target (:meth:`DistributedDP.plan`): for the given bit width, clients
and dimension, the smallest granularity ``gamma`` for which the ring holds the sum within
``k_stddevs`` standard deviations (signal of n aligned clipped updates spread by the
rotation, rounding, noise), and at it the smallest per-client noise whose accounted
epsilon (:mod:`secagg.defences.ddp_accounting`) meets the target. Configurations that
cannot work raise typed errors saying what would fit: :class:`NoiseTooSmallError` (a
fixed ``noise_multiplier`` too small for the target), :class:`BitWidthTooSmallError` (no
granularity fits the ring), :class:`DimensionNotPowerOfTwoError` (``pad=no``).

Wire cost: a protocol carrying Z_2^bits elements sends ``bits / 8`` bytes per padded
parameter (``Plan.bytes_per_param``). :meth:`DDPRound.protocol` sets a protocol with a
configurable ring (``two-server``, ``secagg``) to the ring Z_2^bits itself (Z_2^8 for
bits < 8) in modular mode (the sum wraps by design and the decoder reduces mod 2^bits):
at bits = 16 the masked messages are uint16, 2 bytes per parameter plus fixed headers on
the wire; at bits = 12 they are bit-packed, 1.5 bytes per parameter. Protocols without a
ring (the plaintext baseline) carry the integers as they carry floats.

What leaks: the aggregate is (epsilon, delta)-DP for add/remove of one client's update
against anyone who sees it, including the server; the guarantee assumes every counted
client added its noise (a client that drops out after sending still counts: its noise
is in the sum; clients missing from the sum lower the noise, and
:meth:`DistributedDP.privacy_spent` takes the number actually summed).
An individual masked message reveals nothing (the protocol's job); a message sent in the
clear (plaintext baseline) carries only ONE client's noise, 1/sqrt(n) of the total.

>>> ddp = DistributedDP(epsilon=3.0, clip=1.0, bits=16).for_round(n_clients=4, round_seed=bytes(32))
>>> updates = [np.full(8, 0.1 * (i + 1)) for i in range(4)]
>>> total = np.sum([ddp.apply(u) for u in updates], axis=0)
>>> estimate = ddp.decode_sum(total, n_params=8)
>>> mse = float(np.mean((estimate - 1.0) ** 2))  # the noise of 4 clients at epsilon 3
>>> estimate.shape, bool(mse < 5 * ddp.plan(8).expected_mse())
((8,), True)
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from secagg import prf
from secagg.defences import ddp_accounting as accounting
from secagg.defences import ddp_sampling as sampling
from secagg.defences.dp import PrivacySpent
from secagg.defences.transforms import (
    TRANSFORMS,
    Compose,
    NoiseSource,
    Transform,
    UpdateError,
    _as_update,
)
from secagg.errors import ConfigError
from secagg.observe import Observation

NOISES = ("dgauss", "skellam")
PADDINGS = ("overlap", "zeros", "no")
# The exact samplers' range (ddp_sampling.rational_variance for the discrete Gaussian; the
# same bound keeps the inversion tables, O(std) entries, small for both noises).
_MAX_CLIENT_STD = 8000.0
_MAX_ROUNDING_TRIES = 1000
_ROTATION_LABEL = "ddp/rotation"


class DDPConfigError(ConfigError):
    """A distributed-DP configuration that cannot deliver its target."""


class NoiseTooSmallError(DDPConfigError):
    """The fixed noise gives a larger epsilon than the target."""


class BitWidthTooSmallError(DDPConfigError):
    """No granularity lets the sum of n noisy updates fit Z_2^bits."""


class DimensionNotPowerOfTwoError(DDPConfigError):
    """The Walsh-Hadamard rotation needs a power-of-two length and padding is off."""


def padded_dimension(n_params: int) -> int:
    """The smallest power of two >= ``n_params``."""
    if n_params < 1:
        raise UpdateError(f"expected a non-empty update, got {n_params} parameters")
    return 1 << (n_params - 1).bit_length()


def _hadamard_into(window: np.ndarray, scratch: np.ndarray, scale: float) -> None:
    """``window <- scale * H window`` (unnormalised Sylvester H) in place; ``scratch`` is a
    buffer of the same power-of-two size.

    Constant-geometry (Pease) form: every one of the log2(d) stages is the same map
    ``y[:d/2] = x[0::2] + x[1::2]``, ``y[d/2:] = x[0::2] - x[1::2]`` (two whole-array ufunc
    calls, contiguous writes, stride-2 reads), ping-ponging between the two buffers; the
    usual in-place butterflies with stride h run numpy's inner loops over only h elements
    for small h and cost 2.5x as much here. ``scale`` rides on the last copy."""
    d = window.size
    half = d // 2
    source, target = window, scratch
    for _ in range(d.bit_length() - 1):
        evens, odds = source[0::2], source[1::2]
        np.add(evens, odds, out=target[:half])
        np.subtract(evens, odds, out=target[half:])
        source, target = target, source
    if source is window:
        window *= scale
    else:
        np.multiply(source, scale, out=window)


def hadamard(values: np.ndarray) -> np.ndarray:
    """The orthonormal Walsh-Hadamard transform ``H x / sqrt(d)`` (its own inverse)."""
    out = np.array(values, dtype=np.float64)
    d = out.size
    if d & (d - 1) or d == 0:
        raise DimensionNotPowerOfTwoError(f"expected a power-of-two length, got {d}")
    _hadamard_into(out, np.empty_like(out), 1.0 / math.sqrt(d))
    return out


@functools.lru_cache(maxsize=4)
def rotation_signs(round_seed: bytes, dim: int) -> np.ndarray:
    """``dim`` random signs (+-1.0) from the PRF under the public round seed (read-only;
    cached: every client of a round uses the same public signs)."""
    words = prf.expand(round_seed, prf.domain(_ROTATION_LABEL, round_id=0), (dim + 31) // 32)
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8))[:dim]
    signs = 1.0 - 2.0 * bits.astype(np.float64)
    signs.flags.writeable = False
    return signs


def _rotate_into(out: np.ndarray, values: np.ndarray, round_seed: bytes, scale: float) -> None:
    """``out <- scale * R values`` (:func:`rotate`) with one sign pass and one Hadamard
    per window; ``out`` has the length of ``values`` (or more: zero padding)."""
    d = out.size
    w = rotation_window(d)
    signs = rotation_signs(round_seed, w if w == d else 2 * w)
    n = values.size
    scratch = np.empty(w)
    head = min(n, w)
    np.multiply(values[:head], signs[:head], out=out[:head])
    out[head:w] = 0.0
    if w == d:
        _hadamard_into(out, scratch, scale / math.sqrt(w))
        return
    # Overlap windows: the tail outside the first window is scaled while it is copied.
    np.multiply(values[w:], scale, out=out[w:n])
    out[n:] = 0.0
    _hadamard_into(out[:w], scratch, scale / math.sqrt(w))
    tail = out[d - w:]
    tail *= signs[w:]
    _hadamard_into(tail, scratch, 1.0 / math.sqrt(w))


def rotation_window(dim: int) -> int:
    """The Hadamard size for ``dim`` coordinates: the largest power of two <= dim."""
    return 1 << (dim.bit_length() - 1)


def rotate(values: np.ndarray, round_seed: bytes) -> np.ndarray:
    """The randomised rotation ``R x``: ``H D`` on a power-of-two length; on any other length
    ``d`` with window ``w = 2^floor(log2 d)``, ``H D1`` on the first ``w`` coordinates, then
    ``H D2`` on the last ``w`` (overlapping windows; a product of orthogonal maps is
    orthogonal, and every coordinate ends up mixed over at least ``w > d / 2`` others)."""
    source = np.asarray(values, dtype=np.float64)
    out = np.empty(source.size)
    _rotate_into(out, source, round_seed, 1.0)
    return out


def unrotate(values: np.ndarray, round_seed: bytes) -> np.ndarray:
    """The inverse ``R^T y`` of :func:`rotate` (H is its own inverse; the windows in reverse)."""
    out = np.array(values, dtype=np.float64)
    d = out.size
    w = rotation_window(d)
    signs = rotation_signs(round_seed, w if w == d else 2 * w)
    scratch = np.empty(w)
    if w != d:
        tail = out[d - w:]
        _hadamard_into(tail, scratch, 1.0 / math.sqrt(w))
        tail *= signs[w:]
    _hadamard_into(out[:w], scratch, 1.0 / math.sqrt(w))
    out[:w] *= signs[:w]
    return out


@dataclass(frozen=True)
class Plan:
    """The parameters one round runs with, all public."""

    n_params: int
    dim: int  # length of the encoded vector (n_params, or padded to a power of two)
    n_clients: int
    bits: int
    gamma: float  # granularity: one integer unit is gamma in update units
    client_variance: Fraction  # per coordinate, integer units, exactly as sampled
    l2_bound: float  # Delta_2 after rounding, integer units
    noise: str
    spent: PrivacySpent

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def client_std(self) -> float:
        """Each client's noise std in update units."""
        return math.sqrt(float(self.client_variance)) * self.gamma

    @property
    def input_bound(self) -> int:
        """The largest |value| of a client's message: what a protocol must accept."""
        return self.modulus // 2

    @property
    def bytes_per_param(self) -> float:
        """Upload per original parameter at ``bits`` per padded coordinate."""
        return self.bits / 8.0 * self.dim / self.n_params

    def expected_mse(self) -> float:
        """Per-coordinate MSE of the decoded sum against the clipped sum, ignoring wraps:
        n clients' noise plus at most 1/4 of rounding variance each (integer units; the
        inverse rotation keeps the per-coordinate variance of iid noise)."""
        return self.n_clients * (float(self.client_variance) + 0.25) * self.gamma**2


@dataclass(frozen=True)
class DistributedDP(Transform):
    """The DDP client transform and server decoder (see the module docstring).

    ``epsilon``, ``delta``: the per-release target; ``rounds``: participations composed.
    ``noise_multiplier``: 0 calibrates the noise to the target; otherwise the CENTRAL
    noise multiplier (std of the summed noise / clip, ``sqrt(n) * client std / clip``),
    refused if it misses the target. ``bits``: the ring Z_2^bits. ``beta``: the
    conditional rounding's bound parameter. ``k_stddevs``: headroom of the ring in
    standard deviations of one coordinate of the sum. ``pad``: ``zeros``, ``overlap`` or
    ``no`` (see the module docstring).
    ``n_clients`` and ``round_seed`` are bound per round (:meth:`for_round`).
    """

    epsilon: float = 3.0
    delta: float = 1e-5
    clip: float = 1.0
    bits: int = 16
    noise: str = "dgauss"
    noise_multiplier: float = 0.0
    beta: float = math.exp(-0.5)
    k_stddevs: float = 4.0
    rounds: int = 1
    pad: str = "overlap"
    n_clients: int = 0
    round_seed: bytes = b""
    _plans: dict[int, Plan] = field(default_factory=dict, compare=False, repr=False)
    kind: ClassVar[str] = "ddp"
    aliases: ClassVar[dict[str, str]] = {"eps": "epsilon", "c": "clip", "k": "bits",
                                         "z": "noise_multiplier", "sigma": "noise_multiplier"}
    unspecced: ClassVar[tuple[str, ...]] = ("n_clients", "round_seed", "_plans")

    def __post_init__(self) -> None:
        for name in ("epsilon", "clip", "k_stddevs"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise DDPConfigError(f"expected {name} to be a finite number > 0, got {value!r}")
        if not 0.0 < self.delta < 1.0:
            raise DDPConfigError(f"expected delta in (0, 1), got {self.delta!r}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 32:
            raise DDPConfigError(f"expected bits to be an int in [2, 32], got {self.bits!r}")
        if self.noise not in NOISES:
            raise DDPConfigError(f"expected noise in {NOISES}, got {self.noise!r}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise DDPConfigError(
                f"expected noise_multiplier >= 0 (0: calibrate), got {self.noise_multiplier!r}")
        if not 0.0 < self.beta < 1.0:
            raise DDPConfigError(f"expected beta in (0, 1), got {self.beta!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise DDPConfigError(f"expected rounds to be an int >= 1, got {self.rounds!r}")
        if self.pad not in PADDINGS:
            raise DDPConfigError(f"expected pad in {PADDINGS}, got {self.pad!r}")
        if isinstance(self.n_clients, bool) or not isinstance(self.n_clients, int) or self.n_clients < 0:
            raise DDPConfigError(f"expected n_clients to be an int >= 0, got {self.n_clients!r}")
        if self.round_seed and len(self.round_seed) != prf.SEED_BYTES:
            raise DDPConfigError(
                f"expected a {prf.SEED_BYTES}-byte round seed, got {len(self.round_seed)} bytes")

    # -- binding -------------------------------------------------------------------------

    def for_round(self, *, n_clients: int, round_seed: bytes | None = None) -> DistributedDP:
        """This config bound to a round: the number of clients summed and the public seed
        of the rotation (fresh from the OS when not given; the server would announce it)."""
        if isinstance(n_clients, bool) or not isinstance(n_clients, int) or n_clients < 1:
            raise DDPConfigError(f"expected at least one client, got {n_clients!r}")
        seed = os.urandom(prf.SEED_BYTES) if round_seed is None else bytes(round_seed)
        return replace(self, n_clients=n_clients, round_seed=seed, _plans={})

    def _bound(self) -> None:
        if self.n_clients < 1 or not self.round_seed:
            raise DDPConfigError("expected a config bound to a round "
                                 "(for_round(n_clients=..., round_seed=...)), "
                                 "got an unbound one")

    # -- planning ------------------------------------------------------------------------

    def _epsilon_at(self, gamma: float, variance: float, dim: int, n_clients: int) -> PrivacySpent:
        l2 = accounting.rounded_l2_bound(l2=self.clip / gamma, dim=dim, beta=self.beta)
        return accounting.distributed_epsilon(noise=self.noise, l2=l2, dim=dim, n_clients=n_clients,
                                              client_variance=variance, delta=self.delta, rounds=self.rounds)

    def _calibrated_std(self, gamma: float, dim: int) -> float:
        """Smallest per-client std (integer units) meeting the target at ``gamma``."""
        if self.noise_multiplier > 0:
            return self.noise_multiplier * self.clip / math.sqrt(self.n_clients) / gamma
        low, high = 1e-3, 1.0
        while self._epsilon_at(gamma, high * high, dim, self.n_clients).epsilon > self.epsilon:
            high *= 2.0
            if high > 1e12:
                raise DDPConfigError(f"no noise reaches epsilon {self.epsilon} at granularity {gamma:.3g}")
        for _ in range(40):
            middle = math.sqrt(low * high)
            if self._epsilon_at(gamma, middle * middle, dim, self.n_clients).epsilon > self.epsilon:
                low = middle
            else:
                high = middle
        return high

    def _sum_std(self, gamma: float, std: float, window: int) -> float:
        """Std of one coordinate of the integer sum: n aligned clipped updates spread over
        ``window`` coordinates by the rotation, n roundings (<= 1/4 each), n noises."""
        n = self.n_clients
        return math.sqrt((n * self.clip / gamma) ** 2 / window + n * (std * std + 0.25))

    def _max_std(self) -> float:
        return _MAX_CLIENT_STD

    def _fits(self, gamma: float, dim: int, bits: int) -> tuple[bool, float]:
        std = self._calibrated_std(gamma, dim)
        window = rotation_window(dim)
        ok = self.k_stddevs * self._sum_std(gamma, std, window) <= (1 << bits) / 2 and std <= self._max_std()
        return ok, std

    def _smallest_gamma(self, dim: int, bits: int) -> tuple[float, float] | None:
        # Granularity bracket: from 2^-40 clip per unit (huge integers) to 1e4 clip (every
        # update rounds to 0 or +-1 and only the rounding noise is left).
        low, high = self.clip * 2.0**-40, self.clip * 1e4
        ok, std = self._fits(high, dim, bits)
        if not ok and std > self._max_std():
            raise DDPConfigError(
                f"{self.noise} noise of std {std:.4g} (integer units) per client is needed for epsilon "
                f"{self.epsilon} with {self.n_clients} clients in dimension {dim}, beyond the exact "
                f"sampler's range (std <= {self._max_std():g}): use more clients per sum or a larger epsilon")
        if not ok:
            return None
        for _ in range(40):
            middle = math.sqrt(low * high)
            fits, middle_std = self._fits(middle, dim, bits)
            if fits:
                high, std = middle, middle_std
            else:
                low = middle
        return high, std

    def smallest_bits(self, n_params: int) -> int | None:
        """The smallest bit width that fits this config at ``n_params`` (None: none <= 32)."""
        dim = self._dimension(n_params)
        for bits in range(2, 33):
            if self._smallest_gamma(dim, bits) is not None:
                return bits
        return None

    def _dimension(self, n_params: int) -> int:
        """The length of the encoded vector for an update of ``n_params``."""
        padded = padded_dimension(n_params)
        if padded == n_params or self.pad == "overlap":
            return n_params
        if self.pad == "no":
            raise DimensionNotPowerOfTwoError(
                f"the randomised Hadamard rotation needs a power-of-two length; got {n_params} parameters "
                f"with pad=no: set pad=zeros to zero-pad to {padded} (upload x{padded / n_params:.3f}) or "
                f"pad=overlap (two overlapping windows of {rotation_window(n_params)}, no extra upload), "
                f"or give an update of {padded // 2 if padded > 1 else 1} or {padded} parameters")
        return padded

    def plan(self, n_params: int) -> Plan:
        """The round's public parameters for an update of ``n_params`` (cached)."""
        self._bound()
        cached = self._plans.get(n_params)
        if cached is not None:
            return cached
        dim = self._dimension(n_params)
        found = self._smallest_gamma(dim, self.bits)
        if found is None:
            smallest = self.smallest_bits(n_params)
            fits = f"at least {smallest} bits fit" if smallest is not None else "no width up to 32 bits fits"
            raise BitWidthTooSmallError(
                f"bits={self.bits} is too small for {self.n_clients} clients, dimension {dim} and epsilon "
                f"{self.epsilon} (delta {self.delta}): the sum's {self.k_stddevs:g} standard deviations "
                f"exceed 2^{self.bits - 1} at every granularity; {fits} (or fewer clients per sum, "
                f"a larger epsilon, or k_stddevs below {self.k_stddevs:g})")
        gamma, std = found
        variance = sampling.rational_variance(std * std) if self.noise == "dgauss" else _skellam_variance(std)
        l2 = accounting.rounded_l2_bound(l2=self.clip / gamma, dim=dim, beta=self.beta)
        spent = accounting.distributed_epsilon(noise=self.noise, l2=l2, dim=dim, n_clients=self.n_clients,
                                               client_variance=float(variance), delta=self.delta,
                                               rounds=self.rounds)
        if spent.epsilon > self.epsilon * (1 + 1e-9):
            if self.noise_multiplier > 0:
                needed = replace(self, noise_multiplier=0.0, _plans={})._calibrated_std(gamma, dim)
                z = needed * gamma * math.sqrt(self.n_clients) / self.clip
                raise NoiseTooSmallError(
                    f"noise_multiplier {self.noise_multiplier:g} gives epsilon {spent.epsilon:.4g} for "
                    f"{self.n_clients} clients at delta {self.delta}, above the target {self.epsilon}; "
                    f"a noise_multiplier of at least {z:.4g} fits (or noise_multiplier=0 to calibrate)")
            raise DDPConfigError(f"calibration missed: epsilon {spent.epsilon} > target {self.epsilon}")
        plan = Plan(n_params, dim, self.n_clients, self.bits, gamma, variance, l2, self.noise, spent)
        self._plans[n_params] = plan
        return plan

    # -- client and server ----------------------------------------------------------------

    def sample_noise(self, n_params: int, bits: sampling.SecureBits | None = None) -> np.ndarray:
        """One client's noise vector for an update of ``n_params`` (int64, encoded length).

        The noise does not depend on the update, so a client may draw it before the round
        (offline, like a mask precomputation) and pass it to :meth:`encode`; each vector
        must be used for exactly one message.
        """
        plan = self.plan(n_params)
        source = bits if bits is not None else sampling.SecureBits()
        if self.noise == "dgauss":
            return sampling.discrete_gaussian(source, plan.client_variance, plan.dim)
        return sampling.skellam(source, plan.client_variance, plan.dim)

    def encode(self, update: np.ndarray, bits: sampling.SecureBits | None = None, *,
               noise: np.ndarray | None = None) -> np.ndarray:
        """One client's message: signed integers in ``[-m/2, m/2)`` of the encoded length
        (int64). ``noise``: a vector from :meth:`sample_noise` (drawn here when None)."""
        array = np.asarray(_as_update(update), dtype=np.float64)
        plan = self.plan(array.size)
        source = bits if bits is not None else sampling.SecureBits()
        if noise is not None and (np.shape(noise) != (plan.dim,) or np.asarray(noise).dtype != np.int64):
            raise UpdateError(f"expected a precomputed int64 noise vector of {plan.dim} values, "
                              f"got shape {np.shape(noise)} dtype {np.asarray(noise).dtype}")
        # Clip and the 1 / gamma scale ride on the rotation's first matrix product.
        norm = math.sqrt(_squared_norm(array))
        clip_scale = self.clip / norm if norm > self.clip else 1.0
        scaled = np.empty(plan.dim)
        _rotate_into(scaled, array, self.round_seed, clip_scale / plan.gamma)
        # Randomised rounding: floor(x + u) rounds up with probability frac(x). u has 32
        # random bits: a bias below 2^-32 units per coordinate, in accuracy only; privacy
        # rests on the norm bound, checked on the rounded vector itself.
        rounded = np.empty(plan.dim)
        bound = plan.l2_bound**2
        for _ in range(_MAX_ROUNDING_TRIES):
            uniforms = source.words((plan.dim + 1) // 2).view(np.uint32)[: plan.dim]
            np.multiply(uniforms, 2.0**-32, out=rounded)
            rounded += scaled
            np.floor(rounded, out=rounded)
            if _squared_norm(rounded) <= bound:
                break
        else:  # probability <= beta^1000 for a vector within the clip
            raise DDPConfigError(f"randomised rounding stayed above the bound {plan.l2_bound:.6g} "
                                 f"after {_MAX_ROUNDING_TRIES} tries")
        draws = noise if noise is not None else self.sample_noise(array.size, source)
        integers = np.empty(plan.dim, dtype=np.int64)
        np.add(rounded, draws, out=integers, casting="unsafe")  # exact: |values| << 2^53
        return _centred_inplace(integers, plan.modulus)

    def _apply(self, update: np.ndarray, rng: NoiseSource | sampling.SecureBits | None) -> np.ndarray:
        # numpy generators are never used: all DDP randomness is the keyed CSPRNG.
        source = rng if isinstance(rng, sampling.SecureBits) else None
        return self.encode(update, source).astype(np.float64)

    def decode_sum(self, total: np.ndarray, *, n_params: int) -> np.ndarray:
        """The server's estimate of the sum of the clipped updates from the revealed sum of
        the clients' messages (any integer representative of it, e.g. the protocol's)."""
        plan = self.plan(n_params)
        values = np.asarray(total, dtype=np.float64)
        if values.shape != (plan.dim,):
            raise UpdateError(f"expected a revealed sum of {plan.dim} values, got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            raise UpdateError("expected a finite revealed sum")
        residues = np.mod(np.rint(values), float(plan.modulus)).astype(np.int64)
        centred = _centred(residues, plan.modulus).astype(np.float64) * plan.gamma
        return unrotate(centred, self.round_seed)[:n_params]

    # -- reporting ------------------------------------------------------------------------

    def privacy_spent(self, n_params: int, *, n_summed: int | None = None) -> PrivacySpent:
        """(epsilon, delta) of the released sum; ``n_summed`` clients' noise in it (default all)."""
        plan = self.plan(n_params)
        summed = self.n_clients if n_summed is None else n_summed
        if summed < 1:
            raise DDPConfigError(f"expected at least one summed client, got {summed}")
        return accounting.distributed_epsilon(noise=self.noise, l2=plan.l2_bound, dim=plan.dim,
                                              n_clients=summed,
                                              client_variance=float(plan.client_variance), delta=self.delta,
                                              rounds=self.rounds)

    def describe(self, n_params: int | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {"spec": self.spec, "mechanism": "distributed " + self.noise,
                                  "target_epsilon": self.epsilon, "delta": self.delta, "bits": self.bits,
                                  "n_clients": self.n_clients}
        known = n_params if n_params is not None else (next(iter(self._plans)) if self._plans else None)
        if known is None or self.n_clients < 1:
            return record
        plan = self.plan(known)
        z = accounting.central_gaussian_multiplier(epsilon=self.epsilon, delta=self.delta, rounds=self.rounds)
        record.update({
            "epsilon": plan.spent.epsilon, "rdp_order": plan.spent.order, "n_params": plan.n_params,
            "encoded_dim": plan.dim, "pad": self.pad, "gamma": plan.gamma, "client_std": plan.client_std,
            "client_std_integer": math.sqrt(float(plan.client_variance)),
            "central_noise_multiplier": math.sqrt(plan.n_clients) * plan.client_std / self.clip,
            "l2_bound_integer": plan.l2_bound,
            "bytes_per_param": plan.bytes_per_param,
            "expected_mse": plan.expected_mse(),
            "central_gaussian_mse": (z * self.clip) ** 2,
            "sampler": ("exact discrete Gaussian" if self.noise == "dgauss"
                        else "exact Skellam (difference of Poissons)")
                       + " by CDF inversion with certified enclosures over an AES-256-CTR keyed CSPRNG",
        })
        return record


def decode_observations(observations: Sequence[Observation], ddp: DistributedDP, *,
                        n_params: int) -> list[Observation]:
    """The attacker's reading of a DDP round: every candidate vector of the encoded length
    decoded with the round's public parameters (reduce mod 2^bits, undo the rotation,
    rescale), so attacks work in update space. An aggregate's candidate (a revealed SUM
    divided by its client count) is decoded as that sum; any other candidate (one client's
    message read in the clear, a pooled recovery, scaled bytes) as one message."""
    plan = ddp.plan(n_params)
    out = []
    for observation in observations:
        vector = observation.vector
        if vector is None or vector.size != plan.dim:
            out.append(observation)
            continue
        count = max(1, len(observation.clients)) if observation.kind == "aggregate" else 1
        decoded = ddp.decode_sum(vector * count, n_params=n_params) / count
        note = (observation.note + "; " if observation.note else "") + (
            f"decoded: mod 2^{plan.bits}, inverse rotation, x gamma {plan.gamma:.3g}")
        out.append(replace(observation, vector=decoded, note=note))
    return out


@dataclass(frozen=True)
class DDPRound:
    """A defence pipeline whose last stage is distributed DP, bound to one round: what an
    application (``secagg assess``/``evaluate``) needs to run it over a secure sum."""

    before: Compose  # the stages applied before the DDP encoding
    ddp: DistributedDP  # bound to the round
    n_params: int

    @classmethod
    def bind(cls, transform: Transform, *, n_clients: int, n_params: int, aggregate_kind: str = "sum",
             round_seed: bytes | None = None) -> DDPRound | None:
        """None when ``transform`` has no DDP stage; typed errors for what cannot run."""
        stage = find_ddp(transform)
        if stage is None:
            return None
        if aggregate_kind != "sum":
            raise DDPConfigError(f"distributed DP needs a protocol that reveals a sum of the clients' "
                                 f"ring integers; got one that reveals a {aggregate_kind}: use a sum "
                                 "protocol (two-server, secagg, plaintext-fedsgd)")
        bound = stage.for_round(n_clients=n_clients, round_seed=round_seed)
        bound.plan(n_params)  # refuse a bad configuration before any message
        stages = transform.stages[:-1]
        return cls(Compose(stages), bound, n_params)

    @property
    def input_bound(self) -> float:
        return float(self.ddp.plan(self.n_params).input_bound)

    def protocol(self, cls: Any, *, fast: bool = False) -> tuple[Any, str]:
        """An instance of the protocol class ``cls`` set up to carry the messages (and a note):
        its ``fast_config`` when asked, input bound 2^(bits-1), where it has a fixed-point
        codec 0 fractional bits (the messages are integers, exact as they are), and where it
        has a configurable ring the modular ring Z_2^bits (2 bytes per parameter on the wire
        at bits=16, 1.5 at bits=12)."""
        from secagg.costs import fast_or_default

        protocol = fast_or_default(cls, fast=fast).with_integer_inputs(self.input_bound,
                                                                        modulus_bits=self.ddp.bits)
        exact = ", frac_bits 0" if cls.frac_bits_field is not None else ""
        ring = protocol_ring_bits(protocol)
        carried = f", modular ring Z_2^{ring}" if ring is not None else ""
        note = (("fast_config, " if fast else "default config, ")
                + f"input bound 2^{self.ddp.bits - 1}{exact}{carried}")
        return protocol, note

    def encode(self, updates: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Every client's message (floats holding ring integers, for any protocol)."""
        return [self.ddp.apply(self.before.apply(u)) for u in updates]

    def observations(self, observations: Sequence[Observation]) -> list[Observation]:
        return decode_observations(observations, self.ddp, n_params=self.n_params)

    def epsilon(self, n_summed: int | None = None) -> float:
        return self.ddp.privacy_spent(self.n_params, n_summed=n_summed).epsilon

    def info(self, n_summed: int | None = None) -> dict[str, Any]:
        """describe() plus the epsilon of the sum actually revealed."""
        record = self.ddp.describe(self.n_params)
        record["spec"] = "+".join([t.spec for t in self.before.transforms] + [self.ddp.spec])
        record["n_summed"] = self.ddp.n_clients if n_summed is None else n_summed
        record["epsilon_revealed"] = self.epsilon(n_summed) if record["n_summed"] else math.inf
        return record

    def note(self, n_summed: int | None = None) -> str:
        plan = self.ddp.plan(self.n_params)
        summed = self.ddp.n_clients if n_summed is None else n_summed
        epsilon = self.epsilon(summed) if summed else math.inf
        return (f"distributed DP ({self.ddp.noise}): the revealed sum of {summed} clients is "
                f"({epsilon:.3g}, {self.ddp.delta:g})-DP; {plan.bits} bits per coordinate = "
                f"{plan.bytes_per_param:.3g} bytes per parameter in a Z_2^{plan.bits} ring "
                "(two-server and secagg carry it in that modular ring; the measured bytes are "
                "in the costs)")


def protocol_ring_bits(protocol: Any) -> int | None:
    """The ring width a protocol instance carries values in (None: no configurable ring)."""
    field_name = getattr(protocol, "ring_bits_field", None)
    return None if field_name is None else int(getattr(protocol.config, field_name))


def _skellam_variance(std: float) -> Fraction:
    """A rational Skellam variance at least std^2 (denominator 2^20: exact Poisson halves)."""
    return Fraction(math.ceil(std * std * 2**20), 2**20)


def _squared_norm(values: np.ndarray) -> float:
    """``sum(values^2)`` without BLAS (np.dot wakes BLAS threads that spin afterwards and
    slow every later pass when the cores are shared)."""
    return float(np.einsum("i,i->", values, values))


def _centred_inplace(values: np.ndarray, modulus: int) -> np.ndarray:
    """:func:`_centred` on a writable int64 array, in place (returned)."""
    half = modulus // 2
    values += half
    values &= modulus - 1
    values -= half
    return values


def _centred(values: np.ndarray, modulus: int) -> np.ndarray:
    """int64 ``values`` mod ``modulus`` (a power of two) as signed integers in
    ``[-modulus/2, modulus/2)`` (two's complement makes the mask a modular reduction)."""
    half = modulus // 2
    out = np.bitwise_and(np.asarray(values, dtype=np.int64) + half, modulus - 1)
    out -= half
    return out


def find_ddp(transform: Transform) -> DistributedDP | None:
    """The DDP stage of a transform or pipeline (it must be the last stage), or None."""
    stages = transform.stages
    for index, stage in enumerate(stages):
        if isinstance(stage, DistributedDP):
            if index != len(stages) - 1:
                raise DDPConfigError("expected the ddp stage last in a pipeline "
                                     "(its output is ring integers), "
                                     f"got it at position {index + 1} of {len(stages)}")
            return stage
    return None


TRANSFORMS[DistributedDP.kind] = DistributedDP
