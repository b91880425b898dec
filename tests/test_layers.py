"""The layers of docs/architecture.md hold: import-linter's contracts (pyproject.toml) pass, no
module takes part in an import cycle, and both checks do fail when a module imports upward."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root`` (its own pyproject.toml's contracts)."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=300)  # fmt: skip


def cycles(root: Path) -> list[set[str]]:
    """The strongly connected groups of more than one module in the ``digitsum`` under ``root``
    (function-local imports included; imports made only for type checking left out), found in a
    fresh interpreter so that this one's ``digitsum`` is not the one read."""
    result = subprocess.run([sys.executable, __file__, str(root)], capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [set(group) for group in json.loads(result.stdout)]


def _strongly_connected_groups() -> list[list[str]]:
    graph = grimp.build_graph("digitsum", cache_dir=None, exclude_type_checking_imports=True)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def test_the_layer_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_no_import_cycle():
    assert cycles(ROOT) == []


@pytest.fixture(scope="module")
def upward(tmp_path_factory) -> Path:
    """A copy of the package in which a bottom module imports the command line, inside a function."""
    root = tmp_path_factory.mktemp("upward")
    shutil.copytree(ROOT / "digitsum", root / "digitsum", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    errors = root / "digitsum" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _upward():\n    from . import cli  # noqa: F401\n")
    return root


def test_an_upward_import_breaks_the_contracts(upward):
    result = lint_imports(upward)
    assert result.returncode != 0 and "digitsum.errors is not allowed to import digitsum.cli" in result.stdout


def test_an_upward_import_makes_a_cycle(upward):
    assert any({"digitsum.errors", "digitsum.cli"} <= group for group in cycles(upward))


if __name__ == "__main__":  # cycles(): run in a fresh interpreter on the package at sys.argv[1]
    print(json.dumps(_strongly_connected_groups()))
