"""Minimal PNG writer (zlib + struct only; the GPU box has no PIL or matplotlib).

Writes 8-bit RGB, filter type 0 on every row, one IDAT chunk (PNG spec, ISO/IEC 15948).
"""

from __future__ import annotations

import pathlib
import struct
import zlib

import numpy as np

from leakage.errors import ShapeMismatchError


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an [H, W, 3] uint8 array."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ShapeMismatchError(f"expected an [H, W, 3] uint8 array, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], 1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + _chunk(b"IEND", b""))


def image_grid(rows: list[np.ndarray], *, scale: int = 4, pad: int = 2) -> np.ndarray:
    """Tile rows of [N, C, H, W] float images in [0, 1] (C = 1 or 3) into one RGB array.

    Each pixel becomes a ``scale`` x ``scale`` block so 32x32 images stay visible.
    """
    if not rows:
        raise ShapeMismatchError("expected at least one row of images, got none")
    columns = max(r.shape[0] for r in rows)
    height, width = rows[0].shape[2] * scale, rows[0].shape[3] * scale
    canvas = np.full((pad + len(rows) * (height + pad), pad + columns * (width + pad), 3), 255,
                     np.uint8)
    for i, row in enumerate(rows):
        if row.ndim != 4 or row.shape[1] not in (1, 3):
            raise ShapeMismatchError(f"expected [N, 1|3, H, W] images, got {row.shape}")
        for j, image in enumerate(row):
            pixels = np.clip(np.round(np.asarray(image, np.float64) * 255), 0, 255)
            pixels = np.repeat(pixels.astype(np.uint8), 3 // pixels.shape[0], axis=0)
            block = pixels.transpose(1, 2, 0).repeat(scale, 0).repeat(scale, 1)
            top, left = pad + i * (height + pad), pad + j * (width + pad)
            canvas[top:top + block.shape[0], left:left + block.shape[1]] = block
    return canvas


def write_grid(path: str | pathlib.Path, originals: np.ndarray, reconstructions: np.ndarray,
               *, scale: int = 4) -> pathlib.Path:
    """Write originals (top row) above reconstructions (bottom row) as a PNG."""
    target = pathlib.Path(path)
    target.write_bytes(encode_png(image_grid([originals, reconstructions], scale=scale)))
    return target
