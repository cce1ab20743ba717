"""Every registered protocol's cost over a grid of model sizes and client counts.

    python -m benchmarks.costs [--quick] [--out bench-out] [--sizes 1e3,1e4] [--clients 2,10]
        [--max-point-seconds 120]

For each (parameters, clients) point, every protocol in ``protocols.available()`` runs
one round through :func:`secagg.round.run_round` on seeded random updates (real keys,
real bytes), and so does the plaintext baseline (``protocols.baseline()``) at the same
point in the same run. Recorded per point: seconds per party role and stage (clients:
the mean client; ``server``, ``server-b``, ``key-holder``), the same per parameter,
bytes uploaded per client per parameter, and the ratios against the baseline — time
(client, server, reveal) and bytes (expansion over plaintext float32).

The full grid is parameters 10^3..10^7 and clients 2..200 with each protocol's secure
default configuration; points whose clients x parameters exceed ``max_elements``
(memory) are skipped, and a protocol's point projected (linearly in clients x
parameters from its previous points) past ``max_point_seconds`` is skipped too — the
JSON lists every skipped point and why. ``--quick`` (CI) is parameters 10^3, 10^4 and
2, 4 clients with each protocol's ``fast_config``.

Writes ``costs.json`` (environment, grid, rows, skipped) and ``costs.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import environment, int_list, write_csv, write_json

FULL_SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
FULL_CLIENTS = (2, 10, 50, 200)
QUICK_SIZES = (1_000, 10_000)
QUICK_CLIENTS = (2, 4)
MAX_ELEMENTS = 200_000_000  # clients x parameters held as float64 updates (1.6 GB)
CSV_COLUMNS = (
    "protocol",
    "n_params",
    "n_clients",
    "config",
    "client_s",
    "server_s",
    "finalize_s",
    "setup_s",
    "bytes_per_param",
    "client_s_per_param",
    "server_s_per_param",
    "expansion_over_plaintext",
    "client_time_ratio",
    "server_time_ratio",
    "finalize_time_ratio",
    "max_abs_error",
)


def _role(pid: int) -> str:
    from secagg.party import is_client, party_name

    return "client" if is_client(pid) else party_name(pid)


def measure(protocol: Any, n_params: int, n_clients: int, *, seed: int = 0) -> dict[str, Any]:
    """One round at one grid point: the round's cost record (:class:`secagg.costs.RoundCosts`)
    plus seconds per role and stage and the wall time."""
    from secagg.costs import round_costs
    from secagg.round import run_round

    rng = np.random.default_rng(seed)  # simulation data only
    updates = [rng.uniform(-0.5, 0.5, n_params) for _ in range(n_clients)]
    weights = (
        [float(w) for w in rng.integers(1, 10, n_clients)]
        if protocol.aggregate_kind == "weighted_mean"
        else None
    )
    started = time.perf_counter()
    result = run_round(protocol, updates, weights=weights)
    wall = time.perf_counter() - started
    result.unwrap()
    costs = round_costs(result, updates, weights=weights, value_range=0.5)
    stages: dict[str, dict[str, float]] = {}
    for pid, per_stage in result.costs.seconds.items():
        role = _role(pid)
        share = 1.0 / n_clients if role == "client" else 1.0  # the mean client
        target = stages.setdefault(role, {})
        for stage, seconds in per_stage.items():
            target[stage] = target.get(stage, 0.0) + seconds * share
    return {
        "protocol": protocol.name,
        "n_params": n_params,
        "n_clients": n_clients,
        **costs.as_dict(),
        "wall_s": wall,
        "seconds_by_role_stage": stages,
        "seconds_per_param_by_role_stage": {
            role: {s: v / n_params for s, v in per.items()} for role, per in stages.items()
        },
        "client_s_per_param": costs.client_s / n_params,
        "server_s_per_param": costs.server_s / n_params,
        "_costs": costs,
    }


def _ratio(value: float, base: float) -> float | None:
    return value / base if base > 0 else None


def run(
    quick: bool = False,
    *,
    sizes: Sequence[int] | None = None,
    clients: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    max_point_seconds: float = 120.0,
    max_elements: int = MAX_ELEMENTS,
    progress: bool = False,
) -> dict[str, Any]:
    """The grid as a JSON-ready record (``quick``: the CI grid with fast configs)."""
    import protocols
    from secagg.costs import Projection, fast_or_default

    sizes = tuple(sizes or (QUICK_SIZES if quick else FULL_SIZES))
    clients = tuple(clients or (QUICK_CLIENTS if quick else FULL_CLIENTS))
    names = list(names or protocols.available())
    base = protocols.baseline()
    if base not in names:
        names.insert(0, base)
    instances = {name: fast_or_default(protocols.get(name), fast=quick) for name in names}
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    projections = {name: Projection() for name in names}  # from each protocol's previous points
    for n_clients in sorted(clients):
        for n_params in sorted(sizes):
            if n_clients * n_params > max_elements:
                skipped.append(
                    {
                        "n_params": n_params,
                        "n_clients": n_clients,
                        "protocol": "*",
                        "why": f"{n_clients} x {n_params} updates exceed {max_elements} elements",
                    }
                )
                continue
            baseline: dict[str, Any] | None = None
            for name in [base] + [n for n in names if n != base]:
                projected = projections[name].seconds(n_clients, n_params)
                if projected is not None and projected > max_point_seconds:
                    skipped.append(
                        {
                            "n_params": n_params,
                            "n_clients": n_clients,
                            "protocol": name,
                            "why": f"projected {projected:.0f} s > {max_point_seconds:g} s",
                        }
                    )
                    continue
                if progress:
                    print(f"costs: {name} {n_params} params x {n_clients} clients", flush=True)
                try:
                    row = measure(instances[name], n_params, n_clients)
                except Exception as exc:  # noqa: BLE001 - a protocol's refusal is a result, recorded
                    skipped.append(
                        {
                            "n_params": n_params,
                            "n_clients": n_clients,
                            "protocol": name,
                            "why": f"{type(exc).__name__}: {exc}",
                        }
                    )
                    continue
                projections[name].record(row.pop("_costs"), n_clients, n_params)
                row["config"] = "fast_config" if quick else "default"
                row["config_values"] = dataclasses.asdict(instances[name].config)
                if name == base:
                    baseline = row
                if baseline is not None:
                    row["expansion_over_plaintext"] = _ratio(
                        row["bytes_per_param"], baseline["bytes_per_param"]
                    )
                    row["client_time_ratio"] = _ratio(row["client_s"], baseline["client_s"])
                    row["server_time_ratio"] = _ratio(row["server_s"], baseline["server_s"])
                    row["finalize_time_ratio"] = _ratio(row["finalize_s"], baseline["finalize_s"])
                rows.append(row)
    return {
        "benchmark": "costs",
        "environment": environment(),
        "quick": quick,
        "baseline": base,
        "grid": {
            "sizes": list(sizes),
            "clients": list(clients),
            "protocols": names,
            "max_point_seconds": max_point_seconds,
            "max_elements": max_elements,
        },
        "rows": rows,
        "skipped": skipped,
    }

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--sizes", type=int_list, default=None)
    parser.add_argument("--clients", type=int_list, default=None)
    parser.add_argument("--protocols", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--max-point-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.protocols.split(",")] if args.protocols else None
    record = run(
        args.quick,
        sizes=args.sizes,
        clients=args.clients,
        names=names,
        max_point_seconds=args.max_point_seconds,
        progress=True,
    )
    out = Path(args.out)
    write_json(out / "costs.json", record)
    write_csv(out / "costs.csv", record["rows"], CSV_COLUMNS)
    print(
        f"{'protocol':<18} {'params':>9} {'clients':>7} {'bytes/param':>11} {'x plain':>8} "
        f"{'client s':>9} {'x plain':>9}"
    )
    for row in record["rows"]:
        expansion = row.get("expansion_over_plaintext")
        ratio = row.get("client_time_ratio")
        print(
            f"{row['protocol']:<18} {row['n_params']:>9} {row['n_clients']:>7} "
            f"{row['bytes_per_param']:>11.2f} "
            f"{expansion if expansion is not None else float('nan'):>8.2f} {row['client_s']:>9.4f} "
            f"{ratio if ratio is not None else float('nan'):>9.1f}"
        )
    print(f"wrote {out / 'costs.json'} and {out / 'costs.csv'} ({len(record['skipped'])} points skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
