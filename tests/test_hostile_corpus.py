"""A corpus of hostile and careless inputs, surface by surface (issue 26): every case ends in exit
0, 1 or 2 (a user error: exit 2 with a short message, naming the file, key or line where one is
known), never a traceback; it writes nothing outside where it should and leaves the user's files
as they were.

A case is an id, a setup that returns the CLI arguments (it may write files into the case's
private folder first), and optionally the text the error must hold and the exit codes it may end
in (default: 2 only). The setups work on a private copy of one shared tiny run; none trains
unless it has to (then one tiny epoch). ``pytest tests/test_hostile_corpus.py`` runs them all.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import stat
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digitsum.data import MNIST_FILES

from .conftest import RECIPES

GOOD = (RECIPES / "original.toml").read_text()
TINY = ["--set", "train.epochs=1", "--set", "data.batch_size=64"]
LONG = "a" * 5000  # longer than any file name a file system takes


class Ctx:
    """The private world of one case: ``tmp`` (the user's folder, watched), a working folder
    ``cwd``, lazily a copy of the tiny run (``run``) and of the tiny data (``data``)."""

    def __init__(self, tmp: Path, tiny_root: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp, self._root, self._run, self.mp = tmp, tiny_root, tiny_run, monkeypatch
        self.cwd = tmp / "cwd"
        self.cwd.mkdir(parents=True)
        self.out = tmp / "out"
        self.allowed: list[Path] = []  # paths a case may write (a successful run's --out, say)

    @property
    def run(self) -> Path:
        path = self.tmp / "run"
        if not path.exists():
            shutil.copytree(self._run, path)
            (path / ".digitsum-lock").unlink(missing_ok=True)
        return path

    @property
    def data(self) -> Path:
        path = self.tmp / "data"
        if not path.exists():
            shutil.copytree(self._root, path)
            self.mp.setenv("DIGITSUM_DATA", str(path))
        return path

    def idx(self, split: str, kind: int) -> Path:
        return self.data / "MNIST" / "raw" / MNIST_FILES[split][kind]

    def file(self, name: str, content: str | bytes = "") -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        return path

    def recipe(self, text: str, name: str = "r.toml") -> Path:
        return self.file(name, text)

    def edit(self, old: str, new: str, name: str = "r.toml") -> Path:
        assert old in GOOD, old
        return self.recipe(GOOD.replace(old, new, 1), name)

    def allow(self, *paths: Path) -> None:
        self.allowed += paths

    # -- a run's files ------------------------------------------------------------------------------

    def checkpoint(self, change: Callable[[dict], object]) -> Path:
        path = self.run / "checkpoint.pt"
        state = torch.load(path, weights_only=True)
        state = change(state) or state
        torch.save(state, path)
        return self.run

    def marker(self, data: object) -> Path:
        text = data if isinstance(data, str) else json.dumps(data)
        (self.run / ".digitsum-run").write_text(text)
        return self.run

    def image(self, name: str, array: np.ndarray | None = None, mode: str | None = None, **save) -> Path:
        if array is None:
            array = np.zeros((28, 28), dtype=np.uint8)
            array[6:22, 12:16] = 255  # a one
        path = self.tmp / name
        Image.fromarray(array, mode).save(path, **save) if mode else Image.fromarray(array).save(path, **save)
        return path


@dataclass
class Case:
    id: str
    setup: Callable[[Ctx], list]
    expect: tuple[str, ...] = ()
    codes: tuple[int, ...] = (2,)
    writes: tuple[str, ...] = ()  # paths under the case's folder it may write when it succeeds


SURFACES: dict[str, list[Case]] = {}


def cases(surface: str) -> Callable[..., None]:
    """``add(id, setup, *expected, codes=(2,))`` for one surface's list."""
    listed = SURFACES.setdefault(surface, [])

    def add(id: str, setup: Callable[[Ctx], list], *expect: str, codes: tuple[int, ...] = (2,), writes: tuple[str, ...] = ()) -> None:
        assert all(c.id != id for c in listed), id
        listed.append(Case(id, setup, expect, codes, writes))

    return add


def predict_args(c: Ctx, image: object, number: object = 3, *extra: str) -> list:
    return ["predict", c.run, "--input", f"image={image}", "--input", f"number={number}", *extra]


# -- recipe files ------------------------------------------------------------------------------------
add = cases("recipe")
add("empty-file", lambda c: ["show", c.recipe("")], "r.toml", "heads")
add("only-a-bom", lambda c: ["show", c.file("r.toml", b"\xef\xbb\xbf")], "r.toml")
add("bom-then-recipe", lambda c: ["show", c.file("r.toml", b"\xef\xbb\xbf" + GOOD.encode())], "r.toml", codes=(0, 2))
add("crlf-line-ends", lambda c: ["show", c.recipe(GOOD.replace("\n", "\r\n"))], codes=(0,))
add("nul-byte", lambda c: ["show", c.file("r.toml", GOOD.encode() + b"\x00x = 1\n")], "r.toml")
add("raw-control-character", lambda c: ["show", c.edit('description = "', 'description = "\x07')], "r.toml", "invalid TOML")
add("escape-sequence-description", lambda c: ["show", c.edit('description = "', 'description = "\\u001b[2J')], codes=(0,))
add("utf16-file", lambda c: ["show", c.file("r.toml", GOOD.encode("utf-16"))], "r.toml")
add("latin1-file", lambda c: ["show", c.file("r.toml", GOOD.replace("right.", "right \xe9.").encode("latin-1"))], "r.toml", "UTF-8")
add("binary-garbage", lambda c: ["show", c.file("r.toml", bytes(range(256)) * 8)], "r.toml")
add("gzip-file", lambda c: ["show", c.file("r.toml", gzip.compress(GOOD.encode()))], "r.toml")
add("json-instead-of-toml", lambda c: ["show", c.recipe(json.dumps({"name": "x"}))], "r.toml", "invalid TOML")
add("name-unicode", lambda c: ["show", c.edit('name = "original"', 'name = "日本"')], "name")
add("name-right-to-left-override", lambda c: ["show", c.edit('name = "original"', 'name = "a\\u202eb"')], "name")
add("name-too-long", lambda c: ["show", c.edit('name = "original"', f'name = "{"n" * 65}"')], "name")
add("name-dot", lambda c: ["run", c.edit('name = "original"', 'name = "."'), *TINY], "name")
add("name-dot-dot", lambda c: ["run", c.edit('name = "original"', 'name = ".."'), *TINY], "name")
add("name-empty", lambda c: ["run", c.edit('name = "original"', 'name = ""'), *TINY], "name")
add("name-nul", lambda c: ["show", c.edit('name = "original"', 'name = "a\\u0000b"')], "name")
add("name-is-a-table", lambda c: ["show", c.edit('name = "original"', "name = {a = 1}")], "name")
add("seed-beyond-int64", lambda c: ["show", c.edit("seed = 0", "seed = 99999999999999999999999")], "seed")
add("seed-negative", lambda c: ["show", c.edit("seed = 0", "seed = -1")], codes=(0, 2))
add("lr-inf", lambda c: ["show", c.edit("lr = 4e-3", "lr = inf")], "train.optimizer.lr")
add("lr-nan", lambda c: ["show", c.edit("lr = 4e-3", "lr = nan")], "train.optimizer.lr")
add("lr-huge", lambda c: ["show", c.edit("lr = 4e-3", "lr = 1e308")], codes=(0, 2))
add("weight-decay-negative", lambda c: ["show", c.edit("weight_decay = 0.05", "weight_decay = -1")], "weight_decay")
add("epochs-float", lambda c: ["show", c.edit("epochs = 8", "epochs = 8.0")], "train.epochs")
add("epochs-zero", lambda c: ["show", c.edit("epochs = 8", "epochs = 0")], "train.epochs")
add("batch-size-bool", lambda c: ["show", c.edit("batch_size = 128", "batch_size = true")], "data.batch_size")
add("head-weight-nan", lambda c: ["show", c.edit("weight = 1.0", "weight = nan")], "heads.sum.weight")
add("head-weight-negative", lambda c: ["show", c.edit("weight = 1.0", "weight = -1.0")], "heads.sum.weight")
add("head-weight-inf", lambda c: ["show", c.edit("weight = 1.0", "weight = inf")], "heads.sum.weight")
add("head-unknown-target", lambda c: ["show", c.edit('target = "sum"', 'target = "product"')], "heads.sum.target")
add("head-unknown-type", lambda c: ["show", c.edit('type = "classify"', 'type = "clasify"')], "heads.digit.type")
add("head-is-a-string", lambda c: ["show", c.recipe('heads = {digit = "classify"}\n' + GOOD.split("[heads.digit]")[0])], "heads.digit")
add("hidden-huge", lambda c: ["show", c.edit("hidden = [120, 60]", "hidden = [1000000000]")], "backbone.hidden")
add("hidden-empty", lambda c: ["show", c.edit("hidden = [120, 60]", "hidden = []")], codes=(0, 2))
add("hidden-zero", lambda c: ["show", c.edit("hidden = [120, 60]", "hidden = [0]")], "backbone.hidden")
add("hidden-strings", lambda c: ["show", c.edit("hidden = [120, 60]", 'hidden = ["a"]')], "backbone.hidden")
add("conv-channels-negative", lambda c: ["show", c.edit("conv_channels = [6, 12]", "conv_channels = [-6, 12]")], "backbone.conv_channels")
add("conv-channels-thousands", lambda c: ["show", c.edit("conv_channels = [6, 12]", "conv_channels = " + str([6] * 5000))], "backbone.conv_channels")
add("device-unknown", lambda c: ["run", c.edit('device = "auto"', 'device = "tpu"'), *TINY], "train.device")
add("device-cuda-99", lambda c: ["run", c.edit('device = "auto"', 'device = "cuda:99"'), *TINY], "cuda")
add("threads-huge", lambda c: ["show", c.edit('device = "auto"', 'device = "auto"\nthreads = 100000')], "train.threads")
add("data-root-empty", lambda c: ["run", c.edit("batch_size = 128", 'batch_size = 64\nroot = ""\ndownload = false'), "--set", "train.epochs=1", "--out", c.out], codes=(0, 2), writes=("out",))  # "": the default folder
add("data-root-is-a-file", lambda c: ["run", c.edit("batch_size = 128", f'batch_size = 64\nroot = "{c.recipe("x", "f.txt")}"\ndownload = false'), "--set", "train.epochs=1"], "f.txt")
add("data-type-unknown", lambda c: ["show", c.edit('type = "single_digit"', 'type = "single-digit"')], "data.type")
add("schedule-warmup-above-one", lambda c: ["show", c.edit("warmup = 0.25", "warmup = 7")], "warmup")
add("momentum-three-values", lambda c: ["show", c.edit("momentum = [0.85, 0.95]", "momentum = [0.85, 0.95, 1]")], "momentum")
add("duplicate-key", lambda c: ["show", c.edit("seed = 0", "seed = 0\nseed = 1")], "r.toml", "invalid TOML")
add("duplicate-table", lambda c: ["show", c.recipe(GOOD + "\n[data]\nbatch_size = 3\n")], "r.toml", "invalid TOML")
add("extends-self", lambda c: ["show", c.recipe('extends = "r.toml"\n')], "cycle")
add("extends-dot-dot", lambda c: ["show", c.recipe('extends = ".."\n')], "extends")
add("extends-root", lambda c: ["show", c.recipe('extends = "/"\n')], "extends")
add("extends-dev-zero", lambda c: ["show", c.recipe('extends = "/dev/zero"\n')], "extends")
add("extends-empty", lambda c: ["show", c.recipe('extends = ""\n')], "extends")
add("extends-list", lambda c: ["show", c.recipe('extends = ["original", "film"]\n')], "extends")
add("extends-long-name", lambda c: ["show", c.recipe(f'extends = "{LONG}"\n')], "r.toml:1 extends: cannot look up")  # was: no file, no key
add("extends-binary-file", lambda c: ["show", c.recipe(f'extends = "{c.file("b.toml", os.urandom(64) + bytes(8))}"\n')], "b.toml")
add("extends-unknown-plugin", lambda c: ["show", c.recipe('extends = "nope:original"\n')], "extends")
add("extends-shipped-name", lambda c: ["show", c.recipe('extends = "film"\n')], codes=(0,))
add("path-symlink-loop", lambda c: (os.symlink(c.tmp / "loop.toml", c.tmp / "loop.toml"), ["show", c.tmp / "loop.toml"])[1], "loop.toml")
add("path-fifo", lambda c: (os.mkfifo(c.tmp / "p.toml"), ["show", c.tmp / "p.toml"])[1], "p.toml")
add("path-dev-null", lambda c: ["show", "/dev/null"], "/dev/null")
add("path-dev-zero", lambda c: ["show", "/dev/zero"], "/dev/zero")
add("path-empty-string", lambda c: ["show", ""])
add("path-too-long", lambda c: ["show", LONG], "too long")
add("path-too-long-run", lambda c: ["run", LONG + ".toml", *TINY], "too long")
add("path-with-nul", lambda c: ["show", "a\x00b.toml"])
add("path-many-levels", lambda c: ["show", "a/" * 3000 + "r.toml"], "too long")
add("name-with-slashes", lambda c: ["show", "../recipes/original"])
add("name-unknown-distribution", lambda c: ["show", "nope:original"], "nope")

# -- --set overrides ---------------------------------------------------------------------------------
add = cases("set")


def show_set(*sets: str) -> Callable[[Ctx], list]:
    return lambda c: ["show", RECIPES / "original.toml", *(a for s in sets for a in ("--set", s))]


add("set-epochs-huge-float", show_set("train.epochs=1e400"), "train.epochs")
add("set-epochs-nan", show_set("train.epochs=nan"), "train.epochs")
add("set-name-empty", show_set("name=''"), "name")
add("set-provenance", show_set("provenance.init_sha256=5"), "provenance.init_sha256: cannot be set")  # was: accepted, dropped unseen
add("set-name-unquoted-empty", show_set("name="), "name")
add("set-root-list", show_set("data.root=[1]"), "data.root")
add("set-heads-empty", show_set("heads={}"), codes=(0, 2))  # merged: changes nothing
add("set-backbone-table", show_set("backbone={type='film'}"), codes=(0, 2))
add("set-two-equals", show_set("train.epochs=1=2"), "train.epochs")
add("set-nul-value", show_set("description='\x00'"), codes=(0, 2))
add("set-nul-key", show_set("na\x00me=1"), "--set")
add("set-unicode-key", show_set("ключ=1"), "--set ключ=1")
add("set-right-to-left-name", show_set("name='a\u202eb'"), "name")
add("set-device-cuda-99", lambda c: ["run", RECIPES / "original.toml", *TINY, "--set", "train.device='cuda:99'", "--out", c.out], "cuda")
add("set-weight-inf", show_set("heads.sum.weight=inf"), "heads.sum.weight")
add("set-logger-unknown", show_set("log.x.type='nope'"), "log.x.type")
add("set-logger-not-a-table", show_set("log.x=3"), "log.x")
add("set-two-megabyte-value", show_set("description='" + "x" * (2 << 20) + "'"), "--set")
add("set-ten-thousand-overrides", lambda c: ["show", RECIPES / "original.toml", *["--set", "seed=1"] * 10000], codes=(0, 2))
add("set-key-only-dots", show_set("...=1"), "--set")
add("set-key-with-spaces", show_set("train epochs=1"), "--set")
add("set-quoted-key", show_set('"train".epochs=1'), codes=(0, 2))
add("set-heads-digit-removed", show_set("heads.digit={}"), codes=(0, 2))
add("set-inline-table-into-scalar", show_set("seed={a=1}"), "seed")
add("set-array-of-tables", show_set("heads=[{type='classify'}]"), "heads")
add("set-resume-key", lambda c: ["run", "--resume", c.run, "--set", "data.root=3"], "data.root")

# -- --grid (compare) ---------------------------------------------------------------------------------
add = cases("grid")


def compare(*args: str) -> Callable[[Ctx], list]:
    return lambda c: ["compare", RECIPES / "original.toml", *TINY, "--out", c.out, *args]


add("grid-without-equals", compare("--grid", "train.optimizer.lr"), "--grid")
add("grid-empty-values", compare("--grid", "train.optimizer.lr="), "--grid")
add("grid-only-commas", compare("--grid", "train.optimizer.lr=,,,"), "--grid")
add("grid-unknown-key", compare("--grid", "train.lrate=1,2"), "train.lrate")
add("grid-wrong-type", compare("--grid", "train.optimizer.lr=fast,slow"), "train.optimizer.lr")
add("grid-one-bad-value", compare("--grid", "train.optimizer.lr=0.1,-1"), "train.optimizer.lr")
add("grid-same-key-twice", compare("--grid", "seed=1,2", "--grid", "seed=3,4"), "seed")
add("grid-a-million-variants", compare("--grid", "seed=" + ",".join(map(str, range(1000))), "--grid", "train.optimizer.lr=" + ",".join(f"0.{i + 1}" for i in range(1000))), "--grid")
add("grid-name-traversal", compare("--grid", "name=../../x,../y"), "name")
add("grid-extends", compare("--grid", "extends=film,original"), "extends")
add("grid-nested-brackets", compare("--grid", "x=" + "[" * 3000), "--grid")
add("compare-no-recipe", lambda c: ["compare", "--out", c.out])
add("compare-missing-recipe", lambda c: ["compare", c.tmp / "nope.toml", "original", "--out", c.out], "nope.toml")
add("compare-out-is-a-file", lambda c: ["compare", RECIPES / "original.toml", *TINY, "--grid", "seed=1,2", "--out", c.file("f.txt", "mine")], "f.txt")
add("compare-out-not-empty", lambda c: (c.file("out/notes.txt", "mine"), ["compare", RECIPES / "original.toml", *TINY, "--grid", "seed=1,2", "--out", c.out])[1], "out")

# -- command-line arguments of every command -----------------------------------------------------------
add = cases("cli")
add("no-command", lambda c: [], codes=(0, 2))
add("unknown-command", lambda c: ["trian"])
add("unknown-option", lambda c: ["run", RECIPES / "original.toml", "--epochs", "3"])
add("show-no-recipe", lambda c: ["show"])
add("run-force-without-out", lambda c: ["run", RECIPES / "original.toml", "--force", "--set", "train.epochs=0"], "train.epochs")
add("cp-unknown-recipe", lambda c: ["cp", "nope", c.tmp / "x.toml"], "nope")
add("cp-over-a-file", lambda c: ["cp", "original", c.file("mine.toml", "mine")], "mine.toml")
add("cp-under-a-file", lambda c: ["cp", "original", c.file("f.txt", "mine") / "x.toml"], "f.txt is a file, not a folder")
add("sweep-out-a-file", lambda c: ["sweep", "original", "--param", "seed=int:0:3", "--trials", "1", "--out", c.file("f.txt", "mine")],
    "--out", "is a file; a sweep writes its trials into a folder")  # was: blamed on a --storage never given
add("cp-into-missing-folder", lambda c: ["cp", "original", c.tmp / "no" / "such" / "x.toml"], codes=(0, 2), writes=("no",))
add("cp-long-destination", lambda c: ["cp", "original", c.tmp / LONG], "too long")
add("cp-onto-a-fifo", lambda c: (os.mkfifo(c.tmp / "p.toml"), ["cp", "original", c.tmp / "p.toml", "--force"])[1], codes=(0, 2), writes=("p.toml",))
add("cp-onto-a-symlinked-file", lambda c: (c.file("mine.toml", "mine"), os.symlink(c.tmp / "mine.toml", c.tmp / "link.toml"), ["cp", "original", c.tmp / "link.toml"])[2], "link.toml")
add("cp-onto-a-dangling-link", lambda c: (os.symlink(c.tmp / "nowhere" / "x.toml", c.tmp / "d.toml"), ["cp", "original", c.tmp / "d.toml"])[1], "d.toml already exists")  # was: the link replaced
add("cp-empty-destination", lambda c: ["cp", "original", ""], "the destination is empty")  # was: ./original.toml written
add("list-unknown-kind", lambda c: ["list", "widgets"], "widgets")
add("list-empty-kind", lambda c: ["list", ""])
add("list-recipes-markdown", lambda c: ["list", "recipes", "--markdown"], "--markdown")
add("eval-empty-path", lambda c: ["eval", ""])
add("eval-root", lambda c: ["eval", "/"], "not a run directory")
add("eval-a-file", lambda c: ["eval", c.file("f.txt", "mine")], "f.txt")
add("eval-long-path", lambda c: ["eval", LONG], "too long")
add("eval-a-recipe-file", lambda c: ["eval", c.file("plain/recipe.toml", 'extends = "original"')], "is a file, not a run directory")
add("eval-unknown-name", lambda c: ["eval", "nope"], "nope")
add("eval-empty-split", lambda c: ["eval", c.run, "--split", ""], "--split")
add("predict-no-input", lambda c: ["predict", c.run])
add("predict-top-negative", lambda c: predict_args(c, c.image("one.png"), 3, "--top", "-1"), "top")
add("predict-top-huge", lambda c: predict_args(c, c.image("one.png"), 3, "--top", str(10**9)), codes=(0,))
add("predict-top-beyond-int64", lambda c: predict_args(c, c.image("one.png"), 3, "--top", str(10**30)), codes=(0, 2))
add("predict-device-nonsense", lambda c: predict_args(c, c.image("one.png"), 3, "--device", "gpu!"), "gpu!")
add("predict-device-cuda-99", lambda c: predict_args(c, c.image("one.png"), 3, "--device", "cuda:99"), "cuda")
add("predict-input-no-name", lambda c: ["predict", c.run, "--input", "=3"], "NAME=VALUE")
add("predict-input-no-value", lambda c: ["predict", c.run, "--input", "image="], "NAME=VALUE")
add("predict-input-unknown-name", lambda c: ["predict", c.run, "--input", "imagee=x.png"], "imagee")
add("export-unknown-format", lambda c: ["export", c.run, "--format", "pickle"], "pickle")
add("export-out-is-a-folder", lambda c: ["export", c.run, "--format", "torchscript", "--out", c.tmp], codes=(1, 2))
add("export-over-a-user-file", lambda c: ["export", c.run, "--format", "torchscript", "--out", c.file("model.pt", "mine")], "model.pt")
add("export-under-a-file", lambda c: ["export", c.run, "--format", "torchscript", "--out", c.file("f.txt", "mine") / "m.pt"], "f.txt is a file, not a folder")
add("export-safetensors-of-a-changed-recipe", lambda c: ["export", c.run, "--format", "safetensors", "--out", c.tmp / "w"], codes=(0, 2), writes=("w",))
add("doctor-missing-recipe", lambda c: ["doctor", c.tmp / "nope.toml"], "nope.toml")
add("doctor-repair-over-a-user-file", lambda c: ["doctor", RECIPES / "original.toml", "--repair", c.file("mine.toml", "mine")], "mine.toml")
add("doctor-repair-over-the-recipe", lambda c: ["doctor", c.recipe(GOOD), "--repair", c.tmp / "r.toml"], "r.toml")
add("doctor-repair-to-a-folder", lambda c: ["doctor", RECIPES / "original.toml", "--repair", c.tmp], codes=(2,))
add("doctor-repair-to-a-fifo-force", lambda c: (os.mkfifo(c.tmp / "p.toml"), ["doctor", "nosuch-recipe-x", "--repair", c.tmp / "p.toml", "--force"])[1], "is not a regular file")  # before the doctor runs: a recipe it never reads


def sweep(*args: str) -> Callable[[Ctx], list]:
    return lambda c: ["sweep", RECIPES / "original.toml", *TINY, "--val", "100", "--out", c.out, *args]


P = ("--param", "train.optimizer.lr=loguniform:1e-4:1e-1")
add("sweep-no-trials", sweep(*P))
add("sweep-zero-trials", sweep(*P, "--trials", "0"), "--trials")
add("sweep-negative-trials", sweep(*P, "--trials", "-1"), "--trials")
add("sweep-zero-workers", sweep(*P, "--trials", "2", "--workers", "0"), "--workers")
add("sweep-param-no-space", sweep("--param", "train.optimizer.lr", "--trials", "2"), "--param")
add("sweep-param-unknown-space", sweep("--param", "train.optimizer.lr=gaussian:0:1", "--trials", "2"), "gaussian")
add("sweep-param-log-of-zero", sweep("--param", "train.optimizer.lr=loguniform:0:1", "--trials", "2"), "loguniform")
add("sweep-param-reversed-bounds", sweep("--param", "train.optimizer.lr=uniform:2:1", "--trials", "2"), "uniform")
add("sweep-param-nan-bounds", sweep("--param", "train.optimizer.lr=uniform:nan:1", "--trials", "2"), "uniform")
add("sweep-param-int-letters", sweep("--param", "train.epochs=int:a:b", "--trials", "2"), "int")
add("sweep-param-empty-choice", sweep("--param", "backbone.type=choice:", "--trials", "2"), "choice")
add("sweep-param-unknown-key", sweep("--param", "train.lrate=uniform:0:1", "--trials", "2"), "train.lrate")
add("sweep-direction", sweep(*P, "--trials", "2", "--direction", "sideways"), "sideways")
add("sweep-metric-unknown", sweep(*P, "--trials", "2", "--metric", "nope.nope"), "nope")
add("sweep-val-negative", sweep(*P, "--trials", "2", "--val", "-5"), "--val")
add("sweep-val-beyond-data", sweep(*P, "--trials", "2", "--val", str(10**9)), "val")
add("sweep-pruner", sweep(*P, "--trials", "2", "--pruner", "nope"), "nope")
add("sweep-prune-startup-negative", sweep(*P, "--trials", "2", "--prune-startup", "-1"), "--prune-startup")
add("sweep-storage-scheme", sweep(*P, "--trials", "2", "--storage", "ftp://x/y"), "ftp")
add("sweep-storage-missing-folder", lambda c: sweep(*P, "--trials", "2", "--storage", f"sqlite:///{c.tmp}/no/such/s.db")(c), "s.db")
add("sweep-storage-journal-a-folder", lambda c: sweep(*P, "--trials", "2", "--storage", f"journal:{c.tmp}")(c))
add("new-plugin-empty-name", lambda c: ["new-plugin", "", "--dir", c.tmp / "p"])
add("new-plugin-traversal", lambda c: ["new-plugin", "../evil", "--dir", c.tmp / "p"], "../evil")
add("new-plugin-spaces", lambda c: ["new-plugin", "my plugin", "--dir", c.tmp / "p"], "my plugin")
add("new-plugin-long-name", lambda c: ["new-plugin", "a" * 300, "--dir", c.tmp / "p"])
add("new-plugin-unicode", lambda c: ["new-plugin", "digitsum-日本", "--dir", c.tmp / "p"])
add("new-plugin-dir-not-empty", lambda c: (c.file("p/mine.txt", "mine"), ["new-plugin", "digitsum-x", "--dir", c.tmp / "p"])[1], "p")
add("new-plugin-dir-is-a-file", lambda c: ["new-plugin", "digitsum-x", "--dir", c.file("f.txt", "mine")], "f.txt")
add("new-plugin-unknown-kind", lambda c: ["new-plugin", "digitsum-x", "--dir", c.tmp / "p", "--kind", "widget"], "unknown kind 'widget'")
add("plugins-json", lambda c: ["plugins", "--json"], codes=(0,))
add("strict-plugins", lambda c: ["--strict-plugins", "list"], codes=(0, 2))

# -- run directories and their files -------------------------------------------------------------------
add = cases("rundir")


def ev(change: Callable[[Ctx], object]) -> Callable[[Ctx], list]:
    """``digitsum eval`` on the run copy after ``change``."""
    return lambda c: (change(c), ["eval", c.run])[1]


def resume(change: Callable[[Ctx], object]) -> Callable[[Ctx], list]:
    return lambda c: (change(c), ["run", "--resume", c.run])[1]


def field_(key: str, value: object) -> Callable[[Ctx], object]:
    return lambda c: c.checkpoint(lambda s: s.update({key: value}))


for key, value in {
    "epoch": -1, "step": -5, "format": "2", "format-bool": True, "format-float": 2.0, "history": "x",
    "history-ints": [1, 2], "model": {}, "model-a-list": [1], "optimizer": None, "rng": torch.zeros(3),
    "tally": {"x": "y"}, "recipe": "x", "recipe-empty": {}, "epoch_seconds": "x",
    "model-nan-weights": None, "step-a-tensor": torch.tensor(3),
}.items():
    name = key.split("-")[0]
    if key == "model-nan-weights":
        add("checkpoint-model-nan", ev(lambda c: c.checkpoint(lambda s: [t.fill_(float("nan")) for t in s["model"].values()])), codes=(0, 2))
        continue
    add(f"checkpoint-{key}", ev(field_(name, value)), "checkpoint.pt")
    if key in ("epoch", "history", "rng", "tally", "recipe", "step-a-tensor"):
        add(f"resume-checkpoint-{key}", resume(field_(name, value)), "checkpoint.pt")
add("checkpoint-seconds-negative", ev(field_("seconds", -1.0)), codes=(0, 2))
add("checkpoint-epoch-huge", ev(field_("epoch", 2**62)), codes=(0, 2))  # eval reads the history, not the epoch
add("checkpoint-model-int-tensors", ev(lambda c: c.checkpoint(lambda s: s.update(model={k: v.long() for k, v in s["model"].items()}))), codes=(0, 2))
add("checkpoint-model-extra-key", ev(lambda c: c.checkpoint(lambda s: s["model"].update(extra=torch.zeros(1)))), "checkpoint.pt")
add("checkpoint-model-sparse", ev(lambda c: c.checkpoint(lambda s: s["model"].update({k: v.to_sparse() for k, v in list(s["model"].items())[:1]}))), "checkpoint.pt")  # was: torch's UserWarning first
add("checkpoint-a-folder", ev(lambda c: ((c.run / "checkpoint.pt").unlink(), (c.run / "checkpoint.pt").mkdir())), "checkpoint.pt")
add("checkpoint-symlink-dev-zero", ev(lambda c: ((c.run / "checkpoint.pt").unlink(), os.symlink("/dev/zero", c.run / "checkpoint.pt"))), "checkpoint.pt")
add("checkpoint-symlink-loop", ev(lambda c: ((c.run / "checkpoint.pt").unlink(), os.symlink(c.run / "checkpoint.pt", c.run / "checkpoint.pt"))), "checkpoint.pt")
add("checkpoint-a-fifo", ev(lambda c: ((c.run / "checkpoint.pt").unlink(), os.mkfifo(c.run / "checkpoint.pt"))), "checkpoint.pt")
add("checkpoint-a-zip-bomb-name", ev(lambda c: (c.run / "checkpoint.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 100)), "checkpoint.pt")
add("recipe-toml-missing", ev(lambda c: (c.run / "recipe.toml").unlink()), "recipe.toml")
add("recipe-toml-empty", ev(lambda c: (c.run / "recipe.toml").write_text("")), "recipe.toml")
add("recipe-toml-a-folder", ev(lambda c: ((c.run / "recipe.toml").unlink(), (c.run / "recipe.toml").mkdir())), "recipe.toml")
add("recipe-toml-dev-zero", ev(lambda c: ((c.run / "recipe.toml").unlink(), os.symlink("/dev/zero", c.run / "recipe.toml"))), "recipe.toml")
add("recipe-toml-other-lr", ev(lambda c: (c.run / "recipe.toml").write_text((c.run / "recipe.toml").read_text().replace("lr = 0.004", "lr = 0.5"))), "train.optimizer.lr")
add("recipe-toml-extends", ev(lambda c: (c.run / "recipe.toml").write_text('extends = "/etc/passwd"\n' + (c.run / "recipe.toml").read_text())), "recipe.toml")
add("summary-not-json", ev(lambda c: (c.run / "summary.json").write_text("{")), codes=(0,))
add("summary-a-list", ev(lambda c: (c.run / "summary.json").write_text("[1, 2]")), codes=(0,))
add("summary-huge-numbers", ev(lambda c: (c.run / "summary.json").write_text('{"epochs": 1e999, "position": {"step": 1e999}, "seconds": -1}')), codes=(0,))
add("summary-position-strings", ev(lambda c: (c.run / "summary.json").write_text('{"position": {"epoch": "x", "step": "y"}}')), codes=(0,))
add("summary-a-folder", ev(lambda c: ((c.run / "summary.json").unlink(), (c.run / "summary.json").mkdir())), codes=(0, 2))
add("summary-format-99", ev(lambda c: ((c.run / "summary.json").write_text('{"format": 99}'))), codes=(0,))
add("summary-missing-resume", resume(lambda c: (c.run / "summary.json").unlink()), codes=(0, 2), writes=("run",))
add("metrics-garbage", ev(lambda c: (c.run / "metrics.jsonl").write_bytes(os.urandom(300))), codes=(0,))
add("metrics-a-folder", ev(lambda c: ((c.run / "metrics.jsonl").unlink(), (c.run / "metrics.jsonl").mkdir())), codes=(0,))
add("marker-not-json", resume(lambda c: c.marker("{")), codes=(2,))
add("marker-a-list", resume(lambda c: c.marker([1])), codes=(2,))
add("lock-garbage", ev(lambda c: (c.run / ".digitsum-lock").write_bytes(os.urandom(50))), codes=(0,))
add("resume-a-file", lambda c: ["run", "--resume", c.file("f.txt", "mine")], "f.txt")
add("resume-long-path", lambda c: ["run", "--resume", c.tmp / LONG], "too long")
add("resume-finished", lambda c: ["run", "--resume", c.run], "nothing to resume")
add("eval-run-of-a-plugin-gone", ev(lambda c: (c.run / "recipe.toml").write_text((c.run / "recipe.toml").read_text().replace('type = "concat"', 'type = "gone:concat"'))), "backbone.type")

# -- --out and --force targets ---------------------------------------------------------------------------
add = cases("out")


def run_out(out: Callable[[Ctx], Path], *extra: str) -> Callable[[Ctx], list]:
    return lambda c: ["run", RECIPES / "original.toml", *TINY, "--out", out(c), *extra]


def user_folder(c: Ctx) -> Path:
    c.file("mine/notes.txt", "mine")
    return c.tmp / "mine"


add("out-symlink-to-user-folder", run_out(lambda c: (os.symlink(user_folder(c), c.tmp / "link"), c.tmp / "link")[1]), "link")
add("out-symlink-to-user-folder-force", run_out(lambda c: (os.symlink(user_folder(c), c.tmp / "link"), c.tmp / "link")[1], "--force"), "link")
add("out-symlink-to-a-file", run_out(lambda c: (os.symlink(c.file("f.txt", "mine"), c.tmp / "link"), c.tmp / "link")[1], "--force"), "link")
add("out-symlink-to-a-run", run_out(lambda c: (os.symlink(c.run, c.tmp / "link"), c.tmp / "link")[1]), "symbolic link")
add("out-dangling-symlink", run_out(lambda c: (os.symlink(c.tmp / "nowhere", c.tmp / "link"), c.tmp / "link")[1]), "link")
add("out-empty-string", run_out(lambda c: Path("")), codes=(0, 2), writes=("cwd",))  # "" is ".", an empty folder
add("out-root", run_out(lambda c: Path("/"), "--force"), "/")
add("out-proc", run_out(lambda c: Path("/proc/self"), "--force"), "/proc/self")
add("out-a-fifo", run_out(lambda c: (os.mkfifo(c.tmp / "p"), c.tmp / "p")[1], "--force"), "p")
add("out-long-name", run_out(lambda c: c.tmp / LONG), "too long")
add("out-under-symlink-loop", run_out(lambda c: (os.symlink(c.tmp / "loop", c.tmp / "loop"), c.tmp / "loop" / "run")[1]), "loop")
add("out-forged-marker-force", run_out(lambda c: (c.file("mine/notes.txt", "mine"), c.file("mine/.digitsum-run", json.dumps({"written_by": "digitsum", "version": "0.1.0", "foreign": [], "outputs": ["notes.txt"]})), c.tmp / "mine")[2], "--force"), codes=(0, 2), writes=("mine/.digitsum-run",))
add("out-marker-traversal-force", lambda c: (c.file("victim.txt", "mine"), c.marker({"written_by": "digitsum", "version": "0.1.0", "foreign": [], "outputs": ["../victim.txt", "checkpoint.pt"]}), run_out(lambda c: c.run, "--force")(c))[2], codes=(0, 2), writes=("run",))
add("out-marker-absolute-force", lambda c: (c.file("victim.txt", "mine"), c.marker({"written_by": "digitsum", "version": "0.1.0", "foreign": [], "outputs": [str(c.tmp / "victim.txt")]}), run_out(lambda c: c.run, "--force")(c))[2], codes=(0, 2), writes=("run",))
add("out-marker-outputs-a-string", lambda c: (c.marker({"written_by": "digitsum", "version": "0.1.0", "foreign": [], "outputs": "checkpoint.pt"}), run_out(lambda c: c.run, "--force")(c))[1], codes=(0, 2), writes=("run",))
add("out-marker-a-symlink-to-user-file", lambda c: ((c.run / ".digitsum-run").unlink(), os.symlink(c.file("victim.txt", "mine"), c.run / ".digitsum-run"), run_out(lambda c: c.run, "--force")(c))[2], codes=(0, 2), writes=("run",))
add("out-run-output-symlink-to-user-file", lambda c: ((c.run / "curves.png").unlink(), os.symlink(c.file("victim.txt", "mine"), c.run / "curves.png"), run_out(lambda c: c.run, "--force")(c))[2], codes=(0, 2), writes=("run",))
add("export-out-symlink-to-user-file", lambda c: (os.symlink(c.file("victim.txt", "mine"), c.tmp / "m.pt"), ["export", c.run, "--out", c.tmp / "m.pt", "--force"])[1], codes=(0, 1, 2), writes=("m.pt", "m.pt.json", "m_preprocess.py"))
add("cp-symlink-to-user-file-force", lambda c: (os.symlink(c.file("victim.txt", "mine"), c.tmp / "link.toml"), ["cp", "original", c.tmp / "link.toml", "--force"])[1], codes=(0, 2), writes=("link.toml",))

# -- images given to predict -----------------------------------------------------------------------------
add = cases("image")


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def img(make: Callable[[Ctx], Path], *extra: str) -> Callable[[Ctx], list]:
    return lambda c: predict_args(c, make(c), 3, *extra)


add("image-missing", img(lambda c: c.tmp / "nope.png"), "nope.png")
add("image-empty-file", img(lambda c: c.file("e.png", b"")), "e.png")
add("image-text-file", img(lambda c: c.file("t.png", "hello")), "t.png")
add("image-truncated-png", img(lambda c: c.file("t.png", c.image("one.png").read_bytes()[:60])), "t.png")
add("image-a-folder", img(lambda c: c.tmp / "cwd"), "cwd")
add("image-symlink-dev-zero", img(lambda c: (os.symlink("/dev/zero", c.tmp / "z.png"), c.tmp / "z.png")[1]), "z.png")
add("image-symlink-loop", img(lambda c: (os.symlink(c.tmp / "l.png", c.tmp / "l.png"), c.tmp / "l.png")[1]), "l.png")
add("image-fifo", img(lambda c: (os.mkfifo(c.tmp / "p.png"), c.tmp / "p.png")[1]), "p.png")
add("image-long-name", img(lambda c: c.tmp / LONG), "too long")
add("image-declares-2g-pixels", img(lambda c: c.file("big.png", png_declaring(2**31 - 1, 2**31 - 1))), "big.png")
add("image-declares-huge-pixels", img(lambda c: c.file("big.png", png_declaring(60000, 60000))), "big.png")
add("image-1x1", img(lambda c: c.image("p.png", np.full((1, 1), 255, np.uint8))), codes=(0, 2))
add("image-blank-white", img(lambda c: c.image("w.png", np.full((28, 28), 255, np.uint8))), "w.png")
add("image-blank-black", img(lambda c: c.image("b.png", np.zeros((28, 28), np.uint8))), "b.png")
add("image-16-bit", img(lambda c: c.image("i16.png", (np.random.default_rng(0).random((40, 40)) * 65535).astype(np.uint16))), codes=(0, 2))
add("image-float-tiff-nan", img(lambda c: c.image("f.tiff", np.full((28, 28), np.nan, np.float32))), "f.tiff")
add("image-float-tiff-inf", img(lambda c: c.image("f.tiff", np.where(np.eye(28) > 0, np.inf, 0).astype(np.float32))), codes=(0, 2))
add("image-1-bit", img(lambda c: c.image("b.png", np.eye(28, dtype=bool))), codes=(0,))
add("image-palette", img(lambda c: c.image("p.gif", np.eye(28, dtype=np.uint8) * 255)), codes=(0,))
add("image-rgba-transparent", img(lambda c: c.image("a.png", np.zeros((28, 28, 4), np.uint8))), "a.png")
add("image-cmyk-jpeg", img(lambda c: (Image.new("CMYK", (28, 28), (0, 0, 0, 255)).save(c.tmp / "c.jpg"), c.tmp / "c.jpg")[1]), codes=(0, 2))
add("image-animated-gif", img(lambda c: (Image.new("L", (28, 28)).save(c.tmp / "a.gif", save_all=True, append_images=[Image.new("L", (28, 28), 255)] * 3), c.tmp / "a.gif")[1]), codes=(0, 2))
add("image-svg", img(lambda c: c.file("s.svg", '<svg xmlns="http://www.w3.org/2000/svg"/>')), "s.svg")
add("image-npy", img(lambda c: (np.save(c.tmp / "a.npy", np.eye(28)), c.tmp / "a.npy")[1]), "a.npy")
add("image-exif-rotated", img(lambda c: (lambda e: (e.__setitem__(0x0112, 6), c.image("r.jpg", exif=e)))(Image.Exif())[1]), codes=(0,))
add("image-very-wide", img(lambda c: c.image("wide.png", np.tile(np.eye(28, dtype=np.uint8) * 255, (1, 400)))), codes=(0, 2))
add("image-no-preprocess-wrong-size", img(lambda c: c.image("big.png", np.eye(40, dtype=np.uint8) * 255), "--no-preprocess"), "28x28")
add("number-beyond-int64", lambda c: predict_args(c, c.image("one.png"), 10**30), "number")
add("number-negative", lambda c: predict_args(c, c.image("one.png"), -1), "number")
add("number-float", lambda c: predict_args(c, c.image("one.png"), 3.5), "number")
add("number-hex", lambda c: predict_args(c, c.image("one.png"), "0x3"), "number")
add("number-underscore", lambda c: predict_args(c, c.image("one.png"), "1_0"), "number")
add("number-arabic-indic-digit", lambda c: predict_args(c, c.image("one.png"), "\u0663"), codes=(0, 2))
add("number-nan", lambda c: predict_args(c, c.image("one.png"), "nan"), "number")
add("number-ten-thousand-digits", lambda c: predict_args(c, c.image("one.png"), "9" * 10000), "number")
add("inputs-unequal-counts", lambda c: ["predict", c.run, "--input", f"image={c.image('one.png')}", "--input", f"image={c.image('one.png')}", "--input", "number=1", "--input", "number=2", "--input", "number=3"], "--input")

# -- the environment and the data files --------------------------------------------------------------------
add = cases("env")
RUN_TINY = ["run", RECIPES / "original.toml", *TINY, "--set", "data.download=false"]


def with_env(value: Callable[[Ctx], object], *args: str) -> Callable[[Ctx], list]:
    return lambda c: (c.mp.setenv("DIGITSUM_DATA", str(value(c))), [*RUN_TINY, "--out", c.out, *args])[1]


def broken_idx(split: str, kind: int, content: Callable[[Path], bytes]) -> Callable[[Ctx], list]:
    return lambda c: (c.idx(split, kind).write_bytes(content(c.idx(split, kind))), [*RUN_TINY, "--out", c.out])[1]


add("data-env-empty", with_env(lambda c: ""), codes=(2,))
add("data-env-a-file", with_env(lambda c: c.file("f.txt", "mine")), "f.txt")
add("data-env-missing-folder", with_env(lambda c: c.tmp / "nowhere"), "nowhere")
add("data-env-dev-null", with_env(lambda c: "/dev/null"), "/dev/null")
add("data-env-long", with_env(lambda c: c.tmp / LONG), "too long")
add("data-env-junk-files", lambda c: (c.data, [c.idx(s, k).write_bytes(os.urandom(100)) for s in ("train", "test") for k in (0, 1)], [*RUN_TINY, "--out", c.out])[2], "idx")
add("idx-empty", broken_idx("train", 0, lambda p: b""), "train-images-idx3-ubyte")
add("idx-count-claims-a-billion", broken_idx("train", 0, lambda p: p.read_bytes()[:4] + struct.pack(">I", 10**9) + p.read_bytes()[8:]), "train-images-idx3-ubyte")
add("idx-zero-by-zero-images", broken_idx("test", 0, lambda p: p.read_bytes()[:8] + struct.pack(">II", 0, 0)), "t10k-images-idx3-ubyte")
add("idx-huge-dimensions", broken_idx("test", 0, lambda p: p.read_bytes()[:8] + struct.pack(">II", 2**31, 2**31) + p.read_bytes()[16:]), "t10k-images-idx3-ubyte")
add("idx-labels-count-max", broken_idx("test", 1, lambda p: p.read_bytes()[:4] + struct.pack(">I", 2**32 - 1) + p.read_bytes()[8:]), "t10k-labels-idx1-ubyte")
add("idx-magic-float-type", broken_idx("train", 1, lambda p: b"\x00\x00\x0d\x01" + p.read_bytes()[4:]), "train-labels-idx1-ubyte")
add("idx-a-folder", lambda c: (c.idx("train", 1).unlink(), c.idx("train", 1).mkdir(), [*RUN_TINY, "--out", c.out])[2], "train-labels-idx1-ubyte")
add("idx-symlink-dev-zero", lambda c: (c.idx("train", 1).unlink(), os.symlink("/dev/zero", c.idx("train", 1)), [*RUN_TINY, "--out", c.out])[2], "train-labels-idx1-ubyte")
add("idx-gzip-only", lambda c: (c.idx("test", 1).with_name(c.idx("test", 1).name + ".gz").write_bytes(b"junk"), c.idx("test", 1).unlink(), [*RUN_TINY, "--out", c.out])[2], "t10k-labels")
add("strict-plugins-env-garbage", lambda c: (c.mp.setenv("DIGITSUM_STRICT_PLUGINS", "\x1b[2J"), ["list", "recipes"])[1], codes=(0, 2))
add("cache-home-a-file", lambda c: (c.mp.setenv("XDG_CACHE_HOME", str(c.file("cache", "mine"))), ["list", "recipes"])[1], codes=(0,))

# -- pretrained weights: records and files ------------------------------------------------------------------
add = cases("weights")
SHIPPED = Path(__import__("digitsum").__file__).parent / "recipes" / "weights"


def weights(change: Callable[[dict, Path], object], *args: str) -> Callable[[Ctx], list]:
    """The shipped weights of ``original``, copied and changed (record and file), as the ones
    digitsum finds; then ``args`` (default: eval them)."""

    def setup(c: Ctx) -> list:
        import digitsum.weights as w

        folder = c.tmp / "weights"
        folder.mkdir()
        for suffix in (".json", ".safetensors"):
            shutil.copy(SHIPPED / f"original{suffix}", folder)
        record = json.loads((folder / "original.json").read_text())
        replaced = change(record, folder)  # a str: the record's new text
        (folder / "original.json").write_text(replaced if isinstance(replaced, str) else json.dumps(record))
        entries = [dataclasses.replace(e, path=folder / "original.json") if e.name == "original" else e for e in w.weights_entries()]
        c.mp.setattr(w, "weights_entries", lambda: entries)
        c.data  # the tiny data, to evaluate on
        return list(args) or ["eval", "original"]

    return setup


def rewrite_file(content: Callable[[bytes], bytes]) -> Callable[[dict, Path], None]:
    """Change the tensors' file and give the record its new size and sha256."""

    def change(record: dict, folder: Path) -> None:
        data = content((folder / "original.safetensors").read_bytes())
        (folder / "original.safetensors").write_bytes(data)
        record.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    return change


def set_(**values: object) -> Callable[[dict, Path], None]:
    return lambda record, folder: record.update(values)


def drop(key: str) -> Callable[[dict, Path], None]:
    return lambda record, folder: record.pop(key) and None


add("record-not-json", weights(lambda r, f: "{"), "original.json", "not valid JSON")
add("record-format-missing", weights(drop("format")), "original.json", "weights record")
add("record-format-version-2", weights(set_(format_version=2)), "original.json", "version 2")
add("record-sha256-missing", weights(drop("sha256")), "'sha256' is missing")
add("record-sha256-uppercase", weights(lambda r, f: r.update(sha256=r["sha256"].upper())), "sha256")
add("record-sha256-a-number", weights(set_(sha256=7)), "sha256")
add("record-bytes-zero", weights(set_(bytes=0)), "bytes")
add("record-bytes-string", weights(set_(bytes="142588")), "bytes")
add("record-bytes-huge", weights(set_(bytes=10**30)), "bytes")
add("record-seed-float", weights(set_(seed=0.5)), "seed")
add("record-seed-huge", weights(set_(seed=10**30)), "seed")
add("record-seed-bool", weights(set_(seed=True)), "seed")
add("record-epochs-negative", weights(set_(epochs=-3)), codes=(0, 2))
add("record-test-a-list", weights(set_(test=[1])), "test")
add("record-test-nested-strings", weights(set_(test={"digit": {"accuracy": "high"}})), "test")
add("record-test-not-tables", weights(set_(test={"digit": 3})), "test")
add("record-history-garbage", weights(set_(history=[1, "x", None, {"epoch": "y"}])), codes=(0, 2))
add("record-history-a-table", weights(set_(history={"x": 1})), "history")
add("record-file-traversal", weights(set_(file="../original.safetensors")), "file")
add("record-file-absolute", weights(set_(file="/etc/passwd")), "file")
add("record-file-missing", weights(set_(file="gone.safetensors")), "gone.safetensors")
add("record-file-and-url", weights(set_(url="https://example.invalid/x.safetensors")), "url")
add("record-url-ftp", weights(lambda r, f: (r.pop("file"), r.update(url="ftp://example.invalid/x"))), "url")
add("record-url-file-missing", weights(lambda r, f: (r.pop("file"), r.update(url=(f / "gone.safetensors").as_uri()))), "gone.safetensors")
add("record-url-dev-zero", weights(lambda r, f: (r.pop("file"), r.update(url="file:///dev/zero"))), "/dev/zero")
add("record-recipe-other", weights(set_(recipe="film")), "film")
add("record-settings-other", weights(set_(settings="0" * 16)), "settings")
add("record-a-list", weights(lambda r, f: "[1]"), "original.json")
add("record-unicode-machine", weights(set_(machine="\x1b[2J\u202e", trained="\x00")), codes=(0,))
add("weights-file-truncated", weights(lambda r, f: (f / "original.safetensors").write_bytes((f / "original.safetensors").read_bytes()[:1000])), "does not match its record")
add("weights-file-empty-and-recorded", weights(rewrite_file(lambda b: b"")), "bytes")
add("weights-file-not-safetensors", weights(rewrite_file(lambda b: os.urandom(4096))), "safetensors")
add("weights-file-huge-header-size", weights(rewrite_file(lambda b: struct.pack("<Q", 2**63) + b[8:])), "safetensors")
add("weights-file-header-not-json", weights(rewrite_file(lambda b: struct.pack("<Q", 10) + b"not json!!" + b[18:])), "safetensors")
add("weights-file-truncated-and-recorded", weights(rewrite_file(lambda b: b[: len(b) // 2])), "safetensors")
add("weights-file-other-tensors", weights(rewrite_file(lambda b: __import__("safetensors.torch").torch.save({"x": torch.zeros(3)}))), "do not fit")
add("weights-file-a-folder", weights(lambda r, f: ((f / "original.safetensors").unlink(), (f / "original.safetensors").mkdir())), "original.safetensors")
add("weights-predict-broken-record", weights(set_(seed="x"), "predict", "original", "--input", "image=x.png", "--input", "number=1"), "seed")
add("weights-export-broken-record", weights(set_(seed="x"), "export", "original"), "seed")
add("weights-list-broken-record", weights(set_(seed="x"), "list", "recipes"), codes=(0, 2))


# -- the tests ------------------------------------------------------------------------------------------------


def _tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``, without following links: a hash of each file's bytes, the
    target of each link, the kind of anything else."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            mode = path.lstat().st_mode
            key = str(path.relative_to(folder))
            if stat.S_ISLNK(mode):
                found[key] = "-> " + os.readlink(path)
            elif stat.S_ISREG(mode):
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[key] = "dir" if stat.S_ISDIR(mode) else oct(stat.S_IFMT(mode))
    return found


def _outside(tree: dict[str, str], writes: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in tree.items() if not any(k == w or k.startswith(w + "/") for w in writes)}


ALL = [(surface, case) for surface, listed in SURFACES.items() for case in listed]


@pytest.fixture
def ctx(tmp_path, tiny_root, tiny_run, monkeypatch) -> Ctx:
    monkeypatch.setenv("DIGITSUM_DATA", str(tiny_root))
    world = Ctx(tmp_path / "w", tiny_root, tiny_run.run_dir, monkeypatch)
    monkeypatch.chdir(world.cwd)
    return world


@pytest.mark.parametrize("surface,case", ALL, ids=[f"{s}:{c.id}" for s, c in ALL])
def test_hostile_input_is_handled_cleanly(cli, ctx, tiny_root, surface, case):
    args = case.setup(ctx)
    before, shared = _tree(ctx.tmp), _tree(tiny_root)
    with warnings.catch_warnings(record=True) as warned:  # what a user's terminal shows, source line and all
        warnings.simplefilter("always")
        result = cli(*args)
    assert result.code in case.codes, (result.code, result.err[-2000:])
    assert "Traceback" not in result.err and "Traceback" not in result.out
    shown = [f"{w.category.__name__}: {w.message}" for w in warned if not issubclass(w.category, DeprecationWarning)]
    assert not shown, shown
    if result.code == 2:
        message = " ".join(result.err.split())
        assert message, "exit 2 without a message"
        assert len(message) < 3000, f"a message of {len(message)} characters"
        for part in case.expect:
            assert part in message, (part, message[:2000])
    writes = case.writes if result.code == 0 else ()
    assert _outside(_tree(ctx.tmp), (*writes, "cwd")) == _outside(before, (*writes, "cwd"))  # the user's files as they were
    if "cwd" not in writes:
        assert not any(ctx.cwd.iterdir()), list(ctx.cwd.iterdir())  # nothing in the working folder
    assert _tree(tiny_root) == shared


def test_the_corpus_holds_at_least_150_cases():
    counts = {surface: len(listed) for surface, listed in SURFACES.items()}
    assert sum(counts.values()) >= 150, counts
