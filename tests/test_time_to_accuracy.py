"""benchmarks/time_to_accuracy.py's target logic: which evaluation first reaches the target;
benchmarks/steal.py's reading of the hypervisor's share."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"
sys.path.insert(0, str(PATH.parent))  # as when the script runs: its neighbours import by name
import steal  # noqa: E402

spec = importlib.util.spec_from_file_location("time_to_accuracy", PATH)
tta = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tta)

TARGET = {"digit": 0.990, "sum": 0.988}


def evaluation(epoch, digit, total):
    return {"epoch": epoch, "split": "test", "heads": {"digit": {"loss": 0.1, "accuracy": digit}, "sum": {"accuracy": total}}}


def train(epoch, digit, total):
    return {**evaluation(epoch, digit, total), "split": "train"}


@pytest.mark.parametrize(
    ("accuracy", "expected"),
    [
        ({"digit": 0.990, "sum": 0.988}, True),  # at the target counts
        ({"digit": 0.9951, "sum": 0.9879}, False),  # every head must reach its bar
        ({"digit": 0.9899, "sum": 0.999}, False),
        ({"digit": 0.999}, False),  # a head without an evaluation is not reached
    ],
)
def test_reached(accuracy, expected):
    assert tta.reached(accuracy, TARGET) is expected


def test_first_reaching_is_the_first_test_evaluation_at_the_target():
    records = [train(1, 0.999, 0.999), evaluation(1, 0.98, 0.97), evaluation(2, 0.991, 0.988), evaluation(3, 0.995, 0.99)]
    assert tta.first_reaching(records, TARGET) == 2  # the training split's figures never count


def test_first_reaching_none_when_never_reached():
    assert tta.first_reaching([evaluation(1, 0.98, 0.97), evaluation(2, 0.9905, 0.9875)], TARGET) is None
    assert tta.first_reaching([], TARGET) is None


def test_read_records_skips_a_line_being_written(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(evaluation(1, 0.98, 0.97)) + "\n" + '{"epoch": 2, "spl')
    assert tta.read_records(path) == [evaluation(1, 0.98, 0.97)]
    assert tta.read_records(tmp_path / "missing.jsonl") == []


def test_steal_share_is_read_from_proc_stat_between_two_readings(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    monkeypatch.setattr(steal, "PROC_STAT", stat)
    #                user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 800 0 0 0 50 10 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    before = steal.cpu_ticks()
    stat.write_text("cpu  400 0 100 1300 0 0 0 200 30 0\n")
    after = steal.cpu_ticks()
    assert before == (50, 1000) and after == (200, 2000)
    assert steal.steal_share(before, after) == pytest.approx(0.15)
    assert steal.describe(0.15) == "steal 15 %"


def test_steal_share_is_unknown_without_proc_stat(tmp_path, monkeypatch):
    monkeypatch.setattr(steal, "PROC_STAT", tmp_path / "missing")
    assert steal.cpu_ticks() is None
    assert steal.steal_share(None, (1, 2)) is None and steal.describe(None) == "steal n/a"
