"""`--resume` with `--set`: machine-local keys and loggers may change, nothing else."""

from __future__ import annotations

import hashlib
import json

import pytest

import digitsum
from digitsum.errors import UserError

from .runs import StopAt, train


@pytest.fixture
def stopped(tmp_path, tiny_root):
    train(tiny_root, tmp_path / "stopped", callbacks=[StopAt(1, 2)], epochs=2)
    return tmp_path / "stopped"


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_takes_machine_local_overrides(cli, stopped, tiny_root):
    recipe = (stopped / "recipe.toml").read_text()
    result = cli("run", "--resume", stopped, "--set", "train.threads=1", "--set", "train.device=cpu",
                 "--set", f"data.root='{tiny_root}'", "--set", "train.checkpoint_every=5")  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads((stopped / "summary.json").read_text())["epochs"] == 2
    assert (stopped / "recipe.toml").read_text() == recipe  # the run's recipe is what it computes: unchanged


def test_resume_refuses_other_overrides_listing_what_differs(cli, stopped):
    before = _digest(stopped / "checkpoint.pt")
    result = cli("run", "--resume", stopped, "--set", "train.optimizer.lr=1", "--set", "train.epochs=3", "--set", "train.threads=1")
    err = " ".join(result.err.split())
    assert result.code == 2 and "Traceback" not in err
    assert "train.epochs (2 -> 3)" in err and "train.optimizer.lr (0.004 -> 1.0)" in err and "train.threads" not in err.split("differ")[-1]
    assert "--set" in err and "train.device" in err  # what may change
    assert _digest(stopped / "checkpoint.pt") == before


def test_api_resume_takes_overrides(stopped):
    with pytest.raises(UserError, match=r"seed \(0 -> 1\)"):
        digitsum.resume(stopped, overrides={"seed": 1}, progress=False)
    run = digitsum.resume(stopped, overrides={"train.threads": 1}, progress=False)
    assert run.summary["epochs"] == 2


def test_a_run_resumed_with_a_logger_resumes_again_without_it(stopped):
    pytest.importorskip("torch.utils.tensorboard")
    digitsum.resume(stopped, overrides={"log.tensorboard": True}, callbacks=[StopAt(2, 1)], progress=False)
    assert any((stopped).rglob("events.out.tfevents*"))
    assert digitsum.resume(stopped, progress=False).summary["epochs"] == 2
