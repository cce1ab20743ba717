"""Gradient-inversion attacks and their single dispatch, :func:`run_attack`.

Every attack takes the model and what the client shared (a gradient as a list of
tensors in ``model.parameters()`` order, or a weight update), never the true data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from leakage.attacks.analytic import analytic_first_layer, analytic_hidden, analytic_unknown_bias
from leakage.attacks.common import (
    AttackResult,
    Gradient,
    ProgressFn,
    client_gradients,
    client_weight_update,
    gradient_from_vector,
    gradient_from_weights,
    resolve_device,
)
from leakage.attacks.deep_leakage import dlg
from leakage.attacks.improved_dlg import idlg, infer_label, infer_label_counts
from leakage.attacks.inverting import FedAvgSpec, inverting_gradients
from leakage.errors import AttackConfigError, UnknownNameError

ATTACK_NAMES: tuple[str, ...] = (
    "dlg", "idlg", "ig", "ig-fedavg", "analytic", "analytic-hidden", "analytic-bias",
)
# Default iteration counts: DLG/iDLG count L-BFGS steps (20 inner evaluations each, as
# in the paper's 300); IG counts Adam steps.
DEFAULT_ITERATIONS: dict[str, int] = {"dlg": 300, "idlg": 300, "ig": 2000, "ig-fedavg": 2000}

__all__ = [
    "ATTACK_NAMES", "AttackResult", "FedAvgSpec", "Gradient", "analytic_first_layer",
    "analytic_hidden", "analytic_unknown_bias", "client_gradients", "client_weight_update",
    "dlg", "gradient_from_vector", "gradient_from_weights", "idlg", "infer_label",
    "infer_label_counts", "inverting_gradients", "resolve_device", "run_attack",
]


def run_attack(
    name: str,
    model: nn.Module,
    observed_gradient: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_size: int = 1,
    iterations: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    restarts: int | None = None,
    fedavg: FedAvgSpec | None = None,
    tv_weight: float = 0.2,
    progress: ProgressFn | None = None,
) -> AttackResult:
    """Run attack ``name`` (one of ``ATTACK_NAMES``) on what the client shared.

    For ``ig-fedavg`` pass the weight update ``w_before - w_after`` as
    ``observed_gradient`` and the client's local training as ``fedavg``. Analytic
    attacks run on the CPU in float64 and ignore iterations, restarts and device.
    """
    if name not in ATTACK_NAMES:
        raise UnknownNameError("attack", name, ATTACK_NAMES)
    steps = iterations if iterations is not None else DEFAULT_ITERATIONS.get(name, 1)
    if name in ("dlg", "idlg"):
        attack = dlg if name == "dlg" else idlg
        return attack(model, observed_gradient, input_shape=input_shape,
                      num_classes=num_classes, batch_size=batch_size, iterations=steps,
                      device=device, seed=seed, restarts=restarts or 4, progress=progress)
    if name in ("ig", "ig-fedavg"):
        if name == "ig-fedavg" and fedavg is None:
            raise AttackConfigError("ig-fedavg needs fedavg=FedAvgSpec(lr, local_steps); got None")
        return inverting_gradients(
            model, observed_gradient, input_shape=input_shape, num_classes=num_classes,
            batch_size=batch_size, iterations=steps, device=device, seed=seed,
            restarts=restarts or 4, tv_weight=tv_weight,
            fedavg=fedavg if name == "ig-fedavg" else None, progress=progress,
        )
    analytic = {"analytic": analytic_first_layer, "analytic-hidden": analytic_hidden,
                "analytic-bias": analytic_unknown_bias}[name]
    return analytic(model, observed_gradient, input_shape=input_shape, batch_size=batch_size)
