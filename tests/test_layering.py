"""The dependency rules of DESIGN.md, checked: secagg never imports torch, phe or
tenseal; phe lives only in protocols/paillier.py and tenseal only in protocols/ckks.py;
leakage imports and runs with torch and numpy alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_secagg_source_never_imports_heavy_libraries() -> None:
    for path in _sources("secagg"):
        banned = _imports(path) & {"torch", "phe", "tenseal", "flwr", "opacus", "leakage"}
        assert not banned, f"{path.relative_to(ROOT)} imports {banned}"


@pytest.mark.parametrize(
    ("library", "home"), [("phe", "protocols/paillier.py"), ("tenseal", "protocols/ckks.py")]
)
def test_crypto_libraries_stay_in_their_module(library: str, home: str) -> None:
    for package in ("secagg", "protocols", "leakage", "benchmarks"):
        for path in _sources(package):
            if library in _imports(path):
                assert path.relative_to(ROOT).as_posix() == home, f"{path} imports {library}"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_importing_secagg_loads_no_heavy_library() -> None:
    code = """
import importlib, pkgutil, sys
import secagg
for info in pkgutil.walk_packages(secagg.__path__, "secagg."):
    if info.name != "secagg.__main__":
        importlib.import_module(info.name)
heavy = sorted(m for m in ("torch", "phe", "tenseal", "flwr", "opacus") if m in sys.modules)
print(heavy)
"""
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_leakage_runs_with_torch_and_numpy_alone() -> None:
    pytest.importorskip("torch")
    code = """
import importlib, importlib.abc, pkgutil, sys
BLOCKED = {"secagg", "protocols", "cryptography", "phe", "gmpy2", "tenseal", "scipy", "flwr",
           "opacus", "skimage", "PIL", "matplotlib", "tqdm", "benchmarks"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked for this test: {name}")
        return None
sys.meta_path.insert(0, Block())
import leakage
names = [i.name for i in pkgutil.walk_packages(leakage.__path__, "leakage.")]
for name in names:
    if name != "leakage.__main__":
        importlib.import_module(name)
print(len(names))
"""
    done = _run(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 3


@pytest.mark.parametrize(
    ("package", "banned"),
    [
        ("secagg", {"protocols", "leakage", "benchmarks"}),
        ("protocols", {"leakage", "benchmarks"}),
        ("leakage", {"benchmarks"}),
    ],
)
def test_dependencies_point_one_way(package: str, banned: set[str]) -> None:
    """Every import in the package, at module level or inside a function, points down the
    layers secagg <- protocols <- leakage <- benchmarks (docs/design.md). The one exception
    is the ``secagg`` command line, the entry point that registers every layer's commands."""
    entry_points = {ROOT / "secagg" / "cli.py", ROOT / "secagg" / "__main__.py"}
    for path in _sources(package):
        if path in entry_points:
            continue
        found = _imports(path) & banned
        assert not found, f"{path.relative_to(ROOT)} imports {found}"
