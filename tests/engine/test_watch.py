"""The preflight before `digitsum run` and the watch during it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from digitsum.components.heads.classify import Classify
from digitsum.callbacks import Callback
from ..runs import fit
from digitsum.diagnosis.preflight import Preflight
from digitsum.engine.watch import Watch, doctor_command
from digitsum.recipe import load_recipe
from digitsum.registry import heads
from digitsum.testing import write_tiny_mnist

from ..conftest import RECIPES, TINY, registered

FAULTY = ['heads.sum.output="probabilities"', "heads.digit.weight=0"]


@pytest.fixture(scope="module")
def learnable_root(tmp_path_factory):
    return write_tiny_mnist(tmp_path_factory.mktemp("learnable"), n_train=2048, n_test=512)


def recipe_for(root, *overrides: str):
    base = ["data.batch_size=32", "train.epochs=2", 'train.schedule.type="constant"', f"data.root='{root}'"]
    return load_recipe(RECIPES / "original.toml", [*base, *overrides])


def test_preflight_warns_on_faulty_heads_and_not_on_healthy_ones(tiny_root, tmp_path):
    faulty = Preflight()
    fit(recipe_for(tiny_root, "train.epochs=1", *FAULTY), tmp_path / "faulty", [faulty])
    text = "\n".join(faulty.warnings)
    assert "heads.sum: softmax applied twice" in text and "heads.digit is never trained" in text
    healthy = Preflight()
    fit(recipe_for(tiny_root, "train.epochs=1"), tmp_path / "healthy", [healthy])
    assert healthy.warnings == [] and healthy.report is not None and healthy.report.findings


def test_preflight_does_not_change_the_run(tiny_root, tmp_path):
    recipe = recipe_for(tiny_root, "train.epochs=1", "train.threads=1")  # bit for bit: not the load-dependent default count
    plain = fit(recipe, tmp_path / "plain")
    checked = fit(recipe, tmp_path / "checked", [Preflight()])
    assert plain["metrics"] == checked["metrics"]


def test_watch_warns_when_nothing_is_learned(learnable_root, tmp_path):
    watch = Watch()
    fit(recipe_for(learnable_root, "train.optimizer.lr=1e-7"), tmp_path / "stuck", [watch])
    text = "\n".join(watch.warnings)
    assert "learning almost nothing" in text  # during the first epoch
    assert "stopped falling" in text and "at chance" in text
    assert watch.failure is None


def test_watch_is_quiet_on_a_run_that_learns(learnable_root, tmp_path):
    watch = Watch()
    recipe = recipe_for(learnable_root, "train.optimizer.lr=3e-3")  # the digit head learns within an epoch here
    recipe = replace(recipe, heads={"digit": recipe.heads["digit"]})
    summary = fit(recipe, tmp_path / "learns", [watch])
    assert summary["metrics"]["test"]["digit"]["accuracy"] > 0.5  # the control really learns
    assert watch.warnings == [] and watch.failure is None


class PoisonAt(Callback):
    """Turns a weight into NaN at one step: the loss is NaN from the next step on."""

    def __init__(self, epoch: int, step: int) -> None:
        self.at = (epoch, step)

    def on_step(self, trainer, epoch, step, loss):
        if (epoch, step) == self.at:
            with torch.no_grad():
                trainer.model.backbone.mlp[0].weight.fill_(float("nan"))


def test_watch_stops_a_nan_run_keeping_the_last_good_checkpoint(tiny_root, tmp_path):
    watch = Watch()
    summary = fit(recipe_for(tiny_root, "train.epochs=3"), tmp_path, [PoisonAt(2, 3), watch])
    assert watch.failure and "NaN" in watch.failure and "epoch 2" in watch.failure
    assert summary["epochs"] == 1 and "non-finite" in summary["stopped"]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1
    epochs = {json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()}
    assert epochs == {1}


class NanLater(Classify):
    """A classifier whose loss turns NaN after a few calls (a run that blows up in epoch 2)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.calls = 0

    def loss(self, output, target):
        self.calls += 1
        loss = super().loss(output, target)
        return loss * float("nan") if self.calls > 9 else loss  # 8 steps + 1 evaluation in epoch 1


@pytest.fixture
def nan_head():
    with registered(heads, "nan_later", NanLater) as name:
        yield name


def test_run_cli_exits_non_zero_on_nan_and_points_at_doctor(cli, tiny_data, nan_head, tmp_path):
    result = cli("run", RECIPES / "original.toml", *TINY, "--set", "train.epochs=3", "--no-preflight",
                 "--set", f'heads.sum={{type="{nan_head}", target="sum"}}', "--out", tmp_path / "run")  # fmt: skip
    assert result.code == 1, result.err
    assert "NaN" in result.err and "digitsum doctor" in result.err and "Traceback" not in result.err
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_run_cli_preflight_warns_and_can_be_skipped(cli, tiny_data, tmp_path):
    sets = [w for o in FAULTY for w in ("--set", o)]
    warned = cli("run", RECIPES / "original.toml", *TINY, *sets, "--out", tmp_path / "a")
    assert warned.code == 0
    assert "preflight: heads.sum: softmax applied twice" in warned.out
    assert "digitsum doctor" in warned.out
    skipped = cli("run", RECIPES / "original.toml", *TINY, *sets, "--no-preflight", "--out", tmp_path / "b")
    assert skipped.code == 0 and "preflight:" not in skipped.out


def test_doctor_hint_repeats_the_overrides():
    assert doctor_command("r.toml", ["train.lr=0.1"]) == "digitsum doctor r.toml --set train.lr=0.1"


def test_watch_follows_the_weighted_loss_that_is_trained(tiny_root, tmp_path):
    watch = Watch()
    fit(recipe_for(tiny_root, "heads.digit.weight=0.25", "heads.sum.weight=3"), tmp_path, [watch])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [row["heads"] for row in rows if row["split"] == "train"]
    expected = [0.25 * heads["digit"]["loss"] + 3 * heads["sum"]["loss"] for heads in train]
    assert len(expected) == 2 and watch.epoch_losses == pytest.approx(expected, rel=1e-9)
    unweighted = [heads["digit"]["loss"] + heads["sum"]["loss"] for heads in train]
    assert watch.epoch_losses != pytest.approx(unweighted, rel=1e-3)  # the weights matter here


def test_a_loss_that_levels_off_after_falling_far_is_not_called_stalled():
    """add-100's loss falls from 230 to about 1 and wavers in its last epochs at a near-zero lr:
    converged, not stalled. A loss that stays where it started is still warned about."""
    from types import SimpleNamespace

    trainer = SimpleNamespace(model=SimpleNamespace(total_loss=lambda losses: sum(losses.values())))

    def warnings_over(losses: list[float]) -> list[str]:
        watch = Watch()
        watch.chance = {}  # no test metrics here: only the loss is judged
        for epoch, loss in enumerate(losses, 1):
            watch.on_epoch_end(trainer, epoch, {"sum": {"loss": loss}}, {})
        return watch.warnings

    assert warnings_over([230.0, 26.4, 1.16, 1.38]) == []
    [stalled] = warnings_over([2.94, 2.94])
    assert stalled.startswith("the training loss stopped falling: 2.9400 in epoch 1, 2.9400 in epoch 2")
    [later] = warnings_over([2.3, 1.6, 1.6])  # learned a little, then stuck well above where it would end
    assert "1.6000 in epoch 3" in later
