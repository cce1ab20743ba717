"""What every attack shares: the result type, the simulated client, wire-vector
conversion, device choice and the gradient-matching losses.

The threat model is the call chain (as in breaching): the *client* side
(:func:`client_gradients`, :func:`client_weight_update`) touches true data; an attack
only ever receives the model and what the client shared (a gradient, or weights before
and after local training).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from leakage.errors import AttackConfigError, DeviceError, ShapeMismatchError

Gradient = list[torch.Tensor]
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True, eq=False)
class AttackResult:
    """A reconstruction: ``images`` [B, C, H, W] in [0, 1] (CPU), ``labels`` [B] int64.

    ``loss`` is the attack's final objective: DLG/iDLG the gradient distance relative to
    ``||observed||^2``; IG ``1 - cos + tv``; analytic attacks a residual (0 for (a)).
    ``iterations`` counts optimiser steps over all restarts (1 for analytic attacks).
    ``stopped`` says why an iterative attack ended before its budget: ``converged`` (the
    loss below the attack's bar, or settled and at its float32 floor), ``plateau`` (its
    loss stopped falling), or "" (it ran its budget, or is not iterative).
    """

    attack: str
    images: torch.Tensor
    labels: torch.Tensor
    loss: float
    iterations: int
    seconds: float
    device: str = "cpu"
    stopped: str = ""

    @property
    def iterations_per_second(self) -> float:
        return self.iterations / self.seconds if self.seconds > 0 else float("inf")


class Timer:
    """Wall-clock timer that waits for queued CUDA work before reading the clock."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = 0.0

    def __enter__(self) -> Timer:
        self._sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self.start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"expected a CUDA device for {spec!r}, but torch sees none")
    if spec != "cpu" and not spec.startswith("cuda"):
        raise DeviceError(f"expected a device 'auto', 'cpu' or 'cuda[:N]', got {spec!r}")
    return torch.device(spec)


def client_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Gradient:
    """The client's true gradient of mean cross-entropy, in ``model.parameters()`` order."""
    params = list(model.parameters())
    loss = F.cross_entropy(model(images), labels)
    return [g.detach() for g in torch.autograd.grad(loss, params)]


def client_weight_update(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    lr: float,
    local_steps: int = 1,
    local_batch_size: int | None = None,
) -> tuple[Gradient, Gradient]:
    """FedAvg client: ``local_steps`` SGD steps; returns (weights before, weights after).

    Mini-batches cycle through the data in order (``local_batch_size`` None: full batch).
    """
    before = [p.detach().clone() for p in model.parameters()]
    weights = [p.clone() for p in before]
    for step in range(local_steps):
        batch_images, batch_labels = _local_batch(images, labels, step, local_batch_size)
        grads = _functional_gradients(model, weights, batch_images, batch_labels)
        weights = [w - lr * g.detach() for w, g in zip(weights, grads)]
    return before, [w.detach() for w in weights]


def _local_batch(
    images: torch.Tensor, labels: torch.Tensor, step: int, size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if size is None or size >= images.shape[0]:
        return images, labels
    batches = (images.shape[0] + size - 1) // size
    start = (step % batches) * size
    return images[start:start + size], labels[start:start + size]


def _functional_gradients(
    model: nn.Module,
    weights: Sequence[torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    create_graph: bool = False,
) -> Gradient:
    names = [name for name, _ in model.named_parameters()]
    if not create_graph:
        weights = [w.detach().requires_grad_(True) for w in weights]
    out = torch.func.functional_call(model, dict(zip(names, weights)), (images,))
    loss = F.cross_entropy(out, labels)
    return list(torch.autograd.grad(loss, weights, create_graph=create_graph))


def gradient_from_weights(
    before: Sequence[torch.Tensor], after: Sequence[torch.Tensor], lr: float
) -> Gradient:
    """One local SGD step ``w_after = w_before - lr * g`` gives ``g = (before - after) / lr``."""
    if len(before) != len(after):
        raise ShapeMismatchError(
            f"expected as many tensors after as before ({len(before)}), got {len(after)}"
        )
    if not lr > 0:
        raise AttackConfigError(f"expected a positive learning rate, got {lr}")
    return [(b - a) / lr for b, a in zip(before, after)]


def gradient_from_vector(model: nn.Module, flat: np.ndarray | torch.Tensor) -> Gradient:
    """Split a flat vector (parameters concatenated in ``model.parameters()`` order)."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    vector = torch.as_tensor(np.asarray(flat, dtype=np.float32) if isinstance(flat, np.ndarray)
                             else flat, dtype=torch.float32).flatten()
    if vector.numel() != total:
        raise ShapeMismatchError(
            f"expected a flat vector of {total} values for {type(model).__name__}, "
            f"got {vector.numel()}"
        )
    return [chunk.view_as(p).clone() for chunk, p in zip(vector.split([p.numel() for p in params]),
                                                       params)]


def check_gradient(model: nn.Module, gradient: Sequence[torch.Tensor]) -> None:
    """Refuse a gradient whose tensors do not match ``model.parameters()`` shapes."""
    params = list(model.parameters())
    if len(gradient) != len(params):
        raise ShapeMismatchError(
            f"expected {len(params)} gradient tensors (one per parameter), got {len(gradient)}"
        )
    for index, (g, p) in enumerate(zip(gradient, params)):
        if tuple(g.shape) != tuple(p.shape):
            raise ShapeMismatchError(
                f"expected gradient {index} of shape {tuple(p.shape)}, got {tuple(g.shape)}"
            )


def l2_distance(dummy: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]) -> torch.Tensor:
    """DLG's loss: sum over all parameters of the squared gradient difference."""
    return torch.stack([((d - o) ** 2).sum() for d, o in zip(dummy, observed)]).sum()


def cosine_distance(
    dummy: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Inverting Gradients' loss: 1 - cosine similarity of the stacked gradients."""
    dot = torch.stack([(d * o).sum() for d, o in zip(dummy, observed)]).sum()
    dummy_norm = torch.stack([d.pow(2).sum() for d in dummy]).sum().sqrt()
    observed_norm = torch.stack([o.pow(2).sum() for o in observed]).sum().sqrt()
    return 1.0 - dot / (dummy_norm * observed_norm + 1e-12)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (anisotropic TV), per image."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(-3, -2, -1))
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(-3, -2, -1))
    return dx + dy


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """DLG's cross-entropy against a soft label ``softmax(target_logits)``, batch mean."""
    return (-F.softmax(target_logits, dim=-1) * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def last_linear_gradients(model: nn.Module, gradient: Sequence[torch.Tensor]) -> tuple[
        torch.Tensor, torch.Tensor | None]:
    """(weight gradient, bias gradient or None) of the model's last Linear layer."""
    params = list(model.parameters())
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise AttackConfigError(
            f"expected a model that ends in a Linear classifier, got {type(model).__name__}"
        )
    index = {id(p): i for i, p in enumerate(params)}
    weight = gradient[index[id(last.weight)]]
    # A bias held fixed (a buffer, not a parameter) has no gradient to read.
    bias = gradient[index[id(last.bias)]] if last.bias is not None and id(last.bias) in index else None
    return weight, bias
