"""Threshold Paillier math: dealer-free key generation, any t of c decrypt, t - 1 cannot,
forged partials and wrong key shares are caught and the party at fault is named."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest

from protocols import threshold_paillier as tp
from secagg.errors import ConfigError, IntegrityError, NotEnoughClientsError

BITS = 256


@pytest.fixture(scope="module")
def dkg_3_2() -> tuple[tp.ThresholdPublicKey, list[tp.KeyShare], tp.DkgStats]:
    return tp.distributed_keygen(3, 2, BITS)


@pytest.fixture(scope="module")
def dkg_5_3() -> tuple[tp.ThresholdPublicKey, list[tp.KeyShare], tp.DkgStats]:
    return tp.distributed_keygen(5, 3, BITS)


def _encrypt_all(public: tp.ThresholdPublicKey, messages: list[int]) -> list[int]:
    return [public.encrypt(m) for m in messages]


@pytest.mark.parametrize("which", ["dkg_3_2", "dkg_5_3"])
def test_every_t_subset_decrypts_the_homomorphic_sum(which: str, request: pytest.FixtureRequest) -> None:
    public, shares, stats = request.getfixturevalue(which)
    assert public.dealer == tp.DEALER_DISTRIBUTED and stats.candidates >= 1
    assert public.n.bit_length() == BITS
    rows = [[7, 0, public.n - 5], [11, 2**100, 4], [1, 3, 2]]
    per_client = [_encrypt_all(public, row) for row in rows]
    summed = [math.prod(column) % public.nsquare for column in zip(*per_client, strict=True)]
    expected = [sum(column) % public.n for column in zip(*rows, strict=True)]
    partials = {s.index: tp.partial_decrypt(s, summed, context=b"round-1") for s in shares}
    for subset in itertools.combinations(sorted(partials), public.threshold):
        got = tp.combine(public, summed, [partials[j] for j in subset], context=b"round-1")
        assert got == expected, subset


def test_key_shares_match_verification_keys(dkg_3_2: tuple) -> None:
    public, shares, _ = dkg_3_2
    for share in shares:
        share.check()
    assert len(set(public.verification_keys)) == public.parties


def test_fewer_than_t_partials_raise_and_reveal_nothing(dkg_5_3: tuple) -> None:
    public, shares, _ = dkg_5_3
    cts = _encrypt_all(public, [99])
    partials = [tp.partial_decrypt(s, cts) for s in shares[:2]]
    with pytest.raises(tp.NotEnoughDecryptorsError, match="t=3") as info:
        tp.combine(public, cts, partials)
    assert isinstance(info.value, NotEnoughClientsError)
    # The same decryptor twice does not count as two.
    with pytest.raises(tp.PartialDecryptionError) as twice:
        tp.combine(public, cts, [partials[0], partials[0], partials[1]])
    assert twice.value.party == shares[0].index


def test_forged_partial_is_caught_and_names_the_decryptor(dkg_3_2: tuple) -> None:
    public, shares, _ = dkg_3_2
    cts = _encrypt_all(public, [5, 6, 7])
    good = tp.partial_decrypt(shares[0], cts)
    bad = tp.partial_decrypt(shares[1], cts)
    forged_value = list(bad.values)
    forged_value[1] = forged_value[1] * 2 % public.nsquare
    forged = dataclasses.replace(bad, values=tuple(forged_value))
    with pytest.raises(tp.PartialDecryptionError, match="decryptor 2") as info:
        tp.combine(public, cts, [good, forged])
    assert info.value.party == 2 and isinstance(info.value, IntegrityError)
    # Dropping the forger and asking the third decryptor completes the decryption.
    third = tp.partial_decrypt(shares[2], cts)
    assert tp.combine(public, cts, [good, third]) == [5, 6, 7]


def test_partial_under_a_wrong_key_share_is_caught(dkg_3_2: tuple) -> None:
    public, shares, _ = dkg_3_2
    wrong = dataclasses.replace(shares[2], secret=shares[2].secret + 1)
    with pytest.raises(tp.KeyShareError) as check:
        wrong.check()
    assert check.value.party == 3
    cts = _encrypt_all(public, [1])
    with pytest.raises(tp.PartialDecryptionError) as info:
        tp.combine(public, cts, [tp.partial_decrypt(shares[0], cts), tp.partial_decrypt(wrong, cts)])
    assert info.value.party == 3


def test_a_partial_is_bound_to_its_context_and_ciphertexts(dkg_3_2: tuple) -> None:
    public, shares, _ = dkg_3_2
    cts = _encrypt_all(public, [3, 4])
    partials = [tp.partial_decrypt(s, cts, context=b"round-1") for s in shares[:2]]
    with pytest.raises(tp.PartialDecryptionError):
        tp.combine(public, cts, partials, context=b"round-2")
    other = _encrypt_all(public, [3, 4])
    with pytest.raises(tp.PartialDecryptionError):
        tp.combine(public, other, partials, context=b"round-1")


def test_a_dealer_of_a_wrong_sub_share_is_named() -> None:
    class Cheater(tp.DkgParty):
        def key_subshares(self, opened: int, v: int) -> tuple[dict[int, int], tuple[int, ...]]:
            subshares, commitments = super().key_subshares(opened, v)
            subshares[1] += 1
            return subshares, commitments

    def factory(index: int, parties: int, threshold: int, key_bits: int) -> tp.DkgParty:
        cls = Cheater if index == 2 else tp.DkgParty
        return cls(index, parties, threshold, key_bits)

    with pytest.raises(tp.KeyShareError, match="from party 2 to party 1") as info:
        tp.distributed_keygen(3, 2, BITS, party_factory=factory)
    assert info.value.party == 2


def test_insecure_trusted_dealer_is_labelled_and_decrypts() -> None:
    public, shares, stats = tp.insecure_trusted_dealer(4, 4, BITS)
    assert public.dealer == stats.dealer == tp.DEALER_INSECURE
    cts = _encrypt_all(public, [2**64 + 3])
    assert tp.combine(public, cts, [tp.partial_decrypt(s, cts) for s in shares]) == [2**64 + 3]


def test_committee_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match="2t - 1"):
        tp.distributed_keygen(3, 3, BITS)
    with pytest.raises(ConfigError):
        tp.insecure_trusted_dealer(2, 3, BITS)
    with pytest.raises(ConfigError):
        tp.check_committee(0, 1, distributed=False)


def test_integer_lagrange_coefficients_reconstruct_delta_times_the_secret() -> None:
    poly = [123456789, 987, 65]
    delta = math.factorial(5)
    for subset in itertools.combinations(range(1, 6), 3):
        coefficients = tp.lagrange_at_zero_integer(subset, delta)
        total = sum(coefficients[j] * (poly[0] + poly[1] * j + poly[2] * j * j) for j in subset)
        assert total == delta * poly[0]


def test_trial_division_filters_small_factors() -> None:
    assert tp.has_small_factor(3 * 1000003, 1 << 8)
    assert not tp.has_small_factor(1000003 * 1000033, 1 << 8)


@pytest.mark.slow
@pytest.mark.parametrize(("parties", "threshold"), [(3, 2)])
def test_full_size_distributed_keygen(parties: int, threshold: int) -> None:
    public, shares, _ = tp.distributed_keygen(parties, threshold, 2048)
    assert public.n.bit_length() == 2048
    cts = _encrypt_all(public, [31337])
    assert tp.combine(public, cts, [tp.partial_decrypt(s, cts) for s in shares[:threshold]]) == [31337]
