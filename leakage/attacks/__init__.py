"""Gradient-inversion attacks, registered by name in :data:`ATTACKS`.

Every attack takes the model and what the client shared (a gradient as a list of
tensors in ``model.parameters()`` order, or a weight update), never the true data.
:func:`run_attack` runs a registered attack by name; :mod:`leakage.attacks.registry`
says, per attack, its default step count, when it applies and how the observed vector is
prepared for it.

Importing this package loads no torch: the registry is torch-free, and the attack
functions below are imported from their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from leakage.attacks.registry import (
    ATTACK_NAMES,
    ATTACKS,
    Applicability,
    Attack,
    AttackRequest,
    attack_named,
    run_attack,
)

if TYPE_CHECKING:
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

_LAZY: dict[str, str] = {
    "analytic_first_layer": "analytic", "analytic_hidden": "analytic",
    "analytic_unknown_bias": "analytic",
    "AttackResult": "common", "Gradient": "common", "ProgressFn": "common",
    "client_gradients": "common", "client_weight_update": "common",
    "gradient_from_vector": "common", "gradient_from_weights": "common",
    "resolve_device": "common",
    "dlg": "deep_leakage",
    "idlg": "improved_dlg", "infer_label": "improved_dlg", "infer_label_counts": "improved_dlg",
    "FedAvgSpec": "inverting", "inverting_gradients": "inverting",
}

__all__ = [
    "ATTACKS", "ATTACK_NAMES", "Applicability", "Attack", "AttackRequest", "AttackResult",
    "FedAvgSpec", "Gradient", "ProgressFn", "analytic_first_layer", "analytic_hidden",
    "analytic_unknown_bias", "attack_named", "client_gradients", "client_weight_update", "dlg",
    "gradient_from_vector", "gradient_from_weights", "idlg", "infer_label", "infer_label_counts",
    "inverting_gradients", "resolve_device", "run_attack",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'leakage.attacks' has no attribute {name!r}")
    return getattr(importlib.import_module(f"leakage.attacks.{module}"), name)
