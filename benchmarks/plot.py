"""Log-log line plots written as PNG with numpy and zlib only (no matplotlib here).

A plot is drawn on an RGB canvas: grid lines at powers of ten, one coloured polyline
with square markers per series, a legend, and labels in a built-in 3x5 pixel font
(upper case, digits and a few symbols; lower case is drawn as upper case), scaled 2x.
The PNG encoder is :func:`leakage.png.encode_png`'s format, re-implemented here so the
benchmarks do not import torch for a picture.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

PALETTE = (
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)

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


def _line(
    canvas: np.ndarray,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    color: tuple[int, int, int],
    width: int = 1,
) -> None:
    steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.rint(np.linspace(x0, x1, steps)).astype(int)
    ys = np.rint(np.linspace(y0, y1, steps)).astype(int)
    for dx in range(-(width // 2), width - width // 2):
        for dy in range(-(width // 2), width - width // 2):
            px, py = xs + dx, ys + dy
            keep = (px >= 0) & (py >= 0) & (px < canvas.shape[1]) & (py < canvas.shape[0])
            canvas[py[keep], px[keep]] = color


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an [H, W, 3] uint8 array (8-bit truecolour, filter 0, one IDAT)."""
    height, width = rgb.shape[:2]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], 1)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + chunk(b"IEND", b"")
    )


def loglog_png(
    path: Path,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 760,
    height: int = 440,
) -> Path | None:
    """Write a log-log plot of ``series`` (name -> [(x, y)]) to ``path``; None if no data."""
    points = [(x, y) for values in series.values() for x, y in values if x > 0 and y > 0]
    if not points:
        return None
    left, right, top, bottom = 70, 200, 34, 44
    x_lo = math.floor(math.log10(min(p[0] for p in points)))
    x_hi = max(math.ceil(math.log10(max(p[0] for p in points))), x_lo + 1)
    y_lo = math.floor(math.log10(min(p[1] for p in points)))
    y_hi = max(math.ceil(math.log10(max(p[1] for p in points))), y_lo + 1)
    plot_w, plot_h = width - left - right, height - top - bottom
    canvas = np.full((height, width, 3), 255, np.uint8)

    def sx(x: float) -> float:
        return left + (math.log10(x) - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (math.log10(y) - y_lo) / (y_hi - y_lo) * plot_h

    for e in range(x_lo, x_hi + 1):
        _line(canvas, sx(10.0**e), top, sx(10.0**e), top + plot_h, (230, 230, 230))
        draw_text(canvas, f"1E{e}", int(sx(10.0**e)) - 12, top + plot_h + 8)
    for e in range(y_lo, y_hi + 1):
        _line(canvas, left, sy(10.0**e), left + plot_w, sy(10.0**e), (230, 230, 230))
        label = f"1E{e}"
        draw_text(canvas, label, left - 8 - 8 * len(label), int(sy(10.0**e)) - 5)
    for x0, y0, x1, y1 in (
        (left, top, left + plot_w, top),
        (left, top + plot_h, left + plot_w, top + plot_h),
        (left, top, left, top + plot_h),
        (left + plot_w, top, left + plot_w, top + plot_h),
    ):
        _line(canvas, x0, y0, x1, y1, (120, 120, 120))
    draw_text(canvas, title, left, 10, scale=2, color=(0, 0, 0))
    draw_text(canvas, xlabel, left + plot_w // 2 - 4 * len(xlabel), height - 16)
    draw_text(canvas, ylabel, 6, top + plot_h // 2 + 4 * len(ylabel), vertical=True)
    for index, (name, values) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        usable = sorted((x, y) for x, y in values if x > 0 and y > 0)
        for (xa, ya), (xb, yb) in zip(usable, usable[1:]):
            _line(canvas, sx(xa), sy(ya), sx(xb), sy(yb), color, width=2)
        for x, y in usable:
            cx, cy = int(sx(x)), int(sy(y))
            canvas[max(0, cy - 2) : cy + 3, max(0, cx - 2) : cx + 3] = color
        ly = top + 6 + 16 * index
        _line(canvas, width - right + 10, ly + 4, width - right + 26, ly + 4, color, width=3)
        draw_text(canvas, name[:20], width - right + 32, ly, color=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(canvas))
    return path
