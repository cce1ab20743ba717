import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from leakage.data import (
    EMBEDDED_FILE,
    EMBEDDED_LARGE_FILE,
    load_cifar,
    load_dataset,
    load_embedded,
    load_embedded_large,
    load_mnist,
    spread_indices,
)
from leakage.errors import DatasetFormatError, DatasetNotFoundError, UnknownNameError


def test_embedded_images_are_small_real_and_labelled():
    data = load_embedded()
    assert data.images.shape == (120, 3, 32, 32)
    assert data.images.dtype == torch.float32 and data.labels.dtype == torch.int64
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0
    assert data.num_classes == 10 and "astronaut" in data.class_names
    assert sorted(data.labels.unique().tolist()) == list(range(10))
    # real photos, not constant patches (a few crops of dark sky are nearly flat)
    spread = data.images.flatten(1).std(1)
    assert float(spread.median()) > 0.05 and float(spread.min()) > 0.005
    assert EMBEDDED_FILE.stat().st_size < 400_000


@pytest.mark.parametrize("resolution", [16, 24, 64])
def test_embedded_resize(resolution):
    data = load_embedded(resolution)
    assert data.images.shape == (120, 3, resolution, resolution)
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0


def test_large_embedded_images_are_real_64x64_crops():
    data = load_embedded_large()
    assert data.images.shape == (30, 3, 64, 64)
    assert sorted(data.labels.unique().tolist()) == list(range(10))
    assert EMBEDDED_LARGE_FILE.stat().st_size < 300_000
    # Native detail: halving then doubling loses far more than it would on an upsampled
    # 32x32 crop (where it loses nothing but interpolation error).
    halved = torch.nn.functional.avg_pool2d(data.images, 2)
    again = torch.nn.functional.interpolate(halved, scale_factor=2, mode="nearest")
    assert float((again - data.images).pow(2).mean()) > 1e-3
    smaller = load_embedded_large(48)
    assert smaller.images.shape == (30, 3, 48, 48)
    assert torch.equal(smaller.labels, data.labels)


def test_spread_indices_cycle_over_classes():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert spread_indices(labels, 4) == [0, 2, 4, 1]


def _write_cifar10(root):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    with (root / "test_batch").open("wb") as f:
        pickle.dump({b"data": data, b"labels": [0, 1, 2, 3, 9]}, f)
    with (root / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return data


def test_cifar10_loader_reads_python_batches(tmp_path):
    raw = _write_cifar10(tmp_path)
    data = load_cifar(tmp_path)
    assert data.images.shape == (5, 3, 32, 32)
    assert data.labels.tolist() == [0, 1, 2, 3, 9]
    assert data.class_names[9] == "c9"
    assert torch.allclose(data.images[0].flatten() * 255, torch.from_numpy(raw[0]).float())


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_mnist_loader_reads_gzipped_idx(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.array([7, 3])))
    data = load_mnist(tmp_path)
    assert data.images.shape == (2, 1, 28, 28)
    assert data.labels.tolist() == [7, 3]
    assert float(data.images[0, 0, 0, 5]) == pytest.approx(5 / 255)


def test_truncated_idx_is_a_format_error(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(np.zeros((2, 28, 28)))[:-10])
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.array([7, 3])))
    with pytest.raises(DatasetFormatError, match="expected 1568 data bytes"):
        load_mnist(tmp_path)


def test_missing_dataset_directory_is_a_typed_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="not one"):
        load_cifar(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="MNIST images"):
        load_mnist(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="needs a local directory"):
        load_dataset("cifar10")
    with pytest.raises(UnknownNameError):
        load_dataset("imagenet")
