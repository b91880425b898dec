from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from digitsum.testing import write_tiny_mnist

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
# A few steps on tiny data: each run takes about a second.
TINY = ["--set", "train.epochs=1", "--set", "data.batch_size=64"]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return write_tiny_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture
def tiny_data(tiny_root, monkeypatch) -> Path:
    """Point digitsum at the tiny data set for this test."""
    monkeypatch.setenv("DIGITSUM_DATA", str(tiny_root))
    return tiny_root


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run the digitsum CLI in-process, as the console script does; returns code and output."""
    from digitsum.cli import main

    def invoke(*args: str) -> Result:
        old = sys.argv
        sys.argv = ["digitsum", *map(str, args)]
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = old
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def run_subprocess(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``digitsum`` in a fresh interpreter (what a user's shell does)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "digitsum", *map(str, args)],
        capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout,
    )  # fmt: skip
