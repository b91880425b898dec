"""A real `digitsum run` process stopped by signals, resumed, evaluated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digitsum.engine.checkpoint import load_checkpoint
from digitsum.testing import write_tiny_mnist

from .conftest import RECIPES, run_subprocess
from .runs import outcome

# 640 samples in batches of 16: 40 steps an epoch, so a signal sent just after the first
# periodic checkpoint (step 4) lands well inside epoch 1.
ARGS = ["--set", "train.epochs=2", "--set", "data.batch_size=16", "--set", "train.checkpoint_every=4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tiny_mnist(tmp_path_factory.mktemp("mnist"), n_train=640, n_test=64)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run_subprocess("run", RECIPES / "original.toml", *ARGS, "--out", out, env={"DIGITSUM_DATA": str(data)})
    assert result.returncode == 0, result.stderr
    return out


def start_and_signal(data: Path, out: Path, *signals: signal.Signals) -> subprocess.CompletedProcess:
    """Start a run, wait for its first checkpoint, send ``signals`` one after the other."""
    env = {**os.environ, "DIGITSUM_DATA": str(data), "COLUMNS": "200"}
    args = [sys.executable, "-m", "digitsum", "run", str(RECIPES / "original.toml"), *ARGS, "--out", str(out)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    while not (out / "checkpoint.pt").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    for sig in signals:
        process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=240)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_epoch_then_resume_equals_uninterrupted_run(data, uninterrupted, tmp_path, sig, code):
    out = tmp_path / "run"
    stopped = start_and_signal(data, out, sig)
    assert stopped.returncode == code, stopped.stderr
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 0 and 4 <= state["step"] < 40  # mid-epoch
    assert f"interrupted at epoch 1 step {state['step']}; resume with: digitsum run --resume {out}" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not list(out.glob(".*.tmp"))

    resumed = run_subprocess("run", "--resume", out, env={"DIGITSUM_DATA": str(data)})
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} at epoch 1 step {state['step']}" in resumed.stdout
    # summary.json identical but for its `seconds`; metrics.jsonl identical but for timings
    assert outcome(out) == outcome(uninterrupted)
    summary, reference = (json.loads((d / "summary.json").read_text()) for d in (out, uninterrupted))
    assert summary.keys() == reference.keys() and summary["metrics"] == reference["metrics"]


def test_second_signal_stops_at_once_without_corrupting_anything(data, uninterrupted, tmp_path):
    out = tmp_path / "run"
    stopped = start_and_signal(data, out, signal.SIGTERM, signal.SIGTERM)
    # the first signal's stop may have completed before the second arrived
    assert stopped.returncode in (-signal.SIGTERM, 143), stopped.stderr
    assert "Traceback" not in stopped.stderr
    load_checkpoint(out / "checkpoint.pt")  # whole and readable
    for line in (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []:
        json.loads(line)
    resumed = run_subprocess("run", "--resume", out, env={"DIGITSUM_DATA": str(data)})
    assert resumed.returncode == 0, resumed.stderr
    assert outcome(out) == outcome(uninterrupted)
    assert not list(out.glob(".*.tmp"))


def test_eval_reports_the_final_test_metrics(data, uninterrupted):
    result = run_subprocess("eval", uninterrupted, "--json", env={"DIGITSUM_DATA": str(data)})
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(result.stdout)
    summary = json.loads((uninterrupted / "summary.json").read_text())
    # the same figures up to float rounding: training evaluates in channels_last (original.toml sets
    # it on the CPU too), eval in a fresh process may lay the tensors out otherwise
    expected = summary["metrics"]["test"]
    assert evaluated["heads"].keys() == expected.keys()
    assert all(evaluated["heads"][h] == pytest.approx(expected[h], rel=1e-6) for h in expected)
    assert (evaluated["epoch"], evaluated["step"], evaluated["split"]) == (2, 0, "test")


def test_eval_train_split_as_a_table(cli, data, uninterrupted, monkeypatch):
    monkeypatch.setenv("DIGITSUM_DATA", str(data))
    result = cli("eval", uninterrupted, "--split", "train")
    assert result.code == 0, result.err
    assert "train split" in result.out and "digit" in result.out and "accuracy" in result.out


def test_finished_run_is_overwritten_only_with_force(cli, data, uninterrupted, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("DIGITSUM_DATA", str(data))
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    args = ["run", RECIPES / "original.toml", "--set", "train.epochs=1", "--set", "data.batch_size=64", "--out", out]
    refused = cli(*args)
    assert refused.code == 2 and "holds a finished run; pass --force" in refused.err
    replaced = cli(*args, "--force")
    assert replaced.code == 0, replaced.err
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
