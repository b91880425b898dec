"""`digitsum run` is one process: no child processes of its own, nothing imported from the
working folder, and a user's error ends in its message alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from digitsum.callbacks import Callback
from digitsum.engine.runner import start
from digitsum.recipe import load_recipe

from .conftest import RECIPES
from .runs import tiny_args

DIGITSUM = Path(sys.executable).with_name("digitsum")  # the console script a user's shell runs
#: Modules named like standard ones, planted in the working folder: imported, each would leave a mark and exit.
PLANTED = ("json", "os", "subprocess", "random", "csv", "signal", "tomllib", "logging", "threading", "numbers")


def digitsum(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    if not DIGITSUM.exists():
        pytest.skip("no digitsum console script beside this interpreter")
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(DIGITSUM), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_modules_in_the_working_folder_are_never_imported(tiny_root, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name in PLANTED:
        (work / f"{name}.py").write_text(f"open({str(work / (name + '.imported'))!r}, 'w').close()\nraise SystemExit(7)\n")
    sets = [a for s in tiny_args(tiny_root, 1, 64, "log.tensorboard=true", "log.csv=true") for a in ("--set", s)]
    ran = digitsum("run", "original", *sets, "--out", "run", cwd=work)
    assert ran.returncode == 0, ran.stderr
    assert (work / "run" / "samples.png").is_file()
    listed = digitsum("list", cwd=work)
    assert listed.returncode == 0, listed.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    as_module = subprocess.run([sys.executable, "-m", "digitsum", "list"], capture_output=True, text=True, cwd=work,
                               env=env, timeout=300)  # fmt: skip  # python puts the working folder on sys.path for -m
    assert as_module.returncode == 0, as_module.stderr
    assert sorted(p.name for p in work.glob("*.imported")) == []


def test_a_run_whose_data_are_missing_prints_its_error_only(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    ran = digitsum("run", "original", "--set", f"data.root='{empty}'", "--set", "data.download=false", "--out", "run", cwd=tmp_path)
    assert ran.returncode == 2
    assert "MNIST is not available" in ran.stderr and "train-images-idx3-ubyte" in ran.stderr
    assert "Traceback" not in ran.stderr and "BrokenPipeError" not in ran.stderr


def test_a_reader_that_goes_away_does_not_stop_the_run(tiny_root, tmp_path):
    """``digitsum run original | head -1``: the run finishes and its folder is whole."""
    if not DIGITSUM.exists():
        pytest.skip("no digitsum console script beside this interpreter")
    sets = [a for s in tiny_args(tiny_root, 2, 64) for a in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with subprocess.Popen([str(DIGITSUM), "run", "original", *sets, "--out", "run"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as ran:  # fmt: skip
        assert ran.stdout.readline().startswith("original")
        ran.stdout.close()  # what head does once it has its line
        stderr = ran.stderr.read()
        assert ran.wait(timeout=300) == 0, stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 2 and "failed" not in summary
    assert "Traceback" not in stderr

def children() -> set[str]:
    """This process's child processes (Linux)."""
    return {pid for task in Path("/proc/self/task").iterdir() for pid in (task / "children").read_text().split()}


class Children(Callback):
    """Records this process's child processes when the run ends (after the pictures are drawn)."""

    def on_end(self, trainer, summary) -> None:
        self.pids = children()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux's /proc lists a process's children")
def test_a_run_starts_no_child_process(tiny_root, tmp_path):
    at_end = Children()
    recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1, 64, "log.tensorboard=true"))
    before = children()  # one an earlier test left running in this pytest worker is not the run's
    start(recipe, tmp_path / "run", callbacks=[at_end], progress=False, preflight=False)
    assert sorted(at_end.pids - before) == []
