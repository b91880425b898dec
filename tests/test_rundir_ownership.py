"""``--force`` replaces only run directories digitsum made, and only the files digitsum wrote there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from digitsum.errors import UserError
from digitsum import Callback
from digitsum.engine.rundir import LOCK, MARKER, choose_run_dir, create_run_dir, record_outputs, unlock

from .conftest import RECIPES

TINY = ["--set", "train.epochs=1", "--set", "data.batch_size=64"]


def home_like(folder: Path) -> Path:
    """A folder of a user's own files that happens to hold a recipe.toml (``digitsum cp`` made it)."""
    (folder / ".ssh").mkdir(parents=True)
    (folder / ".ssh" / "id_ed25519").write_text("secret")
    (folder / "Documents").mkdir()
    (folder / "Documents" / "thesis.tex").write_text("chapter 1")
    shutil.copy(RECIPES / "original.toml", folder / "recipe.toml")
    (folder / "summary.json").write_text("{}")  # even a summary: it is still not digitsum's folder
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_force_never_deletes_a_folder_digitsum_did_not_make(cli, tiny_data, tmp_path):
    home = home_like(tmp_path / "home")
    before = tree(home)
    result = cli("run", home / "recipe.toml", *TINY, "--out", home, "--force")
    assert result.code == 2
    assert "not a run directory digitsum made" in result.err and "--force" not in result.err
    assert tree(home) == before


@pytest.mark.parametrize("force", [False, True])
def test_a_foreign_folder_is_refused_without_recommending_force(tmp_path, force):
    home = home_like(tmp_path / "home")
    with pytest.raises(UserError) as refused:
        choose_run_dir(home, force=force)
    assert "--force" not in str(refused.value)


def test_force_replaces_a_run_and_keeps_the_users_own_files(cli, tiny_data, tmp_path):
    out = tmp_path / "run"
    first = cli("run", RECIPES / "original.toml", *TINY, "--out", out)
    assert first.code == 0, first.err
    (out / "notes.txt").write_text("my notes on this run")  # added by the user afterwards
    (out / "stale-by-digitsum.txt").write_text("x")
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**marker, "outputs": [*marker["outputs"], "stale-by-digitsum.txt"]}))

    second = cli("run", RECIPES / "original.toml", *TINY, "--set", "seed=1", "--out", out, "--force")
    assert second.code == 0, second.err
    assert (out / "notes.txt").read_text() == "my notes on this run"
    assert not (out / "stale-by-digitsum.txt").exists()
    assert json.loads((out / "summary.json").read_text())["seed"] == 1
    assert "notes.txt" not in json.loads((out / MARKER).read_text())["outputs"]


def test_a_marker_cannot_send_the_removal_outside_the_folder(tmp_path):
    out = create_run_dir("original", tmp_path / "run")
    (out / "recipe.toml").write_text("name = 'x'\n")
    (out / "summary.json").write_text("{}")
    outside = tmp_path / "keep"
    outside.mkdir()
    (outside / "file").write_text("mine")
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**marker, "outputs": ["../keep", "/", ".."]}))
    create_run_dir("original", out, force=True)
    assert (outside / "file").read_text() == "mine"


@pytest.mark.parametrize("mine", ["named-by-hand", "remade"])
def test_force_removes_the_folder_a_logger_made_and_no_other_folder_of_a_claimed_name(tmp_path, mine):
    out = create_run_dir("original", tmp_path / "run")
    (out / "recipe.toml").write_text("name = 'x'\n")
    (out / "summary.json").write_text("{}")
    (out / "logs" / "deep").mkdir(parents=True)  # what a logger's hook made and its `writes` names
    record_outputs(out, {"logs"})
    if mine == "named-by-hand":  # a shared run's marker, edited to name a folder its new owner adds
        theirs, marker = "notes", json.loads((out / MARKER).read_text())
        (out / MARKER).write_text(json.dumps({**marker, "outputs": [*marker["outputs"], theirs]}))
    else:  # the run's folder removed by the user, and one of theirs made under its name
        theirs = "logs"
        shutil.rmtree(out / "logs")
    (out / theirs / "deep").mkdir(parents=True)
    (out / theirs / "deep" / "z.txt").write_text("mine")
    create_run_dir("original", out, force=True)
    assert (out / theirs / "deep" / "z.txt").read_text() == "mine"
    assert mine == "remade" or not (out / "logs").exists()


class _Notes(Callback):
    """Writes a file of its own into the run directory as each epoch ends, as a logger does."""

    writes = ("notes.csv",)

    def on_epoch_end(self, trainer, epoch, train, test):
        (trainer.run_dir / "notes.csv").write_text(f"{epoch}\n")


class _UserMeanwhile(Callback):
    """The user's own process writing into the run directory while a hook of the run runs (a
    callback declaring no output stands in for it: what appears then is not the run's)."""

    def on_step(self, trainer, epoch, step, loss):
        if step == 1:
            (trainer.run_dir / "during-a-hook").mkdir()
            (trainer.run_dir / "during-a-hook" / "mine.txt").write_text("mine")
            (trainer.run_dir / "notes.txt").write_text("mine too")


def test_what_a_callback_writes_is_claimed_and_what_the_user_puts_in_meanwhile_is_not(tiny_root, tmp_path, monkeypatch):
    from digitsum.engine.runner import start
    from digitsum.engine.train import Trainer
    from digitsum.recipe import load_recipe

    from .runs import tiny_args

    out = tmp_path / "run"
    step = Trainer.train_step

    def user_writes_mid_run(trainer, batch):  # another process, the user's, writes while the run trains
        if trainer.step == 2:
            (out / "analysis").mkdir()
            (out / "analysis" / "plot.py").write_text("mine")
        return step(trainer, batch)

    monkeypatch.setattr(Trainer, "train_step", user_writes_mid_run)
    start(load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1, 64)), out, callbacks=[_Notes(), _UserMeanwhile()],
          progress=False, preflight=False)  # fmt: skip
    claimed = json.loads((out / MARKER).read_text())["outputs"]
    # was: what appeared while any hook ran was claimed, and --force deleted the user's files
    assert "notes.csv" in claimed and not {"analysis", "during-a-hook", "notes.txt"} & set(claimed)
    create_run_dir("original", out, force=True)
    assert not (out / "notes.csv").exists() and not (out / "checkpoint.pt").exists()
    assert (out / "analysis" / "plot.py").read_text() == "mine" and (out / "during-a-hook" / "mine.txt").read_text() == "mine"
    assert (out / "notes.txt").read_text() == "mine too"


HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"pid 4242 on host elsewhere\\n")
print("held", flush=True)
sys.stdin.readline()  # holds the lock until the test closes our stdin
"""


@pytest.fixture
def held(tmp_path):
    """A run directory whose lock another process holds, until the test ends."""
    import subprocess
    import sys

    out = create_run_dir("original", tmp_path / "run")
    unlock(out)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / LOCK)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield out
    holder.stdin.close()
    holder.wait(timeout=60)


def test_a_second_writer_is_refused_naming_the_holder(held):
    (held / "recipe.toml").write_text("name = 'x'\n")
    (held / "summary.json").write_text("{}")
    before = tree(held)
    with pytest.raises(UserError, match="is being written by pid 4242 on host elsewhere"):
        create_run_dir("original", held, force=True)
    assert tree(held) == before  # refused before anything was removed


def test_a_second_run_into_a_locked_folder_exits_2(cli, tiny_data, held):
    (held / "recipe.toml").write_text("name = 'x'\n")
    (held / "summary.json").write_text("{}")
    result = cli("run", RECIPES / "original.toml", *TINY, "--out", held, "--force")
    assert result.code == 2 and "is being written by pid 4242" in result.err


def test_the_lock_is_released_when_a_run_ends(cli, tiny_data, tmp_path):
    out = tmp_path / "run"
    assert cli("run", RECIPES / "original.toml", *TINY, "--out", out).code == 0
    assert (out / LOCK).read_text() == ""  # no holder named: nothing looks held
    assert cli("run", RECIPES / "original.toml", *TINY, "--out", out, "--force").code == 0


def test_force_removes_only_what_the_run_wrote_not_files_of_its_names_the_user_made(cli, tiny_data, tmp_path):
    out = tmp_path / "run"
    assert cli("run", RECIPES / "original.toml", *TINY, "--out", out).code == 0
    assert {"curves.png", "samples.png"} <= set(json.loads((out / MARKER).read_text())["outputs"])  # recorded as written
    (out / "init.json").write_text("my own init notes")  # the run loaded no weights: it never wrote one
    (out / "samples.png").unlink()
    (out / "samples.png").mkdir()  # a folder where digitsum writes a file: the user's
    (out / "samples.png" / "mine.txt").write_text("keep")
    second = cli("run", RECIPES / "original.toml", *TINY, "--set", "seed=1", "--out", out, "--force")
    assert (out / "init.json").read_text() == "my own init notes"
    assert (out / "samples.png" / "mine.txt").read_text() == "keep"
    # the new run would write its picture over the user's folder: refused before --force removes anything
    assert second.code == 2 and "holds samples.png, which digitsum did not write" in second.err, second.err
    assert json.loads((out / "summary.json").read_text())["seed"] == 0  # the first run, whole
    (out / "samples.png" / "mine.txt").unlink()
    (out / "samples.png").rmdir()
    third = cli("run", RECIPES / "original.toml", *TINY, "--set", "seed=1", "--out", out, "--force")
    assert third.code == 0 and (out / "init.json").read_text() == "my own init notes", third.err  # it loads no weights


@pytest.mark.parametrize("how", ["resume", "force"])
def test_a_logger_never_writes_over_a_users_file_of_its_name(cli, tiny_data, tmp_path, how):
    """A user's metrics.csv beside a run was listed as theirs, then replaced by the csv logger."""
    from .runs import StopAt

    out = tmp_path / "run"
    if how == "resume":
        import digitsum

        digitsum.train(RECIPES / "original.toml", out=out, overrides={"train.epochs": 2, "data.batch_size": 64},
                       callbacks=[StopAt(1, 2)], progress=False)  # fmt: skip
    else:
        assert cli("run", RECIPES / "original.toml", *TINY, "--out", out).code == 0
    (out / "metrics.csv").write_text("my own table")
    before = tree(out)
    again = cli("run", "--resume", out, "--set", "log.csv=true") if how == "resume" else \
        cli("run", RECIPES / "original.toml", *TINY, "--set", "log.csv=true", "--out", out, "--force")
    assert again.code == 2 and "holds metrics.csv, which digitsum did not write, and this run would write over it" in again.err
    assert {k: v for k, v in tree(out).items() if k != MARKER} == {k: v for k, v in before.items() if k != MARKER}  # nothing replaced or removed


def test_an_export_into_the_run_directory_is_the_runs_and_goes_with_it_on_force(cli, tiny_data, tmp_path):
    import digitsum

    out = tmp_path / "run"
    run = digitsum.train(RECIPES / "original.toml", out, overrides=["train.epochs=1", "data.batch_size=64"], progress=False)
    exported = run.export("torchscript")
    written = {exported.path.name, exported.sidecar.name, exported.preprocess.name}
    assert all((out / name).is_file() for name in written)
    second = cli("run", RECIPES / "original.toml", *TINY, "--set", "backbone.hidden=[30]", "--out", out, "--force")
    assert second.code == 0, second.err
    # was: the old model and its sidecar stayed, marked as the user's, beside a different model
    assert not any((out / name).exists() for name in written)
