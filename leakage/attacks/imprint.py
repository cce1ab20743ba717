"""Read-backs of the malicious server's inserted block (:mod:`leakage.malicious`).

Both are the analytic inversion of a fully connected layer, ``x = dL/dW_i / dL/db_i`` for a
row whose gradient comes from one input only (Phong et al. 2017), made to hold for many
inputs at once by the block the server inserted:

- :func:`imprint_readback` (Fowl et al., ICLR 2022): the rows are bins of one image
  statistic; for cumulative (ReLU) bins, sorted by threshold, bin k's gradient sums every
  image above ``q_k``, so differences of consecutive bins leave the images between two
  thresholds; sparse (clamped) bins hold one gap each already. A gap that holds exactly
  one image gives it back exactly, whatever else is in the aggregate: the aggregate of
  many clients is just more images in the same bins.
- :func:`trap_readback` (Boenisch et al., EuroS&P 2023): each row on its own; a row that
  one image alone activated gives that image. The attacker cannot see which rows those
  are, but the same image trapped by two rows gives the same candidate twice, so
  candidates that recur are ranked first.

Each returns ``batch_size`` images (the attacker's best ``batch_size`` candidates, padded
with grey when fewer rows carry signal), labels unknown (0), ``loss`` 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from leakage.attacks.common import AttackResult, check_gradient
from leakage.errors import AttackConfigError
from leakage.malicious import MaliciousBlock, malicious_block

# A row (or bin difference) carries signal when |db| exceeds this fraction of the largest.
SIGNAL = 1e-7
DUPLICATE_MSE = 1e-6  # two candidates this close are the same image


def _block_gradients(
    model: nn.Module, gradient: Sequence[torch.Tensor], structures: tuple[str, ...]
) -> tuple[MaliciousBlock, torch.Tensor, torch.Tensor]:
    block = malicious_block(model)
    if block is None or block.structure not in structures:
        raise AttackConfigError(
            f"expected a model with a {' or '.join(structures)} malicious block in front, "
            f"got {type(model).__name__}"
        )
    check_gradient(model, gradient)
    params = list(model.parameters())
    index = {id(p): i for i, p in enumerate(params)}
    weight = gradient[index[id(block.linear0.weight)]].detach().double().cpu()
    bias = gradient[index[id(block.linear0.bias)]].detach().double().cpu()
    return block, weight, bias


def _finish(
    name: str,
    candidates: torch.Tensor,
    order: torch.Tensor,
    input_shape: tuple[int, int, int],
    batch_size: int,
    started: float,
) -> AttackResult:
    features = input_shape[0] * input_shape[1] * input_shape[2]
    chosen = candidates[order[:batch_size]].float().clamp(0.0, 1.0).reshape(-1, features)
    if chosen.shape[0] < batch_size:  # fewer rows carried signal than images: grey for the rest
        chosen = torch.cat([chosen, torch.full((batch_size - chosen.shape[0], features), 0.5)])
    images = chosen.reshape(batch_size, *input_shape)
    labels = torch.zeros(batch_size, dtype=torch.int64)
    return AttackResult(name, images, labels, 0.0, 1, time.perf_counter() - started)


def imprint_candidates(
    model: nn.Module, gradient: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidates [m, d], |db| [m]) of the bins: cumulative bins differenced first."""
    block, weight, bias = _block_gradients(model, gradient, ("cumulative", "sparse"))
    weight_gap, bias_gap = weight, bias
    if block.structure == "cumulative":
        scale = block.linear0.weight.detach().double().cpu().norm(dim=1)
        thresholds = -block.linear0.bias.detach().double().cpu() / scale
        order = torch.argsort(thresholds)  # ascending q_k: nested, shrinking sets of images
        weight, bias = weight[order], bias[order]
        weight_gap = weight.clone()
        bias_gap = bias.clone()
        weight_gap[:-1] -= weight[1:]
        bias_gap[:-1] -= bias[1:]
    return _row_ratios(weight_gap, bias_gap)


def _row_ratios(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dW_i / db_i [m, d], |db_i| [m]) over the rows whose |db_i| exceeds SIGNAL times the
    largest: the others hold no image, only rounding."""
    signal = bias.abs()
    valid = signal > SIGNAL * max(float(signal.max()), 1e-300)
    return weight[valid] / bias[valid, None], signal[valid]


def imprint_readback(
    model: nn.Module,
    gradient: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, int, int],
    batch_size: int,
) -> AttackResult:
    """The images alone in their bin gaps, strongest signal first (see the module docstring)."""
    started = time.perf_counter()
    candidates, signal = imprint_candidates(model, gradient)
    order = torch.argsort(signal, descending=True)
    return _finish("imprint", candidates, order, input_shape, batch_size, started)


def trap_candidates(model: nn.Module, gradient: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidates [m, d], distance to the nearest other candidate [m]) of the trap rows."""
    _, weight, bias = _block_gradients(model, gradient, ("trap",))
    candidates, _ = _row_ratios(weight, bias)
    if candidates.shape[0] < 2:
        return candidates, torch.zeros(candidates.shape[0], dtype=torch.float64)
    distance = torch.cdist(candidates, candidates).pow(2) / candidates.shape[1]
    distance.fill_diagonal_(float("inf"))
    return candidates, distance.min(dim=1).values


def trap_readback(
    model: nn.Module,
    gradient: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, int, int],
    batch_size: int,
) -> AttackResult:
    """Trap rows' candidates, those another row confirms first, duplicates dropped."""
    started = time.perf_counter()
    candidates, nearest = trap_candidates(model, gradient)
    ranked = torch.argsort(nearest)
    kept: list[int] = []
    for index in ranked.tolist():
        if kept:
            gap = (candidates[kept] - candidates[index]).pow(2).mean(dim=1)
            if float(gap.min()) < DUPLICATE_MSE:
                continue
        kept.append(index)
        if len(kept) == batch_size:
            break
    return _finish("trap", candidates, torch.tensor(kept, dtype=torch.long), input_shape, batch_size, started)
