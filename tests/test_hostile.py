"""Hostile and broken inputs: each ends in a clear message naming the culprit, exit code 2,
no traceback, and nothing written or half-written."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from digitsum.data import MNIST_FILES
from digitsum.testing import write_idx

from .conftest import RECIPES
from .runs import StopAt, outcome, snapshot, train

GOOD = (RECIPES / "original.toml").read_text()
# the lines the cases below edit, whatever values the shipped recipe holds
EPOCHS = re.search(r"^epochs = .*$", GOOD, re.MULTILINE).group(0)
LR = re.search(r"^lr = .*$", GOOD, re.MULTILINE).group(0)
GOOD_LR = tomllib.loads(GOOD)["train"]["optimizer"]["lr"]


@dataclass
class Env:
    tmp: Path
    data: Path  # a private copy of the tiny data set, free to break
    finished: Path  # a private copy of a finished 1-epoch run
    stopped: Path  # a private copy of a run stopped in epoch 1 (of 2)
    out: Path  # a --out folder that does not exist yet

    def recipe(self, text: str, name: str = "r.toml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def edit(self, old: str, new: str) -> Path:
        assert old in GOOD
        return self.recipe(GOOD.replace(old, new))

    def idx(self, split: str, kind: int) -> Path:
        return self.data / "MNIST" / "raw" / MNIST_FILES[split][kind]


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory, tiny_root):
    base = tmp_path_factory.mktemp("saved")
    train(tiny_root, base / "finished", epochs=1)
    train(tiny_root, base / "stopped", callbacks=[StopAt(1, 2)], epochs=2)
    return base


@pytest.fixture
def env(tmp_path, tiny_root, saved_runs, monkeypatch) -> Env:
    data = tmp_path / "data"
    shutil.copytree(tiny_root, data)
    monkeypatch.setenv("DIGITSUM_DATA", str(data))
    for name in ("finished", "stopped"):
        shutil.copytree(saved_runs / name, tmp_path / name)
        # point the copies at the private data set, in recipe.toml and checkpoint alike
        recipe = tmp_path / name / "recipe.toml"
        recipe.write_text(recipe.read_text().replace(str(tiny_root), str(data)))
    return Env(tmp_path, data, tmp_path / "finished", tmp_path / "stopped", tmp_path / "out")


def run_recipe(e: Env, recipe: Path, *args: str) -> list:
    return ["run", recipe, "--out", e.out, *args]


def tiny(e: Env) -> list[str]:
    return ["--set", "train.epochs=1", "--set", "data.batch_size=64"]


def change_checkpoint(run: Path, change: Callable[[dict], object]) -> None:
    path = run / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state = change(state) or state
    torch.save(state, path)


def truncate(path: Path, keep: int | float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])


def good(e: Env, *args: str) -> list:
    """Run the shipped recipe briefly into the fresh --out folder."""
    return ["run", RECIPES / "original.toml", *tiny(e), "--out", e.out, *args]


# Each case: id -> (setup returning the CLI arguments, substrings the error message must hold).
CASES: dict[str, tuple[Callable[[Env], list], list[str]]] = {
    # -- recipe documents -------------------------------------------------------------------
    "invalid-toml": (lambda e: run_recipe(e, e.recipe("name = \n")), ["r.toml:1", "invalid TOML"]),
    "recipe-is-a-folder": (lambda e: run_recipe(e, e.tmp), ["is a folder"]),
    "recipe-missing": (lambda e: run_recipe(e, e.tmp / "nope.toml"), ["recipe not found", "nope.toml"]),
    "epochs-wrong-type": (lambda e: run_recipe(e, e.edit(EPOCHS, 'epochs = "four"')), ["r.toml:", "train.epochs", "valid integer"]),
    "table-is-a-string": (lambda e: run_recipe(e, e.recipe('backbone = "concat"\n' + GOOD.replace("[backbone]", "[unused]"))), ["backbone: must be a table"]),
    "heads-empty": (lambda e: run_recipe(e, e.recipe("heads = {}\n" + GOOD.split("[heads.digit]")[0])), ["r.toml:1 heads: needs at least one [heads.<name>] table"]),
    "negative-lr": (lambda e: run_recipe(e, e.edit(LR, "lr = -0.1")), ["train.optimizer.lr", "greater than 0"]),
    "nan-lr": (lambda e: run_recipe(e, e.edit(LR, "lr = nan")), ["train.optimizer.lr: must be a number, not NaN"]),
    "zero-batch-size": (lambda e: run_recipe(e, e.edit("batch_size = 128", "batch_size = 0")), ["data.batch_size", "greater than or equal to 1"]),
    "huge-epochs": (lambda e: run_recipe(e, e.edit(EPOCHS, "epochs = 100000000")), ["train.epochs", "less than or equal to 1000"]),
    "unknown-top-level-key": (lambda e: run_recipe(e, e.edit("seed = 0", "seed = 0\nseeed = 1")), ["seeed: unknown key", "did you mean 'seed'"]),
    "unknown-train-key": (lambda e: run_recipe(e, e.edit(EPOCHS, EPOCHS + "\nepoch = 4")), ["train.epoch: unknown key", "'epochs'"]),
    "unknown-component-param": (lambda e: run_recipe(e, e.edit("hidden = [120, 60]", "hiden = [120, 60]")), ["backbone.hiden: unknown key", "'hidden'"]),
    "unknown-head-key": (lambda e: run_recipe(e, e.edit("weight = 1.0", "wieght = 1.0")), ["heads.sum.wieght: unknown key", "'weight'"]),
    "unknown-component": (lambda e: run_recipe(e, e.edit('type = "concat"', 'type = "concatt"')), ["backbone.type", "did you mean 'concat'"]),
    "checkpoint-every-negative": (lambda e: run_recipe(e, e.edit(EPOCHS, EPOCHS + "\ncheckpoint_every = -5")), ["train.checkpoint_every", "greater than or equal to 0"]),
    "seed-is-a-float": (lambda e: run_recipe(e, e.edit("seed = 0", "seed = 0.5")), ["seed: must be an integer"]),
    "extends-missing-parent": (lambda e: run_recipe(e, e.recipe('extends = "gone.toml"\n')), ["extends", "parent recipe 'gone.toml' not found"]),
    "extends-not-a-path": (lambda e: run_recipe(e, e.recipe("extends = 3\n")), ["extends", "must be a recipe name or a path"]),
    "extends-a-url": (lambda e: run_recipe(e, e.recipe('extends = "https://example.com/x.toml"\n')), ["r.toml:1 extends", "is a URL", "downloads none"]),
    "init-weights-a-url": (lambda e: good(e, "--set", "init.weights=https://example.com/w.safetensors"), ["init.weights", "is a URL"]),
    "name-path-traversal": (lambda e: ["run", e.edit('name = "original"', 'name = "../../escape"')], ["name: must be 1-64 ASCII letters"]),
    "name-absolute-path": (lambda e: ["run", e.edit('name = "original"', 'name = "/tmp/escape"')], ["name: must be 1-64 ASCII letters"]),
    # -- resource limits and names (issue 26): refused before anything recurses or allocates ------
    "nested-arrays": (lambda e: run_recipe(e, e.recipe("x = " + "[" * 5000 + "]" * 5000 + "\n" + GOOD)), ["r.toml:1", "nested more than 32 levels"]),
    "nested-inline-tables": (lambda e: run_recipe(e, e.recipe("x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n" + GOOD)), ["r.toml:1", "nested more than 32 levels"]),
    "long-table-header": (lambda e: run_recipe(e, e.recipe(GOOD + "\n[" + ".".join(["t"] * 5000) + "]\n")), ["t.t.t.t", "nested more than 32 levels"]),
    "long-key": (lambda e: run_recipe(e, e.recipe("k" * 10**6 + " = 1\n" + GOOD)), ["r.toml:1", "a key must be 1-128 printable characters"]),
    "head-name-with-a-dot": (lambda e: run_recipe(e, e.recipe(GOOD + '\n[heads."a.b"]\ntarget = "sum"\n')), ["heads.'a.b'", "a head's name must be"]),
    "head-name-empty": (lambda e: run_recipe(e, e.recipe(GOOD + '\n[heads.""]\ntarget = "sum"\n')), ["heads.''", "a head's name must be"]),
    "head-name-escape-sequence": (lambda e: run_recipe(e, e.recipe(GOOD + '\n[heads."\\u001b[2J"]\ntarget = "sum"\n')), ["heads.'\\x1b[2J'", "a head's name must be"]),
    "logger-name-with-a-dot": (lambda e: run_recipe(e, e.recipe(GOOD + '\n[log."a.b"]\ntype = "csv"\n')), ["log.'a.b'", "a logger's name must be"]),
    "set-extends": (lambda e: good(e, "--set", "extends=film"), ["--set extends=film extends: cannot be overridden"]),
    "set-deeply-nested-value": (lambda e: good(e, "--set", "x=" + "[" * 5000 + "]" * 5000), ["--set", "nested more than 32 levels"]),
    "set-long-key-path": (lambda e: good(e, "--set", ".".join(["a"] * 500) + "=1"), ["--set", "nested more than 32 levels"]),
    # -- --set overrides ---------------------------------------------------------------------
    "set-name-traversal": (lambda e: ["run", RECIPES / "original.toml", "--set", "name=../../escape"], ["--set name=../../escape", "name: must be"]),
    "set-without-value": (lambda e: good(e, "--set", "train.optimizer.lr"), ["--set", "expected KEY=VALUE"]),
    "set-empty-key": (lambda e: good(e, "--set", "=3"), ["--set", "expected KEY=VALUE"]),
    "set-unknown-key": (lambda e: good(e, "--set", "train.lrate=1"), ["--set train.lrate=1", "unknown key"]),
    "set-into-a-value": (lambda e: good(e, "--set", "train.epochs.x=1"), ["train.epochs.x", "is not a table"]),
    "set-wrong-type": (lambda e: good(e, "--set", "train.optimizer.lr=fast"), ["--set train.optimizer.lr=fast", "valid number"]),
    "set-bool-seed": (lambda e: good(e, "--set", "seed=true"), ["--set seed=true", "seed: must be an integer"]),
    "set-enormous-integer": (lambda e: good(e, "--set", "data.batch_size=99999999999999999999999"), ["data.batch_size", "less than or equal to 65536"]),
    # -- the output folder ---------------------------------------------------------------------
    "out-is-a-file": (lambda e: ["run", RECIPES / "original.toml", *tiny(e), "--out", e.recipe("x", "file.txt")], ["file.txt is a file"]),
    "out-under-a-file": (lambda e: ["run", RECIPES / "original.toml", *tiny(e), "--out", e.recipe("x", "file.txt") / "run"], ["cannot write the run directory", "file.txt/run"]),
    "out-not-empty": (lambda e: ["run", RECIPES / "original.toml", *tiny(e), "--out", e.data], ["already exists and is not a run directory digitsum made"]),
    "out-not-a-run-even-with-force": (lambda e: ["run", RECIPES / "original.toml", *tiny(e), "--out", e.data, "--force"], ["not a run directory digitsum made", "replaces nothing it did not write"]),
    "out-finished-run": (lambda e: ["run", RECIPES / "original.toml", *tiny(e), "--out", e.finished], ["holds a finished run", "--force"]),
    "out-unfinished-run": (lambda e: ["run", RECIPES / "original.toml", *tiny(e), "--out", e.stopped], ["holds an unfinished run", "--resume"]),
    # -- resume and eval -----------------------------------------------------------------------
    "run-without-recipe": (lambda e: ["run"], ["give a recipe"]),
    "resume-missing-dir": (lambda e: ["run", "--resume", e.tmp / "nowhere"], ["run directory not found", "nowhere"]),
    "resume-a-file": (lambda e: ["run", "--resume", e.recipe("x", "notes.txt")], ["notes.txt is a file, not a run directory"]),
    "recipe-empty-string": (lambda e: ["run", "", "--out", e.out], ["the recipe is empty"]),  # was: ". is a folder"
    "resume-not-a-run-dir": (lambda e: ["run", "--resume", e.data], ["not a run directory", "no recipe.toml"]),
    "resume-with-recipe": (lambda e: ["run", RECIPES / "original.toml", "--resume", e.stopped], ["--resume", "no RECIPE"]),
    "resume-with-set": (lambda e: ["run", "--resume", e.stopped, "--set", "train.optimizer.lr=1"], ["--resume", "--set"]),
    "resume-finished-run": (lambda e: ["run", "--resume", e.finished], ["finished all 1 epochs", "nothing to resume"]),
    "eval-unknown-split": (lambda e: ["eval", e.finished, "--split", "validation"], ["--split 'validation'", "valid: test, train"]),
}


def case(name: str, *expected: str):
    """Register a case whose setup breaks something first."""

    def register(setup: Callable[[Env], list]) -> Callable[[Env], list]:
        CASES[name] = (setup, list(expected))
        return setup

    return register


@case("not-utf8", "r.toml", "not UTF-8")
def _(e: Env) -> list:
    (e.tmp / "r.toml").write_bytes(b"\xff\xfe[data]")
    return run_recipe(e, e.tmp / "r.toml")


@case("extends-cycle", "extends itself in a cycle", "a.toml -> ", "b.toml")
def _(e: Env) -> list:
    e.recipe('extends = "a.toml"\n', "b.toml")
    return run_recipe(e, e.recipe('extends = "b.toml"\n', "a.toml"))


@case("recipe-50-mb", "big.toml is larger than 1 MiB")
def _(e: Env) -> list:
    with (e.tmp / "big.toml").open("w") as f:
        f.write(GOOD + "\n# ")
        f.truncate(50 << 20)  # sparse; read no further than the limit
    return run_recipe(e, e.tmp / "big.toml")


@case("extends-chain-of-400-files", "the chain of extends is longer than 32 files", "c399.toml -> ", "c367.toml")
def _(e: Env) -> list:
    e.recipe(GOOD, "c0.toml")
    for i in range(1, 400):
        e.recipe(f'extends = "c{i - 1}.toml"\n', f"c{i}.toml")  # read no further than c368
    return run_recipe(e, e.tmp / "c399.toml")


@case("idx-missing", "t10k-labels-idx1-ubyte", "download is off")
def _(e: Env) -> list:
    e.idx("test", 1).unlink()
    return good(e, "--set", "data.download=false")


@case("idx-is-a-fifo", "t10k-images-idx3-ubyte is not a regular file", "move it away")
def _(e: Env) -> list:
    e.idx("test", 0).unlink()
    os.mkfifo(e.idx("test", 0))  # with download on: named, never downloaded over (nor blocked on)
    return good(e)


@case("idx-is-a-folder", "train-labels-idx1-ubyte is a folder")
def _(e: Env) -> list:
    e.idx("train", 1).unlink()
    e.idx("train", 1).mkdir()
    return good(e)


@case("idx-truncated", "train-images-idx3-ubyte", "truncated or corrupt")
def _(e: Env) -> list:
    truncate(e.idx("train", 0), 0.5)
    return good(e)


@case("idx-shorter-than-header", "train-labels-idx1-ubyte", "shorter than an IDX header")
def _(e: Env) -> list:
    truncate(e.idx("train", 1), 5)
    return good(e)


@case("idx-wrong-magic", "t10k-images-idx3-ubyte", "magic number 2049, expected 2051")
def _(e: Env) -> list:
    path = e.idx("test", 0)
    path.write_bytes((2049).to_bytes(4, "big") + path.read_bytes()[4:])
    return good(e)


@case("idx-wrong-image-size", "train-images-idx3-ubyte", "32x32 images")
def _(e: Env) -> list:
    write_idx(e.idx("train", 0), np.zeros((512, 32, 32), dtype=np.uint8))
    return good(e)


@case("idx-label-out-of-range", "train-labels-idx1-ubyte", "label 12")
def _(e: Env) -> list:
    write_idx(e.idx("train", 1), np.full(512, 12, dtype=np.uint8))
    return good(e)


@case("idx-count-mismatch", "512 images", "100 labels")
def _(e: Env) -> list:
    write_idx(e.idx("train", 1), np.zeros(100, dtype=np.uint8))
    return good(e)


@case("resume-newer-format", "checkpoint.pt", "run format 99", "newer digitsum")
def _(e: Env) -> list:
    change_checkpoint(e.stopped, lambda s: s.update(format=99))
    return ["run", "--resume", e.stopped]


@case("resume-older-format", "checkpoint.pt", "run format 1", "older digitsum")
def _(e: Env) -> list:
    change_checkpoint(e.stopped, lambda s: s.update(format=1))
    return ["run", "--resume", e.stopped]


@case("eval-newer-format", "checkpoint.pt", "run format 3")
def _(e: Env) -> list:
    change_checkpoint(e.finished, lambda s: s.update(format=3))
    return ["eval", e.finished]


@case("eval-format-an-empty-tensor", "checkpoint.pt", "records no run format")
def _(e: Env) -> list:
    # found by the checkpoint property test: a tensor's == is a tensor, whose truth is an error
    change_checkpoint(e.finished, lambda s: s.update(format=torch.tensor([])))
    return ["eval", e.finished]


def _weights(change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], None]:
    return lambda s: s.update(model={k: change(v) for k, v in s["model"].items()})


@case("eval-integer-weights", "checkpoint.pt", "integer tensors where the model's are floating point")
def _(e: Env) -> list:
    change_checkpoint(e.finished, _weights(lambda t: t.long() if t.is_floating_point() else t))
    return ["eval", e.finished]


@case("predict-nan-weights", "checkpoint.pt", "tensors holding NaN or inf")
def _(e: Env) -> list:
    change_checkpoint(e.finished, _weights(lambda t: torch.full_like(t, float("nan")) if t.is_floating_point() else t))
    return ["predict", e.finished, "-i", "number=3", "-i", f"image={e.tmp / 'none.png'}"]


# found by a hostile-input audit: torch's own checks raised deep inside (tracebacks, exit 1)
@case("eval-meta-weights", "checkpoint.pt", "meta tensors (they hold no values), where a run writes ordinary ones")
def _(e: Env) -> list:
    change_checkpoint(e.finished, _weights(lambda t: torch.empty_like(t, device="meta")))
    return ["eval", e.finished]


@case("export-float8-weights", "checkpoint.pt", "tensors of element type torch.float8_e4m3fn, where a run writes ordinary ones")
def _(e: Env) -> list:
    change_checkpoint(e.finished, _weights(lambda t: t.to(torch.float8_e4m3fn) if t.is_floating_point() else t))
    return ["export", e.finished, "--out", e.tmp / "m.pt", "--format", "torchscript"]


@case("resume-nested-optimizer-state", "checkpoint.pt", "nested tensors at optimizer.state.0.exp_avg")
def _(e: Env) -> list:
    change_checkpoint(e.stopped, lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.nested.nested_tensor([torch.zeros(2)])))
    return ["run", "--resume", e.stopped]


@case("resume-a-pipe-named-as-the-lock", ".digitsum-lock is not a regular file")
def _(e: Env) -> list:
    lock = e.stopped / ".digitsum-lock"
    lock.unlink(missing_ok=True)
    os.mkfifo(lock)
    return ["run", "--resume", e.stopped]


@case("eval-checkpoint-a-link-in-a-loop", "checkpoint.pt is a link that leads to no file")
def _(e: Env) -> list:
    (e.finished / "checkpoint.pt").unlink()
    (e.finished / "checkpoint.pt").symlink_to("checkpoint.pt")  # was: "the run stopped before its first checkpoint"
    return ["eval", e.finished]


@case("predict-an-image-that-is-a-link-in-a-loop", "loop.png is a link that leads to no file")
def _(e: Env) -> list:
    (e.tmp / "loop.png").symlink_to("loop.png")  # was: "no such file"
    return ["predict", e.finished, "-i", "number=3", "-i", f"image={e.tmp / 'loop.png'}"]


@case("resume-seconds-nan", "checkpoint.pt", "seconds and epoch_seconds must be finite")
def _(e: Env) -> list:
    change_checkpoint(e.stopped, lambda s: s.update(seconds=float("nan")))
    return ["run", "--resume", e.stopped]


@case("integer-of-5000-digits-in-a-recipe", "r.toml:2", "an integer of 5000 digits")
def _(e: Env) -> list:
    return run_recipe(e, e.recipe('extends = "original"\nseed = ' + "1" * 5000 + "\n"))


@case("integer-of-5000-digits-in-a-set", "seed: must be an integer from 0 to 2**63-1")
def _(e: Env) -> list:
    return good(e, "--set", "seed=" + "1" * 5000)


@case("init-weights-in-the-run-it-replaces", "init.weights", "is in the run directory", "this run writes")
def _(e: Env) -> list:
    return ["run", RECIPES / "original.toml", *tiny(e), "--set", f"init.weights='{e.finished}'", "--out", e.finished, "--force"]


@case("resume-older-run-without-checkpoint", "summary.json", "run format 1")
def _(e: Env) -> list:
    (e.stopped / "checkpoint.pt").unlink()
    (e.stopped / "summary.json").write_text('{"format": 1}')
    return ["run", "--resume", e.stopped]


@case("checkpoint-random-bytes", "checkpoint.pt", "not a digitsum checkpoint")
def _(e: Env) -> list:
    (e.finished / "checkpoint.pt").write_bytes(os.urandom(4096))
    return ["eval", e.finished]


@case("checkpoint-corrupt-zip", "checkpoint.pt", "truncated or corrupt")
def _(e: Env) -> list:
    path = e.finished / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:4] + os.urandom(8192))
    return ["eval", e.finished]


@case("checkpoint-truncated", "checkpoint.pt", "truncated or corrupt")
def _(e: Env) -> list:
    truncate(e.stopped / "checkpoint.pt", 0.5)
    return ["run", "--resume", e.stopped]


@case("checkpoint-empty", "checkpoint.pt", "empty, truncated")
def _(e: Env) -> list:
    truncate(e.finished / "checkpoint.pt", 0)
    return ["eval", e.finished]


@case("checkpoint-not-a-dict", "checkpoint.pt", "holds a Tensor")
def _(e: Env) -> list:
    torch.save(torch.zeros(3), e.finished / "checkpoint.pt")
    return ["eval", e.finished]


@case("checkpoint-missing-fields", "checkpoint.pt", "'optimizer' is missing")
def _(e: Env) -> list:
    change_checkpoint(e.stopped, lambda s: {"format": s["format"], "model": s["model"]})
    return ["run", "--resume", e.stopped]


@case("checkpoint-other-recipe", "different recipe", f"train.optimizer.lr is {GOOD_LR} in the recipe but 0.5 in the checkpoint")
def _(e: Env) -> list:
    change_checkpoint(e.stopped, lambda s: s["recipe"]["train"]["optimizer"].update(lr=0.5))
    return ["run", "--resume", e.stopped]


@case("checkpoint-recipe-holds-a-tensor", "checkpoint.pt", "'recipe' should hold plain data", "train.optimizer.lr")
def _(e: Env) -> list:
    # a tensor's != is a tensor, whose truth is an error: the recipe comparison must never see one
    change_checkpoint(e.stopped, lambda s: s["recipe"]["train"]["optimizer"].update(lr=torch.tensor([0.1, 0.2])))
    return ["run", "--resume", e.stopped]


@case("checkpoint-other-weights", "checkpoint.pt", "does not fit the model", "heads.sum")
def _(e: Env) -> list:
    change_checkpoint(e.finished, lambda s: s["model"].update({"heads.sum.linear.weight": torch.zeros(3, 3)}))
    return ["eval", e.finished]


@case("checkpoint-position-outside-run", "checkpoint.pt", "step 1000000")
def _(e: Env) -> list:
    change_checkpoint(e.stopped, lambda s: s.update(step=10**6))
    return ["run", "--resume", e.stopped]


@case("run-recipe-broken", "recipe.toml:1", "invalid TOML")
def _(e: Env) -> list:
    (e.finished / "recipe.toml").write_text("[train\n")
    return ["eval", e.finished]


@case("resume-finished-run-without-checkpoint", "checkpoint.pt is missing", "says the run finished", "--force")
def _(e: Env) -> list:
    # was: the finished run trained again from its start, its summary and pictures replaced
    (e.finished / "checkpoint.pt").unlink()
    return ["run", "--resume", e.finished]


@case("resume-stopped-run-without-checkpoint", "checkpoint.pt is missing", "stopped at step 3 (0 epochs done)")
def _(e: Env) -> list:
    (e.stopped / "checkpoint.pt").unlink()
    return ["run", "--resume", e.stopped]


@case("repair-into-a-fifo", "is not a regular file")
def _(e: Env) -> list:
    os.mkfifo(e.tmp / "fixed.toml")  # was: the doctor hung reading it, and Ctrl-C did not stop it
    return ["doctor", RECIPES / "notebook.toml", "--repair", e.tmp / "fixed.toml"]


@case("export-preprocess-a-fifo", "model_preprocess.py", "not a regular file")
def _(e: Env) -> list:
    os.mkfifo(e.tmp / "model_preprocess.py")
    return ["export", e.finished, "--out", e.tmp / "model.onnx"]


@case("sweep-into-a-users-folder", "is not a sweep folder digitsum made", "notes.txt")
def _(e: Env) -> list:
    (e.tmp / "mine").mkdir()
    (e.tmp / "mine" / "notes.txt").write_text("keep")
    return ["sweep", RECIPES / "original.toml", "--param", "train.optimizer.lr=loguniform:1e-3:1e-2", "--trials", "1",
            "--val", "64", *tiny(e), "--out", e.tmp / "mine"]


@case("sweep-storage-not-a-journal", "notes.txt is not an Optuna journal")
def _(e: Env) -> list:
    (e.tmp / "notes.txt").write_text("my notes, not a journal\n")  # was: appended to, then a JSONDecodeError traceback
    return ["sweep", RECIPES / "original.toml", "--param", "train.optimizer.lr=loguniform:1e-3:1e-2", "--trials", "1",
            "--val", "64", *tiny(e), "--out", e.tmp / "sw", "--storage", f"journal:{e.tmp / 'notes.txt'}"]


@case("sweep-study-a-path", "--study '../escaped'", "a study name is letters")
def _(e: Env) -> list:
    # was: sweeps/../escaped, a folder outside sweeps/
    return ["sweep", RECIPES / "original.toml", "--param", "train.optimizer.lr=loguniform:1e-3:1e-2", "--trials", "1",
            "--val", "64", *tiny(e), "--study", "../escaped"]


@case("argument-not-utf-8", "argument 'description=\\xff' is not valid UTF-8")
def _(e: Env) -> list:
    # was: a UnicodeEncodeError traceback, and a run folder left half-made
    return good(e, "--set", b"description=\xff".decode("utf-8", "surrogateescape"))


@case("eval-without-checkpoint", "no checkpoint.pt")
def _(e: Env) -> list:
    (e.stopped / "checkpoint.pt").unlink()
    return ["eval", e.stopped]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_refused_clearly(cli, env, case, tmp_path):
    setup, expected = CASES[case]
    args = setup(env)
    before = snapshot(tmp_path)
    result = cli(*args)
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err and "Traceback" not in result.out
    message = " ".join(result.err.split())
    for part in expected:
        assert part in message, (part, message)
    assert snapshot(tmp_path) == before  # nothing written, nothing changed
    assert not env.out.exists()


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_traversing_names_create_nothing_outside(cli, env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (CASES["name-path-traversal"][0](env), CASES["set-name-traversal"][0](env)):
        assert cli(*args).code == 2
    assert not (tmp_path.parent / "escape").exists() and not (tmp_path / "runs").exists()


# -- a full disk --------------------------------------------------------------------------------


def fail_writes(monkeypatch, name: str, nth: int) -> None:
    """Make the ``nth`` atomic write of the run file ``name`` fail as a full disk does."""
    real_fsync, count = os.fsync, {"n": 0}

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if Path(target).name.startswith(f".{name}."):
            count["n"] += 1
            if count["n"] == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the file being written")
# (file, which of its writes fails, the epoch of the checkpoint left behind)
@pytest.mark.parametrize("name,nth,kept", [("recipe.toml", 1, None), ("metrics.jsonl", 3, 1), ("checkpoint.pt", 2, 1), ("summary.json", 1, 2)])
def test_full_disk_leaves_every_file_whole(cli, tiny_data, tmp_path, name, nth, kept):
    out = tmp_path / "run"
    args = ["run", RECIPES / "original.toml", "--set", "train.epochs=2", "--set", "data.batch_size=64", "--out", out]
    with pytest.MonkeyPatch.context() as patch:
        fail_writes(patch, name, nth)
        result = cli(*args)
    assert result.code == 2 and "Traceback" not in result.err
    message = " ".join(result.err.split())
    assert f"cannot write {out / name}: No space left on device" in message
    assert not list(out.glob(".*.tmp"))  # no half-written file left behind
    assert (out / "checkpoint.pt").exists() == (kept is not None)
    if kept is not None:
        assert f"resume with: digitsum run --resume {out}" in message
        from digitsum.engine.checkpoint import load_checkpoint

        assert load_checkpoint(out / "checkpoint.pt")["epoch"] == kept  # the last good one
    for line in (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []:
        assert line.startswith("{") and line.endswith("}")
    # once there is space again, the run continues to the very result of an uninterrupted run
    if (out / "recipe.toml").exists():
        resumed = cli("run", "--resume", out)
        assert resumed.code == 0, resumed.err
        reference = tmp_path / "reference"
        assert cli(*args[:-1], reference).code == 0
        assert outcome(out) == outcome(reference)


def test_files_digitsum_writes_get_the_usual_permissions(tmp_path):
    import os

    from digitsum.files import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "new.txt", "x")
        (tmp_path / "mine.txt").write_text("y")
        os.chmod(tmp_path / "mine.txt", 0o640)
        write_text(tmp_path / "mine.txt", "z")  # replacing a file keeps its mode
    finally:
        os.umask(old)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "mine.txt").stat().st_mode & 0o777 == 0o640


def test_a_sweep_names_a_refused_choice_without_its_escape_sequence():
    pytest.importorskip("optuna")
    import digitsum
    from digitsum.errors import RecipeError

    with pytest.raises(RecipeError) as e:
        digitsum.sweep("original", ["backbone.type=choice:concat,\x1b[31mred" + "x" * 200], 2)
    [problem] = e.value.problems
    assert problem.where.startswith("--param 'backbone.type=choice:concat,\\x1b[31m") and len(problem.where) < 100
    assert problem.message.startswith("the choice '\\x1b[31mredxxx") and "... is refused: " in problem.message
