"""Throughput of the fixed-point codec and the PRF, against Flower's mask PRG.

    python -m benchmarks.encoding [--sizes 1e5,1e6,1e7] [--out bench-out]

Writes ``encoding.json``: elements per second for encode, decode, the PRF
(AES-256-CTR keyed by HKDF) for Z_2^32 and Z_2^64, and the mask PRG Flower's SecAgg+
uses (``np.random.RandomState(seed32).randint(0, 2**32 - 1, n, dtype=np.int64)``),
measured in the same run; target: the PRF at >= 100 M uint32 elements/s on one core.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import best_of, environment, write_json
from secagg.encoding import FixedPoint
from secagg.prf import domain, expand, random_seed

TARGET_PRF_ELEMENTS_PER_S = 100e6


def flower_prg(seed32: int, n: int) -> np.ndarray:
    """What Flower 1.42's ``pseudo_rand_gen`` does per parameter (the comparison point)."""
    return np.random.RandomState(seed32).randint(0, 2**32 - 1, n, dtype=np.int64)  # noqa: NPY002


QUICK_SIZES = [100_000]
FULL_SIZES = [100_000, 1_000_000, 10_000_000]


def run(quick: bool = False, sizes: list[int] | None = None) -> dict[str, Any]:
    """Measure every size; ``quick`` keeps to the smallest."""
    if sizes is None:
        sizes = QUICK_SIZES if quick else FULL_SIZES
    seed = random_seed()
    rows = [_measure(n, seed) for n in sizes]
    return {"benchmark": "encoding", "environment": environment(), "rows": rows,
            "target_prf_elements_per_s": TARGET_PRF_ELEMENTS_PER_S}


def _measure(n: int, seed: bytes) -> dict[str, Any]:
    values = np.random.default_rng(0).uniform(-1, 1, n)
    codec32 = FixedPoint(ring_bits=32, frac_bits=16, clip=1.0)
    codec64 = FixedPoint(ring_bits=64, frac_bits=32, clip=1.0)
    encoded = codec32.encode(values)
    label = domain("bench", round_id=0)
    timings = {
        "encode_k32": best_of(lambda: codec32.encode(values)),
        "encode_k64": best_of(lambda: codec64.encode(values)),
        "decode_k32": best_of(lambda: codec32.decode(encoded)),
        "prf_k32": best_of(lambda: expand(seed, label, n, ring_bits=32)),
        "prf_k64": best_of(lambda: expand(seed, label, n, ring_bits=64)),
        "flower_prg_int64": best_of(lambda: flower_prg(12345, n)),
    }
    row: dict[str, Any] = {"n": n}
    for key, seconds in timings.items():
        row[f"{key}_s"] = seconds
        row[f"{key}_elements_per_s"] = n / seconds
    row["prf_k32_vs_flower_prg"] = timings["flower_prg_int64"] / timings["prf_k32"]
    row["prf_k32_meets_target"] = n / timings["prf_k32"] >= TARGET_PRF_ELEMENTS_PER_S
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, FULL_SIZES)))
    parser.add_argument("--quick", action="store_true", help="smallest size only")
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    record = run(quick=args.quick, sizes=None if args.quick else sizes)
    path = write_json(Path(args.out) / "encoding.json", record)
    for row in record["rows"]:
        print(
            f"n={row['n']:>9}  encode32 {row['encode_k32_elements_per_s'] / 1e6:7.1f} M/s  "
            f"prf32 {row['prf_k32_elements_per_s'] / 1e6:7.1f} M/s  "
            f"flower {row['flower_prg_int64_elements_per_s'] / 1e6:7.1f} M/s  "
            f"prf/flower {row['prf_k32_vs_flower_prg']:.1f}x"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
