"""Optimizers and learning-rate schedules as components: recipe tables, what they build, the old
spelling of [train], and run directories written in it."""

from __future__ import annotations

import tomllib

import pytest
import torch
from pydantic import Field

from digitsum.contracts import Optimizer, Params, Schedule
from digitsum.engine.build import build_model
from digitsum.engine.checkpoint import load_checkpoint, save_checkpoint
from digitsum.engine.train import make_optimizer, make_scheduler
from digitsum.errors import RecipeError
from digitsum.recipe import load_recipe, upgrade_train
from digitsum.registry import optimizers, schedules
from digitsum.testing import ConformanceError, check_schedule

from .conftest import RECIPES, registered
from .runs import StopAt, train

def problems(source, overrides=()) -> list[str]:
    with pytest.raises(RecipeError) as e:
        load_recipe(source, overrides)
    return [p.render() for p in e.value.problems]


def built(overrides, total_steps=100):
    recipe = load_recipe(RECIPES / "original.toml", overrides)
    optimizer = make_optimizer(recipe, build_model(recipe))
    return recipe, optimizer, make_scheduler(recipe, optimizer, total_steps)


def trace(optimizer, scheduler, steps: int, key: str = "momentum") -> tuple[list[float], list]:
    """The learning rate and ``key`` (momentum, betas) of the first param group at every step."""
    rates, values = [], []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        values.append(optimizer.param_groups[0].get(key))
        optimizer.step()
        scheduler.step()
    return rates, values


# -- what the tables build -------------------------------------------------------------------------


@pytest.mark.parametrize("name,torch_class", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_each_optimizer_builds_its_torch_class_with_the_recipes_values(name, torch_class):
    values = {"sgd": {"lr": 0.05, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-4},
              "adam": {"lr": 3e-3, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 1e-4},
              "adamw": {"lr": 3e-3, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1}}[name]  # fmt: skip
    _, optimizer, _ = built({"train.optimizer": {"type": name, **values}, "train.schedule.type": "constant"})
    assert type(optimizer) is torch_class
    group = optimizer.param_groups[0]
    for key, value in values.items():
        assert group[key] == (tuple(value) if isinstance(value, list) else value), key
    assert optimizer.defaults.get("fused") is True  # one fused kernel on the CPU, as before


@pytest.mark.parametrize("name,key,value", [("adam", "momentum", 0.9), ("adamw", "nesterov", True), ("sgd", "betas", [0.9, 0.99])])
def test_a_parameter_the_optimizer_does_not_have_is_an_error(name, key, value):
    found = problems(RECIPES / "original.toml", {"train.optimizer": {"type": name, key: value}})
    assert len(found) == 1 and f"train.optimizer.{key}: unknown key" in found[0] and f"[optimizer '{name}']" in found[0], found


def test_nesterov_needs_momentum():
    found = problems(RECIPES / "original.toml", {"train.optimizer": {"type": "sgd", "momentum": 0.0, "nesterov": True}})
    assert any("nesterov = true needs momentum > 0" in p for p in found), found


def test_an_unknown_optimizer_or_schedule_suggests_one():
    found = problems(RECIPES / "original.toml", ["train.optimizer.type=adamv", "train.schedule.type=cosin"])
    assert any(f"train.optimizer.type: unknown optimizer 'adamv' — did you mean 'adam' or 'adamw'? (valid: {', '.join(optimizers.names())})" in p
               for p in found), found  # fmt: skip
    assert any("train.schedule.type: unknown learning-rate schedule 'cosin' — did you mean 'cosine'?" in p for p in found), found


def test_sgd_without_momentum_stays_without_momentum_under_onecycle():
    # PyTorch's OneCycleLR cycles momentum by default: SGD with momentum 0 trained with 0.85-0.95
    overrides = {"train.optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.0}, "train.schedule": {"type": "onecycle", "momentum": False}}
    recipe, optimizer, scheduler = built(overrides)  # original's schedule cycles momentum: `false` turns it off
    assert recipe.schedule.params.momentum is None and "momentum" not in recipe.to_dict()["train"]["schedule"]
    rates, momenta = trace(optimizer, scheduler, 100)
    assert set(momenta) == {0.0}
    assert max(rates) == pytest.approx(0.1, rel=1e-3) and rates[0] == pytest.approx(0.1 / 25)


def test_onecycle_cycles_momentum_only_when_asked():
    overrides = {"train.optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
                 "train.schedule": {"type": "onecycle", "warmup": 0.3, "momentum": [0.8, 0.95]}}  # fmt: skip
    _, optimizer, scheduler = built(overrides)
    rates, momenta = trace(optimizer, scheduler, 100)
    peak = rates.index(max(rates))
    assert peak == 29 and momenta[0] == pytest.approx(0.95) and momenta[peak] == pytest.approx(0.8, abs=1e-3)
    _, adam, adam_schedule = built({"train.optimizer.type": "adam", "train.schedule": {"type": "onecycle", "momentum": [0.85, 0.95]}})
    _, betas = trace(adam, adam_schedule, 100, "betas")
    assert betas[0] == (0.95, 0.999) and min(b[0] for b in betas) == pytest.approx(0.85, abs=1e-3)


def test_cosine_warms_up_linearly_then_anneals_to_its_end():
    _, optimizer, scheduler = built({"train.optimizer": {"type": "adam", "lr": 0.01},
                                     "train.schedule": {"type": "cosine", "warmup": 0.1, "end": 0.2}})  # fmt: skip
    rates, _ = trace(optimizer, scheduler, 100)
    assert rates[:10] == pytest.approx([0.001 * (i + 1) for i in range(10)])
    assert max(rates) == pytest.approx(0.01) and all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] == pytest.approx(0.002, rel=0.01)


def test_cosine_without_warm_up_is_torchs_own():
    _, optimizer, scheduler = built({"train.schedule.type": "cosine"})
    assert type(scheduler) is torch.optim.lr_scheduler.CosineAnnealingLR


@pytest.mark.parametrize("steps", [1, 3, 7])
def test_onecycle_keeps_short_runs_constant(steps):
    _, optimizer, scheduler = built({"train.schedule.type": "onecycle"}, steps)
    rates, _ = trace(optimizer, scheduler, steps)
    assert set(rates) == {0.004}


def test_every_schedule_is_listed_with_the_kinds():
    assert {"sgd", "adam", "adamw"} <= set(optimizers.names())
    assert {"constant", "onecycle", "cosine"} <= set(schedules.names())


def test_list_optimizers_and_schedules(cli):
    import json

    for kind, names in (("optimizers", {"sgd", "adam", "adamw"}), ("schedules", {"constant", "onecycle", "cosine"})):
        result = cli("list", kind, "--json")
        assert result.code == 0 and {r["name"] for r in json.loads(result.out)} >= names
    assert "[train.schedule]" in cli("list", "--markdown").out


# -- the spelling of digitsum 0.1.0 -----------------------------------------------------------------

OLD_TRAIN = '[train]\nepochs = 8\noptimizer = "adamw"\nlr = 4e-3\nweight_decay = 0.05\nschedule = "onecycle"\n'


def test_the_old_spelling_is_an_error_giving_the_new_one(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text('extends = "original"\n' + OLD_TRAIN)
    found = problems(path)
    assert found == [
        f"{path}:5 train.lr: `lr` belongs to the optimizer now: write lr = 0.004 under [train.optimizer] (--set train.optimizer.lr=0.004)",
        f"{path}:6 train.weight_decay: `weight_decay` belongs to the optimizer now: write weight_decay = 0.05 under "
        "[train.optimizer] (--set train.optimizer.weight_decay=0.05)",
        f'{path}:4 train.optimizer: is a table now: write [train.optimizer] with type = "adamw" (--set train.optimizer.type=adamw) '
        "and the optimizer's parameters (lr, weight_decay, ...) beside it",
        f'{path}:7 train.schedule: is a table now: write [train.schedule] with type = "onecycle" (--set train.schedule.type=onecycle); '
        "the old onecycle also cycled the momentum between 0.85 and 0.95: add momentum = [0.85, 0.95] to keep that",
    ]  # fmt: skip
    assert problems("original", ["train.lr=1e-3"]) == [
        "--set train.lr=1e-3 train.lr: `lr` belongs to the optimizer now: write lr = 0.001 under [train.optimizer] "
        "(--set train.optimizer.lr=0.001)"
    ]  # fmt: skip


@pytest.mark.parametrize("old,optimizer,schedule", [
    ({"optimizer": "adamw", "lr": 4e-3, "weight_decay": 0.05, "momentum": 0.9, "schedule": "onecycle"},
     {"type": "adamw", "lr": 4e-3, "weight_decay": 0.05}, {"type": "onecycle", "warmup": 0.25, "momentum": [0.85, 0.95]}),
    ({"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "schedule": "cosine"},
     {"type": "sgd", "lr": 0.1, "weight_decay": 0.0, "momentum": 0.0}, {"type": "cosine"}),
    ({"epochs": 2}, {"type": "adam", "lr": 2e-3, "weight_decay": 0.0}, {"type": "onecycle", "warmup": 0.25, "momentum": [0.85, 0.95]}),
])  # fmt: skip
def test_upgrading_the_old_spelling_keeps_what_the_old_code_did(old, optimizer, schedule):
    old = {**old, "lr": old.get("lr", 2e-3)}  # ({"epochs": 2} alone is not the old spelling)
    new = upgrade_train(old)
    assert new["optimizer"] == optimizer and new["schedule"] == schedule
    assert {k: v for k, v in new.items() if k not in ("optimizer", "schedule")} == {
        k: v for k, v in old.items() if k not in ("optimizer", "schedule", "lr", "weight_decay", "momentum")
    }


def old_spelling(run_dir):
    """Rewrite a run directory as digitsum 0.1.0 wrote it: [train] and the checkpoint's recipe in the old spelling."""
    import tomli_w

    def flatten(train: dict) -> dict:
        optimizer, schedule = train.pop("optimizer"), train.pop("schedule")
        # what the old code did without saying so: default betas, and onecycle cycling them
        assert schedule == {"type": "onecycle", "warmup": 0.25, "initial_div": 25.0, "final_div": 1e4, "momentum": [0.85, 0.95]}
        assert optimizer["betas"] == [0.9, 0.999] and optimizer["eps"] == 1e-8
        return {**train, "optimizer": optimizer["type"], "lr": optimizer["lr"], "weight_decay": optimizer["weight_decay"],
                "momentum": 0.9, "schedule": schedule["type"]}  # fmt: skip

    path = run_dir / "recipe.toml"
    doc = tomllib.loads(path.read_text())
    doc["train"] = flatten(doc["train"])
    path.write_text(tomli_w.dumps(doc))
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    checkpoint["recipe"]["train"] = flatten(checkpoint["recipe"]["train"])
    save_checkpoint(run_dir / "checkpoint.pt", checkpoint)


def test_a_run_directory_in_the_old_spelling_loads_and_resumes_exactly(tiny_root, tmp_path):
    import json

    from digitsum.engine.runner import resume

    whole = train(tiny_root, tmp_path / "whole")
    stopped = tmp_path / "stopped"
    train(tiny_root, stopped, callbacks=[StopAt(1, 3)])
    old_spelling(stopped)
    text = (stopped / "recipe.toml").read_text()
    assert 'optimizer = "adamw"' in text and "[train.optimizer]" not in text and "[provenance]" in text  # really the old spelling
    assert load_recipe(stopped / "recipe.toml").to_dict() == whole.recipe.to_dict()
    outcome = resume(stopped, progress=False)
    expected = json.loads((tmp_path / "whole" / "summary.json").read_text())["metrics"]
    assert outcome.summary["metrics"] == expected  # exactly: every float equal


# -- what build() returns: named when it is not what the contract promises --------------------------


class _ListOptimizer(Optimizer):
    """Returns the parameters themselves: no param_groups, no step."""

    class Params(Params):
        lr: float = Field(0.01, gt=0, description="learning rate")

    def build(self, parameters):
        return list(parameters)


class _LastLayerOptimizer(_ListOptimizer):
    """Holds only the last two tensors it is given: every other layer, heads too, would keep its initial weights."""

    def build(self, parameters):
        return torch.optim.Adam(parameters[-2:], lr=self.params.lr)


class _FixedRateOptimizer(_ListOptimizer):
    """Hard-codes its rate: the recipe's lr, which the schedules read as their peak, would mean nothing."""

    def build(self, parameters):
        return torch.optim.Adam(parameters, lr=0.5)


class _ListSchedule(Schedule):
    """Returns its scheduler in a list."""

    def build(self, optimizer, total_steps):
        return [torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)]


@pytest.mark.parametrize("kind, component, says", [
    ("optimizers", _ListOptimizer, "build() returned list, not a torch.optim.Optimizer"),
    ("schedules", _ListSchedule, "build() returned list, without step, get_last_lr, state_dict, load_state_dict"),
    ("optimizers", _LastLayerOptimizer, "build() was given 12 parameter tensors and its param groups hold 2"),
    ("optimizers", _FixedRateOptimizer, "build() returned an optimizer at lr 0.5 where its params.lr (the recipe's train.optimizer.lr) is 0.01"),
])  # fmt: skip
def test_a_build_that_returns_another_type_is_blamed_on_its_component(kind, component, says, cli, tiny_data, tmp_path):
    registry = {"optimizers": optimizers, "schedules": schedules}[kind]
    table = {"optimizers": "optimizer", "schedules": "schedule"}[kind]
    with registered(registry, "returns_a_list", component):
        result = cli("run", RECIPES / "original.toml", "--set", "train.epochs=1", "--set", f"train.{table}.type=returns_a_list",
                     "--out", tmp_path / "run")  # fmt: skip
    assert result.code == 1 and "Traceback" not in result.err + result.out, result.err
    # the component that built it is named, with its origin, not the schedule that would trip on it
    assert f"'returns_a_list' from local ({__name__}:{component.__qualname__}): {says}" in result.err, result.err


class _WarmUpByWholeSteps(Schedule):
    """A warm-up written with integer division: the factor is 0 until its last step, then 0 for good."""

    def build(self, optimizer, total_steps):
        warm = total_steps // 2
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) // warm if s < warm else 0)


class _WarmUpThenConstant(Schedule):
    """The same warm-up written right: a fifth of the run, then the peak."""

    def build(self, optimizer, total_steps):
        warm = max(total_steps // 5, 1)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warm, 1.0))


def test_a_schedule_that_starves_the_run_fails_its_conformance_check_as_the_doctor_judges_it():
    with pytest.raises(ConformanceError) as e:
        check_schedule(_WarmUpByWholeSteps)
    assert "SGD, 100 steps: the schedule keeps the lr below 1 % of its peak for 99 % of the run" in str(e.value)
    check_schedule(_WarmUpThenConstant)


def test_the_conformance_check_fails_an_optimizer_that_hard_codes_its_rate():
    from digitsum.testing import ConformanceError, check_component

    with pytest.raises(ConformanceError, match="lr=params.lr"):
        check_component(_FixedRateOptimizer)
