"""Inverting Gradients (Geiping, Bauermeister, Droege, Moeller, NeurIPS 2020).

Loss: 1 - cosine similarity between the dummy and the observed gradient (all
parameters stacked) plus a total-variation prior; Adam (step 0.1) on the *sign* of the
loss gradient; the learning rate is divided by 10 at 3/8, 5/8 and 7/8 of the run; the
images are boxed to [0, 1] after every step; several restarts, the one with the lowest
final loss is kept. Labels come from iDLG's analysis of the last layer.

All restarts run as one [R, B, C, H, W] tensor: the per-restart model gradients are
computed with ``torch.func.vmap`` over ``torch.func.grad``, so one step is one batched
second-order pass, and nothing is read back to the host until the run ends.

The FedAvg-aware variant (same paper, Sec. 5) matches a *weight update* after several
local SGD steps: the dummy data is pushed through the same number of differentiable
local steps and the predicted update ``w_before - w_after`` is matched by cosine.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from leakage.attacks.common import (
    AttackResult,
    ProgressFn,
    Timer,
    check_gradient,
    resolve_device,
    total_variation,
)
from leakage.attacks.improved_dlg import infer_label_counts
from leakage.errors import AttackConfigError


@dataclass(frozen=True)
class FedAvgSpec:
    """How the client trained locally: ``local_steps`` SGD steps at ``lr``.

    ``local_batch_size`` None means every step used the whole local batch; otherwise
    mini-batches cycle through the data in order.
    """

    lr: float
    local_steps: int
    local_batch_size: int | None = None

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.local_steps < 1:
            raise AttackConfigError(
                f"expected lr > 0 and local_steps >= 1, got lr={self.lr}, "
                f"local_steps={self.local_steps}"
            )
        if self.local_batch_size is not None and self.local_batch_size < 1:
            raise AttackConfigError(
                f"expected local_batch_size >= 1 or None, got {self.local_batch_size}"
            )


Weights = dict[str, torch.Tensor]


def _predicted_signal(
    model: nn.Module, weights: Weights, labels: torch.Tensor, fedavg: FedAvgSpec | None
) -> Callable[[torch.Tensor], Weights]:
    """x [B, C, H, W] -> what the client would have shared for x (gradient or update)."""
    signal = _signal(model, weights, fedavg)
    return lambda x: signal(x, labels)


def _signal(
    model: nn.Module, weights: Weights, fedavg: FedAvgSpec | None
) -> Callable[[torch.Tensor, torch.Tensor], Weights]:
    """(x [B, C, H, W], labels [B]) -> what the client would have shared (gradient or update)."""

    def loss_at(w: Weights, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(torch.func.functional_call(model, w, (x,)), y)

    gradient_of = torch.func.grad(loss_at)

    def shared(x: torch.Tensor, labels: torch.Tensor) -> Weights:
        if fedavg is None:
            return gradient_of(weights, x, labels)
        current = dict(weights)
        size = fedavg.local_batch_size or x.shape[0]
        batches = (x.shape[0] + size - 1) // size
        for step in range(fedavg.local_steps):
            start = (step % batches) * size
            g = gradient_of(current, x[start:start + size], labels[start:start + size])
            current = {n: current[n] - fedavg.lr * g[n] for n in current}
        return {n: weights[n] - current[n] for n in weights}

    return shared


def _cosine_per_restart(predicted: Weights, observed: Weights) -> torch.Tensor:
    """1 - cos for every restart; ``predicted`` tensors carry a leading restart axis."""
    names = list(observed)
    # torch.stack(...).sum(0) rather than sum(): typed as a Tensor, no int start value.
    dot = torch.stack([(predicted[n] * observed[n]).flatten(1).sum(1) for n in names]).sum(0)
    norm = torch.stack([predicted[n].pow(2).flatten(1).sum(1) for n in names]).sum(0)
    observed_norm = torch.stack([observed[n].pow(2).sum() for n in names]).sum()
    return 1.0 - dot / (norm.sqrt() * torch.as_tensor(observed_norm).sqrt() + 1e-12)


def inverting_gradients(
    model: nn.Module,
    observed_gradient: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_size: int = 1,
    iterations: int = 2000,
    device: str | torch.device = "auto",
    seed: int = 0,
    restarts: int = 4,
    tv_weight: float = 0.2,
    lr: float = 0.1,
    labels: torch.Tensor | None = None,
    fedavg: FedAvgSpec | None = None,
    progress: ProgressFn | None = None,
) -> AttackResult:
    """Inverting Gradients. ``observed_gradient`` is the gradient, or with ``fedavg`` the
    weight update ``w_before - w_after`` after the client's local steps."""
    if iterations < 1 or restarts < 1 or batch_size < 1:
        raise AttackConfigError(
            f"expected iterations, restarts and batch_size >= 1, got {iterations}, "
            f"{restarts}, {batch_size}"
        )
    check_gradient(model, observed_gradient)
    target = resolve_device(device)
    if labels is None:
        # After several local steps the last-layer update is still a sum of (p - y) h^T
        # terms with mostly the same signs, so the label heuristic remains usable.
        labels = infer_label_counts(model, observed_gradient, batch_size, input_shape=input_shape)
    if labels.shape != (batch_size,):
        raise AttackConfigError(f"expected labels of shape ({batch_size},), got "
                                f"{tuple(labels.shape)}")
    labels = labels.to(target)
    attacked = copy.deepcopy(model).to(target).float().eval()
    names = [name for name, _ in attacked.named_parameters()]
    weights = {n: p.detach() for n, p in attacked.named_parameters()}
    observed = {n: g.detach().to(target, torch.float32) for n, g in zip(names,
                                                                     observed_gradient)}
    shared = _predicted_signal(attacked, weights, labels, fedavg)
    batched_shared = torch.func.vmap(shared)

    def objective(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_restart = _cosine_per_restart(batched_shared(x), observed)
        per_restart = per_restart + tv_weight * total_variation(x).mean(dim=1)
        return per_restart.sum(), per_restart.detach()

    step_and_loss = torch.func.grad(objective, has_aux=True)
    generator = torch.Generator().manual_seed(seed)
    dummy = torch.rand((restarts, batch_size, *input_shape), generator=generator).to(target)
    final, seconds = _signed_adam(step_and_loss, dummy, lr, iterations, target, progress)
    best = int(torch.nan_to_num(final, nan=math.inf).argmin())
    return AttackResult(
        "ig" if fedavg is None else "ig-fedavg",
        torch.nan_to_num(dummy.detach()[best], nan=0.0).clamp(0.0, 1.0).cpu(),
        labels.cpu().to(torch.int64), float(final[best]), iterations, seconds, str(target),
    )


def inverting_gradients_many(
    model: nn.Module,
    observed_gradients: Sequence[Sequence[torch.Tensor]],
    seeds: Sequence[int],
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_size: int = 1,
    iterations: int = 2000,
    device: str | torch.device = "auto",
    restarts: int = 4,
    tv_weight: float = 0.2,
    lr: float = 0.1,
    fedavg: FedAvgSpec | None = None,
    progress: ProgressFn | None = None,
) -> list[AttackResult]:
    """:func:`inverting_gradients` on many observations at once, one result each: every
    restart of every observation is one lane of one ``[L, B, C, H, W]`` tensor, each with
    its own labels (iDLG's analysis of its observation) and its own cosine target. Adam
    acts elementwise and each lane's loss depends on its own images only, so a lane
    follows the path it would alone (same seed, same start), at a fraction of the cost."""
    if iterations < 1 or restarts < 1 or batch_size < 1:
        raise AttackConfigError(
            f"expected iterations, restarts and batch_size >= 1, got {iterations}, "
            f"{restarts}, {batch_size}"
        )
    if len(seeds) != len(observed_gradients):
        raise AttackConfigError(f"expected one seed per observation ({len(observed_gradients)}), "
                                f"got {len(seeds)}")
    if not observed_gradients:
        return []
    for observed_gradient in observed_gradients:
        check_gradient(model, observed_gradient)
    target = resolve_device(device)
    labels = torch.stack([infer_label_counts(model, o, batch_size, input_shape=input_shape)
                          for o in observed_gradients]).to(target)
    attacked = copy.deepcopy(model).to(target).float().eval()
    names = [name for name, _ in attacked.named_parameters()]
    weights = {n: p.detach() for n, p in attacked.named_parameters()}
    count = len(observed_gradients)
    lane_problem = torch.arange(count, device=target).repeat_interleave(restarts)
    observed = {
        n: torch.stack([o[i].detach().to(target, torch.float32) for o in observed_gradients])[lane_problem]
        for i, n in enumerate(names)
    }
    lane_labels = labels[lane_problem]
    batched_shared = torch.func.vmap(_signal(attacked, weights, fedavg))

    def objective(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        predicted = batched_shared(x, lane_labels)
        dot = torch.stack([(predicted[n] * observed[n]).flatten(1).sum(1) for n in names]).sum(0)
        norm = torch.stack([predicted[n].pow(2).flatten(1).sum(1) for n in names]).sum(0)
        observed_norm = torch.stack([observed[n].pow(2).flatten(1).sum(1) for n in names]).sum(0)
        per_lane = 1.0 - dot / (norm.sqrt() * observed_norm.sqrt() + 1e-12)
        per_lane = per_lane + tv_weight * total_variation(x).mean(dim=1)
        return per_lane.sum(), per_lane.detach()

    step_and_loss = torch.func.grad(objective, has_aux=True)
    dummy = torch.cat([
        torch.rand((restarts, batch_size, *input_shape), generator=torch.Generator().manual_seed(seed))
        for seed in seeds
    ]).to(target)
    final, seconds = _signed_adam(step_and_loss, dummy, lr, iterations, target, progress)
    final = torch.nan_to_num(final, nan=math.inf).view(count, restarts).cpu()
    images = torch.nan_to_num(dummy.detach(), nan=0.0).clamp(0.0, 1.0).cpu().view(
        count, restarts, batch_size, *input_shape)
    out = []
    for p in range(count):
        best = int(final[p].argmin())
        out.append(AttackResult(
            "ig" if fedavg is None else "ig-fedavg", images[p, best], labels[p].cpu().to(torch.int64),
            float(final[p, best]), iterations, seconds / count, str(target),
        ))
    return out


def _signed_adam(step_and_loss: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                 dummy: torch.Tensor, lr: float, iterations: int, target: torch.device,
                 progress: Callable[[int, int], None] | None,
                 ) -> tuple[torch.Tensor, float]:
    """Geiping et al.'s optimiser in place on ``dummy``: Adam on the sign of the gradient,
    the learning rate divided by 10 at 3/8, 5/8 and 7/8 of the steps, pixels clamped to
    [0, 1]. Returns the final per-restart losses and the seconds taken."""
    dummy.requires_grad_(True)
    optimizer = torch.optim.Adam([dummy], lr=lr)
    milestones = [iterations * 3 // 8, iterations * 5 // 8, iterations * 7 // 8]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    with Timer(target) as timer:
        for step in range(iterations):
            grad, _ = step_and_loss(dummy.detach())
            dummy.grad = grad.sign()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                dummy.clamp_(0.0, 1.0)
            if progress is not None:
                progress(step + 1, iterations)
        _, final = step_and_loss(dummy.detach())
    return final, timer.seconds
