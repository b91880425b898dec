"""Checkpoints are read without running code: a pickle that would run some is refused."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from digitsum.engine.checkpoint import describe_differences, load_checkpoint, recipe_differences
from digitsum.errors import UserError

from ..conftest import RECIPES
from ..runs import StopAt, snapshot, train


class LeavesAMark:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class RunsAShellCommand(LeavesAMark):
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def finished(tiny_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished")
    train(tiny_root, run_dir, callbacks=[StopAt(1, 2)], epochs=2)
    return run_dir


def write_hostile(path: Path, payload: object, as_zip: bool) -> None:
    if as_zip:
        state = torch.load(path, weights_only=True)
        state["model"]["extra"] = payload  # hidden deep inside an otherwise valid checkpoint
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps({"model": payload}, protocol=2))


@pytest.mark.parametrize("payload", [LeavesAMark, RunsAShellCommand], ids=["open", "os.system"])
@pytest.mark.parametrize("as_zip", [True, False], ids=["torch-zip", "raw-pickle"])
@pytest.mark.parametrize("command", ["resume", "eval"])
def test_checkpoint_carrying_code_is_refused_without_running_it(cli, finished, tmp_path, payload, as_zip, command):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    marker = tmp_path / "code-ran"
    write_hostile(run_dir / "checkpoint.pt", payload(marker), as_zip)

    # the payload is real: an unsafe load runs it
    shutil.copy(run_dir / "checkpoint.pt", tmp_path / "copy.pt")
    if as_zip:
        torch.load(tmp_path / "copy.pt", weights_only=False)
    else:
        pickle.loads((tmp_path / "copy.pt").read_bytes())
    assert marker.exists()
    marker.unlink()

    before = snapshot(run_dir)
    args = ["run", "--resume", run_dir] if command == "resume" else ["eval", run_dir]
    result = cli(*args)
    assert result.code == 2 and "Traceback" not in result.err
    message = " ".join(result.err.split())
    assert str(run_dir / "checkpoint.pt") in message
    if as_zip:
        assert "refused" in message and "would run code" in message
    else:
        assert "not a digitsum checkpoint" in message  # only zip archives are read at all
    assert not marker.exists()
    assert snapshot(run_dir) == before


def test_a_good_checkpoint_loads_with_its_fields(finished):
    state = load_checkpoint(finished / "checkpoint.pt")
    assert (state["format"], state["epoch"], state["step"]) == (2, 0, 3)
    assert state["tally"]["count"] == 3 * 64 and set(state["rng"]) >= {"cpu"}


def test_recipe_differences_ignore_where_a_run_executes():
    a = {"data": {"root": "/a", "batch_size": 64}, "train": {"device": "cpu", "lr": 0.1}}
    b = {"data": {"root": "/b", "batch_size": 32}, "train": {"device": "cuda", "lr": 0.1, "extra": 1}}
    assert recipe_differences(a, b) == ["data.batch_size", "train.extra"]
    assert describe_differences(a, b) == (
        "data.batch_size is 64 in the recipe but 32 in the checkpoint; train.extra is absent in the recipe but 1 in the checkpoint"
    )


def test_load_checkpoint_refuses_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="stopped before its first checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def _nested(depth: int) -> dict:
    doc: dict = {}
    for _ in range(depth):
        doc = {"x": doc}
    return doc


def _crafted(finished: Path, tmp_path: Path, change) -> Path:
    """A copy of a real checkpoint with one field changed by ``change(state)``."""
    state = torch.load(finished / "checkpoint.pt", weights_only=True)
    change(state)
    path = tmp_path / "checkpoint.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("change, said", [
    (lambda s: s.update(threads=100_000), "'threads' should be an integer from 1 to 1024"),
    (lambda s: s.update(threads="4"), "'threads' should be an integer"),
    (lambda s: s.update(callbacks={"Watch": [1, 2]}), "'callbacks' should map each callback"),
    (lambda s: s.update(callbacks=["x"]), "'callbacks' should map each callback"),
    (lambda s: s["history"].append("epoch 3"), "should be a table with an integer 'epoch'"),
    (lambda s: s["history"].append({"epoch": 2, "train": {"digit": {"loss": "low"}}}), "'s 'train' should map each head"),
    (lambda s: s["history"].append({"epoch": 2, "train": {}, "test": [0.9]}), "'s 'test' should map each head"),
    (lambda s: s["tally"].update(count=-3), "'tally' should hold"),
    (lambda s: s["tally"].update(count=10**20), "'tally' should hold"),
    (lambda s: s["tally"].update(sums={"digit": {"loss": 1.5}}), "'tally' should hold"),
    (lambda s: s["rng"].update(cpu=[1, 2, 3]), "'rng' should hold"),
    (lambda s: s["tally"]["sums"]["digit"].update(loss=torch.zeros(7, 7)), "as one-number tensors"),
    (lambda s: s["recipe"].update(extra=_nested(100)), "nests tables deeper than 32 levels"),
    (lambda s: s["tally"]["sums"]["digit"].update(loss=torch.nested.nested_tensor([torch.zeros(1)])), "nested tensors at tally.sums.digit.loss"),
    (lambda s: s["rng"].update(cpu=torch.zeros(3, dtype=torch.float8_e5m2)), "tensors of element type torch.float8_e5m2 at rng.cpu"),
    (lambda s: s["optimizer"]["state"][0].update(exp_avg_sq=torch.empty(3, device="meta")), "meta tensors (they hold no values) at optimizer"),
])  # fmt: skip
def test_fields_are_checked_inside_before_any_work(finished, tmp_path, change, said):
    path = _crafted(finished, tmp_path, change)
    with pytest.raises(UserError, match="is not a valid digitsum checkpoint") as refused:
        load_checkpoint(path)
    assert said in str(refused.value)


def _set_lr(state, value):
    state["optimizer"]["param_groups"][0]["lr"] = value


@pytest.mark.parametrize("change, said", [
    (lambda s: s.update(init=[1, 2]), "does not fit the model this recipe builds"),
    (lambda s: s["scheduler"].update(last_epoch=10**12), "its schedule has taken 1000000000000 steps, the run 3"),
    (lambda s: s["scheduler"].update(total_steps="x"), "its scheduler state['total_steps'] is text where this recipe's holds a number"),
    (lambda s: _set_lr(s, "x"), "its optimizer state['param_groups'][0]['lr'] is text where this recipe's holds a number"),
    # a fused optimizer step read and wrote past this buffer's end: a segmentation fault, no message
    (lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(3)), "its optimizer state 'exp_avg' of parameter 0 is torch.float32 [3]"),
    (lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(6, 1, 5, 50)), "where this recipe's optimizer keeps torch.float32 [6, 1, 5, 5]"),
    # each of these trained on, then ended in a traceback at the step that read it
    (lambda s: s["scheduler"].update(total_steps=4), "raises ValueError: Tried to step"),
    (lambda s: s["scheduler"].update(_schedule_phases=[]), "raises UnboundLocalError"),
    (lambda s: s["optimizer"]["param_groups"][0].update(differentiable=True), "does not support differentiable=True"),
    (lambda s: s["callbacks"].update(Watch={"warned": ["x"], "epoch_losses": [[1.0, 1.0]]}), "does not fit this run's callback Watch"),
    (lambda s: s.update(init={"weights": "/etc/passwd"}), "its init record: 'source' is missing"),
    # each of these trained on to a NaN loss, and the run blamed its recipe
    (lambda s: _set_lr(s, float("nan")), "turns the weights into NaN or inf"),
    (lambda s: s["optimizer"]["state"][0].update(exp_avg_sq=-torch.ones(6, 1, 5, 5)), "turns the weights into NaN or inf"),
    (lambda s: s["optimizer"]["state"][0].update(step=torch.tensor(float("nan"))), "turns the weights into NaN or inf"),
])  # fmt: skip
def test_a_crafted_state_is_refused_before_the_resume_trains(cli, finished, tmp_path, change, said):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    shutil.copy(_crafted(finished, tmp_path, change), run_dir / "checkpoint.pt")
    before = snapshot(run_dir)
    result = cli("run", "--resume", run_dir)
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert said in " ".join(result.err.split()) and str(run_dir / "checkpoint.pt") in result.err
    assert snapshot(run_dir) == before  # nothing written: no failed summary, no new checkpoint


def test_an_archive_that_inflates_far_beyond_its_size_is_refused(finished, tmp_path):
    import zipfile

    path = tmp_path / "checkpoint.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (64 << 20))  # 64 MiB of zeros in about 64 KiB
    with pytest.raises(UserError, match="unpack to 67108864"):
        load_checkpoint(path)


def test_a_real_checkpoint_passes_the_deep_checks(finished):
    assert isinstance(load_checkpoint(finished / "checkpoint.pt")["history"], list)


# -- a full disk while torch.save writes ----------------------------------------------------------


class FullDisk:
    """A file whose disk fills after ``room`` bytes: the write fails with ENOSPC, as a real one does."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_torch_save_into_a_full_disk_is_reported_as_one(tmp_path):
    from digitsum.files import atomic_write

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"the previous checkpoint")
    with pytest.raises(RuntimeError, match="unexpected pos"):  # what torch makes of it, unaided
        torch.save({"w": torch.zeros(10_000)}, FullDisk(io.BytesIO(), 100))
    with pytest.raises(UserError, match=f"cannot write {path}: No space left on device; the previous version"):
        atomic_write(path, lambda f: torch.save({"w": torch.zeros(10_000)}, FullDisk(f, 100)))
    assert path.read_bytes() == b"the previous checkpoint" and not list(tmp_path.glob(".*.tmp"))


def test_a_wrapped_error_on_a_full_file_system_is_no_space_left(tmp_path, monkeypatch):
    from digitsum.files import atomic_write

    def fail(f):
        raise RuntimeError("unexpected pos 64 vs 0")  # a wrapper that kept no OSError behind it

    with pytest.raises(RuntimeError, match="unexpected pos"):  # a disk with room: not an OS error
        atomic_write(tmp_path / "x", fail)
    monkeypatch.setattr(os, "statvfs", lambda folder: SimpleNamespace(f_bavail=0))
    with pytest.raises(UserError, match="No space left on device"):
        atomic_write(tmp_path / "x", fail)


def test_disk_full_in_a_checkpoint_fails_cleanly_and_resumes(cli, tiny_data, tmp_path, monkeypatch):
    import digitsum.engine.checkpoint as checkpoint

    real, calls = checkpoint.atomic_write, []

    def second_fills_the_disk(path, write):
        calls.append(path)
        real(path, (lambda f: write(FullDisk(f, 4096))) if len(calls) == 2 else write)

    monkeypatch.setattr(checkpoint, "atomic_write", second_fills_the_disk)
    out = tmp_path / "run"
    args = ["run", RECIPES / "original.toml", "--set", "train.epochs=2", "--set", "data.batch_size=64", "--out", out]
    result = cli(*args)
    assert result.code == 2 and "Traceback" not in result.err, result.err
    message = " ".join(result.err.split())
    assert f"cannot write {out / 'checkpoint.pt'}: No space left on device" in message
    assert f"resume with: digitsum run --resume {out}" in message
    failed = json.loads((out / "summary.json").read_text())["failed"]
    assert "No space left on device" in failed and "unexpected pos" not in failed
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1 and not list(out.glob(".*.tmp"))
    monkeypatch.setattr(checkpoint, "atomic_write", real)  # room again
    resumed = cli("run", "--resume", out)
    assert resumed.code == 0, resumed.err
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("name", ["summary.json", ".digitsum-run", "metrics.jsonl"])
def test_json_nested_past_the_parsers_depth_is_read_as_malformed(cli, finished, tmp_path, name):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / name).write_text("[" * 100_000 + "]" * 100_000 + "\n")
    for args in (["eval", run_dir], ["run", "--resume", run_dir], ["run", RECIPES / "original.toml", "--out", run_dir, "--force"]):
        result = cli(*args)
        assert "Traceback" not in result.err and "RecursionError" not in result.err, (args, result.err)
        assert result.code in (0, 1, 2), (args, result.code)
