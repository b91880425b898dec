"""Hostile inputs found by a second attack (issue: hostile files and recipes), each held by a
general guard: a write never replaces what is not a file, nothing reads from a pipe, an empty
data split or a --set value holding several lines is refused, a resumed run claims no file the
user put beside it, and a recipe's count of heads and loggers is bounded."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from pathlib import Path

import pytest

from digitsum.data import MNIST_FILES

from .conftest import RECIPES, TINY, run_subprocess
from .runs import StopAt, train

GOOD = (RECIPES / "original.toml").read_text()


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays
    return path


@pytest.mark.parametrize("make", [_fifo, _socket], ids=["fifo", "socket"])
def test_force_never_replaces_what_is_not_a_file(cli, tmp_path, make):
    # `digitsum cp original /dev/full --force` as root replaced the device with the recipe
    target = make(tmp_path / "x.toml")
    result = cli("cp", "original", target, "--force")
    assert result.code == 2, result.err
    assert "x.toml" in result.err and "not a regular file" in result.err
    assert not stat.S_ISREG(target.lstat().st_mode)  # still the pipe or the socket
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.toml"]  # no temporary file left


def test_init_weights_that_are_a_pipe_are_refused_without_waiting(tmp_path, tiny_root):
    # opening a FIFO for reading waits for a writer: the run hung for ever
    _fifo(tmp_path / "w.safetensors")
    recipe = tmp_path / "r.toml"
    recipe.write_text(GOOD + '\n[init]\nweights = "w.safetensors"\n')
    result = run_subprocess("run", recipe, *TINY, "--out", tmp_path / "out", env={"DIGITSUM_DATA": str(tiny_root)}, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "w.safetensors" in result.stderr and "not a regular file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["pipe", "link-loop"])
def test_extends_naming_a_pipe_or_a_link_loop_says_what_it_is(cli, tmp_path, kind):
    parent = tmp_path / "p.toml"
    _fifo(parent) if kind == "pipe" else os.symlink(parent, parent)
    result = cli("show", tmp_path.joinpath("r.toml").write_text('extends = "p.toml"\n') and tmp_path / "r.toml")
    assert result.code == 2
    message = " ".join(result.err.split())
    assert "p.toml is not a regular file" in message and "not found" not in message


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_idx_split_without_images_is_refused(cli, tmp_path, tiny_root, split):
    # a header claiming 0 images: the training split trained on nothing and "succeeded"; the test
    # split ended in a StopIteration traceback
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (n for pair in MNIST_FILES.values() for n in pair):
        (raw / name).write_bytes((tiny_root / "MNIST" / "raw" / name).read_bytes())
    images, labels = MNIST_FILES[split]
    (raw / images).write_bytes(struct.pack(">IIII", 2051, 0, 28, 28))
    (raw / labels).write_bytes(struct.pack(">II", 2049, 0))
    result = cli("run", RECIPES / "original.toml", *TINY, "--set", f"data.root='{tmp_path}'", "--out", tmp_path / "out")
    assert result.code == 2, result.err
    assert f"no {'training' if split == 'train' else 'test'} example" in " ".join(result.err.split())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["seed=1\nname='x'", "seed=1\r\nname='x'", "heads.sum.weight=2\n[train]\nepochs=3"])
def test_a_set_value_of_several_toml_lines_is_refused(cli, value):
    # the first line was taken and the rest silently dropped
    result = cli("show", RECIPES / "original.toml", "--set", value)
    assert result.code == 2, result.out
    assert "--set" in result.err and "one value" in result.err


def test_a_multi_line_string_stays_one_value(cli):
    result = cli("show", RECIPES / "original.toml", "--set", "description='''a\nb'''")
    assert result.code == 0, result.err
    assert 'description = "a\\nb"' in result.out


def test_a_resumed_run_claims_no_file_the_user_put_beside_it(cli, tiny_root, tmp_path):
    run = tmp_path / "run"
    train(tiny_root, run, callbacks=[StopAt(1, 2)], epochs=2)
    (run / "notes.txt").write_text("mine")
    (run / "plots").mkdir()
    (run / "plots" / "mine.png").write_bytes(b"mine")
    assert cli("run", "--resume", run).code == 0
    assert not {"notes.txt", "plots"} & set(json.loads((run / ".digitsum-run").read_text())["outputs"])
    result = cli("run", RECIPES / "original.toml", "--set", f"data.root='{tiny_root}'", *TINY, "--out", run, "--force")
    assert result.code == 0, result.err
    assert (run / "notes.txt").read_text() == "mine" and (run / "plots" / "mine.png").read_bytes() == b"mine"


@pytest.mark.parametrize("table,entry", [("heads", 'type = "classify"\ntarget = "sum"'), ("log", 'type = "csv"')])
def test_a_recipe_of_a_hundred_heads_or_loggers_is_refused_before_it_runs(cli, tiny_data, tmp_path, table, entry):
    # 100 heads: a run of a minute, then a matplotlib traceback drawing the samples' picture;
    # 3000: no end in sight
    many = "".join(f"\n[{table}.x{i}]\n{entry}\n" for i in range(100))
    recipe = tmp_path / "r.toml"
    recipe.write_text(GOOD + many)
    result = cli("run", recipe, *TINY, "--out", tmp_path / "out")
    assert result.code == 2, result.err[-500:]
    message = " ".join(result.err.split())
    assert "r.toml" in message and f"{table}: has 10" in message and "at most 32" in message
    assert not (tmp_path / "out").exists()


def test_the_count_is_of_the_merged_recipe(cli, tmp_path):
    heads = "".join(f'\n[heads.x{i}]\ntype = "classify"\ntarget = "sum"\n' for i in range(20))
    (tmp_path / "a.toml").write_text(GOOD + heads)
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n' + heads.replace("x", "y"))
    assert cli("show", tmp_path / "a.toml").code == 0
    result = cli("show", tmp_path / "b.toml")
    assert result.code == 2 and "heads: has 42 heads" in " ".join(result.err.split())


def test_a_data_set_too_small_for_one_training_example_is_refused(cli, tmp_path, tiny_root):
    # add-100 groups 200 images into an example: from 100 it made none, trained no step and exited 0
    import numpy as np

    from digitsum.testing import write_idx

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES["test"]:
        (raw / name).write_bytes((tiny_root / "MNIST" / "raw" / name).read_bytes())
    images, labels = MNIST_FILES["train"]
    write_idx(raw / images, np.zeros((100, 28, 28), dtype=np.uint8))
    write_idx(raw / labels, np.zeros(100, dtype=np.uint8))
    result = cli("run", "add-100", "--set", "train.epochs=1", "--set", f"data.root='{tmp_path}'", "--set", "data.download=false",
                 "--out", tmp_path / "out")  # fmt: skip
    assert result.code == 2, result.err[-500:]
    assert "no training example" in " ".join(result.err.split())
    assert not (tmp_path / "out").exists()
