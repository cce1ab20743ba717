"""iDLG (Zhao, Mopuri, Bilen 2020): the label first, analytically, then the image.

With softmax cross-entropy, one-hot labels and non-negative inputs to the last layer
(LeNet's sigmoid features), the last layer's weight gradient is
``(p - y) h^T``: only the true class's row is negative, so label = argmin of the row
sums. Then DLG's L-BFGS loop runs on the image alone with that hard label.

For batches, :func:`infer_label_counts` is a count heuristic in the spirit of
Wainakh et al. (2022, LLG+): with a mean-reduced loss the last bias gradient is
``db_c = mean_n(p_nc) - count_c / B``, so ``count_c = B * (mean_n(p_nc) - db_c)``.
The mean prediction is unknown; given the input shape it is estimated by the model's
own prediction on a neutral (mid-grey) image, which on an untrained network is close
to every input's (its sigmoid features are dominated by the biases). Without the input
shape it falls back to ``1/K`` per class. The estimates are rounded to a batch of
``B`` by largest remainder, with at least one sample for every class whose entry is
negative. Measured on LeNet/32x32, batch 8, eight classes: ``1/K`` missed a class the
model already predicted confidently (7/8 as a multiset), the neutral image found 8/8.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from leakage.attacks.common import AttackResult, ProgressFn, last_linear_gradients
from leakage.attacks.deep_leakage import CONVERGED, FLOOR, MatchingProblem, solve_matching
from leakage.errors import AttackConfigError


def infer_label(model: nn.Module, observed_gradient: Sequence[torch.Tensor]) -> int:
    """Batch-1 label: the row of the last Linear weight gradient with the least sum."""
    weight_grad, _ = last_linear_gradients(model, observed_gradient)
    return int(weight_grad.detach().sum(dim=1).argmin())


def _neutral_prediction(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """The model's softmax on one mid-grey image of ``input_shape`` (CPU, float64)."""
    param = next(model.parameters())
    image = torch.full((1, *input_shape), 0.5, device=param.device, dtype=param.dtype)
    with torch.no_grad():
        return torch.softmax(model(image).double(), dim=-1)[0].cpu()


def infer_label_counts(
    model: nn.Module, observed_gradient: Sequence[torch.Tensor], batch_size: int,
    *, input_shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """``batch_size`` labels (sorted) estimated from the last layer's gradient; with
    ``input_shape`` the mean prediction comes from a neutral image (see module doc)."""
    if batch_size < 1:
        raise AttackConfigError(f"expected batch_size >= 1, got {batch_size}")
    weight_grad, bias_grad = last_linear_gradients(model, observed_gradient)
    if batch_size == 1:
        return torch.tensor([infer_label(model, observed_gradient)], dtype=torch.int64)
    # Without a bias, the row sums are the bias gradient scaled by the (positive)
    # feature mass, so their signs and ranks still hold.
    signal = (bias_grad if bias_grad is not None else weight_grad.sum(dim=1)).detach().double()
    signal = signal.cpu()
    classes = signal.numel()
    if bias_grad is None:
        signal = signal / signal.abs().sum().clamp_min(1e-30)
    mean_prediction = torch.full((classes,), 1.0 / classes, dtype=torch.float64)
    if input_shape is not None and bias_grad is not None:
        predicted = _neutral_prediction(model, input_shape)
        if predicted.numel() == classes and bool(torch.isfinite(predicted).all()):
            mean_prediction = predicted
    estimate = (batch_size * mean_prediction - batch_size * signal).clamp_min(0.0)
    counts = torch.zeros(classes, dtype=torch.int64)
    present = torch.nonzero(signal < 0).flatten()
    present = present[signal[present].argsort()][:batch_size]
    counts[present] = 1
    remaining = batch_size - int(counts.sum())
    for _ in range(remaining):
        # Give the next sample to the class whose estimate is furthest above its count.
        counts[int((estimate - counts.double()).argmax())] += 1
    return torch.repeat_interleave(torch.arange(classes), counts)


def idlg(
    model: nn.Module,
    observed_gradient: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_size: int = 1,
    iterations: int = 300,
    device: str | torch.device = "auto",
    seed: int = 0,
    restarts: int = 4,
    progress: ProgressFn | None = None,
    converged: float = CONVERGED,
    init: str = "auto",
    prior: float | None = None,
    floor: float = FLOOR,
) -> AttackResult:
    """iDLG: labels from the last layer, then image-only L-BFGS gradient matching
    (``restarts`` lanes side by side, see :func:`leakage.attacks.deep_leakage.solve_matching`)."""
    labels = infer_label_counts(model, observed_gradient, batch_size, input_shape=input_shape)
    (result,) = solve_matching(
        "idlg", model, [MatchingProblem(observed_gradient, labels, seed)],
        input_shape=input_shape, num_classes=num_classes, batch_size=batch_size,
        iterations=iterations, restarts=restarts, device=device, converged=converged,
        init=init, prior=prior, progress=progress, floor=floor,
    )
    return result
