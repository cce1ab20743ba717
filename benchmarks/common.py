"""Helpers every benchmark shares: the environment record, timing, JSON output."""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("numpy", "cryptography", "phe", "gmpy2", "tenseal", "torch", "flwr")


def environment() -> dict[str, Any]:
    """CPU, Python, library versions and thread settings, for the JSON record."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def best_of(fn: Callable[[], object], *, repeat: int = 5, min_time: float = 0.0) -> float:
    """The fastest of ``repeat`` timed calls, in seconds (noise only ever adds time)."""
    best = float("inf")
    started = time.perf_counter()
    runs = 0
    while runs < repeat or time.perf_counter() - started < min_time:
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
        runs += 1
    return best


def write_json(path: Path, record: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    """``rows`` as CSV with ``columns`` in order (keys beyond them are left out)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def int_list(text: str) -> tuple[int, ...]:
    """``"1e3,2,10"`` -> (1000, 2, 10): the grids' command-line syntax."""
    return tuple(int(float(v)) for v in text.split(",") if v.strip())
