"""Deep Leakage from Gradients (Zhu, Liu, Han, NeurIPS 2019) and the batched L-BFGS
gradient-matching solver that iDLG, the assessment and the benchmarks share.

A dummy image and dummy label logits start from a standard normal; the label enters as
``softmax(logits)`` in a soft cross-entropy; L-BFGS (lr 1, 20 evaluations per step, as
``torch.optim.LBFGS`` defaults and the reference code use) minimises the sum over all
parameters of the squared difference between the dummy and the observed gradient,
differentiated again (second-order autograd). iDLG fixes the labels instead.

Many problems at once (:func:`solve_matching`): every restart of every problem (an
observed gradient with its seed, and its labels for iDLG) is one *lane* of a stacked
``[L, D]`` variable; one evaluation computes every lane's own weight gradient and its
distance to that lane's observation, and :mod:`leakage.attacks.batched_lbfgs` keeps one
L-BFGS memory per lane. On the paper's LeNet the lanes run as one grouped convolution
(each lane its own copy of the weights, so ``autograd`` returns per-lane weight
gradients); other models use ``torch.func.vmap``. So R restarts cost far less than R
runs, and a round's observables and random baselines can share one solve.

Per lane: the best state seen is kept (not the last); a lane whose loss turns
non-finite, whose gradient vanishes (L-BFGS sending the image so far out that every
sigmoid saturates) or that finds no new lowest loss for ``PATIENCE`` checks has died
and starts again from a fresh draw within its remaining steps; once any lane of a
problem converges (relative gradient distance below ``converged``) the problem is
solved and its lanes leave the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from leakage.attacks.batched_lbfgs import LaneObjective, minimise_lanes
from leakage.attacks.common import (
    AttackResult,
    ProgressFn,
    Timer,
    check_gradient,
    resolve_device,
)
from leakage.errors import AttackConfigError

# Relative gradient distance below which a problem is solved. Measured on LeNet: runs
# that recover the image pass 1e-8 at ~40 dB and 1e-9 at ~45-60 dB PSNR; float32
# gradients of a batch stall around 1e-9, so a lower bar only burns steps.
CONVERGED = 1e-9
# Once a lane is below this, the other restarts of its problem stop: it found the basin
# (stalled runs sit above 1e-3 on LeNet; this was the old "start another draw" bar).
SETTLED = 1e-4
CHECK_EVERY = 10  # steps between checks (each check syncs the host)
# Checks in a row without a new lowest loss after which a lane counts as stuck (dead).
PATIENCE = 2
# With a plateau rule (``solve_matching(plateau=...)``): checks over which a problem's best
# loss must fall by that fraction to go on; longer than PATIENCE, so a redrawn lane has
# two checks to beat the problem's best before the problem stops.
PLATEAU_CHECKS = 4
# A problem whose best lane is below SETTLED and whose best loss fell by less than FLOOR
# (a fraction) over FLOOR_CHECKS checks has reached its float32 floor and stops. Measured
# on LeNet/32x32 at batch 1 (DLG and iDLG, grey start): a recovered image's relative
# distance falls 2-30 % per 10 steps down to a floor of 3e-9-9e-9 (45-56 dB), then by
# under 0.3 % per 10 steps for the rest of the budget (a third to half of its evaluations).
FLOOR = 0.01
FLOOR_CHECKS = 2
INITS = ("auto", "normal", "uniform", "grey")
# Smoothness prior (squared differences of neighbouring pixels, the l2 total variation of
# Yin et al. 2021 / Geiping et al. 2020's TV in its smooth form), relative to the
# gradient distance at its start; divided by PRIOR_DECAY every PRIOR_EVERY steps until it
# is negligible, so the match decides the end. Why: on LeNet a batch of 8 32x32 images
# (24,576 unknowns) or one 64x64 image (12,288) has more unknowns than its gradient
# carries independent values (~14,200 and ~11,200: the 768/3,072 last-layer features
# per image plus the convolution gradients), so gradient matching alone lands on another
# point of the solution set, whatever the optimiser: measured at batch 8 the relative
# distance reached 1e-8 with every image at 6-19 dB. The prior picks the smooth point.
PRIOR = 3e-3
PRIOR_EVERY = 100
PRIOR_DECAY = 10.0
PRIOR_FLOOR = 1e-9  # below this weight the prior is switched off
# With a prior, the plateau rule (``solve_matching(plateau=...)``) starts only after this
# many decays: while the prior is large the loss balances prior against match and can
# look flat long before the match has finished (a batch of 8 is still moving at step 150).
PLATEAU_AFTER_DECAYS = 2


def default_prior(batch_size: int, input_shape: tuple[int, int, int]) -> float:
    """The prior weight used unless the caller names one: :data:`PRIOR` when the
    problem has more unknowns than one 32x32 RGB image (batches, higher resolutions),
    0 for one image up to 32x32, where the gradient pins the image down by itself."""
    return PRIOR if batch_size * math.prod(input_shape) > 3 * 32 * 32 else 0.0


@dataclass(frozen=True, eq=False)
class MatchingProblem:
    """One gradient to invert: ``observed`` in ``model.parameters()`` order; ``labels``
    [B] (iDLG: fixed) or None (DLG: soft labels optimised too); ``seed`` draws its
    starting points."""

    observed: Sequence[torch.Tensor]
    labels: torch.Tensor | None
    seed: int


_ELEMENTWISE = (nn.Sigmoid, nn.ReLU, nn.Tanh, nn.Identity)


def lane_layers(model: nn.Module) -> list[nn.Module] | None:
    """The layers of a model the lane-batched pass can run (LeNet and the MLP of
    :mod:`leakage.models`: convolutions, fully connected layers with bias, elementwise
    activations, in order), or None: such models use ``torch.func.vmap`` instead."""
    from leakage.models import MLP, LeNet

    layers: list[nn.Module]
    if isinstance(model, LeNet) and isinstance(model.body, nn.Sequential):
        layers = [*model.body, model.fc]
    elif isinstance(model, MLP):
        layers = [model.fc1, model.act, model.fc2, model.act, model.fc3]
    else:
        return None
    for layer in layers:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            # A bias held fixed (a buffer, e.g. the malicious server's trusted view) has no
            # gradient to match: the lane pass assumes one per layer.
            if not isinstance(layer.bias, nn.Parameter):
                return None
            if isinstance(layer, nn.Conv2d) and (
                    isinstance(layer.padding, str) or layer.groups != 1
                    or layer.dilation != (1, 1) or layer.padding_mode != "zeros"):
                return None
        elif not isinstance(layer, _ELEMENTWISE):
            return None
    if not isinstance(layers[-1], nn.Linear):
        return None
    return layers


def _padding(module: nn.Conv2d) -> tuple[int, int]:
    """A lane-pass convolution's padding (:func:`lane_layers` refuses string padding)."""
    if isinstance(module.padding, str):
        raise AttackConfigError(f"expected numeric convolution padding, got {module.padding!r}")
    return int(module.padding[0]), int(module.padding[1])


def _conv_size(module: nn.Conv2d, size: tuple[int, int]) -> tuple[int, int]:
    """Spatial size of ``module``'s output for an input of ``size``."""
    padding = _padding(module)
    return (
        (size[0] + 2 * padding[0] - module.kernel_size[0]) // module.stride[0] + 1,
        (size[1] + 2 * padding[1] - module.kernel_size[1]) // module.stride[1] + 1,
    )


def _bias(module: nn.Conv2d) -> torch.Tensor:
    if module.bias is None:  # lane_layers refuses layers without a bias parameter
        raise AttackConfigError("expected a convolution with a bias")
    return module.bias


def _conv_input_gradient(module: nn.Conv2d, delta: torch.Tensor,
                         size: tuple[int, int]) -> torch.Tensor:
    """Gradient at a convolution's input from ``delta`` [N, out, L] at its output."""
    out_h, out_w = _conv_size(module, size)
    padding = _padding(module)
    extra = tuple(size[i] - ((n - 1) * module.stride[i] - 2 * padding[i] + module.kernel_size[i])
                  for i, n in enumerate((out_h, out_w)))
    return F.conv_transpose2d(delta.reshape(delta.shape[0], -1, out_h, out_w), module.weight,
                              stride=module.stride, padding=padding, output_padding=extra)


def _batch_sum(values: torch.Tensor, lanes: int, batch: int) -> torch.Tensor:
    """[A * B, ...] -> [A, ...]: the sum over each lane's batch (a view at batch 1, one
    operation fewer each way)."""
    per_lane = values.reshape(lanes, batch, *values.shape[1:])
    return per_lane[:, 0] if batch == 1 else per_lane.sum(1)


def _activation_slope(module: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """The derivative of an elementwise activation, written with its output."""
    if isinstance(module, nn.Sigmoid):
        return output * (1.0 - output)
    if isinstance(module, nn.Tanh):
        return 1.0 - output * output
    if isinstance(module, nn.ReLU):
        return (output > 0).to(output.dtype)
    return torch.ones_like(output)  # nn.Identity


# Up to this many images in one evaluation (lanes x batch), a convolution of the explicit
# pass runs as unfold + matrix product and its input gradient as the transposed product +
# fold (fewer, cheaper operations for one or a few images); above it as ``conv2d`` and
# ``conv_transpose2d``, whose batched kernels win. Measured on LeNet/32x32, one thread:
# 1 lane 5.8-6.2 ms against 7.5-8.5 ms per evaluation, 64 lanes 111-133 ms against 137-170.
SMALL_PASS = 16


class _Objective:
    """Every lane's gradient distance and its derivative in the lane's variables.

    ``x`` [A, D]: per lane the B images flattened (then, for soft labels, B x K logits).

    For LeNet and the MLP (:func:`lane_layers`) each lane's weight gradient is written out
    as a differentiable expression (the backward pass by hand: ``softmax - target`` at the
    logits, then per layer the weight gradient as a product of the layer's input and the
    gradient at its output, the input gradient through the transposed weights and the
    activation's derivative), so one ``autograd`` backward through it gives the derivative
    of the distance, with the weights shared by every lane. That replaces double
    backward through a grouped pass over per-lane weight copies (what this class did
    before): fewer operations per evaluation, no copies. Other models use
    ``torch.func.vmap``.
    """

    def __init__(self, model: nn.Module, problems: Sequence[MatchingProblem],
                 lane_problem: torch.Tensor, *, batch_size: int,
                 input_shape: tuple[int, int, int], num_classes: int,
                 device: torch.device) -> None:
        self.model = model
        self.params = list(model.parameters())
        self.batch = batch_size
        self.shape = input_shape
        self.classes = num_classes
        self.image_dim = batch_size * math.prod(input_shape)
        self.soft = problems[0].labels is None
        self.lane_problem = lane_problem.to(device)
        # Observations flattened and concatenated in parameter order: [P, parameters].
        self.observed = torch.stack([
            torch.cat([g.detach().to(device, torch.float32).flatten() for g in p.observed])
            for p in problems])
        self.labels = None if self.soft else torch.stack(
            [p.labels.to(device) for p in problems if p.labels is not None])
        self.layers = lane_layers(model)
        # The lanes of the last call and what depends only on them (the active set changes
        # at checks only, so most evaluations reuse these).
        self._lanes: torch.Tensor | None = None
        self._lane_observed = self.observed[:0]
        self._lane_targets: torch.Tensor | None = None
        self._lane_prior_scale = self.observed[:0, 0]
        # Smoothness prior: weight relative to each problem's ||observed||^2.
        self.prior = 0.0
        self.prior_scale = torch.tensor(
            [float(sum(float(o.double().pow(2).sum()) for o in p.observed)) or 1.0 for p in problems],
            device=device, dtype=torch.float32)

    @property
    def dim(self) -> int:
        return self.image_dim + (self.batch * self.classes if self.soft else 0)

    def _for_lanes(self, lanes: torch.Tensor) -> None:
        if lanes is self._lanes:
            return
        problem = self.lane_problem[lanes]
        self._lane_observed = self.observed[problem]
        self._lane_prior_scale = self.prior_scale[problem]
        if self.labels is not None:
            self._lane_targets = F.one_hot(self.labels[problem], self.classes).float()
        self._lanes = lanes

    def _targets(self, x: torch.Tensor, lanes: torch.Tensor) -> torch.Tensor:
        if self.soft:
            return x[:, self.image_dim:].reshape(x.shape[0], self.batch, self.classes)
        if self.labels is None:  # unreachable: soft is False exactly when labels exist
            raise AttackConfigError("expected fixed labels for an image-only match")
        return self.labels[self.lane_problem[lanes]]

    def __call__(self, x: torch.Tensor, lanes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        self._for_lanes(lanes)
        if self.layers is not None:
            grads = self._explicit_gradients(x)
        else:
            grads = self._vmapped_gradients(x, lanes)
        dummy = torch.cat([g.reshape(x.shape[0], -1) for g in grads], dim=1)
        per_lane = (dummy - self._lane_observed).pow(2).sum(1)
        if self.prior > 0.0:
            per_lane = per_lane + self.prior * self._lane_prior_scale * self._roughness(x)
        (grad,) = torch.autograd.grad(per_lane.sum(), x)
        return per_lane.detach(), grad

    def _roughness(self, x: torch.Tensor) -> torch.Tensor:
        """Per lane: mean squared difference of vertically and of horizontally
        neighbouring pixels of its images, summed."""
        c, h, w = self.shape
        images = x[:, :self.image_dim].reshape(x.shape[0], self.batch, c, h, w)
        dy = (images[..., 1:, :] - images[..., :-1, :]).pow(2).flatten(1).mean(1)
        dx = (images[..., :, 1:] - images[..., :, :-1]).pow(2).flatten(1).mean(1)
        return dy + dx

    def _explicit_gradients(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every lane's weight gradient (batch-mean cross-entropy), in parameter order,
        each [A, *shape], as a differentiable function of ``x``."""
        lanes, batch = x.shape[0], self.batch
        count = lanes * batch
        small = count <= SMALL_PASS
        c, h, w = self.shape
        hidden = x[:, :self.image_dim].reshape(count, c, h, w)
        # Forward, keeping what the backward pass reads: per layer (module, its input or
        # unfolded input, the input's spatial size).
        saved: list[tuple[nn.Module, torch.Tensor, tuple[int, int]]] = []
        for module in self.layers or []:
            if isinstance(module, nn.Conv2d):
                size = (int(hidden.shape[-2]), int(hidden.shape[-1]))
                cols = F.unfold(hidden, module.kernel_size, padding=_padding(module),
                                stride=module.stride)  # [N, C*k*k, L]
                saved.append((module, cols, size))
                if small:
                    out_h, out_w = _conv_size(module, size)
                    hidden = (torch.matmul(module.weight.reshape(module.out_channels, -1), cols)
                              + _bias(module)[:, None]).reshape(count, -1, out_h, out_w)
                else:
                    hidden = F.conv2d(hidden, module.weight, module.bias, stride=module.stride,
                                      padding=module.padding)
            elif isinstance(module, nn.Linear):
                hidden = hidden.reshape(lanes, batch, -1)
                saved.append((module, hidden, (0, 0)))
                hidden = torch.matmul(hidden, module.weight.t()) + module.bias
            else:
                hidden = module(hidden)
                saved.append((module, hidden, (0, 0)))
        logits = hidden  # [A, B, K]
        if self.soft:
            target = F.softmax(x[:, self.image_dim:].reshape(lanes, batch, self.classes), dim=-1)
        else:
            if self._lane_targets is None:  # unreachable: set for labelled problems
                raise AttackConfigError("expected fixed labels for an image-only match")
            target = self._lane_targets
        # d(batch-mean cross-entropy)/d(logits); a soft target's probabilities sum to 1.
        upstream = (F.softmax(logits, dim=-1) - target) / batch
        grads: list[torch.Tensor] = []
        first = self.layers[0] if self.layers else None
        for module, stored, size in reversed(saved):
            if isinstance(module, nn.Linear):
                upstream = upstream.reshape(lanes, batch, -1)
                grads.append(_batch_sum(upstream.reshape(count, -1), lanes, batch))  # bias [A, out]
                grads.append(torch.matmul(upstream.transpose(1, 2), stored))  # [A, out, in]
                upstream = torch.matmul(upstream, module.weight)
            elif isinstance(module, nn.Conv2d):
                out = module.out_channels
                delta = upstream.reshape(count, out, -1)  # [N, out, L]
                grads.append(_batch_sum(delta.sum(2), lanes, batch))  # bias [A, out]
                # [N, out, C*k*k], formed as (cols @ delta^T)^T: its derivative in the
                # columns then comes out in their own [N, C*k*k, L] layout, which fold
                # reads without a transposing copy (at 56 images that copy cost as much as
                # the product).
                weight_grad = torch.matmul(stored, delta.transpose(1, 2)).transpose(1, 2)
                grads.append(_batch_sum(weight_grad, lanes, batch).reshape(
                    lanes, *module.weight.shape))
                if module is not first:
                    if small:
                        upstream = F.fold(
                            torch.matmul(module.weight.reshape(out, -1).t(), delta), size,
                            module.kernel_size, padding=_padding(module), stride=module.stride)
                    else:
                        upstream = _conv_input_gradient(module, delta, size)
            else:
                upstream = upstream.reshape(stored.shape) * _activation_slope(module, stored)
        grads.reverse()
        return grads

    def _vmapped_gradients(self, x: torch.Tensor, lanes: torch.Tensor) -> list[torch.Tensor]:
        names = [n for n, _ in self.model.named_parameters()]
        weights = {n: p.detach() for n, p in self.model.named_parameters()}
        c, h, w = self.shape
        images = x[:, :self.image_dim].reshape(x.shape[0], self.batch, c, h, w)
        targets = self._targets(x, lanes)
        soft, classes = self.soft, self.classes

        def lane_loss(weights: dict[str, torch.Tensor], images: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
            logits = torch.func.functional_call(self.model, weights, (images,))
            if soft:
                return (-F.softmax(targets, dim=-1) * F.log_softmax(logits, dim=-1)).sum(-1).mean()
            return F.cross_entropy(logits.reshape(-1, classes), targets.reshape(-1))

        grads = torch.func.vmap(torch.func.grad(lane_loss), in_dims=(None, 0, 0))(
            weights, images, targets)
        return [grads[n] for n in names]


def _prepare(model: nn.Module, device: torch.device) -> nn.Module:
    import copy

    attacked = copy.deepcopy(model).to(device).float()
    attacked.eval()
    for p in attacked.parameters():
        p.requires_grad_(False)
    return attacked


def solve_matching(
    name: str,
    model: nn.Module,
    problems: Sequence[MatchingProblem],
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    iterations: int,
    restarts: int,
    device: str | torch.device = "auto",
    converged: float = CONVERGED,
    init: str = "auto",
    prior: float | None = None,
    progress: ProgressFn | None = None,
    plateau: float = 0.0,
    floor: float = FLOOR,
) -> list[AttackResult]:
    """Invert every problem with ``restarts`` lanes of ``iterations`` L-BFGS steps each,
    all in one batched solve; one :class:`AttackResult` per problem (its best lane).
    ``plateau`` > 0: a problem whose best loss fell by less than that fraction over the
    last ``PLATEAU_CHECKS`` checks stops (see :func:`minimise_lanes`; 0: never).
    ``floor`` > 0: a problem whose best lane has settled (below :data:`SETTLED`) and whose
    loss fell by less than that fraction over ``FLOOR_CHECKS`` checks is at its floor and
    stops, reported as ``converged`` (0: it runs on to ``converged`` or the budget).

    Every problem must share the label mode (all DLG or all iDLG) and ``batch_size``.
    ``prior``: weight of the smoothness prior (see :data:`PRIOR`; None:
    :func:`default_prior`). ``init``: ``normal`` (the paper's standard normal),
    ``uniform`` (U[0, 1], the images' range), ``grey`` (0.5 plus noise of 0.05) or
    ``auto`` (``grey``: the standard normal starts many pixels far outside [0, 1], where
    LeNet's sigmoids saturate; measured on the 10 embedded benchmark images, DLG 300 steps
    x 4, the normal start left one image at 6.8 dB and one at 29.96, the grey start
    recovered them at 53.9 and 35.9 dB). ``seconds`` of each result is
    its share of the solve's wall time; ``iterations`` the steps its lanes ran, redraws
    included.
    """
    if iterations < 1 or restarts < 1 or batch_size < 1:
        raise AttackConfigError(
            f"expected iterations, restarts and batch_size >= 1, got {iterations}, "
            f"{restarts}, {batch_size}"
        )
    if init not in INITS:
        raise AttackConfigError(f"expected init in {INITS}, got {init!r}")
    weight = default_prior(batch_size, input_shape) if prior is None else float(prior)
    if not (math.isfinite(weight) and weight >= 0.0):
        raise AttackConfigError(f"expected a finite prior weight >= 0, got {prior!r}")
    if init == "auto":
        init = "grey"
    if not problems:
        return []
    soft = problems[0].labels is None
    for problem in problems:
        check_gradient(model, problem.observed)
        if (problem.labels is None) != soft:
            raise AttackConfigError("expected every problem to give labels, or none to")
        if problem.labels is not None and tuple(problem.labels.shape) != (batch_size,):
            raise AttackConfigError(f"expected labels of shape ({batch_size},), got "
                                    f"{tuple(problem.labels.shape)}")
    target = resolve_device(device)
    attacked = _prepare(model, target)
    count = len(problems)
    lane_problem = torch.arange(count).repeat_interleave(restarts)
    objective = _Objective(attacked, problems, lane_problem, batch_size=batch_size,
                           input_shape=input_shape, num_classes=num_classes, device=target)
    generators = [torch.Generator().manual_seed(p.seed) for p in problems]
    image_dim = objective.image_dim

    def draw(lanes: torch.Tensor) -> torch.Tensor:
        rows = []
        for lane in lanes.tolist():
            generator = generators[int(lane_problem[lane])]
            if init == "uniform":
                images = torch.rand(image_dim, generator=generator)
            elif init == "grey":
                images = 0.5 + 0.05 * torch.randn(image_dim, generator=generator)
            else:
                images = torch.randn(image_dim, generator=generator)
            parts = [images]
            if soft:
                parts.append(torch.randn(batch_size * num_classes, generator=generator))
            rows.append(torch.cat(parts))
        return torch.stack(rows).to(target)

    scale = torch.tensor([float(sum(float(o.double().pow(2).sum()) for o in p.observed)) or 1.0
                          for p in problems], dtype=torch.float64)
    lanes = lane_problem.numel()
    objective.prior = weight

    def on_step(done: int, total: int) -> None:
        # The prior's schedule: divided by PRIOR_DECAY every PRIOR_EVERY steps, then off.
        objective.prior = weight / PRIOR_DECAY ** (done // PRIOR_EVERY)
        if objective.prior < PRIOR_FLOOR:
            objective.prior = 0.0
        if progress is not None:
            progress(done, total)

    run_objective: LaneObjective = objective
    with Timer(target) as timer:
        result = minimise_lanes(
            run_objective, draw(torch.arange(lanes)), steps=iterations,
            scale=scale[lane_problem], groups=lane_problem.to(target), converged=converged,
            settled=SETTLED,
            check_every=CHECK_EVERY, patience=PATIENCE, redraw=draw, progress=on_step,
            plateau=plateau, plateau_checks=PLATEAU_CHECKS,
            plateau_from=PLATEAU_AFTER_DECAYS * PRIOR_EVERY if weight > 0.0 else 0,
            floor=floor, floor_checks=FLOOR_CHECKS,
        )
    out = []
    c, h, w = input_shape
    for p, problem in enumerate(problems):
        own = torch.nonzero(lane_problem == p).flatten()
        losses = torch.nan_to_num(result.best_loss[own], nan=math.inf)
        best_lane = int(own[int(losses.argmin())])
        x = result.best[best_lane].detach().cpu()
        images = torch.nan_to_num(x[:image_dim].view(batch_size, c, h, w), nan=0.0).clamp(0.0, 1.0)
        if problem.labels is None:
            labels = x[image_dim:].view(batch_size, num_classes).argmax(dim=-1)
        else:
            labels = problem.labels.detach().cpu()
        loss = float(result.best_loss[best_lane])
        at_floor = result.floored is not None and bool(result.floored[own].any())
        stopped = "converged" if loss < converged or at_floor else ""
        if not stopped and result.plateaued is not None and bool(result.plateaued[own].any()):
            stopped = "plateau"
        out.append(AttackResult(
            name, images, labels.to(torch.int64), loss,
            int(result.steps[own].sum()), timer.seconds / count, str(target), stopped,
        ))
    return out


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
    init: str = "auto",
    prior: float | None = None,
    floor: float = FLOOR,
) -> AttackResult:
    """DLG: recover ``batch_size`` images and labels from a gradient (L-BFGS, L2 match).

    ``restarts`` lanes run side by side, ``iterations`` steps each; ``converged``: the
    relative gradient distance at which the problem is solved, ``floor``: the stop at the
    float32 floor (see :func:`solve_matching`; both 0: run every step, as the reference
    code does).
    """
    (result,) = solve_matching(
        "dlg", model, [MatchingProblem(observed_gradient, None, seed)], input_shape=input_shape,
        num_classes=num_classes, batch_size=batch_size, iterations=iterations,
        restarts=restarts, device=device, converged=converged, init=init, prior=prior,
        progress=progress, floor=floor,
    )
    return result
