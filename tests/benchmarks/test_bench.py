"""The unified bench entry point writes bench.json / bench.csv / plots with the documented keys."""

from __future__ import annotations

import csv
import json

from benchmarks.__main__ import main
from benchmarks.costs import CSV_COLUMNS
from secagg.costs import FIELDS


def test_quick_bench_writes_json_csv_and_plots(tmp_path):
    status = main(
        [
            "--quick",
            "--only",
            "costs,no-such-module",
            "--sizes",
            "64,256",
            "--clients",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 0
    record = json.loads((tmp_path / "bench.json").read_text())
    assert {"benchmark", "environment", "quick", "modules", "costs", "plots"} <= set(record)
    assert record["schema"] == "secagg-bench/2"
    assert record["modules"]["costs"]["status"] == "ok"
    assert {"python", "cpu", "packages", "threads"} <= set(record["environment"])
    rows = record["costs"]["rows"]
    protocols_seen = {r["protocol"] for r in rows}
    assert "plaintext-fedsgd" in protocols_seen and len(protocols_seen) >= 2
    for row in rows:
        assert set(FIELDS) <= set(row)  # the one cost record, under its names
        assert row["expansion_over_plaintext"] > 0
        assert row["seconds_per_param_by_role_stage"]["client"]
    baseline = [r for r in rows if r["protocol"] == "plaintext-fedsgd"]
    assert all(r["expansion_over_plaintext"] == 1.0 for r in baseline)
    with (tmp_path / "bench.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == CSV_COLUMNS and len(table) == len(rows)
    assert "bytes_per_param.png" in record["plots"]
    assert (tmp_path / "bytes_per_param.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_missing_module_is_an_error_not_a_silent_skip(tmp_path):
    from benchmarks.__main__ import run_module

    entry = run_module("no_such_benchmark", True, tmp_path)
    assert entry["status"] == "error" and "ModuleNotFoundError" in entry["note"]
    assert "no_such_benchmark" in entry["note"]
