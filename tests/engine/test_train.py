from __future__ import annotations

import json

import pytest
import torch

from digitsum.engine.batches import eval_batches, steps_per_epoch, train_batches
from digitsum.callbacks import Callback
from ..runs import fit
from digitsum.recipe import load_recipe
from digitsum.testing import write_tiny_mnist

from ..conftest import RECIPES


@pytest.fixture
def recipe(tiny_data):
    # one thread: tiny batches gain nothing from more, and a machine shared with other work loses much
    return load_recipe(RECIPES / "original.toml", ["train.epochs=2", "data.batch_size=64", "train.optimizer.lr=5e-3", "train.threads=1"])


def test_run_writes_the_run_directory(recipe, tmp_path):
    summary = fit(recipe, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"recipe.toml", "metrics.jsonl", "checkpoint.pt", "summary.json"}
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert set(summary["metrics"]["test"]) == {"digit", "sum"}
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in lines] == [(1, "train"), (1, "test"), (2, "train"), (2, "test")]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and "backbone.cnn.layers.0.weight" in state["model"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_every_head_learns_on_learnable_data(tmp_path):
    root = write_tiny_mnist(tmp_path / "data", n_train=4096, n_test=512)
    recipe = load_recipe(RECIPES / "original.toml", ["train.epochs=6", "data.batch_size=64", "train.optimizer.lr=5e-3", f"data.root='{root}'"])
    test = fit(recipe, tmp_path / "run")["metrics"]["test"]
    # chance is 0.1 for the digit and about 0.1 for the sum: a head that is not trained stays there
    assert test["digit"]["accuracy"] > 0.5, test
    assert test["sum"]["accuracy"] > 0.25, test


def test_same_seed_same_metrics_other_seed_other_metrics(tiny_data, tmp_path):
    args = ["train.epochs=1", "data.batch_size=64", "train.threads=1"]  # one thread: see the recipe fixture
    a = fit(load_recipe(RECIPES / "original.toml", args), tmp_path / "a")
    b = fit(load_recipe(RECIPES / "original.toml", args), tmp_path / "b")
    c = fit(load_recipe(RECIPES / "original.toml", args + ["seed=1"]), tmp_path / "c")
    assert a["metrics"] == b["metrics"]
    assert a["metrics"] != c["metrics"]


def test_resolved_recipe_in_run_dir_replays_the_run(recipe, tmp_path):
    first = fit(recipe, tmp_path / "first")
    replay = load_recipe(tmp_path / "first" / "recipe.toml")
    assert replay.to_dict() == recipe.to_dict()
    assert fit(replay, tmp_path / "second")["metrics"] == first["metrics"]


def test_train_pairings_change_every_epoch_test_pairings_never(recipe):
    from digitsum.data import DataContext, default_root

    gen = recipe.data.cls(recipe.data.params, DataContext(default_root()))
    cpu = torch.device("cpu")
    e1 = next(train_batches(gen, 64, 0, 1, cpu))
    e2 = next(train_batches(gen, 64, 0, 2, cpu))
    assert not torch.equal(e1["number"], e2["number"])
    t1 = torch.cat([b["number"] for b in eval_batches(gen, "test", 0, cpu)])
    t2 = torch.cat([b["number"] for b in eval_batches(gen, "test", 0, cpu)])
    assert torch.equal(t1, t2)
    assert torch.equal(e1["sum"], e1["digit"] + e1["number"])


class Counting:
    """A generator of ``n`` training samples whose batches are the indices drawn."""

    def __init__(self, n: int) -> None:
        self.n = n

    def size(self, split: str) -> int:
        return self.n

    def draw(self, split, index, rng):
        return {"index": index}


@pytest.mark.parametrize("n, batch_size, shards, sizes", [
    (10, 4, 1, [4, 4, 2]),   # a partial last batch of two: trained
    (9, 4, 1, [4, 4]),       # of one: left out (a batch norm cannot train on it)
    (9, 1, 1, [1] * 9),      # a batch size of one is the user's choice
    (1, 4, 1, [1]),          # a split of one sample still trains
    (11, 4, 2, [4, 4]),      # two processes: a last batch of 3 leaves one of them a single sample
    (12, 4, 2, [4, 4, 4]),
], ids=["two-left", "one-left", "batch-of-one", "one-sample", "two-shards-three-left", "two-shards-full"])  # fmt: skip
def test_an_epoch_leaves_out_a_last_batch_too_small_to_train_on(n, batch_size, shards, sizes):
    cpu = torch.device("cpu")
    batches = [b["index"] for b in train_batches(Counting(n), batch_size, 0, 1, cpu, shards=shards)]
    assert [len(b) for b in batches] == sizes == [batch_size] * (len(sizes) - 1) + sizes[-1:]
    assert steps_per_epoch(Counting(n), batch_size, shards) == len(sizes)
    seen = torch.cat(batches)
    assert len(set(seen.tolist())) == len(seen)  # no sample twice; the ones left out vary by epoch
    resumed = [b["index"] for b in train_batches(Counting(n), batch_size, 0, 1, cpu, first_step=1, shards=shards)]
    assert all(torch.equal(a, b) for a, b in zip(resumed, batches[1:], strict=True))


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
@pytest.mark.parametrize("total_steps", [1, 2, 3, 4, 5, 8, 100])
def test_every_schedule_runs_any_number_of_steps(tiny_data, schedule, total_steps):
    from digitsum.engine.build import build_model
    from digitsum.engine.train import make_optimizer, make_scheduler

    recipe = load_recipe(RECIPES / "original.toml", [f"train.schedule.type='{schedule}'"])
    optimizer = make_optimizer(recipe, build_model(recipe))
    scheduler = make_scheduler(recipe, optimizer, total_steps)
    for _ in range(total_steps):
        optimizer.step()
        scheduler.step()
    lr = scheduler.get_last_lr()[0]
    assert 0 <= lr <= recipe.optimizer.params.lr and lr == lr  # finite, never above the recipe's peak


class TestsSeen(Callback):
    """Records the test figures each on_epoch_end hands the callbacks; stops after ``stop_after``."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.seen: list[dict] = []
        self.stop_after = stop_after

    def on_epoch_end(self, trainer, epoch, train, test) -> None:
        self.seen.append(test)
        if epoch == self.stop_after:
            trainer.request_stop("stopped by test")


def test_eval_every_evaluates_every_nth_and_the_last_epoch_and_trains_the_same(tiny_data, tmp_path):
    # one thread in both: the default count follows the machine's load, and a different count
    # changes the last bits of a sum
    args = ["train.epochs=3", "data.batch_size=64", "train.threads=1"]
    every = fit(load_recipe(RECIPES / "original.toml", args), tmp_path / "every")
    seen = TestsSeen()
    sparse = fit(load_recipe(RECIPES / "original.toml", [*args, "train.eval_every=2"]), tmp_path / "sparse", [seen])
    lines = [json.loads(line) for line in (tmp_path / "sparse" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in lines] == [(1, "train"), (2, "train"), (2, "test"), (3, "train"), (3, "test")]
    assert [bool(test) for test in seen.seen] == [False, True, True]  # callbacks get {} after an epoch not evaluated
    # evaluating draws nothing from training's random streams: the same model, the same figures
    assert sparse["metrics"] == every["metrics"]
    weights = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["model"] for run in ("every", "sparse")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert (tmp_path / "sparse" / "curves.png").stat().st_size > 0


def test_a_run_stopped_after_an_epoch_not_evaluated_reports_its_latest_evaluation(tiny_data, tmp_path):
    recipe = load_recipe(RECIPES / "original.toml", ["train.epochs=4", "data.batch_size=64", "train.eval_every=2"])
    summary = fit(recipe, tmp_path, [TestsSeen(stop_after=3)])
    history = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["history"]
    assert [sorted(entry) for entry in history] == [["epoch", "train"], ["epoch", "test", "train"], ["epoch", "train"]]
    assert summary["epochs"] == 3 and summary["metrics"]["test"] == history[1]["test"]
    assert summary["metrics"]["train"] == history[2]["train"]
