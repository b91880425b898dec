"""benchmarks/time_to_accuracy.py's target logic: which evaluation first reaches the target."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"
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
