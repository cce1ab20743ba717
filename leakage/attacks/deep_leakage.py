"""Deep Leakage from Gradients (Zhu, Liu, Han, NeurIPS 2019) and the shared L-BFGS
gradient-matching loop that iDLG reuses.

A dummy image and dummy label logits start from a standard normal; the label enters as
``softmax(logits)`` in a soft cross-entropy; L-BFGS (lr 1, 20 inner iterations per
step, as ``torch.optim.LBFGS`` defaults and the reference code uses) minimises the sum
over all parameters of the squared difference between the dummy and the observed
gradient, differentiated again (second-order autograd).

Faster than the reference loop without changing the method: the outer derivative is
taken only with respect to the dummy tensors (the reference's ``backward()`` also fills
gradients for every model weight), there is no extra logging closure every 10 steps,
the run stops once the gradient distance has collapsed, and a restart from a fresh
draw is made only if the first run stalled (keeping the lowest loss).

A run can also *die*: its loss turns non-finite, or L-BFGS sends the image so far out
(pixels ~1e5 on LeNet) that every sigmoid saturates, the gradient vanishes and each
later step returns after one evaluation with the image unchanged (or moves it by a
float epsilon at a constant loss): 150 fast steps of nothing. A zero-gradient step, a
non-finite loss or ``PATIENCE`` checks without a new lowest loss end the run.
A dead run stops at once, keeps its best checked image rather than the wreck, and hands
its unused steps to a fresh draw, so even ``restarts=1`` gets a second chance within
the same ``iterations * restarts`` step budget.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from leakage.attacks.common import (
    AttackResult,
    ProgressFn,
    Timer,
    check_gradient,
    l2_distance,
    resolve_device,
    soft_cross_entropy,
)
from leakage.errors import AttackConfigError

# Relative gradient distance below which a run has converged (nothing left to gain) and
# above which a run counts as stalled (worth a restart). Measured on LeNet/32x32: runs
# that recover the image pass 1e-8 at ~40 dB PSNR; stalled ones sit above 1e-3.
CONVERGED = 1e-8
STALLED = 1e-4
CHECK_EVERY = 10  # outer steps between convergence checks (each check syncs the host)
# Checks in a row without a new lowest loss after which a run counts as stuck (dead):
# a run whose image has blown up to ~1e5 keeps taking float-epsilon steps at a
# constant loss, which the zero-gradient test alone does not catch.
PATIENCE = 2


def prepare(
    model: nn.Module, observed: Sequence[torch.Tensor], device: torch.device
) -> tuple[nn.Module, list[torch.Tensor]]:
    """A private copy of the model on ``device`` and the observed gradient moved there."""
    check_gradient(model, observed)
    attacked = copy.deepcopy(model).to(device).float()
    attacked.eval()
    for p in attacked.parameters():
        p.requires_grad_(True)
    return attacked, [g.detach().to(device=device, dtype=torch.float32) for g in observed]


def lbfgs_match(
    model: nn.Module,
    observed: list[torch.Tensor],
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    iterations: int,
    generator: torch.Generator,
    device: torch.device,
    labels: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
    progress_offset: int = 0,
    progress_total: int | None = None,
    converged: float = CONVERGED,
) -> tuple[torch.Tensor, torch.Tensor, float, int, bool]:
    """One L-BFGS gradient-matching run; returns (images, labels, loss, steps taken,
    died).

    The loss is the gradient distance relative to ``||observed||^2`` (inf if no finite
    loss was ever read). ``died``: the run stopped early because its loss turned
    non-finite or its gradient vanished away from convergence (see the module text); the
    images are then the best ones seen at a check, not the final ones.

    ``labels`` None: DLG (soft dummy labels optimised too); given: iDLG (image only).
    """
    params = list(model.parameters())
    shape = (batch_size, *input_shape)
    dummy = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
    variables = [dummy]
    label_logits = None
    if labels is None:
        label_logits = torch.randn((batch_size, num_classes), generator=generator).to(device)
        label_logits.requires_grad_(True)
        variables.append(label_logits)
    scale = float(sum(float(o.pow(2).sum()) for o in observed)) or 1.0
    hard_labels = labels if labels is not None else torch.empty(0, dtype=torch.long)
    optimizer = torch.optim.LBFGS(variables, lr=1.0)

    def closure() -> torch.Tensor:
        logits = model(dummy)
        if label_logits is not None:
            loss = soft_cross_entropy(logits, label_logits)
        else:
            loss = F.cross_entropy(logits, hard_labels)
        dummy_grad = torch.autograd.grad(loss, params, create_graph=True)
        distance = l2_distance(dummy_grad, observed)
        for variable, grad in zip(variables, torch.autograd.grad(distance, variables)):
            variable.grad = grad
        return distance.detach()

    last_loss = float("inf")
    steps = 0
    died = False
    flat_checks = 0
    # Best state seen at a check: (loss, image, label logits). L-BFGS returns the loss
    # at the start of a step, so the state is copied just before a checked step (a
    # device-side clone, no host sync).
    best: tuple[float, torch.Tensor, torch.Tensor | None] | None = None
    total = progress_total if progress_total is not None else iterations
    for step in range(iterations):
        check = (step + 1) % CHECK_EVERY == 0 or step + 1 == iterations
        snapshot = _snapshot(dummy, label_logits) if check else None
        # L-BFGS's own iteration counter (a Python int, so reading it never syncs): a
        # step that leaves it unchanged returned at once on a zero gradient and moved
        # nothing, so every later step would repeat it exactly.
        n_iter = optimizer.state[dummy].get("n_iter", 0)
        loss = optimizer.step(closure)
        steps = step + 1
        if progress is not None:
            progress(progress_offset + steps, total)
        frozen = optimizer.state[dummy].get("n_iter", 0) == n_iter
        if not (check or frozen):
            continue
        last_loss = float(loss) / scale
        if not math.isfinite(last_loss):  # diverged: keep the best checked state
            last_loss = float("inf")
            died = True
            break
        if frozen:
            # The state did not move, so this loss is exactly the current state's.
            snapshot = _snapshot(dummy, label_logits)
        if snapshot is not None and (best is None or last_loss < best[0]):
            best = (last_loss, *snapshot)
            flat_checks = 0
        elif check:
            flat_checks += 1
        if last_loss < converged:
            break
        if frozen or flat_checks >= PATIENCE:
            died = True  # stuck away from convergence: nothing left to gain from this draw
            break
    final_images, final_logits = dummy.detach(), label_logits
    if died and best is not None:
        last_loss, final_images, final_logits = best
    with torch.no_grad():
        # a diverged run can hold NaN; metrics and PNGs need finite pixels
        images = torch.nan_to_num(final_images, nan=0.0).clamp(0.0, 1.0).cpu()
        if final_logits is not None:
            found = final_logits.detach().argmax(dim=-1).cpu()
        elif labels is not None:
            found = labels.detach().cpu()
        else:  # unreachable: a run optimises label logits or is given labels
            raise AttackConfigError("expected label logits or fixed labels, got neither")
    return images, found, last_loss, steps, died


def _snapshot(
    dummy: torch.Tensor, label_logits: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    logits = label_logits.detach().clone() if label_logits is not None else None
    return dummy.detach().clone(), logits


def dlg(
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
) -> AttackResult:
    """DLG: recover ``batch_size`` images and labels from a gradient (L-BFGS, L2 match).

    ``converged``: stop once the gradient distance relative to ``||observed||^2`` falls
    below it (0 runs all ``iterations`` steps, as the reference code does).
    """
    return run_lbfgs_attack(
        "dlg", model, observed_gradient, input_shape=input_shape, num_classes=num_classes,
        batch_size=batch_size, iterations=iterations, device=device, seed=seed,
        restarts=restarts, labels=None, progress=progress, converged=converged,
    )


def run_lbfgs_attack(
    name: str,
    model: nn.Module,
    observed_gradient: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    iterations: int,
    device: str | torch.device,
    seed: int,
    restarts: int,
    labels: torch.Tensor | None,
    progress: ProgressFn | None,
    converged: float = CONVERGED,
) -> AttackResult:
    if iterations < 1 or restarts < 1 or batch_size < 1:
        raise AttackConfigError(
            f"expected iterations, restarts and batch_size >= 1, got {iterations}, "
            f"{restarts}, {batch_size}"
        )
    target = resolve_device(device)
    attacked, observed = prepare(model, observed_gradient, target)
    if labels is not None:
        labels = labels.to(target)
    generator = torch.Generator().manual_seed(seed)
    best: tuple[torch.Tensor, torch.Tensor, float] | None = None
    steps_total = 0
    # ``restarts`` draws may run to the end; a draw that died early does not count,
    # but its steps do, so the work stays within ``iterations * restarts`` steps.
    budget = iterations * restarts
    lived = 0
    with Timer(target) as timer:
        while lived < restarts and steps_total < budget:
            images, found, loss, steps, died = lbfgs_match(
                attacked, observed, input_shape=input_shape, num_classes=num_classes,
                batch_size=batch_size, iterations=min(iterations, budget - steps_total),
                generator=generator, device=target, labels=labels, progress=progress,
                progress_offset=steps_total, progress_total=budget, converged=converged,
            )
            steps_total += steps
            if best is None or loss < best[2]:
                best = (images, found, loss)
            if loss < STALLED:
                break
            lived += not died
    if progress is not None:
        progress(iterations * restarts, iterations * restarts)
    if best is None:  # unreachable: restarts >= 1 was checked above
        raise AttackConfigError(f"{name}: no run completed (restarts={restarts})")
    return AttackResult(name, best[0], best[1].to(torch.int64), best[2], steps_total,
                        timer.seconds, str(target))
