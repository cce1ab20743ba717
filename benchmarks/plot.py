"""Log-log line plots written as PNG with numpy only (no matplotlib here).

A plot is drawn on an RGB canvas: grid lines at powers of ten, one coloured polyline
with square markers per series, a legend, and labels in a built-in 3x5 pixel font
(upper case, digits and a few symbols; lower case is drawn as upper case), scaled 2x.
Font, lines and the PNG encoder are :mod:`leakage.png`'s (numpy and zlib only; no torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from leakage.png import draw_line, draw_text, encode_png

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
        draw_line(canvas, sx(10.0**e), top, sx(10.0**e), top + plot_h, (230, 230, 230))
        draw_text(canvas, f"1E{e}", int(sx(10.0**e)) - 12, top + plot_h + 8)
    for e in range(y_lo, y_hi + 1):
        draw_line(canvas, left, sy(10.0**e), left + plot_w, sy(10.0**e), (230, 230, 230))
        label = f"1E{e}"
        draw_text(canvas, label, left - 8 - 8 * len(label), int(sy(10.0**e)) - 5)
    for x0, y0, x1, y1 in (
        (left, top, left + plot_w, top),
        (left, top + plot_h, left + plot_w, top + plot_h),
        (left, top, left, top + plot_h),
        (left + plot_w, top, left + plot_w, top + plot_h),
    ):
        draw_line(canvas, x0, y0, x1, y1, (120, 120, 120))
    draw_text(canvas, title, left, 10, scale=2, color=(0, 0, 0))
    draw_text(canvas, xlabel, left + plot_w // 2 - 4 * len(xlabel), height - 16)
    draw_text(canvas, ylabel, 6, top + plot_h // 2 + 4 * len(ylabel), vertical=True)
    for index, (name, values) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        usable = sorted((x, y) for x, y in values if x > 0 and y > 0)
        for (xa, ya), (xb, yb) in zip(usable, usable[1:]):
            draw_line(canvas, sx(xa), sy(ya), sx(xb), sy(yb), color, width=2)
        for x, y in usable:
            cx, cy = int(sx(x)), int(sy(y))
            canvas[max(0, cy - 2) : cy + 3, max(0, cx - 2) : cx + 3] = color
        ly = top + 6 + 16 * index
        draw_line(canvas, width - right + 10, ly + 4, width - right + 26, ly + 4, color, width=3)
        draw_text(canvas, name[:20], width - right + 32, ly, color=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(canvas))
    return path
