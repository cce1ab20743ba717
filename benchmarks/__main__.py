"""One entry point for every benchmark: ``python -m benchmarks`` (also ``secagg bench``).

    python -m benchmarks [--quick] [--out bench-out] [--only costs,paillier] [--skip flower]
        [--sizes 1e3,1e4] [--clients 2,10]

Runs each module of :data:`MODULES` that is present and exposes ``run(quick: bool) ->
dict`` (a missing module, or one without ``run``, is skipped with a note; one that
raises is recorded with its error and the rest go on), then the protocol cost sweep of
:mod:`benchmarks.costs` (``--sizes``/``--clients`` override its grid). Writes into
``--out``:

- ``<module>.json``: each module's own record;
- ``bench.json``: ``{"schema": "secagg-bench/2", "benchmark": "all", "environment",
  "quick", "modules": {name: {"status": "ok" | "error", "seconds", "json", "note"}},
  "costs": <the costs record: grid, rows, skipped>, "plots": [file names]}``; each
  cost row carries :class:`secagg.costs.RoundCosts` under its names (``client_s``,
  ``server_s``, ...: the names of ``secagg aggregate --json`` and ``results.json``).
  Version 2 (from the unversioned 1): every measure has that one name in every
  module's JSON (``server_aggregate_s`` is ``server_s``, ``client_encode_s`` is
  ``client_s``), and cost rows carry the whole record;
- ``bench.csv``: the cost sweep, one row per protocol x parameters x clients, columns
  :data:`benchmarks.costs.CSV_COLUMNS` (ratios against ``plaintext-fedsgd`` measured
  at the same point of the same run);
- PNG plots (log-log): ``client_seconds_per_param.png``, ``server_seconds_per_param.png``,
  ``bytes_per_param.png``, ``expansion_over_plaintext.png``, ``client_time_ratio.png``
  (against the smallest client count of the grid), and ``stages_<protocol>.png``
  (seconds per parameter per party role and stage).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import environment, int_list, write_csv, write_json

BENCH_SCHEMA = "secagg-bench/2"
MODULES: tuple[str, ...] = (
    "encoding",
    "paillier",
    "ckks",
    "secret_sharing",
    "pairwise",
    "attacks",
    "defenses",
    "aggregate_leakage",
    "malicious",
    "flower",
    "ddp",
)


def _stamp(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_module(name: str, quick: bool, out: Path) -> dict[str, Any]:
    """Run ``benchmarks.<name>.run(quick)``; returns its status entry."""
    started = time.perf_counter()
    try:
        # A missing or broken module is an error entry, never a silent skip.
        module = importlib.import_module(f"benchmarks.{name}")
        runner = getattr(module, "run", None)
        if not callable(runner):
            raise TypeError(f"benchmarks.{name} has no run(quick)")
        record = runner(quick=quick)
    except Exception as exc:  # noqa: BLE001 - one failing benchmark must not stop the others
        return {
            "status": "error",
            "seconds": time.perf_counter() - started,
            "json": None,
            "note": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=5),
        }
    path = write_json(out / f"{name}.json", record if isinstance(record, dict) else {"result": record})
    return {"status": "ok", "seconds": time.perf_counter() - started, "json": path.name, "note": ""}


def plot_costs(record: dict[str, Any], out: Path) -> list[str]:
    """The cost sweep's PNG plots; returns the file names written."""
    from benchmarks.plot import loglog_png

    rows = record["rows"]
    if not rows:
        return []
    fewest = min(r["n_clients"] for r in rows)
    at_fewest = [r for r in rows if r["n_clients"] == fewest]
    written: list[str] = []

    def series(key: str) -> dict[str, list[tuple[float, float]]]:
        found: dict[str, list[tuple[float, float]]] = {}
        for row in at_fewest:
            value = row.get(key)
            if isinstance(value, (int, float)):
                found.setdefault(row["protocol"], []).append((float(row["n_params"]), float(value)))
        return found

    plots = (
        ("client_seconds_per_param.png", "client_s_per_param", "CLIENT SECONDS PER PARAMETER", "S/PARAM"),
        ("server_seconds_per_param.png", "server_s_per_param", "SERVER SECONDS PER PARAMETER", "S/PARAM"),
        ("bytes_per_param.png", "bytes_per_param", "UPLOAD BYTES PER PARAMETER", "BYTES"),
        ("expansion_over_plaintext.png", "expansion_over_plaintext", "UPLOAD / PLAINTEXT UPLOAD", "RATIO"),
        ("client_time_ratio.png", "client_time_ratio", "CLIENT TIME / PLAINTEXT CLIENT TIME", "RATIO"),
    )
    for file_name, key, title, ylabel in plots:
        path = loglog_png(
            out / file_name,
            series(key),
            title=f"{title} ({fewest} CLIENTS)",
            xlabel="PARAMETERS",
            ylabel=ylabel,
        )
        if path is not None:
            written.append(path.name)
    for protocol in sorted({r["protocol"] for r in at_fewest}):
        stages: dict[str, list[tuple[float, float]]] = {}
        for row in at_fewest:
            if row["protocol"] != protocol:
                continue
            for role, per_stage in row["seconds_per_param_by_role_stage"].items():
                for stage, value in per_stage.items():
                    stages.setdefault(f"{role}/{stage}", []).append((float(row["n_params"]), float(value)))
        # The ten costliest party/stage pairs: the rest are the runner's per-step overhead
        # of parties with nothing to do at that stage (and the palette has ten colours).
        costliest = sorted(stages, key=lambda k: max(v for _, v in stages[k]), reverse=True)[:10]
        path = loglog_png(
            out / f"stages_{protocol}.png",
            {k: stages[k] for k in costliest},
            title=f"{protocol.upper()}: SECONDS PER PARAMETER BY PARTY/STAGE",
            xlabel="PARAMETERS",
            ylabel="S/PARAM",
        )
        if path is not None:
            written.append(path.name)
    return written


def run_all(
    quick: bool,
    out: Path,
    *,
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    sizes: Sequence[int] | None = None,
    clients: Sequence[int] | None = None,
) -> dict[str, Any]:
    from benchmarks import costs
    from benchmarks.costs import CSV_COLUMNS

    chosen = [m for m in (*MODULES, "costs") if (only is None or m in only) and m not in skip]
    modules: dict[str, Any] = {}
    for name in chosen:
        if name == "costs":
            continue
        _stamp(f"bench: {name} ...")
        modules[name] = run_module(name, quick, out)
        _stamp(
            f"bench: {name} {modules[name]['status']} in {modules[name]['seconds']:.1f} s "
            f"{modules[name]['note']}"
        )
    cost_record: dict[str, Any] = {"rows": [], "skipped": [], "grid": {}}
    plots: list[str] = []
    if "costs" in chosen:
        _stamp("bench: costs ...")
        started = time.perf_counter()
        cost_record = costs.run(quick, sizes=sizes, clients=clients, progress=False)
        write_json(out / "costs.json", cost_record)
        modules["costs"] = {
            "status": "ok",
            "seconds": time.perf_counter() - started,
            "json": "costs.json",
            "note": f"{len(cost_record['skipped'])} grid points skipped",
        }
        plots = plot_costs(cost_record, out)
    record = {
        "schema": BENCH_SCHEMA,
        "benchmark": "all",
        "environment": environment(),
        "quick": quick,
        "modules": modules,
        "costs": cost_record,
        "plots": plots,
    }
    write_json(out / "bench.json", record)
    write_csv(out / "bench.csv", cost_record["rows"], CSV_COLUMNS)
    return record


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())




def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="the small CI grids")
    parser.add_argument("--out", default="bench-out", help="output directory (default bench-out/)")
    parser.add_argument(
        "--only",
        type=_names,
        default=None,
        help=f"comma-separated subset of {', '.join((*MODULES, 'costs'))}",
    )
    parser.add_argument("--skip", type=_names, default=(), help="comma-separated modules to leave out")
    parser.add_argument("--sizes", type=int_list, default=None, help="cost sweep parameters, e.g. 1e3,1e5")
    parser.add_argument("--clients", type=int_list, default=None, help="cost sweep clients, e.g. 2,10")


def handle(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = run_all(args.quick, out, only=args.only, skip=args.skip, sizes=args.sizes, clients=args.clients)
    for name, entry in record["modules"].items():
        print(f"{name:<18} {entry['status']:<8} {entry['seconds']:8.1f} s  {entry['note']}")
    print(
        json.dumps(
            {
                "bench_json": str(out / "bench.json"),
                "bench_csv": str(out / "bench.csv"),
                "plots": record["plots"],
            }
        )
    )
    return 1 if any(e["status"] == "error" for e in record["modules"].values()) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    return handle(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
