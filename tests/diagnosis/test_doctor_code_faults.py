"""Faults a student writes into a component's code that no setting explains, each beside the
healthy code it differs from: the doctor names the component (and never blames the healthy one)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from digitsum.components.fusions.concat import Concat
from digitsum.components.heads.classify import Classify
from digitsum.contracts import Optimizer, Params
from digitsum.diagnosis import Probe, diagnose
from digitsum.recipe import load_recipe
from digitsum.registry import fusions, heads, optimizers

from ..conftest import RECIPES, registered


def report_for(overrides: list[str], checks: list[str], registry=None, name: str = "", component: type | None = None, verify=False):
    if registry is None:
        return diagnose(Probe.from_recipe(load_recipe(RECIPES / "original.toml", overrides)), checks, verify=verify)
    with registered(registry, name, component):
        return diagnose(Probe.from_recipe(load_recipe(RECIPES / "original.toml", overrides)), checks, verify=verify)


class BatchNormHead(Classify):
    """Linear, BatchNorm1d, ReLU, Linear: healthy (its batch norm normalises each batch in training)."""

    def __init__(self, params, in_features, target):
        super().__init__(params, in_features, target)
        self.net = nn.Sequential(nn.Linear(in_features, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, target.classes))

    def forward(self, features):
        return self.net(features)


class TanhAfterBatchNorm(BatchNormHead):
    def forward(self, features):
        return torch.tanh(self.net(features))


@pytest.mark.parametrize("head, broken", [(BatchNormHead, False), (TanhAfterBatchNorm, True)])
def test_a_batch_norm_inside_a_head_does_not_bound_its_logits_a_tanh_after_it_does(tiny_data, head, broken):
    report = report_for(['heads.sum={type="bn_head", target="sum"}'], ["loss_floor"], heads, "bn_head", head)
    errors = [f for f in report.findings if f.severity == "error"]
    assert bool(errors) == broken
    if broken:
        assert "forward bounds its logits" in errors[0].title and "TanhAfterBatchNorm" in errors[0].fix


class BatchAxisAccuracy(Classify):
    def metrics(self, output, target):
        return {"accuracy": (output.argmax(dim=0) == target).float()}  # the batch's axis: a crash on any batch


def test_a_head_whose_metrics_crash_is_named_before_any_check_as_the_first_training_step_would(tiny_data):
    report = report_for(['heads.digit={type="axis_head", target="digit"}'], ["loss_at_init"], heads, "axis_head", BatchAxisAccuracy)
    [error] = report.errors
    assert error.check == "contract" and "'axis_head'" in error.title and "metrics()" in error.title


class _Velocity(torch.optim.Optimizer):
    """Heavy-ball SGD; ``decay`` 1.0 is the bug: a velocity that never decays."""

    def __init__(self, params, lr, decay):
        super().__init__(params, {"lr": lr, "decay": decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    velocity = self.state[p].setdefault("velocity", torch.zeros_like(p))
                    velocity.mul_(group["decay"]).add_(p.grad)
                    p.add_(velocity, alpha=-group["lr"])


class StudentSgd(Optimizer):
    """An optimizer plugin: healthy at ``decay = 0.9``, broken at 1 (hard-coded) or by a fixed lr."""

    contract = 1
    decay, fixed_lr = 0.9, None

    class Params(Params):
        lr: float = Field(0.01, gt=0)

    def build(self, parameters):
        return _Velocity(parameters, self.fixed_lr or self.params.lr, self.decay)


@pytest.mark.parametrize("decay", [0.9, 1.0])
def test_an_optimizer_whose_velocity_never_decays_is_named_as_code_and_no_setting_is_proposed(tiny_data, decay):
    student = type("Student", (StudentSgd,), {"decay": decay})
    report = report_for(['train.optimizer={type="student_sgd", lr=0.01}'], ["optimizer"], optimizers, "student_sgd", student)
    [finding] = [f for f in report.findings if f.check == "optimizer"]
    if decay < 1:
        assert finding.severity == "info"
    else:
        assert finding.severity == "error" and "does not settle" in finding.title and "_Velocity" in finding.fix
        assert finding.figures["broken_code"] == "train.optimizer" and finding.keys == ["train.optimizer.type"]


def test_a_built_in_optimizers_momentum_that_never_settles_is_named_with_its_default(tiny_data):
    report = report_for(['train.optimizer={type="sgd", lr=0.05, momentum=0.999}', "train.schedule.momentum=false"], ["optimizer"])
    [finding] = [f for f in report.findings if f.check == "optimizer"]
    assert finding.severity == "error" and finding.keys == ["train.optimizer.momentum"] and "momentum = 0.9" in finding.fix


def test_an_optimizer_that_ignores_the_recipes_lr_is_refused_and_the_schedule_not_blamed(tiny_data, tmp_path):
    import digitsum
    from digitsum.errors import UserError

    student = type("Student", (StudentSgd,), {"fixed_lr": 10.0})
    overrides = ['train.optimizer={type="student_sgd", lr=0.05}']
    report = report_for(overrides, ["schedule"], optimizers, "student_sgd", student)
    [error] = report.errors
    assert "'student_sgd'" in error.title and "build()" in error.title and "lr 10" in error.measured
    with registered(optimizers, "student_sgd", student), pytest.raises(UserError, match="lr=params.lr"):
        digitsum.train("original", tmp_path / "run", overrides=[*overrides, "train.epochs=1"], progress=False)


def test_a_momentum_the_schedule_replaces_is_a_warning_naming_both_keys(tiny_data):
    report = report_for(['train.optimizer={type="sgd", lr=0.05, momentum=0.5}'], ["schedule"])
    [warning] = report.warnings
    assert "replaces train.optimizer.momentum = 0.5" in warning.title and "train.schedule.momentum = false" in warning.fix
    kept = report_for(['train.optimizer={type="sgd", lr=0.05, momentum=0.5}', "train.schedule.momentum=false"], ["schedule"])
    assert not kept.warnings


class DropoutAlwaysOn(Classify):
    def forward(self, features):
        return super().forward(F.dropout(features, p=0.5, training=True))


class DropoutInTraining(Classify):
    def forward(self, features):
        return super().forward(F.dropout(features, p=0.5, training=self.training))


@pytest.mark.parametrize("head, random", [(DropoutAlwaysOn, True), (DropoutInTraining, False)])
def test_a_head_random_in_eval_mode_is_named_as_such_not_as_mixing_samples(tiny_data, head, random):
    report = report_for(['heads.sum={type="drop_head", target="sum"}'], ["batch_independence"], heads, "drop_head", head)
    found = [f for f in report.findings if f.severity != "info"]
    assert bool(found) == random
    if random:
        assert "random there" in found[0].title and "heads.sum" in found[0].title and "training=self.training" in found[0].fix


class RawTensorHead(Classify):
    def __init__(self, params, in_features, target):
        super().__init__(params, in_features, target)
        self.scale = torch.ones(target.classes, requires_grad=True)  # not an nn.Parameter: never trained

    def forward(self, features):
        return super().forward(features) * self.scale


def test_a_tensor_held_outside_the_parameters_is_named_by_its_attribute(tiny_data):
    report = report_for(['heads.sum={type="raw_head", target="sum"}'], ["loss_weights"], heads, "raw_head", RawTensorHead)
    [error] = report.errors
    assert "heads.sum.scale" in error.measured


class HugeInit(Concat):
    """Every layer's weights drawn with std 1, not scaled by fan-in: features of hundreds at init."""

    def __init__(self, params, inputs):
        super().__init__(params, inputs)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(module.weight, std=1.0)


def test_a_backbone_initialised_far_too_large_is_named_and_no_built_in_head_blamed(tiny_data):
    report = report_for(['backbone={type="huge_concat"}'], ["loss_at_init", "loss_floor"], fusions, "huge_concat", HugeInit)
    warnings = [f for f in report.findings if f.severity != "info"]
    assert warnings and all(f.check == "loss_at_init" and "confidently wrong" in f.title for f in warnings)
    assert all("HugeInit" in f.fix for f in warnings)  # the backbone's initialisation, not the head's weights


class RolledTargets(Classify):
    def loss(self, output, target):
        return F.cross_entropy(output, target.roll(1, 0))  # each output trained towards its neighbour's target


class BalancedByBatch(Classify):
    """Healthy: classes weighted by their inverse frequency in the batch (its statistics, not its pairing)."""

    def loss(self, output, target):
        counts = torch.bincount(target, minlength=output.shape[1]).clamp_min(1).float()
        return F.cross_entropy(output, target, weight=counts.sum() / counts)


@pytest.mark.parametrize("head, broken", [(RolledTargets, True), (BalancedByBatch, False)])
def test_a_loss_that_pairs_outputs_with_other_samples_targets_is_named(tiny_data, head, broken):
    report = report_for(['heads.sum={type="pair_head", target="sum"}'], ["batch_independence"], heads, "pair_head", head)
    errors = report.errors
    assert bool(errors) == broken
    if broken:
        assert "pairs a sample's output with another sample's target" in errors[0].title and head.__name__ in errors[0].fix


def test_a_momentum_the_schedule_replaces_is_not_judged_on_the_bowl(tiny_data):
    # original's onecycle cycles the momentum between 0.85 and 0.95: the 0.999 is never used (the schedule's warning says so)
    report = report_for(['train.optimizer={type="sgd", lr=0.05, momentum=0.999}'], ["optimizer"])
    assert [f.severity for f in report.findings if f.check == "optimizer"] == ["info"]


class CooledLogits(Classify):
    """A temperature of 1000 on its logits: nothing bounds them, but no run moves them."""

    def forward(self, features):
        return super().forward(features) / 1000


class ZeroLastLayer(BatchNormHead):
    """Healthy: a last layer initialised to zeros (its logits start at 0 and grow as it trains)."""

    def __init__(self, params, in_features, target):
        super().__init__(params, in_features, target)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)


def test_a_head_that_divides_its_logits_is_named_by_how_little_they_move(tiny_data):
    report = report_for(['heads.sum={type="cooled", target="sum"}'], ["overfit"], heads, "cooled", CooledLogits, verify=True)
    [reach] = [f for f in report.errors if "hardly move" in f.title]
    assert reach.check == "overfit" and "heads.sum" in reach.title and not any("heads.digit" in f.title for f in report.errors)
    # how much too small, from how far they move: the factor its forward divides by, tried and verified
    assert reach.figures["reach"] < 0.3 and reach.figures["factor"] == 1000
    assert reach.fix.startswith("CooledLogits.forward: its logits 1000 times larger") and "verified" in reach.fix


@pytest.mark.parametrize("head, moves", [(CooledLogits, False), (ZeroLastLayer, True), (BatchNormHead, True)])
def test_the_reach_of_a_heads_logits_tells_a_scaled_down_forward_from_a_zero_start(tiny_data, head, moves):
    from digitsum.diagnosis.checks.reach import reach_findings
    from digitsum.diagnosis.probe import slice_batch

    with registered(heads, "under_test", head):
        probe = Probe.from_recipe(load_recipe(RECIPES / "original.toml", ['heads.sum={type="under_test", target="sum"}']))
        found = reach_findings(probe, slice_batch(probe.sample, 32), ["digit", "sum"], 1e-3, 300)
    assert [f.title for f in found] == ([] if moves else ["heads.sum's logits hardly move as the weights train"])
