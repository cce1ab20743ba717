"""The one raster module: a minimal PNG writer, a 3x5 bitmap font and line drawing.

numpy, zlib and struct only (the GPU box has no PIL or matplotlib, and nothing here
loads torch, so the benchmarks' plots use it too). PNGs are 8-bit RGB, filter type 0 on
every row, one IDAT chunk (PNG spec, ISO/IEC 15948). Text is drawn in a built-in 3x5
pixel font (upper case, digits and a few symbols; lower case is drawn as upper case).
"""

from __future__ import annotations

import pathlib
import struct
import zlib

import numpy as np

from leakage.errors import ShapeMismatchError

# 3x5 glyphs, one string of 15 bits per character, rows top to bottom.
_FONT = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001001001001",
    "8": "111101111101111",
    "9": "111101111001111",
    "A": "010101111101101",
    "B": "110101110101110",
    "C": "011100100100011",
    "D": "110101101101110",
    "E": "111100110100111",
    "F": "111100110100100",
    "G": "011100101101011",
    "H": "101101111101101",
    "I": "111010010010111",
    "J": "001001001101010",
    "K": "101101110101101",
    "L": "100100100100111",
    "M": "101111111101101",
    "N": "110101101101101",
    "O": "010101101101010",
    "P": "110101110100100",
    "Q": "010101101110011",
    "R": "110101110101101",
    "S": "011100010001110",
    "T": "111010010010010",
    "U": "101101101101111",
    "V": "101101101101010",
    "W": "101101111111101",
    "X": "101101010101101",
    "Y": "101101010010010",
    "Z": "111001010100111",
    "-": "000000111000000",
    ".": "000000000000010",
    "/": "001001010100100",
    "(": "010100100100010",
    ")": "010001001001010",
    "+": "000010111010000",
    ":": "000010000010000",
    "=": "000111000111000",
    "_": "000000000000111",
    ",": "000000000010100",
    "%": "101001010100101",
    " ": "000000000000000",
}


def _glyph(char: str) -> np.ndarray:
    bits = _FONT.get(char.upper(), "111101101101111")  # unknown characters: a box
    return np.array([int(b) for b in bits], dtype=bool).reshape(5, 3)


def draw_text(
    canvas: np.ndarray,
    text: str,
    x: int,
    y: int,
    *,
    scale: int = 2,
    color: tuple[int, int, int] = (40, 40, 40),
    vertical: bool = False,
) -> None:
    """Write ``text`` with its top-left corner at (x, y); ``vertical`` runs bottom to top."""
    for index, char in enumerate(text):
        glyph = _glyph(char).repeat(scale, 0).repeat(scale, 1)
        if vertical:
            glyph = np.rot90(glyph)
            top, left = y - (index + 1) * 4 * scale, x
        else:
            top, left = y, x + index * 4 * scale
        h, w = glyph.shape
        if top < 0 or left < 0 or top + h > canvas.shape[0] or left + w > canvas.shape[1]:
            continue
        region = canvas[top : top + h, left : left + w]
        region[glyph] = color


def draw_line(
    canvas: np.ndarray,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    color: tuple[int, int, int],
    width: int = 1,
    *,
    dashed: bool = False,
) -> None:
    """A straight line from (x0, y0) to (x1, y1); pixels off the canvas are skipped."""
    steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.rint(np.linspace(x0, x1, steps)).astype(int)
    ys = np.rint(np.linspace(y0, y1, steps)).astype(int)
    if dashed:  # 4 pixels on, 4 off
        keep = (np.arange(steps) // 4) % 2 == 0
        xs, ys = xs[keep], ys[keep]
    for dx in range(-(width // 2), width - width // 2):
        for dy in range(-(width // 2), width - width // 2):
            px, py = xs + dx, ys + dy
            keep = (px >= 0) & (py >= 0) & (px < canvas.shape[1]) & (py < canvas.shape[0])
            canvas[py[keep], px[keep]] = color



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
