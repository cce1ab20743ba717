"""Shared fixtures: seeded simulated updates and fast protocol instances."""

from __future__ import annotations

import numpy as np
import pytest

import protocols
from secagg.protocol import Protocol


def fast_protocol(name: str, **overrides: object) -> Protocol:
    """The protocol ``name`` in its cheap test configuration."""
    cls = protocols.get(name)
    config = {**cls.fast_config, **overrides}
    return cls(**config)


def make_updates(
    n_clients: int, n_params: int, *, value_range: float = 1.0, seed: int = 0
) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-value_range, value_range, n_params) for _ in range(n_clients)]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
