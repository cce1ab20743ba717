"""Registers the test protocol ``DealtMasks`` on import, for Ray's worker processes.

Flower's simulation runs client apps in Ray workers, which import the training function
by module name; importing this module there registers the protocol defined in
:mod:`tests.protocols.test_sixth_protocol`, as a deployment's own plug-in module would.
"""

from __future__ import annotations

import numpy as np

import protocols
from tests.protocols.test_sixth_protocol import DealtMasks

N_CLIENTS = 3
N_PARAMS = 50

if DealtMasks.name not in protocols.available():
    protocols.register(DealtMasks)


def train_fn(partition: int, params: np.ndarray, round_id: int) -> tuple[np.ndarray, float]:
    """A stand-in for local training: a seeded update and a sample count per client."""
    rng = np.random.default_rng(1000 * round_id + partition)
    return rng.uniform(-0.5, 0.5, params.size), float(partition + 1)


def updates(round_id: int) -> tuple[list[np.ndarray], list[float]]:
    pairs = [train_fn(i, np.zeros(N_PARAMS), round_id) for i in range(N_CLIENTS)]
    return [u for u, _ in pairs], [w for _, w in pairs]
