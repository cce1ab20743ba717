import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leakage.errors import ShapeMismatchError
from leakage.metrics import (
    hungarian,
    label_accuracy,
    match,
    mse,
    psnr,
    psnr_from_mse,
    score,
    ssim,
)


def test_psnr_of_a_known_shift():
    a = torch.full((1, 3, 8, 8), 0.5)
    b = a + 0.1  # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert float(mse(b, a)[0]) == pytest.approx(0.01)
    assert float(psnr(b, a)[0]) == pytest.approx(20.0)
    assert psnr_from_mse(1e-4) == pytest.approx(40.0)
    assert math.isinf(float(psnr(a, a)[0]))


def test_ssim_of_identical_images_is_one():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_ssim_of_constant_images_has_closed_form():
    # Constant images: variances and covariance vanish, leaving the luminance term.
    a, b, c1 = 0.5, 0.3, 0.01**2
    x = torch.full((1, 1, 12, 12), a, dtype=torch.float64)
    y = torch.full((1, 1, 12, 12), b, dtype=torch.float64)
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert float(ssim(x, y)[0]) == pytest.approx(expected, rel=1e-9)


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 32, 32, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(3, 32, 32, generator=g, dtype=torch.float64)).clamp(0, 1)
    expected = metrics.structural_similarity(
        x.numpy(), y.numpy(), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=1.0, channel_axis=0)
    assert float(ssim(x, y)) == pytest.approx(expected, abs=1e-9)


def test_ssim_of_noise_is_low():
    g = torch.Generator().manual_seed(2)
    assert float(ssim(torch.rand(3, 32, 32, generator=g), torch.rand(3, 32, 32, generator=g))) < 0.1


def _brute_force(cost: np.ndarray) -> float:
    n, m = cost.shape
    return min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2), st.integers(0, 2**31 - 1), st.booleans())
def test_hungarian_matches_brute_force(n, extra, seed, ties):
    rng = np.random.default_rng(seed)
    cost = rng.random((n, n + extra))
    if ties:  # many equal entries exercise the zero-slack paths
        cost = np.round(cost * 3)
    columns = hungarian(cost)
    assert len(set(columns.tolist())) == n
    assert cost[np.arange(n), columns].sum() == pytest.approx(_brute_force(cost), abs=1e-12)


def test_hungarian_known_answer_and_bad_shapes():
    cost = np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    assert hungarian(cost).tolist() == [1, 0, 2]
    with pytest.raises(ShapeMismatchError):
        hungarian(np.zeros((3, 2)))
    with pytest.raises(ShapeMismatchError):
        hungarian(np.array([[np.nan]]))


def test_match_undoes_a_shuffle_and_scores_after_matching():
    g = torch.Generator().manual_seed(3)
    originals = torch.rand(5, 3, 8, 8, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 4])
    permutation = torch.tensor([3, 0, 4, 1, 2])
    shuffled = originals[permutation] + 0.01
    order = match(shuffled, originals)
    assert torch.equal(permutation[order], torch.arange(5))
    scores = score(shuffled.clamp(0, 1), labels[permutation], originals, labels)
    assert all(s.label_true == s.label_recovered for s in scores)
    assert all(s.psnr > 35 and s.recovered() for s in scores)
    assert not scores[0].recovered(threshold_db=100.0)


def test_label_accuracy():
    assert label_accuracy(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4])) == 0.75
    with pytest.raises(ShapeMismatchError):
        label_accuracy(torch.tensor([1]), torch.tensor([1, 2]))
