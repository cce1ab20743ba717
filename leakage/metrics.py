"""Reconstruction quality: MSE, PSNR, SSIM, label accuracy, and Hungarian matching.

SSIM follows Wang, Bovik, Sheikh, Simoncelli (2004): Gaussian window of size 11 and
sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, population (not sample) statistics,
computed per channel over the "valid" window positions and averaged — the same numbers
as ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)``. Images smaller than 11 pixels use the
largest odd window that fits. As in breaching, a batch of reconstructions is first
matched to the originals by a Hungarian assignment (minimum total MSE), because a batch
gradient does not say which reconstruction is which image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from leakage.errors import ShapeMismatchError

RECOVERED_PSNR_DB = 20.0


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ShapeMismatchError(f"expected images of equal shape, got {tuple(a.shape)} and "
                                 f"{tuple(b.shape)}")


def mse(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error of [B, C, H, W] (or [C, H, W]) images, float64."""
    _check_pair(reconstruction, original)
    diff = reconstruction.detach().double().cpu() - original.detach().double().cpu()
    if diff.dim() == 3:
        return diff.pow(2).mean()
    return diff.pow(2).flatten(1).mean(1)


def psnr_from_mse(value: float, data_range: float = 1.0) -> float:
    """PSNR in dB; ``inf`` for identical images.

    >>> round(psnr_from_mse(0.01), 6)
    20.0
    """
    if value <= 0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / value)


def psnr(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) for images in [0, 1]; ``inf`` where identical."""
    values = mse(reconstruction, original)
    return torch.where(values > 0, 10.0 * torch.log10(1.0 / values),
                       torch.full_like(values, math.inf))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    return torch.outer(kernel, kernel)


def ssim(
    reconstruction: torch.Tensor,
    original: torch.Tensor,
    *,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Per-image SSIM of [B, C, H, W] images (a 0-d tensor for one [C, H, W] image)."""
    _check_pair(reconstruction, original)
    single = reconstruction.dim() == 3
    x = reconstruction.detach().double().cpu()
    y = original.detach().double().cpu()
    if single:
        x, y = x[None], y[None]
    batch, channels, height, width = x.shape
    size = min(window, height, width)
    size -= 1 - size % 2  # odd
    kernel = _gaussian_window(size, sigma)[None, None].repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    per_image = value.flatten(1).mean(1)
    return per_image[0] if single else per_image


def label_accuracy(recovered: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of labels equal (after matching)."""
    if recovered.shape != true.shape:
        raise ShapeMismatchError(f"expected label tensors of equal shape, got "
                                 f"{tuple(recovered.shape)} and {tuple(true.shape)}")
    if true.numel() == 0:
        return 1.0
    return float((recovered.cpu() == true.cpu()).double().mean())


def hungarian(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost assignment for an [n, m] cost matrix with n <= m.

    Returns ``columns`` with ``columns[i]`` the column given to row i. The O(n^2 m)
    shortest-augmenting-path method with potentials (Kuhn-Munkres as in Jonker &
    Volgenant); each augmentation's inner scan is one numpy vector operation.

    >>> hungarian(np.array([[4.0, 1.0], [2.0, 3.0]])).tolist()
    [1, 0]
    """
    matrix = np.asarray(cost, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] > matrix.shape[1]:
        raise ShapeMismatchError(f"expected an [n, m] cost matrix with n <= m, got shape "
                                 f"{matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ShapeMismatchError("expected a finite cost matrix; it holds inf or nan")
    n, m = matrix.shape
    # 1-based arrays with a virtual column 0, the textbook formulation.
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j]: row matched to column j (0: none)
    way = np.zeros(m + 1, dtype=np.int64)
    for row in range(1, n + 1):
        owner[0] = row
        column = 0
        min_slack = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[column] = True
            current = owner[column]
            slack = matrix[current - 1] - u[current] - v[1:]
            free = ~used[1:]
            improve = free & (slack < min_slack[1:])
            min_slack[1:][improve] = slack[improve]
            way[1:][improve] = column
            candidates = np.where(free, min_slack[1:], np.inf)
            nxt = int(np.argmin(candidates)) + 1
            delta = candidates[nxt - 1]
            u[owner[used]] += delta
            v[used] -= delta
            min_slack[1:][free] -= delta
            column = nxt
            if owner[column] == 0:
                break
        while column:
            previous = way[column]
            owner[column] = owner[previous]
            column = previous
    columns = np.zeros(n, dtype=np.int64)
    for j in range(1, m + 1):
        if owner[j]:
            columns[owner[j] - 1] = j - 1
    return columns


def match(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """Index ``order`` such that ``reconstructions[order][k]`` belongs to ``originals[k]``."""
    if reconstructions.shape != originals.shape:
        raise ShapeMismatchError(f"expected reconstructions of shape {tuple(originals.shape)}, "
                                 f"got {tuple(reconstructions.shape)}")
    r = reconstructions.detach().double().cpu().flatten(1)
    o = originals.detach().double().cpu().flatten(1)
    cost = torch.cdist(o, r).pow(2) / r.shape[1]  # [original, reconstruction] MSE
    return torch.from_numpy(hungarian(cost.numpy()))


@dataclass(frozen=True)
class ImageScore:
    """Scores of one reconstruction against the original it was matched to."""

    mse: float
    psnr: float
    ssim: float
    label_true: int
    label_recovered: int

    def recovered(self, threshold_db: float = RECOVERED_PSNR_DB) -> bool:
        return self.psnr >= threshold_db


def score(
    reconstructions: torch.Tensor,
    recovered_labels: torch.Tensor,
    originals: torch.Tensor,
    true_labels: torch.Tensor,
) -> list[ImageScore]:
    """Match a batch to its originals (Hungarian, MSE), then score every pair."""
    order = match(reconstructions, originals)
    images = reconstructions.detach().cpu()[order]
    labels = recovered_labels.detach().cpu()[order]
    errors = mse(images, originals)
    similarity = ssim(images, originals)
    return [
        ImageScore(float(errors[k]), psnr_from_mse(float(errors[k])), float(similarity[k]),
                   int(true_labels[k]), int(labels[k]))
        for k in range(originals.shape[0])
    ]
