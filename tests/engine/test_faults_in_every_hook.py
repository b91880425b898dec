"""A fault planted in each kind's each hook that a run calls ends in the short report naming the
component and the method (exit 1, no traceback), and the run directory it leaves is one that
``digitsum run --resume`` finishes once the fault is fixed. A doctor check's fault is named the
same way by ``digitsum doctor``.

Each fault is a subclass of a built-in component whose hook raises while the test's switch is
armed; "the fix" disarms it, as a plugin author's corrected release would."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch

from digitsum.components.data.single_digit import SingleDigit
from digitsum.components.fusions.concat import Concat
from digitsum.components.heads.classify import Classify
from digitsum.components.loggers import Jsonl
from digitsum.components.optimizers import AdamW
from digitsum.components.schedules import OneCycle
from digitsum.registry import REGISTRIES

from ..conftest import RECIPES

ARMED = {"on": False}


class PlantedFault(RuntimeError):
    pass


def fault(where: str) -> None:
    if ARMED["on"]:
        raise PlantedFault(f"planted in {where}")


class FaultyDraw(SingleDigit):
    calls = 0

    def draw(self, split, index, rng):
        fault("draw")
        return super().draw(split, index, rng)


class FaultyDescribe(SingleDigit):
    def describe(self, batch, i):
        fault("describe")
        return super().describe(batch, i)


class FaultyFusion(Concat):
    def forward(self, batch):
        fault("forward")
        return super().forward(batch)


def faulty(base: type, method: str) -> type:
    """A subclass of ``base`` whose ``method`` raises while armed (named as its own method is)."""

    def hooked(self, *args):
        fault(method)
        return getattr(base, method)(self, *args)

    hooked.__code__ = hooked.__code__.replace(co_name=method)
    return type(f"Faulty_{method}", (base,), {method: hooked})


class FaultyStepAdam(torch.optim.AdamW):
    """The torch optimizer a plugin's optimizer builds: its own step is plugin code too."""

    def step(self, closure=None):
        fault("step")
        return super().step(closure)


class FaultyOptimizerStep(AdamW):
    def build(self, parameters):
        built = super().build(parameters)
        built.__class__ = FaultyStepAdam
        return built


class FaultyOptimizerBuild(AdamW):
    def build(self, parameters):
        fault("build")
        return super().build(parameters)


class FaultySchedule(OneCycle):
    def build(self, optimizer, total_steps):
        fault("build")
        return super().build(optimizer, total_steps)


def faulty_step(self, *args):
    fault("step")
    return type(self).__mro__[1].step(self, *args)


faulty_step.__code__ = faulty_step.__code__.replace(co_name="step")


class FaultyScheduleStep(OneCycle):
    def build(self, optimizer, total_steps):
        built = super().build(optimizer, total_steps)
        built.__class__ = type("FaultyStepSchedule", (type(built),), {"step": faulty_step})  # the plugin's own scheduler
        return built


#: (id, registry, component class, the recipe override choosing it, the method the report names)
FAULTS = [
    ("generator-draw", "datasets", FaultyDraw, 'data.type="faulty"', "draw"),
    ("generator-describe", "datasets", FaultyDescribe, 'data.type="faulty"', "describe"),
    ("fusion-forward", "fusions", FaultyFusion, 'backbone.type="faulty"', "forward"),
    *[(f"head-{m}", "heads", faulty(Classify, m), 'heads.sum={type="faulty", target="sum"}', m) for m in ("forward", "loss", "metrics", "predict")],
    ("optimizer-build", "optimizers", FaultyOptimizerBuild, 'train.optimizer.type="faulty"', "build"),
    ("optimizer-step", "optimizers", FaultyOptimizerStep, 'train.optimizer.type="faulty"', "step"),
    ("schedule-build", "schedules", FaultySchedule, 'train.schedule.type="faulty"', "build"),
    ("schedule-step", "schedules", FaultyScheduleStep, 'train.schedule.type="faulty"', "step"),
    *[(f"logger-{m}", "loggers", faulty(Jsonl, m), 'log.faulty={type="faulty"}', m) for m in ("on_start", "on_epoch_end", "on_end")],
]


@pytest.fixture
def planted(request) -> Iterator[tuple[str, str]]:
    _, group, cls, override, method = request.param
    REGISTRIES[group].register("faulty")(cls)
    ARMED["on"] = True
    try:
        yield override, method
    finally:
        ARMED["on"] = False
        REGISTRIES[group].remove("faulty")


@pytest.mark.parametrize("planted", FAULTS, ids=[f[0] for f in FAULTS], indirect=True)
def test_a_fault_in_any_hook_is_named_and_the_run_resumes_after_the_fix(cli, tiny_root, tmp_path, planted):
    override, method = planted
    run_dir = tmp_path / "run"
    args = ["--set", f"data.root='{tiny_root}'", "--set", "data.download=false", "--set", "train.epochs=2",
            "--set", "data.batch_size=64", "--set", override, "--no-preflight", "--out", run_dir]  # fmt: skip
    failed = cli("run", RECIPES / "original.toml", *args)
    assert failed.code == 1, failed.err
    assert "Traceback (most recent call last)" not in failed.err + failed.out
    assert "'faulty'" in failed.err and f"{method}()" in failed.err and "planted in" in failed.err, failed.err

    ARMED["on"] = False  # the fix
    if (run_dir / "recipe.toml").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
        assert "faulty" in summary["failed"]  # the run directory records what failed
        resumed = cli("run", "--resume", run_dir)
    else:  # failed while building, before anything was written: nothing to resume, nothing left behind
        assert not run_dir.exists() or not any(run_dir.iterdir())
        resumed = cli("run", RECIPES / "original.toml", *args)
    assert resumed.code == 0, resumed.err
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 2


def test_a_fault_in_a_callback_is_named_and_the_run_resumes_after_the_fix(tiny_root, tmp_path):
    import digitsum
    from digitsum.callbacks import Callback

    class FaultyCallback(Callback):
        def on_step(self, trainer, epoch, step, loss) -> None:
            if epoch == 2:
                fault("on_step")

    overrides = [f"data.root='{tiny_root}'", "data.download=false", "train.epochs=2", "data.batch_size=64"]
    ARMED["on"] = True
    try:
        with pytest.raises(digitsum.ComponentError) as caught:
            digitsum.train(RECIPES / "original.toml", tmp_path / "run", overrides=overrides, callbacks=[FaultyCallback()],
                           progress=False, preflight=False)  # fmt: skip
    finally:
        ARMED["on"] = False
    assert caught.value.component == "callback FaultyCallback" and caught.value.method == "on_step"
    run = digitsum.resume(tmp_path / "run", callbacks=[FaultyCallback()], progress=False)
    assert run.summary["epochs"] == 2 and "failed" not in run.summary
