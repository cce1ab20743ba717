"""How much the revealed aggregate leaks, by number of clients and local batch size.

    python -m benchmarks.aggregate_leakage [--quick] [--out bench-out] [--clients 1,2,4,8,16]
        [--batches 1,2,4] [--iterations 150] [--restarts 4] [--resolution 32] [--attacks idlg]
        [--threads 1]

Secure aggregation hides each client's update, but it reveals the sum, and the sum of n
clients' mean gradients is n times the gradient of all n x B images (B the local batch):
a batch gradient, which DLG/iDLG (Zhu et al. 2019; Zhao et al. 2020) attack like any
other. This sweep runs one plaintext-FedSGD round (the revealed sum is the same for
every protocol, up to its precision) for each (n, B), points
:func:`leakage.assess.assess` at the revealed aggregate only, and records the PSNR of
the best-matched reconstructed image, the mean PSNR, SSIM and the label accuracy
(labels as a multiset: a batch gradient says which labels occur, not whose). With
n = 1 and B = 1 the "aggregate" is one client's gradient and must be fully exposed —
which is why every protocol refuses to reveal a sum of fewer than ``min_clients``.

The budget is ``secagg evaluate``'s (:meth:`leakage.app.settings.Settings.budget`):
``iterations`` steps per image the sum hides (150 by default, so the sum of 16 clients x 4
images gets 9,600), ``restarts`` draws (4), and its plateau rule (a problem whose best
loss fell by less than 5 % over 40 steps stops); each row carries its budget, restarts
and the steps its draws ran.

The baseline measured in the same run: the same attack on random vectors of the
aggregate's shape and scale (``baseline_psnr``), per point.

Writes ``aggregate_leakage.json`` (environment, settings, rows, ``complete``) and
``aggregate_leakage.csv`` (the rows), both rewritten after every cell; cells run fewest
hidden images first.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import environment, int_list, write_csv, write_json

FULL: dict[str, Any] = {
    "clients": (1, 2, 4, 8, 16),
    "batches": (1, 2, 4),
    "iterations": 150,
    "restarts": 4,
    "resolution": 32,
}
QUICK: dict[str, Any] = {
    "clients": (1, 2, 4), "batches": (1,), "iterations": 30, "restarts": 1, "resolution": 16,
}
COLUMNS = (
    "n_clients",
    "batch",
    "images",
    "psnr_best",
    "psnr_mean",
    "ssim",
    "label_accuracy",
    "baseline_psnr",
    "verdict",
    "reason",
    "attack",
    "iterations",
    "budget",
    "restarts",
    "stopped",
    "seconds",
)


def sweep(
    clients: Sequence[int],
    batches: Sequence[int],
    *,
    iterations: int,
    resolution: int,
    restarts: int = 4,
    attacks: tuple[str, ...] = ("idlg",),
    seed: int = 0,
    device: str = "cpu",
    baseline_seeds: int = 2,
    progress: bool = False,
    on_cell: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per (n_clients, batch, attack): the attack on the revealed sum, at
    ``iterations`` steps per image it hides x ``restarts`` (evaluate's plateau rule).

    Cells run in order of the images their sum hides (ties: more clients first), so the cheap
    cells that decide ``min_clients`` guidance come first; ``on_cell`` gets the rows so far
    after each cell (a long run cut short still leaves the cells it finished)."""
    import protocols
    from leakage.app.settings import PLATEAU, Settings
    from leakage.app.simulation import simulate
    from leakage.assess import AGGREGATE, Budget, assess
    from secagg.round import run_round

    rows: list[dict[str, Any]] = []
    for n, batch in cells(clients, batches):
        settings = Settings(clients=n, batch=batch, resolution=resolution, seed=seed, progress=False)
        sim = simulate(settings)
        budget = Budget(
            attacks=attacks,
            iterations=iterations,
            baseline_seeds=baseline_seeds,
            restarts=restarts,
            plateau=PLATEAU,
            device=device,
            seed=seed,
        )
        result = run_round(protocols.create("plaintext-fedsgd", dtype="float64"), sim.gradients)
        began = time.perf_counter()
        assessment = assess(
            result.observations(),
            sim.model,
            sim.truth,
            budget,
            label="plaintext-fedsgd",
            attack_clients=(),
            progress=(lambda m: print(m, flush=True)) if progress else None,
        )
        for row in assessment.rows:
            if row.observable != AGGREGATE:
                continue
            rows.append(
                {
                    "n_clients": n,
                    "batch": batch,
                    "images": n * batch,
                    "psnr_best": row.psnr,
                    "psnr_mean": row.psnr_mean,
                    "ssim": row.ssim,
                    "label_accuracy": row.label_accuracy,
                    "baseline_psnr": row.baseline_psnr,
                    "verdict": row.verdict,
                    "reason": row.reason,
                    "attack": row.attack,
                    "iterations": row.iterations,
                    "budget": row.budget,
                    "restarts": row.restarts,
                    "stopped": row.stopped,
                    "seconds": row.seconds,
                    "wall_seconds": time.perf_counter() - began,
                }
            )
        if on_cell is not None:
            on_cell(rows)
    return rows


def cells(clients: Sequence[int], batches: Sequence[int]) -> list[tuple[int, int]]:
    """The (n_clients, batch) grid, fewest hidden images first (ties: more clients first, the
    axis min_clients guidance is about)."""
    return sorted(((n, b) for b in batches for n in clients), key=lambda c: (c[0] * c[1], -c[0]))


def run(
    quick: bool,
    *,
    out: Path | None = None,
    threads: int = 1,
    **overrides: Any,
) -> dict[str, Any]:
    """The sweep (``quick``: a 3-point grid at 16x16) as a JSON-ready record.

    ``out``: write ``aggregate_leakage.json``/``.csv`` there at the start and after every cell, so a run
    stopped part-way keeps what it finished (``complete`` false, ``cells_not_run`` listed).
    ``threads``: torch's intra-op threads for the run (1 by default: tiny models, no
    contention; see leakage.app.settings)."""
    import torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    grid = dict(QUICK if quick else FULL)
    grid.update({k: v for k, v in overrides.items() if v is not None})
    grid["threads"] = threads
    planned = cells(grid["clients"], grid["batches"])
    env = environment()

    def record_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
        done = {(r["n_clients"], r["batch"]) for r in rows}
        single = [r for r in rows if r["n_clients"] == 1 and r["batch"] == 1]
        return {
            "benchmark": "aggregate_leakage",
            "environment": env,
            "quick": quick,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in grid.items()},
            "complete": all(c in done for c in planned),
            "cells_not_run": [list(c) for c in planned if c not in done],
            "rows": rows,
            "n1_exposed": bool(single) and all(r["verdict"] == "exposed" for r in single),
        }

    def save(rows: list[dict[str, Any]]) -> None:
        if out is not None:
            write_files(out, record_of(rows))

    save([])  # a run stopped in its first cell still says which cells it did not run
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = sweep(
            grid["clients"],
            grid["batches"],
            iterations=grid["iterations"],
            resolution=grid["resolution"],
            restarts=grid["restarts"],
            attacks=tuple(grid.get("attacks", ("idlg",))),
            on_cell=save,
        )
    finally:
        torch.set_num_threads(previous)
    return record_of(rows)  # on_cell wrote it after the last cell


def write_files(out: Path, record: dict[str, Any]) -> None:
    write_json(out / "aggregate_leakage.json", record)
    write_csv(out / "aggregate_leakage.csv", record["rows"], COLUMNS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--clients", type=int_list, default=None)
    parser.add_argument("--batches", type=int_list, default=None)
    parser.add_argument("--iterations", type=int, default=None, help="steps per image (default 150)")
    parser.add_argument("--restarts", type=int, default=None, help="draws per attack (default 4)")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--attacks", type=lambda t: tuple(t.split(",")), default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    record = run(
        args.quick,
        out=out,
        threads=args.threads,
        clients=args.clients,
        batches=args.batches,
        iterations=args.iterations,
        restarts=args.restarts,
        resolution=args.resolution,
        attacks=args.attacks,
    )
    print(f"{'n':>3} {'B':>3} {'PSNR best':>9} {'mean':>6} {'labels':>6} {'random':>7} {'budget':>8} "
          f"{'run':>6}  verdict")
    for row in record["rows"]:
        baseline = "-" if row["baseline_psnr"] is None else f"{row['baseline_psnr']:.1f}"
        print(
            f"{row['n_clients']:>3} {row['batch']:>3} {row['psnr_best']:>9.1f} {row['psnr_mean']:>6.1f} "
            f"{row['label_accuracy']:>6.2f} {baseline:>7} {row['budget']:>5}x{row['restarts']:<2} "
            f"{row['iterations']:>6}  {row['verdict']} {row['reason']} {row['stopped']}"
        )
    print(f"wrote {out / 'aggregate_leakage.json'} and {out / 'aggregate_leakage.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
