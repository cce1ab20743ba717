"""Every benchmark module imports, exposes ``run(quick)`` and a command line, and runs quick.

Each module's quick mode takes from one second (encoding) to a minute and more (2048-bit
Paillier keys, SecAgg+ grids) on two shared cores, so the default suite runs the
cheapest two and the whole set runs under ``-m slow``.
"""

from __future__ import annotations

import importlib
import inspect
import json

import pytest

from benchmarks.__main__ import MODULES

CHEAP = ("encoding", "secret_sharing")


@pytest.mark.parametrize("name", [*MODULES, "costs"])
def test_every_benchmark_imports_with_run_and_main(name: str) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.run) and callable(module.main), name
    assert "quick" in inspect.signature(module.run).parameters, name
    assert module.__doc__ and module.__doc__.strip(), name


def _run_quick(name: str) -> dict:
    record = importlib.import_module(f"benchmarks.{name}").run(quick=True)
    assert isinstance(record, dict) and record, name
    json.dumps(record, default=str)  # JSON-ready, as bench.json needs it
    return record


@pytest.mark.parametrize("name", CHEAP)
def test_cheap_benchmarks_run_quick(name: str) -> None:
    record = _run_quick(name)
    assert "environment" in record


@pytest.mark.slow
@pytest.mark.parametrize("name", [m for m in MODULES if m not in CHEAP])
def test_every_benchmark_runs_quick(name: str) -> None:
    if name == "flower":
        pytest.importorskip("flwr")
    _run_quick(name)
