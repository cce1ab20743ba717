from __future__ import annotations

import numpy as np
import pytest

from secagg.errors import ConfigError
from secagg.flat import flatten, unflatten


class FakeTensor:
    """Quacks like a torch tensor without importing torch."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def detach(self) -> FakeTensor:
        return self

    def cpu(self) -> FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        return self._array


def test_state_dict_round_trip() -> None:
    state = {
        "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "conv.bias": np.ones(2, np.float32),
    }
    vector, spec = flatten(state)
    assert vector.dtype == np.float64 and vector.size == 26
    back = unflatten(vector, spec)
    for name, array in state.items():
        assert back[name].dtype == array.dtype
        assert np.array_equal(back[name], array)


def test_tensor_likes_and_lists() -> None:
    vector, spec = flatten([FakeTensor(np.ones((2, 2))), np.zeros(3)])
    assert vector.tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert [t.name for t in spec.tensors] == ["0", "1"]


def test_torch_tensors_if_available() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 2)
    vector, spec = flatten(model.state_dict())
    assert vector.size == 8
    back = unflatten(vector, spec)
    assert np.allclose(back["weight"], model.weight.detach().numpy())


def test_wrong_length_raises() -> None:
    _, spec = flatten([np.ones(3)])
    with pytest.raises(ConfigError, match="3 values"):
        unflatten(np.ones(4), spec)
    with pytest.raises(ConfigError, match="tensor"):
        flatten([object()])
