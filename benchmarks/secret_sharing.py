"""Speed and size of the secret-sharing protocols, against Flower's SecAgg+ mask PRG.

    python -m benchmarks.secret_sharing [--quick] [--out bench-out]

Writes ``secret_sharing.json`` with two tables, every figure measured in this run:

* ``client_step``: per model size n, the two-server client step (fixed-point encode +
  PRF mask + serialise to payload bytes, :class:`TwoServerClient` as the round runs it),
  its framing by the router (header + CRC32, ``wire.encode_message``, the same for
  every protocol) and Flower's mask PRG alone for the same n
  (``np.random.RandomState(seed32).randint(0, 2**32 - 1, n, dtype=np.int64)``), best of
  several runs, and their ratio. Target: ``client_step_vs_flower_prg <= 2``.
* ``rounds``: whole rounds through :func:`secagg.round.run_round` for each case in
  :data:`CASES` over a grid of n (10^4 .. 10^7) and client counts (2 .. 200), with and
  without dropouts: client seconds, server aggregation seconds, unmasking/finalize
  seconds (each also per parameter), bytes up/down per client per parameter, and the
  ratios to Flower's PRG-only time and to Flower's int64 upload (8 bytes/param).
  Cells with n * clients above the grid's cap are skipped (memory: every share is
  held by the in-process router) and listed in ``skipped``.

Hooks for other protocols: append a :class:`Case` to :data:`CASES` (any registered
protocol, any config) to get its round rows, and :func:`register_rows` a function
``(quick) -> list[dict]`` for rows of another shape (a client-step table of its own).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import protocols
from benchmarks.common import best_of, environment, write_json
from protocols.two_server import TwoServer, TwoServerClient
from secagg.protocol import RoundSpec
from secagg.round import run_round
from secagg.router import Dropout
from secagg.wire import encode_message

FLOWER_BYTES_PER_PARAM = 8  # Flower's masked vectors travel as int64
TARGET_CLIENT_STEP_VS_FLOWER = 2.0
DROP_FRACTION = 0.1


@dataclass(frozen=True)
class Case:
    """One protocol configuration in the round grid.

    ``drop_stage``: the stage before which the dropped clients stop (None: the
    protocol's ``late_dropout_stage``); ``label`` names the row (e.g. "secagg+ k=8").
    """

    protocol: str
    label: str
    config: dict[str, Any] = field(default_factory=dict)
    drop_stage: str | None = None


# Two-server clients send everything at "upload": dropping before it is the dropout that
# changes the round (after it, the client has already sent both shares).
CASES: list[Case] = [Case("two-server", "two-server k=32", {"ring_bits": 32}, drop_stage="upload")]

_EXTRA_ROWS: list[tuple[str, Callable[[bool], list[dict[str, Any]]]]] = []


def register_rows(name: str, rows: Callable[[bool], list[dict[str, Any]]]) -> None:
    """Add a table ``name`` to the record, filled by ``rows(quick)``."""
    if any(existing == name for existing, _ in _EXTRA_ROWS) or name in ("client_step", "rounds"):
        raise ValueError(f"table {name!r} is already registered")
    _EXTRA_ROWS.append((name, rows))


def flower_prg(seed32: int, n: int) -> np.ndarray:
    """Flower 1.42's ``pseudo_rand_gen`` per parameter: the comparison point."""
    return np.random.RandomState(seed32).randint(0, 2**32 - 1, n, dtype=np.int64)  # noqa: NPY002


def _grid(quick: bool) -> tuple[list[int], list[int], int]:
    if quick:
        return [10_000, 100_000], [2, 10], 10**6
    return [10_000, 100_000, 1_000_000, 10_000_000], [2, 10, 50, 200], 5 * 10**7


def client_step_rows(sizes: list[int], *, repeat: int = 5) -> list[dict[str, Any]]:
    """The two-server client step against Flower's PRG for each n."""
    rows = []
    protocol = TwoServer()
    codec = protocol.config.codec()
    for n in sizes:
        update = np.random.default_rng(n).uniform(-1, 1, n)
        client = TwoServerClient(
            0, update, RoundSpec(1, 2, n), codec, protocol.server_b_public_key, protocol.session_nonce
        )

        def step(client: TwoServerClient = client) -> list[bytes]:
            return [e.payload.to_bytes() for e in client.step("upload", [])]

        envelopes = client.step("upload", [])

        def frame(envelopes: list[Any] = envelopes) -> None:
            for e in envelopes:
                encode_message(protocol_id=30, round_id=1, sender=0, recipient=e.recipient, payload=e.payload)

        ratio_target = TARGET_CLIENT_STEP_VS_FLOWER
        seconds = {
            "flower_prg": best_of(partial(flower_prg, 12345, n), repeat=repeat),
            "client_step": best_of(step, repeat=repeat),
            "framing": best_of(frame, repeat=repeat),
        }
        upload = sum(len(e.payload.to_bytes()) for e in envelopes)
        rows.append(
            {
                "n": n,
                **{f"{k}_s": v for k, v in seconds.items()},
                "client_step_ns_per_param": seconds["client_step"] / n * 1e9,
                "client_step_vs_flower_prg": seconds["client_step"] / seconds["flower_prg"],
                "client_step_with_framing_vs_flower_prg": (seconds["client_step"] + seconds["framing"])
                / seconds["flower_prg"],
                "meets_target": seconds["client_step"] / seconds["flower_prg"] <= ratio_target,
                "payload_bytes_per_param": upload / n,
                "payload_bytes_vs_flower": upload / (FLOWER_BYTES_PER_PARAM * n),
            }
        )
    return rows


def round_rows(
    quick: bool, flower_seconds: dict[int, float], *, repeat: int = 3
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Whole rounds of every case in :data:`CASES` over the grid."""
    sizes, client_counts, cap = _grid(quick)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for case in CASES:
        if case.protocol not in protocols.available():
            skipped.append({"case": case.label, "reason": "protocol not registered"})
            continue
        protocol = protocols.create(case.protocol, **case.config)
        drop_stage = case.drop_stage or protocol.late_dropout_stage
        for n in sizes:
            flower_s = flower_seconds.get(n) or best_of(partial(flower_prg, 12345, n), repeat=3)
            update = np.random.default_rng(n).uniform(-1, 1, n)
            for n_clients in client_counts:
                if n * n_clients > cap:
                    skipped.append({"case": case.label, "n": n, "clients": n_clients, "reason": "above cap"})
                    continue
                n_drop = max(1, int(DROP_FRACTION * n_clients)) if n_clients >= 3 else 0
                for dropped in sorted({0, n_drop}):
                    faults = [Dropout(c, drop_stage) for c in range(n_clients - dropped, n_clients)]
                    # One update array for every client: timing does not depend on its values.
                    # Each figure is the best of `repeat` rounds (noise only ever adds time).
                    results = [
                        run_round(protocol, [update] * n_clients, faults=faults, round_id=1)
                        for _ in range(repeat if n * n_clients <= 10**7 else 1)
                    ]
                    result = results[-1]
                    costs = result.costs
                    row: dict[str, Any] = {
                        "case": case.label,
                        "protocol": case.protocol,
                        "n": n,
                        "clients": n_clients,
                        "dropped": dropped,
                        "drop_stage": drop_stage if dropped else None,
                        "error": None if result.error is None else repr(result.error),
                        "included": len(result.included),
                        "client_s": min(r.costs.client_seconds() for r in results),
                        "server_s": min(r.costs.server_seconds() for r in results),
                        "finalize_s": min(r.costs.finalize_seconds() for r in results),
                        "repeats": len(results),
                        "bytes_up_per_param": costs.bytes_per_param(),
                        "bytes_down_per_param": costs.bytes_down_per_client() / n,
                        "flower_prg_s": flower_s,
                    }
                    row["client_ns_per_param"] = row["client_s"] / n * 1e9
                    row["server_ns_per_param"] = row["server_s"] / n * 1e9
                    row["finalize_ns_per_param"] = row["finalize_s"] / n * 1e9
                    row["client_vs_flower_prg"] = row["client_s"] / flower_s
                    row["bytes_up_vs_flower_int64"] = row["bytes_up_per_param"] / FLOWER_BYTES_PER_PARAM
                    rows.append(row)
    return rows, skipped


def run(quick: bool = False) -> dict[str, Any]:
    sizes, _, _ = _grid(quick)
    step_rows = client_step_rows(sizes, repeat=3 if quick else 7)
    flower_seconds = {row["n"]: row["flower_prg_s"] for row in step_rows}
    rows, skipped = round_rows(quick, flower_seconds)
    record: dict[str, Any] = {
        "benchmark": "secret_sharing",
        "environment": environment(),
        "quick": quick,
        "target_client_step_vs_flower_prg": TARGET_CLIENT_STEP_VS_FLOWER,
        "flower_bytes_per_param": FLOWER_BYTES_PER_PARAM,
        "client_step": step_rows,
        "rounds": rows,
        "skipped": skipped,
    }
    for name, extra in _EXTRA_ROWS:
        record[name] = extra(quick)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid (CI)")
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args(argv)
    record = run(args.quick)
    path = write_json(Path(args.out) / "secret_sharing.json", record)
    for row in record["client_step"]:
        print(
            f"client step n={row['n']:>9}: {row['client_step_s'] * 1e3:8.2f} ms  "
            f"flower PRG {row['flower_prg_s'] * 1e3:8.2f} ms  ratio {row['client_step_vs_flower_prg']:.2f}  "
            f"(+framing {row['client_step_with_framing_vs_flower_prg']:.2f})  "
            f"{row['payload_bytes_per_param']:.3f} B/param ({row['payload_bytes_vs_flower']:.2f}x flower)"
        )
    for row in record["rounds"]:
        print(
            f"{row['case']:<18} n={row['n']:>9} clients={row['clients']:>3} drop={row['dropped']:>2}  "
            f"client {row['client_ns_per_param']:6.2f} ns/p ({row['client_vs_flower_prg']:.2f}x flower)  "
            f"server {row['server_ns_per_param']:8.2f} ns/p  "
            f"finalize {row['finalize_ns_per_param']:7.2f} ns/p  up {row['bytes_up_per_param']:.3f} B/p"
            + (f"  ERROR {row['error']}" if row["error"] else "")
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
