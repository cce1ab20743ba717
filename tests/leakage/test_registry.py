"""The attack registry: one entry per attack, and every caller goes through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from leakage.attacks import ATTACK_NAMES, ATTACKS, Applicability, FedAvgSpec, attack_named, run_attack
from leakage.errors import AttackConfigError, UnknownNameError
from leakage.models import build_model

ROOT = Path(__file__).resolve().parents[2]


def test_names_are_the_registry_keys_and_entries_know_their_name() -> None:
    assert ATTACK_NAMES == tuple(ATTACKS)
    assert len(set(ATTACK_NAMES)) == len(ATTACK_NAMES) >= 7
    for name, attack in ATTACKS.items():
        assert attack.name == name
        assert attack.default_iterations >= 1
        assert attack.shares in ("gradient", "weights")
        assert attack.summary


def test_unknown_name_lists_every_registered_attack() -> None:
    with pytest.raises(UnknownNameError) as info:
        attack_named("gan")
    assert all(name in str(info.value) for name in ATTACKS)


def test_applicability_follows_model_batch_and_update() -> None:
    mlp = build_model("mlp", num_classes=10, in_channels=3, image_size=8, seed=0)
    lenet = build_model("lenet", num_classes=10, in_channels=3, image_size=8, seed=0)
    fedavg = FedAvgSpec(lr=0.1, local_steps=2)
    assert ATTACKS["analytic"].applies(Applicability(mlp, 1))
    assert not ATTACKS["analytic"].applies(Applicability(mlp, 2))
    assert not ATTACKS["analytic"].applies(Applicability(lenet, 1))
    assert not ATTACKS["ig-fedavg"].applies(Applicability(lenet, 1, "gradient"))
    assert ATTACKS["ig-fedavg"].applies(Applicability(lenet, 1, "weights", fedavg))
    assert ATTACKS["idlg"].applies(Applicability(lenet, 4, "weights", fedavg))


def test_preparation_scales_a_gradient_candidate_to_the_weight_update() -> None:
    gradient = [torch.ones(3), torch.full((2,), 2.0)]
    fedavg = FedAvgSpec(lr=0.5, local_steps=2)
    prepared = ATTACKS["ig-fedavg"].prepare(gradient, fedavg)
    assert [t.tolist() for t in prepared] == [[0.5] * 3, [1.0, 1.0]]
    assert [t.tolist() for t in ATTACKS["dlg"].prepare(gradient, fedavg)] == [[1.0] * 3, [2.0, 2.0]]
    with pytest.raises(AttackConfigError):
        ATTACKS["ig-fedavg"].prepare(gradient, None)


def test_run_attack_fills_the_registered_default_iterations() -> None:
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=4, seed=0)
    images = torch.rand(1, 1, 4, 4)
    labels = torch.tensor([3])
    from leakage.attacks import client_gradients

    gradient = client_gradients(model, images, labels)
    result = run_attack("analytic", model, gradient, input_shape=(1, 4, 4), num_classes=10)
    assert result.attack == "analytic"
    assert float((result.images - images).abs().max()) < 1e-4


def test_listing_attack_names_loads_no_torch() -> None:
    code = "import sys, leakage.attacks, leakage.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
