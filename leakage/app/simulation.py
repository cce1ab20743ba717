"""The simulated federation: a seeded model and clients holding real embedded images.

:func:`simulate` gives every client a batch of the embedded 32x32 images (distinct
classes first) and computes what each would send: its gradient (FedSGD, Zhu, Liu, Han
2019's setting) and its weights after one local SGD step (FedAvg). The clients' images
and labels are kept apart as :class:`leakage.assess.ClientData`, the ground truth that
only scores reconstructions; the attacker never receives it.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from leakage.app.settings import Settings
from leakage.assess import ClientData, UpdateKind
from leakage.attacks import FedAvgSpec, client_gradients, client_weight_update
from leakage.attacks.common import resolve_device
from leakage.errors import AttackConfigError


@dataclass(eq=False)
class Simulation:
    """The clients' private data and what each would send: gradients, or weights after
    one local SGD step; ``w_before`` is the global model the server sent."""

    model: torch.nn.Module
    truth: ClientData
    originals: torch.Tensor
    class_names: tuple[str, ...]
    gradients: list[np.ndarray]
    weights_after: list[np.ndarray]
    w_before: np.ndarray
    fedavg: FedAvgSpec

    @property
    def n_params(self) -> int:
        return int(self.w_before.size)

    def updates_for(self, aggregate_kind: str) -> tuple[list[np.ndarray], UpdateKind]:
        """What clients send to a protocol whose aggregate is ``aggregate_kind``: weights
        for a weighted mean (FedAvg), gradients for a sum (FedSGD)."""
        if aggregate_kind == "weighted_mean":
            return self.weights_after, UpdateKind("weights", self.fedavg)
        return self.gradients, UpdateKind()

    def originals_record(self) -> list[dict[str, Any]]:
        return [
            {
                "client": c,
                "labels": [int(v) for v in self.truth.labels[c]],
                "classes": [self.class_names[int(v)] for v in self.truth.labels[c]],
            }
            for c in sorted(self.truth.labels)
        ]


def configure_device(settings: Settings) -> torch.device:
    """Resolve ``settings.device`` and set the CPU thread count."""
    device = resolve_device(settings.device)
    if settings.threads >= 1:
        torch.set_num_threads(settings.threads)
    return device


def simulate(settings: Settings) -> Simulation:
    """Seeded model and clients on the embedded images (distinct classes first)."""
    from leakage.data import load_embedded, spread_indices
    from leakage.models import build_model

    data = load_embedded(settings.image_size)
    count = settings.clients * settings.batch
    if count > len(data):
        raise AttackConfigError(f"expected at most {len(data)} images in all, got {count}")
    chosen = data.select(spread_indices(data.labels, count))
    b = settings.batch
    images = {c: chosen.images[c * b : (c + 1) * b] for c in range(settings.clients)}
    labels = {c: chosen.labels[c * b : (c + 1) * b] for c in range(settings.clients)}
    model = build_model(
        settings.model,
        num_classes=data.num_classes,
        in_channels=int(chosen.images.shape[1]),
        image_size=settings.image_size,
        seed=settings.seed,
        width=settings.width,
    )
    gradients = [flat(client_gradients(model, images[c], labels[c])) for c in range(settings.clients)]
    weights_after = [
        flat(client_weight_update(model, images[c], labels[c], lr=settings.lr)[1])
        for c in range(settings.clients)
    ]
    return Simulation(
        model,
        ClientData(images, labels),
        chosen.images,
        data.class_names,
        gradients,
        weights_after,
        flat(list(model.parameters())),
        FedAvgSpec(lr=settings.lr, local_steps=1),
    )


def environment(device: torch.device) -> dict[str, Any]:
    """Where the run happened (versions, platform, cores, torch threads, device)."""
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }


def flat(vectors: Sequence[torch.Tensor]) -> np.ndarray:
    """Tensors concatenated into one float64 vector (the order of ``model.parameters()``)."""
    return torch.cat([v.detach().flatten().double() for v in vectors]).numpy()
