"""Generate ``leakage/embedded_images.npz`` from scikit-image's bundled sample photos.

Dev-time only (needs scikit-image; the package itself never imports it). Uses only
photographs that ship inside the scikit-image wheel (no pooch download) and whose
docstrings in ``skimage.data`` state public domain or CC0:

astronaut (public domain, NASA), chelsea (CC0, Stefan van der Walt), coffee (CC0,
Rachel Michetti), rocket (public domain, SpaceX), hubble_deep_field (public domain,
NASA), retina (CC0 1.0), camera (CC0, Lav Varshney), clock (public domain, Stefan van
der Walt), brick (CC0, cc0textures), gravel (CC0, cc0textures).

Each photo yields ``CROPS_PER_PHOTO`` square crops of random size and position (fixed
seed), area-downsampled to 32x32 RGB (grey photos are repeated over the three channels).
The label of a crop is the index of its source photo. A second, smaller file
(``embedded_images_64.npz``) holds ``LARGE_PER_PHOTO`` crops per photo at 64x64 from
their own draws, for the higher-resolution figures (48x48 is area-downsampled from it by
:func:`leakage.data.load_embedded`). Run from the repository root:

    python -m leakage.make_embedded_data
"""

from __future__ import annotations

import pathlib

import numpy as np

PHOTOS: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
    "retina", "camera", "clock", "brick", "gravel",
)
CROPS_PER_PHOTO = 12
SIZE = 32
SEED = 20190605  # DLG's arXiv date; any fixed value works
OUTPUT = pathlib.Path(__file__).with_name("embedded_images.npz")
LARGE_PER_PHOTO = 3
LARGE_SIZE = 64
LARGE_SEED = SEED + 64
LARGE_OUTPUT = pathlib.Path(__file__).with_name("embedded_images_64.npz")


def _to_rgb_float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3]
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    return np.clip(image.astype(np.float64), 0.0, 1.0)


def _crops(image: np.ndarray, rng: np.random.Generator, *, count: int = CROPS_PER_PHOTO,
           size: int = SIZE) -> list[np.ndarray]:
    from skimage.transform import resize

    height, width = image.shape[:2]
    short = min(height, width)
    out = []
    for _ in range(count):
        # A crop never smaller than the output, so no photo is upsampled.
        side = int(rng.integers(max(short // 6, size), short // 2 + 1))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        patch = image[top:top + side, left:left + side]
        small = resize(patch, (size, size), anti_aliasing=True, order=1)
        out.append(np.clip(np.round(small * 255.0), 0, 255).astype(np.uint8))
    return out


def _write(output: pathlib.Path, *, count: int, size: int, seed: int) -> None:
    import skimage.data

    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(PHOTOS):
        photo = _to_rgb_float(getattr(skimage.data, name)())
        for crop in _crops(photo, rng, count=count, size=size):
            images.append(crop.transpose(2, 0, 1))  # HWC -> CHW
            labels.append(label)
    np.savez_compressed(
        output,
        images=np.stack(images).astype(np.uint8),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=np.asarray(PHOTOS),
    )
    print(f"wrote {output} ({output.stat().st_size} bytes, {len(images)} images)")


def main() -> None:
    _write(OUTPUT, count=CROPS_PER_PHOTO, size=SIZE, seed=SEED)
    _write(LARGE_OUTPUT, count=LARGE_PER_PHOTO, size=LARGE_SIZE, seed=LARGE_SEED)


if __name__ == "__main__":
    main()
