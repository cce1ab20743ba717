"""benchmarks.aggregate_leakage: cells run fewest hidden images first, and the JSON/CSV are
rewritten after every cell, so a run stopped part-way keeps the cells it finished and says
which it did not run."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import benchmarks.aggregate_leakage as bench


def test_cells_run_fewest_hidden_images_first() -> None:
    order = bench.cells((1, 2, 4, 8, 16), (1, 2, 4))
    assert len(order) == 15 and set(order) == {(n, b) for n in (1, 2, 4, 8, 16) for b in (1, 2, 4)}
    images = [n * b for n, b in order]
    assert images == sorted(images)
    assert order[:6] == [(1, 1), (2, 1), (1, 2), (4, 1), (2, 2), (1, 4)]  # ties: more clients first
    assert order[-1] == (16, 4)


def _row(n: int, batch: int) -> dict[str, Any]:
    return {"n_clients": n, "batch": batch, "images": n * batch, "verdict": "exposed"}


def test_a_run_stopped_part_way_leaves_the_cells_it_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_threads: list[int] = []

    def stopped_after_one_cell(clients: Any, batches: Any, **kwargs: Any) -> list[dict[str, Any]]:
        seen_threads.append(torch.get_num_threads())
        rows = [_row(1, 1)]
        kwargs["on_cell"](rows)
        raise KeyboardInterrupt  # the run is stopped before its second cell

    monkeypatch.setattr(bench, "sweep", stopped_after_one_cell)
    before = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        bench.run(False, out=tmp_path, clients=(1, 2), batches=(1,))
    assert seen_threads == [1] and torch.get_num_threads() == before
    record = json.loads((tmp_path / "aggregate_leakage.json").read_text())
    assert record["complete"] is False and record["cells_not_run"] == [[2, 1]]
    assert record["settings"]["iterations"] == 150 and record["settings"]["restarts"] == 4
    assert record["n1_exposed"] is True
    with (tmp_path / "aggregate_leakage.csv").open() as handle:
        assert [(r["n_clients"], r["batch"]) for r in csv.DictReader(handle)] == [("1", "1")]


def test_a_finished_run_is_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def every_cell(clients: Any, batches: Any, **kwargs: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for n, b in bench.cells(clients, batches):
            rows.append(_row(n, b))
            kwargs["on_cell"](rows)
        return rows

    monkeypatch.setattr(bench, "sweep", every_cell)
    record = bench.run(True, out=tmp_path, threads=2)
    assert record["complete"] is True and record["cells_not_run"] == []
    assert record["settings"]["threads"] == 2
    assert json.loads((tmp_path / "aggregate_leakage.json").read_text())["complete"] is True


def test_threads_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        bench.run(True, threads=0)
