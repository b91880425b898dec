"""The validation split held out of the training data (``data.val``)."""

from __future__ import annotations

import json

import pytest
import torch

import digitsum
from digitsum.contracts import Generator
from digitsum.data import DataContext, load_mnist
from digitsum.engine.batches import eval_batches, train_batches
from digitsum.engine.build import build
from digitsum.errors import UserError
from digitsum.recipe import load_recipe
from digitsum.registry import datasets

from .conftest import RECIPES

TINY = {"train.epochs": 1, "data.batch_size": 64, "data.download": False, "train.device": "cpu"}


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(image.flatten().tolist()) for image in images}


def test_holdout_is_disjoint_complete_and_fixed_by_the_seed(tiny_root):
    full = load_mnist(tiny_root, "train", torch.device("cpu"), download=False)
    context = DataContext(tiny_root, val=100, seed=3, download=False)
    train, val = context.holdout(len(full))
    assert len(val) == 100 and len(train) == len(full) - 100
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(len(full)))
    again = DataContext(tiny_root, val=100, seed=3).holdout(len(full))
    assert torch.equal(again[1], val) and torch.equal(again[0], train)
    other = DataContext(tiny_root, val=100, seed=4).holdout(len(full))[1]
    assert not torch.equal(other, val)
    # the splits hold exactly those samples
    assert torch.equal(context.mnist("val").labels, full.labels[val])
    assert torch.equal(context.mnist("train").images, full.images[train])
    assert torch.equal(context.mnist("test").labels, load_mnist(tiny_root, "test", torch.device("cpu"), False).labels)


def test_holdout_errors(tiny_root):
    with pytest.raises(UserError, match="no validation split"):
        DataContext(tiny_root, download=False).mnist("val")
    with pytest.raises(UserError, match="data.val = 512 leaves no training samples"):
        DataContext(tiny_root, val=512, download=False).mnist("train")
    with pytest.raises(UserError, match="no split 'valid'"):
        DataContext(tiny_root, val=10, download=False).mnist("valid")


class _Recording(DataContext):
    """A context that remembers which splits were read."""

    read: set[str]

    def mnist(self, split):
        self.__dict__.setdefault("read", set()).add(split)
        return super().mnist(split)


@pytest.mark.parametrize("name", sorted(e.name for e in datasets.entries() if e.origin.builtin))
def test_builtin_generators_draw_val_apart_from_train(tiny_root, name):
    """Every sample a built-in generator draws for training comes from the training samples
    left after the hold-out; every validation sample from the held-out ones."""
    cls = datasets.get(name)
    context = _Recording(tiny_root, val=100, seed=0, download=False)
    generator = cls(cls.Params(), context)
    assert generator.split_names() == ("train", "test", "val")
    # the 100 held-out images are the val samples (or, for a generator that groups images,
    # mnist_addition, what it makes of them); the 412 others the training samples
    assert 0 < generator.size("val") <= 100 and 0 < generator.size("train") <= 412
    assert generator.size("val") * 412 == generator.size("train") * 100  # the same share of each
    context.read.clear()
    for batch in train_batches(generator, 64, 0, 1, torch.device("cpu")):
        pass
    assert context.read == {"train"}
    context.read.clear()
    list(eval_batches(generator, "val", 0, torch.device("cpu")))
    assert context.read == {"val"}


def test_a_run_without_val_draws_what_it_always_drew(tiny_root):
    """data.val = 0 (the default): the generator's data and every batch are those of a context
    that knows nothing of validation splits, and the run records train and test only."""
    recipe = load_recipe(RECIPES / "original.toml", {**TINY, "data.root": str(tiny_root)})
    assert recipe.data.section.val == 0
    generator = build(recipe, "cpu").generator
    plain = type(generator)(generator.params, DataContext(tiny_root, torch.device("cpu"), False))
    assert generator.split_names() == ("train", "test")
    for new, old in zip(train_batches(generator, 64, 0, 1, torch.device("cpu")), train_batches(plain, 64, 0, 1, torch.device("cpu"))):
        assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)


def test_a_run_with_val_evaluates_it_each_epoch(tiny_root, tmp_path):
    overrides = {**TINY, "train.epochs": 2, "data.val": 100, "data.root": str(tiny_root)}
    run = digitsum.train(RECIPES / "original.toml", tmp_path / "run", overrides=overrides, progress=False)
    splits = [(r["epoch"], r["split"]) for r in run.metrics]
    assert splits == [(1, "train"), (1, "val"), (1, "test"), (2, "train"), (2, "val"), (2, "test")]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["metrics"]) == {"train", "val", "test"}
    assert summary["metrics"]["val"]["digit"] == pytest.approx(run.evaluate("val")["digit"], abs=1e-5)
    # 412 training samples, not 512: the held-out ones are not trained on
    assert [r["samples"] for r in run.metrics if r["split"] == "train"] == [412, 412]
    again = digitsum.load_run(tmp_path / "run")
    assert "val" in again.generator.split_names()
    assert again.evaluate("val")["digit"] == pytest.approx(run.evaluate("val")["digit"])


def test_val_too_large_is_a_user_error_naming_where_it_was_set(tiny_root, cli, tmp_path):
    # known only once the data are read, after the recipe was checked: the message still says
    # which line (or override) gave the value
    result = cli("run", str(RECIPES / "original.toml"), "--set", "data.val=600", "--set", f"data.root='{tiny_root}'",
                 "--set", "data.download=false", "--set", "train.epochs=1", "--out", tmp_path / "a")
    assert result.code == 2
    assert "data.val = 600 (--set data.val=600) leaves no training samples" in result.err
    recipe = tmp_path / "big.toml"
    recipe.write_text(f'extends = "original"\n\n[data]\nroot = "{tiny_root}"\nval = 600\n')
    result = cli("run", recipe, "--out", tmp_path / "b")
    assert result.code == 2 and f"data.val = 600 ({recipe}:5) leaves no training samples" in result.err, result.err


class _OldGenerator(Generator):
    """A generator written before validation splits: it knows train and test only."""

    from digitsum.contracts import Classes, Image

    inputs = {"image": Image(1, 28, 28)}
    targets = {"digit": Classes(10)}

    def size(self, split):
        return {"train": 256, "test": 128}[split]

    def draw(self, split, index, rng):
        return {"image": torch.zeros(len(index), 1, 28, 28), "digit": index % 10}


def test_a_generator_without_val_is_refused_only_when_val_is_asked(tiny_root, tmp_path):
    from digitsum.registry import datasets as registry

    registry.register("old_gen_for_val")(_OldGenerator)
    try:
        base = {"seed": 0, "data": {"type": "old_gen_for_val", "batch_size": 64}, "backbone": {"type": "concat"},
                "heads": {"digit": {"target": "digit"}}, "train": {"epochs": 1, "device": "cpu"}}
        digitsum.train(base, tmp_path / "ok", progress=False, preflight=False)  # no val: trains as it always did
        with pytest.raises(UserError) as error:
            digitsum.train(base, tmp_path / "val", overrides={"data.val": 50}, progress=False, preflight=False)
        message = error.value.message
        assert "data.val = 50: dataset generator 'old_gen_for_val' gives no validation split" in message
        assert "KeyError" in message and "DataContext.mnist('val')" in message
        assert not (tmp_path / "val").exists() or not any((tmp_path / "val").iterdir())
    finally:
        registry.remove("old_gen_for_val")


def test_loggers_report_the_val_split_when_there_is_one():
    from types import SimpleNamespace

    from digitsum.components.loggers import scalars

    train, val, test = {"digit": {"accuracy": 0.5}}, {"digit": {"accuracy": 0.6}}, {"digit": {"accuracy": 0.7}}
    with_val = SimpleNamespace(history=[{"epoch": 1, "train": train, "val": val, "test": test}], epoch_record={})
    assert scalars(with_val, train, test) == {"train/digit/accuracy": 0.5, "val/digit/accuracy": 0.6, "test/digit/accuracy": 0.7}
    without = SimpleNamespace(history=[{"epoch": 1, "train": train, "test": test}], epoch_record={})
    assert scalars(without, train, test) == {"train/digit/accuracy": 0.5, "test/digit/accuracy": 0.7}
