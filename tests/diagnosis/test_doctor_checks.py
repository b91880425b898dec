"""The doctor's second edition: fixes verified before they are recommended, the new checks (each
beside a healthy control), heads judged by their own declaration, --repair, plugin checks."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from digitsum.components.fusions.concat import Concat
from digitsum.components.heads.classify import Classify
from digitsum.contracts import Classes, Head, Params
from digitsum.diagnosis import Probe, diagnose, short_run_steps
from digitsum.diagnosis.checks.data import dominated_share
from digitsum.diagnosis.probe import learns
from digitsum.engine.progress import fell
from digitsum.errors import UserError
from digitsum.recipe import load_recipe
from digitsum.registry import fusions, heads
from digitsum.testing import ConformanceError, check_head

from ..conftest import RECIPES, registered
from .test_doctor import with_generator


def probe_for(*overrides: str, recipe: str = "original.toml") -> Probe:
    return Probe.from_recipe(load_recipe(RECIPES / recipe, list(overrides)))


def found(probe: Probe, *checks: str, verify: bool = False):
    return diagnose(probe, list(checks), verify=verify).findings


def of(findings, check: str, severity: str | None = None) -> list:
    return [f for f in findings if f.check == check and (severity is None or f.severity == severity)]


# -- one definition of "the loss fell" --------------------------------------------------------


@pytest.mark.parametrize("before, after, share, floor, expected", [
    (2.0, 1.5, 0.2, 0.0, True), (2.0, 1.7, 0.2, 0.0, False),   # 25 % and 15 % of the way to 0
    (2.2, 2.15, 0.2, 2.0, True),                               # a raised floor: 25 % of the way to 2.0
    (2.0, float("nan"), 0.2, 0.0, False), (1.0, 1.0, 0.05, 1.0, True),
])  # fmt: skip
def test_the_loss_fell_is_read_against_its_floor(before, after, share, floor, expected):
    assert fell(before, after, share, floor) is expected


def test_chance_and_dominance_thresholds():
    assert learns(0.20, 0.10) and not learns(0.12, 0.10)
    assert dominated_share(2) == 0.75 and 0.54 < dominated_share(2) and abs(dominated_share(10) - 0.55) < 1e-9


# -- learnability: labels that belong to other samples ---------------------------------------


def _rolled(batch, rng):
    return {**batch, "digit": batch["digit"].roll(1), "sum": batch["sum"].roll(1)}


def test_labels_shifted_to_another_sample_are_found_by_the_held_out_check(tiny_data):
    errors = of(found(with_generator(probe_for(), _rolled), "learnability"), "learnability", "error")
    assert {e.title.split()[0] for e in errors} >= {"heads.digit"}
    digit = next(e for e in errors if e.title.startswith("heads.digit"))
    assert digit.figures["train_fit"] >= 0.5 and digit.figures["held_out"] < digit.figures["chance"] + 0.1
    assert not of(found(probe_for(), "learnability"), "learnability", "error")  # control


class Hashes(Concat):
    """A fusion whose features are a hash of the pixels: each image its own, unrelated to its digit."""

    def __init__(self, params, inputs):
        super().__init__(params, inputs)
        self.register_buffer("mix", torch.randn(28 * 28, 256, generator=torch.Generator().manual_seed(0)))
        self.out_features = 256 + 10

    def forward(self, batch):
        hashed = torch.sin(1e3 * batch["image"].flatten(1) @ self.mix)
        return torch.cat([hashed, torch.nn.functional.one_hot(batch["number"], 10).float()], dim=1)


def test_a_model_that_can_only_memorise_a_built_in_generators_samples_is_named_not_the_data(tiny_data):
    # was: "target 'sum' does not belong to its inputs ... look for a shifted or shuffled index" in
    # the built-in generator, for a fusion of the user's that emitted the digits in another order
    with registered(fusions, "hashes", Hashes) as name:
        errors = of(found(probe_for(f'backbone.type="{name}"'), "learnability"), "learnability", "error")
    assert {e.title.split()[0] for e in errors} == {"heads.digit", "heads.sum"}
    for error in errors:
        assert error.title.endswith("the model's own code cannot learn the rule")
        assert "fusion 'hashes' from local" in error.why and "Hashes" in error.fix and "generator" not in error.fix


# -- input use --------------------------------------------------------------------------------


class IgnoresNumber(Concat):
    """Concat whose forward never reads the number (a planted bug)."""

    def forward(self, batch):
        return super().forward({**batch, "number": torch.zeros_like(batch["number"])})


@pytest.fixture
def ignoring_backbone():
    with registered(fusions, "ignores_number", IgnoresNumber) as name:
        yield name


def test_an_input_the_backbone_ignores_is_an_error_naming_it(tiny_data, ignoring_backbone):
    probe = probe_for(f'backbone.type="{ignoring_backbone}"')
    (error,) = of(found(probe, "input_use"), "input_use", "error")
    assert "heads.sum" in error.title and "'number'" in error.title and "IgnoresNumber" in error.fix
    assert error.figures["never_read"] and error.figures["mutual_information"] > 0.1
    assert not of(found(probe_for(), "input_use"), "input_use", "error")  # control: concat reads it


def test_a_constant_input_carries_no_information(tiny_data):
    def constant(batch, rng):
        return {**batch, "number": torch.zeros_like(batch["number"])}

    (finding,) = [f for f in found(with_generator(probe_for(), constant), "input_use") if "constant" in f.title]
    assert "'number'" in finding.title and finding.severity in ("warning", "error")


def test_a_constant_input_the_targets_are_computed_from_is_an_error(tiny_data):
    def constant(batch, rng):  # the sum stays digit + the number drawn, which the model never sees
        return {**batch, "number": torch.zeros_like(batch["number"])}

    def consistent(batch, rng):  # the sum follows the constant number: nothing is hidden
        return {**batch, "number": torch.zeros_like(batch["number"]), "sum": batch["digit"].clone()}

    (bad,) = [f for f in found(with_generator(probe_for(), constant), "input_use") if "constant" in f.title]
    assert bad.severity == "error" and "different targets from identical inputs" in bad.measured
    (plain,) = [f for f in found(with_generator(probe_for(), consistent), "input_use") if "constant" in f.title]
    assert "different targets" not in plain.measured


# -- batch independence -----------------------------------------------------------------------


class MixesBatch(Concat):
    """Concat that subtracts the batch mean from its features (a planted bug)."""

    def forward(self, batch):
        features = super().forward(batch)
        return features - features.mean(dim=0, keepdim=True)


def test_an_output_that_depends_on_other_samples_is_an_error(tiny_data):
    with registered(fusions, "mixes_batch", MixesBatch):
        (error,) = of(found(probe_for('backbone.type="mixes_batch"'), "batch_independence"), "batch_independence", "error")
        assert "MixesBatch" in error.title and error.figures["backbone"] > 1e-3
    (fine,) = found(probe_for(), "batch_independence")
    assert fine.severity == "info" and fine.figures["backbone"] == 0.0


# -- loss floor and metric --------------------------------------------------------------------


def test_label_smoothing_raises_the_floor_and_a_learning_head_is_not_an_error(tiny_data):
    findings = found(probe_for("heads.digit.label_smoothing=0.9"), "loss_floor", "short_run")
    (floor,) = [f for f in of(findings, "loss_floor") if "heads.digit" in f.title]
    assert floor.figures["floor"] > 1.5  # smoothing 0.9 over 10 classes: the entropy of its target
    (digit,) = [f for f in of(findings, "learning") if f.title.startswith("heads.digit")]
    assert digit.severity == "info" and digit.figures["after"] > digit.figures["chance"] + 0.1
    assert not [f for f in findings if f.severity == "error"]


class OffByOne(Classify):
    """Cross-entropy trains the logits, but predict reads the next class: loss falls, accuracy at chance."""

    def predict(self, output):
        return (output.argmax(dim=1) + 1) % output.shape[1]

    def metrics(self, output, target):
        return {"accuracy": (self.predict(output) == target).float()}


def test_a_loss_that_falls_while_the_metric_stays_at_chance_is_flagged(tiny_data):
    with registered(heads, "off_by_one", OffByOne):
        findings = found(probe_for('heads.digit={type="off_by_one", target="digit"}'), "short_run")
    (error,) = [f for f in of(findings, "learning", "error") if "heads.digit" in f.title]
    assert "loss falls but the accuracy stays at chance" in error.title


# -- heads declare how they are judged ----------------------------------------------------------


class Thresholds(Head):
    """A plugin-style ordinal head: K-1 cumulative logits for K ordered classes."""

    output_kind = "other"

    class Params(Params):
        pass

    def __init__(self, params, in_features: int, target: Classes) -> None:
        super().__init__(params, in_features, target)
        self.score = nn.Sequential(nn.Linear(in_features, 64), nn.ReLU(), nn.Linear(64, 1))
        self.cuts = nn.Parameter(torch.linspace(-1, 1, target.classes - 1))

    def forward(self, features: Tensor) -> Tensor:
        return self.score(features) - self.cuts

    def loss(self, output, target):
        above = (target[:, None] > torch.arange(output.shape[1], device=target.device)).to(output.dtype)
        return F.binary_cross_entropy_with_logits(output, above)

    def predict(self, output):
        return (output > 0).sum(dim=1)

    def metrics(self, output, target):
        return {"accuracy": (self.predict(output) == target).float()}

    def probabilities(self, output):
        above = torch.sigmoid(output.float()).cummin(dim=1).values
        ones = torch.ones_like(above[:, :1])
        cumulative = torch.cat([ones, above, torch.zeros_like(ones)], dim=1)
        return cumulative[:, :-1] - cumulative[:, 1:]


class PoissonCount(Head):
    """A head reading its class as a count: a log-rate, the Poisson negative log-likelihood
    without its constant (exp(x) - y x, minimised at y - y ln y: below 0 for counts above e)."""

    output_kind = "value"

    class Params(Params):
        pass

    def __init__(self, params, in_features: int, target: Classes) -> None:
        super().__init__(params, in_features, target)
        self.linear = nn.Linear(in_features, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features).squeeze(-1)

    def loss(self, output, target):
        return F.poisson_nll_loss(output, target.float(), log_input=True)

    def predict(self, output):
        return output.exp().round().long()

    def metrics(self, output, target):
        return {"accuracy": (self.predict(output) == target).float()}


def test_the_floor_of_a_loss_that_goes_below_zero_is_followed_there(tiny_data):
    # was: the search stopped at the first loss below 1 % of its start (-0.46), while training
    # took the loss to -11.5: "1961 % of the way to its floor"
    from digitsum.diagnosis.checks.floor import loss_floor
    from digitsum.diagnosis.probe import slice_batch

    with registered(heads, "poisson_count", PoissonCount):
        probe = probe_for('heads.sum={type="poisson_count", target="sum"}')
        y = slice_batch(probe.sample, 256)["sum"].double()
        lowest = float(torch.where(y > 0, y - y * torch.log(y.clamp(min=1)), torch.zeros_like(y)).mean())
        assert lowest < -5 and abs(loss_floor(probe, "sum") - lowest) < 0.05 * abs(lowest)


class SigmoidLogits(Classify):
    """A sigmoid on the logits before the cross-entropy: outputs bounded to (0, 1)."""

    def forward(self, features):
        return torch.sigmoid(super().forward(features))


class LogProbabilities(Classify):
    """Log-probabilities out, into a cross-entropy: the same loss as from the logits."""

    def forward(self, features):
        return torch.log_softmax(super().forward(features), dim=1)


@pytest.mark.parametrize("head, bounded", [(SigmoidLogits, True), (LogProbabilities, False), (Classify, False)])
def test_a_forward_that_bounds_the_logits_is_named_by_its_floor(tiny_data, head, bounded):
    # was: "can lower its loss to 0.0039" (over free outputs), for a sigmoid whose floor is ln(1 + 18/e)
    with registered(heads, "bounded_or_not", head):
        floors = found(probe_for('heads.sum={type="bounded_or_not", target="sum"}'), "loss_floor")
    [sum_floor] = [f for f in floors if "heads.sum" in f.title]
    if bounded:
        assert sum_floor.severity == "error" and sum_floor.title.startswith("heads.sum's forward bounds its logits")
        assert abs(sum_floor.figures["floor"] - math.log(1 + 18 / math.e)) < 0.05 and "SigmoidLogits.forward" in sum_floor.fix
    else:
        assert sum_floor.severity == "info" and sum_floor.figures["floor"] < 0.05


def test_a_linear_head_on_one_feature_is_not_called_bounded(tiny_data):
    # a one-unit bottleneck keeps a linear head's logits on a line: its floor through the forward is
    # high, yet the head is not the cause (was: "heads.digit's forward bounds its logits")
    floors = found(probe_for("backbone.hidden=[120, 1]"), "loss_floor")
    assert not [f for f in floors if "bounds its logits" in f.title], [f.title for f in floors]


class Undeclared(Thresholds):
    output_kind = "class_logits"


def test_an_ordinal_head_is_judged_through_its_predict_not_its_width(tiny_data):
    with registered(heads, "thresholds", Thresholds):
        report = diagnose(probe_for('heads.digit={type="thresholds", target="digit"}'), ["data", "loss_at_init", "double_softmax", "loss_floor", "short_run"], verify=False)
    assert report.healthy, [f.title for f in report.errors]
    (init,) = [f for f in report.findings if f.check == "loss_at_init" and "heads.digit" in f.title]
    assert "ln" not in init.title and init.figures.get("expected") is None  # no ln(10) for a BCE head
    (learns_too,) = [f for f in report.findings if f.check == "learning" and f.title.startswith("heads.digit")]
    assert learns_too.severity == "info"


def test_the_conformance_suite_checks_the_output_declaration():
    check_head(Thresholds)  # declared 'other': K-1 outputs are fine
    with pytest.raises(ConformanceError, match="class_logits"):
        check_head(Undeclared)  # declared (by default) [B, classes] logits, and it is not


# -- verify before recommending ---------------------------------------------------------------


def test_a_fix_is_recommended_only_after_it_restores_learning(tiny_data):
    report = diagnose(probe_for('heads.sum.output="probabilities"', "heads.digit.weight=0"), ["double_softmax", "loss_weights", "short_run"])
    (weight,) = of(report.findings, "loss_weights", "error")
    assert "verified" in weight.fix and weight.tried and weight.tried[0]["restores"] == ["digit"]
    assert report.repair.get("heads.digit.weight") == 1.0
    (summary,) = of(report.findings, "fixes")
    assert summary.figures["tried"] and all("after" in row or "error" in row for row in summary.figures["tried"])


def test_a_head_the_recipe_never_trains_is_not_blamed_on_the_optimizer(tiny_data):
    report = diagnose(probe_for('heads.sum.output="probabilities"', "heads.digit.weight=0"), ["learnability"], verify=False)
    [digit] = [f for f in report.findings if f.check == "learnability" and "heads.digit" in f.title]
    # the reference optimizer learns the digit; the recipe's weight of 0 (not its optimizer) keeps it untrained
    assert digit.severity == "info" and digit.title.endswith("the recipe does not train it (see [loss_weights])"), digit.title


def _times_255(batch, rng):
    return {**batch, "image": (batch["image"] * 0.3081 + 0.1307) * 255}  # pixels 0..255, unstandardised


def test_a_warnings_fix_is_tried_while_every_head_learns_and_kept_when_it_helps(tiny_data):
    # every head learns at these settings; standardising the input is measured anyway
    unscaled = with_generator(probe_for('train.schedule.type="constant"', "train.optimizer.lr=0.01"), _times_255)
    report = diagnose(unscaled, ["data", "short_run"])
    (scale,) = of(report.findings, "data", "warning")
    assert "verified" in scale.fix and scale.tried
    assert any("standardise input 'image'" in cause for cause in report.code_causes)
    healthy = diagnose(probe_for('train.schedule.type="constant"', "train.optimizer.lr=0.01"), ["data", "short_run"])
    assert not of(healthy.findings, "data", "warning") and not healthy.code_causes


def test_changes_that_do_worse_together_than_the_best_alone_are_not_combined(tiny_data, monkeypatch):
    from digitsum.diagnosis import remedies
    from digitsum.diagnosis.short_run import RunTrace

    lr, decay = 0.02, 0.5
    # held-out accuracy by which of the two changed: each alone restores both heads, together worse
    accuracy = {(False, False): 0.1, (True, False): 0.9, (False, True): 0.8, (True, True): 0.5}

    def measured(probe, steps, scheduled=False):
        params = probe.recipe.optimizer.params
        after = accuracy[(params.lr != lr, params.weight_decay != decay)]
        names = list(probe.model.heads)
        return RunTrace(steps, torch.ones(steps), {h: torch.ones(steps) for h in names},
                        dict.fromkeys(names, 0.1), dict.fromkeys(names, after), dict.fromkeys(names, 0.1))  # fmt: skip

    monkeypatch.setattr(remedies, "short_run", measured)
    _, repair, _ = remedies.verify(probe_for(f"train.optimizer.lr={lr}", f"train.optimizer.weight_decay={decay}"), [])
    assert set(repair) == {"train.optimizer.lr"}


def test_a_proven_defects_fix_is_kept_while_no_head_stops_learning_and_others_are_retried_on_top(tiny_data, monkeypatch):
    from digitsum.diagnosis import remedies
    from digitsum.diagnosis.findings import Change, Finding
    from digitsum.diagnosis.short_run import RunTrace

    # the notebook's shape, measured: the digit head is untrained (weight 0) and both double-softmax
    # theirs; the sum creeps along anyway. Once the digit trains, its logits cost the sum in so short
    # a run, and standardised pixels help, but only the trained digit
    def measured(probe, steps, scheduled=False):
        heads, data = probe.recipe.heads, probe.recipe.data.params
        trained = heads["digit"].section.weight > 0
        digit_logits, sum_logits = (heads[h].params.output == "logits" for h in ("digit", "sum"))
        digit = (0.95 if data.normalize else 0.9) if trained else 0.1
        if not trained:  # the sum alone: it creeps along, and learns with logits
            total = 0.8 if sum_logits else 0.3
        elif not sum_logits:  # the digit's gradient drowns the double-softmaxed sum
            total = 0.1
        else:  # both trained: the digit's logits slow the sum in so short a run
            total = 0.55 if digit_logits else 0.8
        after = {"digit": digit, "sum": total}
        return RunTrace(steps, torch.ones(steps), {h: torch.ones(steps) for h in after},
                        dict.fromkeys(after, 0.1), after, dict.fromkeys(after, 0.1))  # fmt: skip

    def error(key, value, corrects=True, severity="error"):
        return Finding("defect", severity, key, "", candidates=[Change(f"{key} = {value!r}", {key: value}, corrects=corrects)])

    monkeypatch.setattr(remedies, "short_run", measured)
    probe = probe_for(recipe="notebook.toml")  # pixels not standardised, the digit's weight 0, both heads' probabilities
    findings = [error("data.normalize", True, corrects=False, severity="warning"), error("heads.digit.output", "logits"),
                error("heads.sum.output", "logits"), error("heads.digit.weight", 1.0)]  # fmt: skip
    _, repair, _ = remedies.verify(probe, findings)
    # the digit's logits: a proven defect's fix, kept though the sum falls from 80 % to 55 % in the
    # short run; standardising: no gain on top of nothing, kept once the digit trains
    assert repair == {"heads.digit.output": "logits", "heads.sum.output": "logits", "heads.digit.weight": 1.0, "data.normalize": True}


def test_dead_at_initialisation_is_told_apart_and_not_answered_with_a_lower_lr(tiny_data):
    probe = probe_for()
    with torch.no_grad():
        probe.model.backbone.mlp[-2].bias.fill_(-100.0)  # the last hidden layer never fires
    report = diagnose(probe, ["short_run"])
    (dead,) = of(report.findings, "dead_relu", "error")
    assert "dead at initialisation" in dead.title and "lr" not in dead.fix.split("—")[0]
    assert "backbone.mlp.2" in dead.fix and "verified" in dead.fix
    assert report.code_causes and "train.optimizer.lr" not in report.repair


def test_when_no_change_helps_the_doctor_says_what_it_tried(tiny_data):
    report = diagnose(with_generator(probe_for(), _rolled), ["short_run"])
    (summary,) = of(report.findings, "fixes")
    assert summary.severity == "error" and summary.title.startswith("no single change restores learning")
    assert len(summary.figures["tried"]) >= 2 and not report.repair


class SoftmaxesAnyway(Classify):
    """A plugin head as a user wrote it from docs/plugins.md: class logits declared, softmax returned."""

    def forward(self, features):
        return super().forward(features).softmax(dim=1)


def test_a_plugin_heads_double_softmax_fix_is_verified_whatever_the_batch_size(tiny_data):
    # batch 128 (original's): the short run that finds the stall is 93 steps; at this lr the sum
    # head with logits learns in 93 steps but not in 62, so a shorter verification run misses it
    recipe = ('heads.sum={type="softmaxes_anyway", target="sum"}', "train.optimizer.lr=3e-4")
    with registered(heads, "softmaxes_anyway", SoftmaxesAnyway):
        probe = probe_for(*recipe)
        report = diagnose(probe, ["double_softmax", "short_run"])
    (error,) = of(report.findings, "double_softmax", "error")
    assert "return logits" in error.fix and "verified: with only this change" in error.fix, error.fix
    assert error.tried[0]["restores"] == ["sum"]
    assert any("return logits" in cause for cause in report.code_causes)
    (summary,) = of(report.findings, "fixes")
    assert summary.figures["steps"] >= short_run_steps(probe) == 93  # never shorter than the run that judged learning



@pytest.mark.parametrize("overrides", [('heads.sum={type="softmaxes_anyway", target="sum"}',), ('heads.sum.output="probabilities"',)],
                         ids=["plugin-forward", "setting"])  # fmt: skip
def test_a_head_that_outputs_probabilities_has_the_floor_its_double_softmax_finding_names(tiny_data, overrides):
    # was: loss_floor "heads.sum can lower its loss to 0.0039" (over free outputs no forward can give)
    # beside double_softmax's "the lowest loss this head can reach is 2.03"
    with registered(heads, "softmaxes_anyway", SoftmaxesAnyway):
        findings = found(probe_for(*overrides), "double_softmax", "loss_floor")
    (double,) = [f for f in of(findings, "double_softmax") if f.title.startswith("heads.sum")]
    (floor,) = [f for f in of(findings, "loss_floor", "info") if f.title.startswith("heads.sum")]
    assert floor.figures["floor"] == pytest.approx(double.figures["loss_floor"]) == pytest.approx(math.log(1 + 18 / math.e), rel=1e-3)
    assert "heads.sum.output" in floor.keys if overrides[0].startswith("heads.sum.output") else "see double_softmax" in floor.why
    assert not of(findings, "loss_floor", "warning")  # the forward squashes, not the loss code


def test_an_addition_head_whose_digits_start_alike_is_not_given_a_raised_floor(tiny_data):
    # add-100's zero last layer reads every image alike at first; the free features of a + b then
    # got alike gradients and stayed alike: "settings raise its lowest reachable loss to 2.29",
    # while training brought the loss to 0.0001 ("250 % of the way to its floor")
    probe = probe_for("data.n=1", "backbone.last_layer_scale=0.0", recipe="add-2.toml")
    (floor,) = [f for f in found(probe, "loss_floor") if f.title.startswith("heads.sum")]
    assert floor.figures["floor"] < 0.1 * floor.figures["at_init"], floor.measured

# -- --repair -----------------------------------------------------------------------------------


def test_repair_writes_the_verified_fixes_and_rediagnoses(cli, tiny_data, tmp_path):
    source = tmp_path / "broken.toml"
    source.write_text((RECIPES / "original.toml").read_text().replace('type = "classify"\ntarget = "sum"', 'type = "classify"\ntarget = "sum"\noutput = "probabilities"'))
    out = tmp_path / "fixed.toml"
    result = cli("doctor", source, "--repair", out)
    assert out.exists(), result.out + result.err
    written = out.read_text()
    assert 'output = "logits"' in written and '-output = "probabilities"' in result.out
    assert result.code == 0 and "the doctor on" in result.out
    # the human report of the recipe as given comes first: its verdict and its verified fix
    first, _, again = result.out.partition("the doctor on")
    assert "unhealthy" in first and 'fix: set heads.sum.output = "logits" — verified' in first
    assert "healthy: 0 errors" in again
    assert load_recipe(out).heads["sum"].params.output == "logits"
    for force in ((), ("--force",)):  # the user's own recipe: never written over
        refused = cli("doctor", source, "--repair", source, *force)
        assert refused.code == 2 and "that is the recipe being diagnosed" in refused.err and "probabilities" in source.read_text()
    old_flag = cli("doctor", source, "--repair", tmp_path, "--overwrite")  # 0.1's spelling: --force, with a warning
    assert "--overwrite is now --force" in old_flag.err and "is a folder" in old_flag.err and old_flag.code == 2


@pytest.mark.parametrize("edit", [None, "crlf", "seed = 7", "# my note"])
def test_repair_writes_again_over_its_own_recipe_only_while_nobody_edited_it(tmp_path, edit):
    from digitsum.diagnosis.repair import check_target, write_repaired

    out = tmp_path / "fixed.toml"
    write_repaired(RECIPES / "notebook.toml", [], {"heads.sum.output": "logits"}, out)
    assert load_recipe(out).heads["sum"].params.output == "logits"
    if edit in (None, "crlf"):  # line endings an editor or git converted are no edit
        if edit:
            out.write_bytes(out.read_bytes().replace(b"\n", b"\r\n"))
        assert check_target(RECIPES / "notebook.toml", out) == out
        return
    text = out.read_text()
    out.write_text(text.replace("seed = 3", edit) if edit.startswith("seed") else text + edit + "\n")
    for force in (False, True):
        with pytest.raises(UserError, match="or it was edited since"):
            check_target(RECIPES / "notebook.toml", out, force)
    assert edit in out.read_text()


def test_repair_on_a_healthy_recipe_writes_nothing_unverified(cli, tiny_data, tmp_path):
    out = tmp_path / "same.toml"
    result = cli("doctor", RECIPES / "original.toml", "--repair", out, "--json")
    document = json.loads(result.out)
    assert result.code == 0
    assert document["written"] is None or set(document["before"]["repair"]) <= set(load_recipe(out).to_dict())


# -- checks from plugins ----------------------------------------------------------------------


def test_a_plugin_check_runs_beside_the_built_in_ones(tiny_data, monkeypatch):
    from digitsum import diagnosis as doctor_package
    from digitsum.diagnosis import Finding

    def my_check(probe):
        return [Finding("my_check", "warning", "a plugin looked", f"{len(probe.model.heads)} heads")]

    monkeypatch.setattr(doctor_package, "plugin_checks", lambda: {"my_check": my_check})
    report = diagnose(probe_for(), ["pairing", "my_check"], verify=False)
    assert [f.title for f in report.findings if f.check == "my_check"] == ["a plugin looked"]
    with pytest.raises(Exception, match="unknown check"):
        diagnose(probe_for(), ["no_such_check"], verify=False)


def test_digitsum_list_checks_names_every_built_in_check(cli):
    from digitsum.diagnosis import CHECKS

    result = cli("list", "checks", "--json")
    assert result.code == 0 and [r["name"] for r in json.loads(result.out)][: len(CHECKS)] == list(CHECKS)


def test_a_code_fix_stand_in_survives_the_copies_training_makes(tiny_data):
    from digitsum.diagnosis.emulate import logits_from_probabilities
    from digitsum.diagnosis.probe import fresh_copy

    probe = probe_for('heads.sum.output="probabilities"')
    twin = fresh_copy(logits_from_probabilities("sum")(probe).model)  # deep-copied, as every short run does
    batch = {k: v[:4] for k, v in probe.sample.items()}
    with torch.no_grad():
        out = twin(batch)["sum"]
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(4), atol=1e-5)  # log-probabilities: logits
    assert twin.heads["sum"].predict(out).shape == (4,)


# --- samples of many images; heads judged by their own held-out loss ---------------------------


@pytest.mark.parametrize("held_loss, learns", [((230.0, 39.0), True), ((230.0, 220.0), False)])
def test_a_head_without_probabilities_learns_when_its_held_out_loss_falls(held_loss, learns):
    from digitsum.diagnosis.short_run import RunTrace

    # a 101-digit sum: accuracy 0 after a short run whatever happens; its own loss tells
    trace = RunTrace(steps=400, losses=torch.zeros(400), head_losses={}, before={"sum": 0.0}, after={"sum": 0.0},
                     chance={"sum": 0.03}, nll={"sum": None}, held_loss={"sum": held_loss})  # fmt: skip
    assert trace.learning() == {"sum": learns}
    # a head with class probabilities is judged by them, not by its loss
    with_probs = RunTrace(steps=400, losses=torch.zeros(400), head_losses={}, before={"d": 0.1}, after={"d": 0.1},
                          chance={"d": 0.1}, nll={"d": 2.3}, entropy={"d": 2.3}, held_loss={"d": (10.0, 1.0)})  # fmt: skip
    assert with_probs.learning() == {"d": False}


@pytest.mark.parametrize("n", [1, 4])
def test_the_probe_draws_fewer_samples_of_many_images(tiny_data, n):
    from digitsum.diagnosis.probe import MIN_JUDGED, SAMPLE

    probe = Probe.from_recipe(load_recipe("add-1", [f"data.n={n}"]))
    assert probe.images_per_sample == 2 * n
    size = len(next(iter(probe.sample.values())))
    assert size == min(max(MIN_JUDGED, int(SAMPLE / (2 * n))), probe.generator.size("train"))
    assert probe.batch_of(32) == max(1, 32 // (2 * n))


@pytest.mark.parametrize("batch_size", [1, 2, 128])
def test_a_short_run_of_small_batches_sees_enough_samples_to_judge(tiny_data, batch_size):
    from digitsum.diagnosis.checks.training import short_run_steps
    from digitsum.diagnosis.probe import MIN_RUN_SAMPLES

    probe = Probe.from_recipe(load_recipe("original", [f"data.batch_size={batch_size}"]))
    assert short_run_steps(probe) * batch_size >= MIN_RUN_SAMPLES  # batch 1 had 400 steps: 400 samples
    many = Probe.from_recipe(load_recipe("add-15", ["data.batch_size=1"]))  # 30 images a sample: the cap holds
    assert short_run_steps(many) <= 400


@pytest.mark.parametrize("order", ["conv-relu-pool", "conv-pool-relu", "conv-norm-relu"])
def test_a_relu_is_named_after_the_layer_whose_units_it_reads(order):
    from digitsum.diagnosis.checks.relus import ReluProbe

    between = {"conv-relu-pool": [], "conv-pool-relu": [nn.MaxPool2d(2)], "conv-norm-relu": [nn.BatchNorm2d(4)]}[order]
    flat = 4 if order == "conv-pool-relu" else 36  # 8x8 -> conv 6x6 -> pooled once or twice
    model = nn.Sequential(nn.Conv2d(1, 4, 3), *between, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(flat, 5), nn.ReLU())
    relus = ReluProbe(model)
    dead = relus.dead_fractions(model, torch.randn(8, 1, 8, 8))
    relus.close()
    assert set(dead) == {"0 (Conv2d, 4 channels)", f"{4 + len(between)} (Linear, 5 units)"}
    assert relus.feeds == {"0 (Conv2d, 4 channels)": "0", f"{4 + len(between)} (Linear, 5 units)": f"{4 + len(between)}"}


def test_the_shared_cnn_computes_conv_relu_maxpool():
    from digitsum.components.fusions.common import ConvFeatures

    torch.manual_seed(0)
    cnn = ConvFeatures(1, [6, 12])
    x = torch.randn(4, 1, 28, 28)
    convs = [m for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    expected = x
    for conv in convs:
        expected = F.max_pool2d(F.relu(conv(expected)), 2)
    assert torch.equal(cnn(x), expected.flatten(1))
    scale, shift = torch.rand(4, 6) + 0.5, torch.randn(4, 6)
    modulated = F.max_pool2d(F.relu(convs[0](x) * scale[:, :, None, None] + shift[:, :, None, None]), 2)
    modulated = F.max_pool2d(F.relu(convs[1](modulated)), 2)
    assert torch.equal(cnn(x, [(scale, shift), (torch.ones(4, 12), torch.zeros(4, 12))]), modulated.flatten(1))


def test_the_doctors_training_runs_draw_the_same_dropout_masks_whatever_ran_before(tiny_data):
    """add-1 has dropout: unseeded, its short run (and the verdicts on it) changed with whatever
    had drawn from torch's random stream before, so `digitsum doctor add-100` judged differently
    from the command line and from the API."""
    from digitsum.diagnosis.short_run import short_run

    probe = Probe.from_recipe(load_recipe("add-1", ["data.n=1", "data.batch_size=8"]))
    assert any(isinstance(m, nn.Dropout) for m in probe.model.modules())
    first = short_run(probe, 12)
    torch.rand(3)  # some other work draws from the stream
    again = short_run(probe, 12)
    assert torch.equal(first.losses, again.losses)
    overfit = [f.measured for f in found(probe, "overfit")]
    torch.rand(3)
    assert [f.measured for f in found(probe, "overfit")] == overfit


def test_the_whole_report_is_the_same_whatever_drew_from_torchs_stream_before(tiny_data):
    """Checks that run the model at initialisation in training mode (dropout) report the same
    figures whether the doctor is called from the command line or after other work."""
    probe = Probe.from_recipe(load_recipe("add-1", ["data.n=1", "data.batch_size=8"]))
    checks = ["loss_at_init", "double_softmax", "loss_floor"]
    first = [f.measured for f in found(probe, *checks)]
    torch.rand(7)
    assert [f.measured for f in found(probe, *checks)] == first


def test_repair_never_writes_over_a_file_it_did_not_write(cli, tiny_data, tmp_path):
    mine = tmp_path / "notes.toml"
    mine.write_text("# my own notes\n")
    for force in ((), ("--force",)):  # --force replaces only what an earlier --repair wrote
        refused = cli("doctor", RECIPES / "original.toml", "--repair", mine, *force)
        assert refused.code == 2 and "the doctor did not write it" in refused.err and "Traceback" not in refused.err
        assert mine.read_text() == "# my own notes\n"
        assert refused.out == ""  # refused before the doctor ran


CHECK_MODULE = '''
from digitsum import Finding

def look(probe):
    return [Finding("look", "info", "the plugin looked", f"{len(probe.model.heads)} heads")]


def crash(probe):
    return {}["no such key"]
'''


@pytest.fixture
def check_plugin(tmp_path, monkeypatch):
    """A distribution shipping a doctor check 'look' and a check 'gone' that does not import."""
    import importlib
    import sys

    from digitsum import registry

    from ..conftest import fake_distribution

    site = fake_distribution(tmp_path / "site", "digitsum-looker", "2.0",
                             {"digitsum.checks": {"look": "looker:look", "gone": "looker_missing:look", "crash": "looker:crash"}},
                             {"looker.py": CHECK_MODULE})  # fmt: skip
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setattr(registry, "_SCAN", None)
    yield site
    # the test imports the plugin's module: gone with its folder, as in a new process (another
    # test's plugin of the same name is a package, which a stale `looker` module would hide)
    sys.modules.pop("looker", None)


def test_a_plugins_checks_are_listed_run_and_denied_like_its_components(check_plugin, cli, tiny_data, monkeypatch):
    from digitsum import registry
    from digitsum.diagnosis import plugin_checks

    plugins = cli("plugins", "--json")
    row = next(r for r in json.loads(plugins.out) if r["distribution"] == "digitsum-looker")
    assert [c["name"] for c in row["checks"]] == ["look", "gone", "crash"] and row["status"] == "failed"
    assert "looker_missing" in row["checks"][1]["error"] and "error" not in row["checks"][0]
    report = diagnose(probe_for(), ["pairing", "look", "gone"], verify=False)
    assert [f.title for f in report.findings if f.check == "look"] == ["the plugin looked"]
    assert [f.title for f in report.warnings if f.check == "gone"] == ["plugin check 'gone' cannot be loaded"]
    # a check that raises is named with its distribution, version and function: a warning, the
    # verdict is the other checks' (a healthy recipe stays healthy)
    doctor = cli("doctor", "original")
    assert doctor.code == 0 and "Traceback" not in doctor.err + doctor.out
    assert "doctor check 'crash' from digitsum-looker 2.0 raised KeyError in crash()" in doctor.out, doctor.out
    assert "looker.py, line 9" in doctor.out
    listed = json.loads(cli("list", "checks", "--json").out)
    assert {"look", "gone"} <= {r["name"] for r in listed if r["distribution"] == "digitsum-looker"}
    monkeypatch.setenv("DIGITSUM_PLUGINS_DENY", "digitsum-looker")
    monkeypatch.setattr(registry, "_SCAN", None)
    assert "look" not in plugin_checks()


def test_check_doctor_check_passes_a_good_check_and_names_what_a_bad_one_does(tmp_path):
    from digitsum import Change, Finding
    from digitsum.testing import ConformanceError, check_doctor_check

    def good(probe):
        return [Finding("good", "warning", "looked", "2 heads", keys=["train.optimizer.lr"],
                        candidates=[Change("lower lr", keys={"train.optimizer.lr": 1e-3})])]  # fmt: skip

    assert [f.title for f in check_doctor_check(good, "original", tmp_path / "a")] == ["looked"]

    def bad(probe):
        with torch.no_grad():
            next(probe.model.parameters()).add_(1.0)  # trains the probe's own model
        return [Finding("other", "fatal", "", "x", keys=["nosuch.key"]), "not a finding"]

    with pytest.raises(ConformanceError) as caught:
        check_doctor_check(bad, "original", tmp_path / "b")
    message = str(caught.value)
    for part in ("names the check 'other'", "severity 'fatal'", "title should be non-empty text",
                 "['nosuch.key'] that are not recipe keys", "finding 1 is a str", "changed the probe's model"):
        assert part in message, part

    def crashes(probe):
        raise KeyError("head")

    line = crashes.__code__.co_firstlineno + 1
    with pytest.raises(ConformanceError, match=rf"it raised KeyError in crashes\(\) \(test_doctor_checks.py, line {line}\): 'head'"):
        check_doctor_check(crashes, "original", tmp_path / "c")



def test_check_doctor_check_without_a_workdir_leaves_nothing_behind(tmp_path, monkeypatch):
    import tempfile

    from digitsum.testing import check_doctor_check

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where temporary folders go

    def looks(probe):
        assert probe.generator.size("train") > 0  # the tiny data is there while the check runs
        return []

    assert check_doctor_check(looks, "original") == []
    assert list(tmp_path.iterdir()) == []

# -- issue 29: never blame the wrong component -------------------------------------------------


def test_an_optimizer_that_stalls_is_named_not_the_data(tiny_data):
    """lr 1e-7 learns nothing: the reference optimizer on the same samples does, so the data are
    not blamed; the learnability finding names the optimizer's keys instead."""
    stalled = found(probe_for("train.optimizer.lr=1e-7", 'train.schedule.type="constant"'), "learnability")
    assert not of(stalled, "learnability", "error")
    warnings = of(stalled, "learnability", "warning")
    assert warnings and all("train.optimizer.lr" in w.keys for w in warnings)
    w = warnings[0]
    assert learns(w.figures["held_out"], w.figures["chance"], 100) and w.figures["recipe_held_out"] < w.figures["held_out"]


class AllDead(Concat):
    """Every hidden unit of the last layer dead from the start: the outputs never move (a stalled
    network, whatever it reads)."""

    def __init__(self, params, inputs):
        super().__init__(params, inputs)
        torch.nn.init.constant_(self.mlp[-2].bias, -1e4)


def test_a_stalled_network_is_not_said_to_ignore_an_input(tiny_data):
    with registered(fusions, "all_dead", AllDead):
        findings = found(probe_for('backbone.type="all_dead"'), "input_use")
    assert not of(findings, "input_use", "error")  # Concat reads both inputs: it is not to be changed
    (stalled,) = [f for f in of(findings, "input_use") if f.figures.get("stalled")]
    assert "stalled" in stalled.title and not any(stalled.figures["outputs_move"].values())


def test_an_input_read_at_initialisation_that_training_silenced_is_not_blamed_on_the_backbone(tiny_data):
    """Weight decay of 1 at lr 0.5 kills the image's path (its conv units), the number's survives:
    the trained outputs still move, but not with the image. Concat reads the image (it did at
    initialisation): no error against it."""
    from digitsum.diagnosis.checks.training import trace_of
    from digitsum.diagnosis.checks.wiring import check_input_use

    probe = probe_for()
    trace = trace_of(probe)[0]
    with torch.no_grad():
        for p in trace.model.backbone.cnn.parameters():
            p.zero_()  # the image's path, dead after "training"
    findings = check_input_use(probe)
    assert not of(findings, "input_use", "error")
    (silenced,) = [f for f in findings if f.figures.get("read_at_init")]
    assert "'image'" in silenced.title


def test_optimizer_candidates_form_a_family_from_an_lr_range_test(tiny_data):
    from digitsum.diagnosis.lr_range import lr_range, optimizer_changes

    weak = probe_for('train.optimizer.type="sgd"', "train.optimizer.lr=1e-3", "train.optimizer.momentum=0",
                     "train.optimizer.weight_decay=0", 'train.schedule.type="constant"')  # fmt: skip
    test = lr_range(weak)
    assert test["proposed"] is not None and test["proposed"] > 1e-2  # plain SGD at 1e-3 is far too slow
    assert test["rates"] == sorted(test["rates"]) and test["lowest"] < test["start"]
    changes, figures = optimizer_changes(weak)
    keys = [c.keys for c in changes]
    assert {"train.optimizer.lr"} in [set(k) for k in keys]
    assert any(k.get("train.optimizer.momentum") == 0.9 and "train.optimizer.lr" in k for k in keys)
    assert figures["lr_range"]["proposed"] == test["proposed"]
    coupled, _ = optimizer_changes(probe_for('train.optimizer.type="adam"', "train.optimizer.weight_decay=1.0"))
    assert {"train.optimizer.type": "adamw"} in [c.keys for c in coupled]
    assert {"train.optimizer.weight_decay": 0.1} in [c.keys for c in coupled]


def test_a_raised_floor_names_the_key_that_raises_it(tiny_data):
    (floor,) = [f for f in found(probe_for("heads.sum.label_smoothing=0.9"), "loss_floor") if f.title.startswith("heads.sum")]
    assert floor.severity == "info" and floor.keys == ["heads.sum.label_smoothing"]
    assert floor.figures["raised_by"]["heads.sum.label_smoothing"]["floor"] < 0.5 * floor.figures["floor"]
    assert "heads.sum.label_smoothing = 0.0" in floor.fix
    plain = [f for f in found(probe_for(), "loss_floor") if f.title.startswith("heads.sum")]
    assert not plain[0].keys  # control: nothing raises it


class MseOnIndex(Classify):
    """MSE of the class logits against the class index: the loss falls, the argmax stays at chance."""

    class Params(Classify.Params):
        pass

    def loss(self, output, target):
        return F.mse_loss(output, target.float()[:, None].expand_as(output))


def test_a_loss_that_falls_while_the_metric_stays_at_chance_names_the_pair(tiny_data):
    with registered(heads, "mse_on_index", MseOnIndex):
        findings = found(probe_for('heads.sum={type="mse_on_index", target="sum"}'), "short_run")
    (error,) = [f for f in of(findings, "learning", "error") if f.title.startswith("heads.sum")]
    assert "loss falls" in error.title and "MseOnIndex.loss" in error.title and "accuracy" in error.title
    assert "MseOnIndex" in error.fix and error.figures["metric"] == "accuracy"


@pytest.mark.parametrize("sizes, grows", [
    ([0.5] * 40 + [0.45] * 10 + [0.4] * 40 + [0.4] * 10, False),  # Adam as shipped: steps about steady
    ([0.5] * 40 + [0.45] * 10 + [1.0] * 40 + [2.6] * 10, True),  # betas (0.999, 0.9): 0.45 -> 2.6 lr
    ([0.01] * 40 + [0.02] * 10 + [0.05] * 40 + [0.08] * 10, False),  # growing, but far below one lr
    ([0.5] * 40 + [0.9] * 10 + [1.5] * 40 + [1.6] * 10, False),  # above one lr, less than 3x the middle
], ids=["steady", "growing", "small", "settling"])
def test_steps_that_grow_without_bound_are_told_from_steady_ones(sizes, grows):
    from digitsum.diagnosis.short_run import RunTrace

    trace = RunTrace(steps=len(sizes), losses=torch.ones(len(sizes)), head_losses={}, before={}, after={}, chance={},
                     step_sizes=torch.tensor(sizes))  # fmt: skip
    assert (trace.step_growth() is not None) == grows


def test_the_short_run_measures_each_steps_size_in_lrs(tiny_data):
    from digitsum.diagnosis.short_run import short_run

    trace = short_run(probe_for(), 40)
    # AdamW moves each weight by about the lr or less: RMS 0 < size <= 1 lr
    assert len(trace.step_sizes) == trace.steps == 40
    assert bool((trace.step_sizes > 0).all()) and float(trace.step_sizes.max()) <= 1.0
    assert trace.step_growth() is None


def test_a_fix_the_recipe_refuses_is_reported_with_its_reason(tiny_data):
    from digitsum.diagnosis.findings import Change
    from digitsum.diagnosis.remedies import try_changes

    attempt = try_changes(probe_for(), [Change("data.batch_size = 0", {"data.batch_size": 0})], steps=5)
    assert attempt.trace is None
    # the problem itself, not the error's header ("<dict>: 1 problem")
    assert attempt.error.startswith("refused: data.batch_size: ") and "problem" not in attempt.error


def test_the_doctor_builds_without_evaluation_only_params_and_reports_on_the_recipe_as_given(tiny_data):
    from pydantic import Field

    class Scored(Params):
        width: int = 8
        views: int = Field(0, json_schema_extra={"evaluation_only": True})

    assert Scored(width=4, views=3).for_diagnosis() == Scored(width=4, views=0)  # training params kept
    assert Scored(width=4).for_diagnosis() == Scored(width=4)

    recipe = load_recipe("add-1", ["data.n=1", "backbone.test_shifts=2"])
    probe = Probe.from_recipe(recipe)
    assert probe.model.backbone.params.test_shifts == 0  # one forward pass per evaluation, not 9
    assert probe.recipe.backbone.params.test_shifts == 2  # what the doctor reports and repairs
    variant = probe.variant({"train.optimizer.lr": 1e-3})
    assert variant.model.backbone.params.test_shifts == 0
    assert variant.recipe.backbone.params.test_shifts == 2
    # the same initial weights as the model `digitsum run` starts from (the param changes no parameter)
    from digitsum.engine.build import build

    run_model = build(recipe, "cpu").model
    assert all(torch.equal(a, b) for a, b in zip(probe.model.state_dict().values(), run_model.state_dict().values()))


def test_the_settings_reset_as_fixes_are_ones_the_recipe_allows(tiny_data):
    from digitsum.diagnosis.remedies import setting_changes
    from digitsum.errors import RecipeError

    probe = Probe.from_recipe(load_recipe("add-1", ["data.n=1", "data.batch_size=8"]))
    changes = setting_changes(probe)
    assert any("data.shift" in change.keys for change in changes)  # off its default, and allowed
    assert not any("heads.digits.weight" in change.keys for change in changes)  # measured only: the generator refuses it
    for change in changes:
        try:
            load_recipe(probe.recipe.to_dict(), dict(change.keys))
        except RecipeError as e:
            raise AssertionError(f"{change.label}: {e}") from None
    # a reset that changes the task is another benchmark, not a fix: add-2 -> add-1 (was: verified
    # and written by --repair for a fusion of the user's that emitted the digits in another order)
    two = Probe.from_recipe(load_recipe("add-2", ["data.batch_size=8"]))
    keys = {key for change in setting_changes(two) for key in change.keys}
    assert "data.n" not in keys and "data.shift" in keys  # (add-2 extends add-1: shift 1)


# -- the preflight ------------------------------------------------------------------------------


class RaisesInForward(Classify):
    """A plugin head whose forward() raises (a bug in its code)."""

    def forward(self, features):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")


def test_a_component_that_raises_in_the_preflight_stops_the_run_as_a_crash_in_training_would(cli, tiny_data, tmp_path):
    from ..conftest import TINY

    recipe = RECIPES / "original.toml"
    with registered(heads, "raises_in_forward", RaisesInForward):
        result = cli("run", recipe, *TINY, "--set", 'heads.sum={type="raises_in_forward", target="sum"}', "--out", tmp_path / "run")
        without = cli("run", recipe, *TINY, "--set", 'heads.sum={type="raises_in_forward", target="sum"}', "--out", tmp_path / "bare",
                      "--no-preflight")  # fmt: skip
    said = result.out + result.err
    assert result.code == without.code == 1, said
    blamed = "head 'raises_in_forward' from local (tests.diagnosis.test_doctor_checks:RaisesInForward) raised RuntimeError in forward()"
    assert said.count(blamed) == 1 and "in forward" in said  # once, with its own frames...
    assert "Traceback" not in said and "preflight" not in said and "epoch 1/" not in said  # ...and no epoch started
    assert result.err.replace(str(tmp_path / "run"), "RUN") == without.err.replace(str(tmp_path / "bare"), "RUN")  # as in training
    assert "''s" not in said


def test_the_doctor_reports_a_component_that_raises_once_for_every_check_it_fails(tiny_data):
    from digitsum.diagnosis import PREFLIGHT

    with registered(heads, "raises_in_forward", RaisesInForward):
        report = diagnose(probe_for('heads.sum={type="raises_in_forward", target="sum"}'), list(PREFLIGHT))
    (crash,) = report.errors
    assert crash.title.startswith("head 'raises_in_forward' from local (") and crash.title.endswith("raised RuntimeError in forward()")
    assert len(crash.figures["checks"]) > 1 and ", ".join(crash.figures["checks"]) in crash.why
    assert "fix the forward() of head 'raises_in_forward'" in crash.fix and "''s" not in crash.fix


def test_a_fix_whose_accuracy_stays_put_is_described_by_its_log_loss_too():
    from digitsum.diagnosis.short_run import RunTrace
    from digitsum.diagnosis.remedies import _describe

    def trace(accuracy: float, nll: float) -> RunTrace:
        return RunTrace(steps=10, losses=torch.zeros(10), head_losses={}, before={"d": 0.1}, after={"d": accuracy},
                        chance={"d": 0.1}, nll={"d": nll}, entropy={"d": 2.3}, held_loss={"d": (2.3, nll)})  # fmt: skip

    base = trace(0.10, 2.30)
    assert _describe(base, trace(0.10, 1.90), ["d"]) == "d 10 % -> 10 % (held-out log-loss 2.3 -> 1.9)"
    assert _describe(base, trace(0.32, 1.20), ["d"]) == "d 10 % -> 32 %"  # the accuracy says it


MISWRITTEN_CHECKS = '''
def returns_dict(probe):
    return {"ok": True}


def returns_strings(probe):
    return ["all fine"]


def two_arguments(probe, recipe):
    return []


not_a_function = 3
'''


@pytest.mark.parametrize("name, says", [
    ("returns_dict", "returned dict, not a list of Finding"),
    ("returns_strings", "returned a list holding a str, not a list of Finding"),
    ("two_arguments", "two_arguments(probe, recipe) cannot take what digitsum passes: a check is check(probe)"),
    ("not_a_function", "it is a int, not a function taking a Probe"),
])  # fmt: skip
def test_a_plugin_check_that_breaks_its_contract_is_a_warning_naming_it_and_its_distribution(name, says, tmp_path, monkeypatch, tiny_data):
    import importlib

    from digitsum import registry
    from digitsum.plugin_report import plugin_report

    from ..conftest import fake_distribution

    site = fake_distribution(tmp_path / "site", "digitsum-miswritten", "0.3",
                             {"digitsum.checks": {name: f"miswritten:{name}"}}, {"miswritten.py": MISWRITTEN_CHECKS})  # fmt: skip
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setattr(registry, "_SCAN", None)
    report = diagnose(probe_for(), ["pairing", name], verify=False)  # the doctor goes on, no traceback
    warnings = [f for f in report.warnings if f.check == name]  # the plugin's bug, not the recipe's
    assert len(warnings) == 1 and "digitsum-miswritten 0.3" in warnings[0].title + warnings[0].measured
    assert says in warnings[0].title + warnings[0].measured, warnings[0]
    assert of(report.findings, "pairing")
    if name in ("two_arguments", "not_a_function"):  # known before it runs: `digitsum plugins` says so too
        row = next(r for r in plugin_report() if r["distribution"] == "digitsum-miswritten")
        assert row["status"] == "failed" and says in row["checks"][0]["error"]


def test_a_fix_verified_by_a_heads_own_loss_shows_that_loss():
    """add-100's sum head is right only when 200 digits are: over a short run its accuracy reads
    0 % -> 0 % with or without a fix, so the fix's figures must show the held-out loss it judged."""
    from digitsum.diagnosis.short_run import RunTrace
    from digitsum.diagnosis.remedies import _describe

    def trace(after_loss: float) -> RunTrace:
        return RunTrace(steps=1, losses=torch.zeros(1), head_losses={}, before={"sum": 0.0, "digit": 0.1}, after={"sum": 0.0, "digit": 0.1},
                        chance={"sum": 0.03, "digit": 0.1}, nll={"sum": None, "digit": 2.3}, held_loss={"sum": (230.0, after_loss), "digit": (2.3, 2.3)})  # fmt: skip

    text = _describe(trace(230.7), trace(64.1), ["sum", "digit"])
    assert text == "sum 0 % -> 0 % (held-out loss 230.7 -> 64.1), digit 10 % -> 10 % (held-out log-loss 2.3 -> 2.3)"


@pytest.mark.parametrize("epochs,told", [(1, False), (400, True)])
def test_a_stall_under_a_warm_up_longer_than_the_short_run_says_so(tiny_data, epochs, told):
    """A head that does not learn in the short run is an error either way; when the recipe's own
    warm-up is longer than that run (add-100's 900 steps against 400), the error says the run
    cannot judge a start that needs it."""
    probe = probe_for("train.optimizer.lr=1e-9", f"train.epochs={epochs}")
    (stalled, *_) = of(found(probe, "short_run"), "learning", "error")
    assert ("not judged here" in stalled.why) is told


class _Trace:
    """What _annotate reads of a short run: each head's held-out accuracy, and whether it learns."""

    def __init__(self, after: dict, learns: dict):
        self.after, self._learns, self.finite, self.nll, self.held_loss = after, learns, True, {}, {}

    def learning(self) -> dict:
        return self._learns


@pytest.mark.parametrize("restores, severity", [(False, "warning"), (True, "error")])
def test_a_learning_rate_blamed_for_dead_units_is_refuted_when_the_lower_rate_restores_nothing(restores, severity):
    # was: "training at lr 0.004 kills ReLUs" an error beside shifted labels, its own lower
    # rate tried and restoring no head (a symptom, not the cause)
    from digitsum.diagnosis.findings import LR_KEY, SUSPECTS_LR, Change, Finding
    from digitsum.diagnosis.remedies import Attempt, _annotate

    lower = Change(f"{LR_KEY} = 0.0004", {LR_KEY: 0.0004})
    finding = Finding("dead_relu", "error", "training at lr 0.004 kills ReLUs", "", keys=[LR_KEY],
                      figures={SUSPECTS_LR: True}, candidates=[lower])  # fmt: skip
    base = _Trace({"digit": 0.1}, {"digit": False})
    tried = Attempt(lower, _Trace({"digit": 0.9 if restores else 0.1}, {"digit": restores}))
    _annotate([finding], [tried], [lower] if restores else [], base, ["digit"], ["digit"], "93 steps")
    assert finding.severity == severity


def test_an_error_that_points_at_the_fixes_gets_the_verified_fix(tiny_data):
    """SGD with a weight decay of 1: "does not learn" names the verified weight_decay, not "see below"."""
    report = diagnose(probe_for('train.optimizer.type="sgd"', "train.optimizer.lr=0.05", "train.optimizer.weight_decay=1.0"), ["short_run"])
    learning = of(report.findings, "learning", "error")
    assert learning and report.repair == {"train.optimizer.weight_decay": 0.0}, [f.title for f in report.findings]
    assert all(f.fix.startswith("train.optimizer.weight_decay = 0.0 (default; now 1.0) — verified: with it,") for f in learning)


class HalvedLoss(Classify):
    """Half the cross-entropy: a loss of another scale, within what the scale warning lets pass."""

    def loss(self, output, target):
        return 0.5 * super().loss(output, target)


def test_a_loss_that_starts_well_below_the_uniform_guess_is_not_said_to_start_near_it(tiny_data):
    with registered(heads, "halved", HalvedLoss):
        report = diagnose(probe_for('heads.sum={type="halved", target="sum"}'), ["loss_at_init"], verify=False)
    titles = [f.title for f in of(report.findings, "loss_at_init")]
    assert "heads.digit starts near ln 10" in titles
    assert any(t.startswith("heads.sum starts at 1.4") and t.endswith("below ln 19: its loss is no plain cross-entropy of its logits")
               for t in titles), titles


@pytest.mark.parametrize("learning", [True, False])
def test_a_loss_that_falls_reads_as_a_success_only_when_every_head_learns(learning):
    from digitsum.diagnosis.checks.training import _trend_findings

    # a fall from a huge start (a backbone initialised far too large) is "100 % of the way to the floor"
    [finding] = _trend_findings(torch.cat([torch.full((10,), 1.5e13), torch.full((90,), 3.0)]), "100 steps", 0.0, learning)
    assert finding.severity == "info" and "100 % of the way" in finding.title
    assert ("not every trained head learns" in finding.title) != learning
