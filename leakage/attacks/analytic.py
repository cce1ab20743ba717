"""Analytic (closed-form) recovery through fully connected layers.

Phong, Aono, Hayashi, Wang, Moriai (2017) and the 2020 Acta Automatica Sinica paper on
privacy-preserving federated DNNs; Geiping et al. (2020, Prop. D.1) prove it for any
fully connected layer with bias. For ``y = W x + b`` and batch size 1,
``dL/dW_i = (dL/dy_i) x^T`` and ``dL/db_i = dL/dy_i``, so every row i with
``dL/db_i != 0`` gives ``x = dL/dW_i / dL/db_i``.

- :func:`analytic_first_layer` (a): the first layer's gradient is seen; x is the
  least-squares combination of the valid rows, ``sum_i db_i dW_i / sum_i db_i^2``
  (the db-weighted average of ``dW_i / db_i``, which keeps tiny ``db_i`` from
  amplifying float noise). Exact up to float rounding.
- :func:`analytic_hidden` (b): the first layer's gradient is hidden; the second
  layer's gradient gives its input ``h = sigmoid(W1 x + b1)`` the same way, then
  ``W1 x = logit(h) - b1`` is solved for x by least squares (unique when the hidden
  width is at least the input size; otherwise the minimum-norm solution).
- :func:`analytic_unknown_bias` (c): the first layer's *bias* gradient is not seen
  (the bias is not shared, or is aggregated apart). ``dW = delta x^T`` is rank one, so
  x is known up to a scale: ``x = s u`` with u the top right singular vector. Candidate
  scales (equivalently candidate bias gradients ``delta = dW u / s``) are scored by how
  well the gradient they predict matches the observed one; the best is refined by
  successive finer grids.

Batch size 1 only: with B > 1 every row mixes the B inputs.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from leakage.attacks.common import AttackResult, check_gradient
from leakage.attacks.improved_dlg import infer_label
from leakage.errors import AttackConfigError
from leakage.models import first_linear

# A row is used when |db_i| exceeds this fraction of the largest |db|.
VALID_ROW = 1e-6
LOGIT_CLAMP = 1e-7  # keeps logit(h) finite where sigmoid saturated in float32


def _linear_layers(model: nn.Module) -> list[nn.Linear]:
    first_linear(model)  # raises a typed error unless the model starts with Linear + bias
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _param_index(model: nn.Module, param: torch.Tensor) -> int:
    for index, candidate in enumerate(model.parameters()):
        if candidate is param:
            return index
    raise AttackConfigError("parameter not found in model.parameters()")  # pragma: no cover


def invert_linear(weight_grad: torch.Tensor, bias_grad: torch.Tensor) -> torch.Tensor:
    """Input of a Linear layer from its (batch-1) weight and bias gradients, float64."""
    dw = weight_grad.detach().double().cpu()
    db = bias_grad.detach().double().cpu()
    valid = db.abs() > VALID_ROW * db.abs().max()
    if not bool(valid.any()):
        raise AttackConfigError("expected a non-zero bias gradient; every dL/db_i is 0")
    dbv = db[valid]
    return (dbv[:, None] * dw[valid]).sum(0) / dbv.pow(2).sum()


def _check_batch(batch_size: int) -> None:
    if batch_size != 1:
        raise AttackConfigError(
            f"analytic recovery is exact for batch size 1 only, got batch_size={batch_size}"
        )


def _result(name: str, x: torch.Tensor, input_shape: tuple[int, int, int], label: int,
            loss: float, start: float) -> AttackResult:
    image = x.float().reshape(1, *input_shape).clamp(0.0, 1.0)
    return AttackResult(name, image, torch.tensor([label], dtype=torch.int64), loss, 1,
                        time.perf_counter() - start, "cpu")


def analytic_first_layer(
    model: nn.Module,
    observed_gradient: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, int, int],
    batch_size: int = 1,
) -> AttackResult:
    """(a) x = dW_i / db_i of the first Linear layer (least squares over valid rows)."""
    start = time.perf_counter()
    _check_batch(batch_size)
    check_gradient(model, observed_gradient)
    layer = _linear_layers(model)[0]
    if layer.bias is None:  # first_linear checked it; kept explicit for -O
        raise AttackConfigError("expected a bias on the first Linear layer (the attack needs db)")
    x = invert_linear(observed_gradient[_param_index(model, layer.weight)],
                      observed_gradient[_param_index(model, layer.bias)])
    return _result("analytic", x, input_shape, infer_label(model, observed_gradient), 0.0,
                   start)


def analytic_hidden(
    model: nn.Module,
    observed_gradient: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, int, int],
    batch_size: int = 1,
) -> AttackResult:
    """(b) h from the second Linear layer, then x from ``logit(h) = W1 x + b1``.

    Uses no gradient of the first layer. Assumes a sigmoid between the two layers (the
    ``mlp`` model).
    """
    start = time.perf_counter()
    _check_batch(batch_size)
    check_gradient(model, observed_gradient)
    layers = _linear_layers(model)
    if len(layers) < 2 or layers[1].bias is None:
        raise AttackConfigError("expected at least two Linear layers with bias (e.g. 'mlp')")
    first, second = layers[0], layers[1]
    if second.bias is None or first.bias is None:
        raise AttackConfigError("expected the first two Linear layers to have biases (e.g. 'mlp')")
    hidden = invert_linear(observed_gradient[_param_index(model, second.weight)],
                           observed_gradient[_param_index(model, second.bias)])
    pre = torch.logit(hidden.clamp(LOGIT_CLAMP, 1 - LOGIT_CLAMP)) - first.bias.detach().double()
    # Rows where sigmoid saturated carry no information about x; leave them out.
    keep = (hidden > 1e-4) & (hidden < 1 - 1e-4)
    w1 = first.weight.detach().double().cpu()
    solution = torch.linalg.lstsq(w1[keep], pre[keep][:, None]).solution[:, 0]
    residual = float((w1[keep] @ solution - pre[keep]).pow(2).mean())
    return _result("analytic-hidden", solution, input_shape,
                   infer_label(model, observed_gradient), residual, start)


def analytic_unknown_bias(
    model: nn.Module,
    observed_gradient: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, int, int],
    batch_size: int = 1,
    candidates: int = 256,
    refinements: int = 6,
) -> AttackResult:
    """(c) first layer's bias gradient unknown: scan candidate scales of ``x = s u``.

    The observed first-layer *bias* gradient is never read.
    """
    start = time.perf_counter()
    _check_batch(batch_size)
    check_gradient(model, observed_gradient)
    layer = _linear_layers(model)[0]
    if layer.bias is None:
        raise AttackConfigError("expected a bias on the first Linear layer (the attack needs db)")
    bias_index = _param_index(model, layer.bias)
    weight_grad = observed_gradient[_param_index(model, layer.weight)].detach().double().cpu()
    _, _, vh = torch.linalg.svd(weight_grad, full_matrices=False)
    direction = vh[0]
    # Images are non-negative, so the sign that makes the direction mostly positive wins.
    if float(direction.sum()) < 0:
        direction = -direction
    label = infer_label(model, observed_gradient)
    attacked = copy.deepcopy(model).double().eval()
    names = [n for n, _ in attacked.named_parameters()]
    weights = {n: p.detach() for n, p in attacked.named_parameters()}
    observed = {n: g.detach().double().cpu() for i, (n, g) in
                enumerate(zip(names, observed_gradient)) if i != bias_index}
    labels = torch.tensor([label])

    def gradient_at(x: torch.Tensor) -> dict[str, torch.Tensor]:
        def loss_at(w: dict[str, torch.Tensor]) -> torch.Tensor:
            out = torch.func.functional_call(attacked, w, (x.reshape(1, *input_shape),))
            return F.cross_entropy(out, labels)
        return torch.func.grad(loss_at)(weights)

    batched = torch.func.vmap(gradient_at)
    scale_norm = sum(float(o.pow(2).sum()) for o in observed.values()) or 1.0

    def score(scales: torch.Tensor) -> torch.Tensor:
        predicted = batched(scales[:, None] * direction[None, :])
        return sum((predicted[n] - observed[n]).pow(2).flatten(1).sum(1)
                   for n in observed) / scale_norm  # type: ignore[return-value]

    # ||x|| of an image in [0, 1]^d lies in (0, sqrt(d)]; scan that range log-spaced.
    dims = direction.numel()
    scales = torch.logspace(-4, 0.5, candidates, dtype=torch.float64) * dims ** 0.5
    losses = score(scales)
    best = int(losses.argmin())
    for _ in range(refinements):
        low = scales[max(best - 1, 0)]
        high = scales[min(best + 1, scales.numel() - 1)]
        scales = torch.linspace(float(low), float(high), 64, dtype=torch.float64)
        losses = score(scales)
        best = int(losses.argmin())
    x = scales[best] * direction
    return _result("analytic-bias", x, input_shape, label, float(losses[best]), start)
