"""The conformance suite (digitsum.testing) passes every built-in and catches broken components."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field

from digitsum.components.fusions.concat import Concat
from digitsum.components.heads.classify import Classify
from digitsum.contracts import Classes, Fusion, Head, Image, Logger, Params
from digitsum.registry import REGISTRIES, heads
from digitsum.testing import ConformanceError, check_component, check_generator, check_head, check_recipe

from .conftest import RECIPES, TINY_OVERRIDES, registered

BUILTINS = [entry for registry in REGISTRIES.values() for entry in registry.entries() if entry.origin.builtin]


@pytest.mark.parametrize("entry", BUILTINS, ids=lambda e: f"{e.kind}:{e.name}")
def test_every_builtin_conforms(entry, request, monkeypatch, tmp_path):
    if entry.kind != "loggers":
        return check_component(entry.load())
    if entry.load().unavailable():
        pytest.skip(f"logger '{entry.name}' {entry.load().unavailable()}")
    if entry.name == "mlflow":  # MLflow's default store is $MLFLOW_TRACKING_URI: a shared one, made once
        monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("mlflow_uri"))
    run_dir = check_component(entry.load(), workdir=tmp_path)  # a logger's check returns its run, to read back
    assert run_dir == tmp_path / "run" and (run_dir / "summary.json").is_file()


# -- check_recipe: a recipe must learn on the tiny data --------------------------------------------

HEALTHY_RECIPES = sorted(p for p in RECIPES.glob("*.toml") if p.stem != "notebook")


@pytest.mark.parametrize("recipe", HEALTHY_RECIPES, ids=lambda p: p.stem)
def test_every_builtin_recipe_learns_on_tiny_data(recipe, tmp_path):
    summary = check_recipe(recipe, tmp_path, TINY_OVERRIDES.get(recipe.stem, ()))
    assert summary["epochs"] == 1 and (tmp_path / "run" / "summary.json").is_file()


def test_the_notebook_recipe_does_not_learn(tmp_path):
    with pytest.raises(ConformanceError) as e:
        check_recipe(RECIPES / "notebook.toml", tmp_path)
    problems = e.value.problems
    assert problems[0] == "heads.digit has weight 0: it is never trained (give it a weight > 0)"
    assert problems[1].startswith("heads.sum did not learn: test loss ")
    assert problems[2] == f"`digitsum doctor {RECIPES / 'notebook.toml'}` measures why"


DOUBLE_SOFTMAX = ['heads.digit.output="probabilities"', 'heads.sum.output="probabilities"', "train.optimizer.type=adam", "train.optimizer.lr=0.01",
                  "train.optimizer.weight_decay=0.05"]  # what `train.optimizer="adam"` over original gave before: its weight decay kept


@pytest.mark.parametrize("overrides,failing", [
    (["heads.sum.weight=0"], {"heads.sum has weight 0"}),
    (["train.optimizer.lr=1e-9"], {"heads.digit did not learn", "heads.sum did not learn"}),
    (DOUBLE_SOFTMAX, {"heads.digit did not learn", "heads.sum did not learn"}),
], ids=["sum-weight-0", "lr-1e-9", "double-softmax-adam-0.01"])  # fmt: skip
def test_a_recipe_that_does_not_learn_fails(tmp_path, overrides, failing):
    with pytest.raises(ConformanceError) as e:
        check_recipe(RECIPES / "original.toml", tmp_path, overrides)
    *heads, hint = e.value.problems
    assert {p.partition(":")[0] for p in heads} == failing  # the head that learns is not blamed
    assert hint.startswith("`digitsum doctor ") and all(o in hint for o in overrides)
    # the cause the preflight measures is named beside the head it stops, and only there
    assert all(("softmax applied twice" in p) == (overrides is DOUBLE_SOFTMAX) for p in heads)


class SoftmaxHead(Head):
    """A head written as the notebook's: softmax in forward, cross-entropy (a log-softmax) in loss."""

    class Params(Params):
        pass

    def __init__(self, params, in_features, target):
        super().__init__(params, in_features, target)
        self.linear = torch.nn.Linear(in_features, target.classes)

    def forward(self, features):
        return torch.softmax(self.linear(features), -1)

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def metrics(self, output, target):
        return {"accuracy": (output.argmax(1) == target).float()}


class ProbabilitiesTakenAsSuch(SoftmaxHead):
    """Probabilities out, and a loss that takes their log: no second softmax (the doctor agrees)."""

    def loss(self, output, target):
        return F.nll_loss(output.clamp_min(1e-12).log(), target)


def test_a_head_that_returns_probabilities_to_a_log_softmax_loss_fails_saying_so():
    with pytest.raises(ConformanceError) as e:
        check_head(SoftmaxHead)
    (problem,) = e.value.problems
    assert "probabilities" in problem and "softmax" in problem
    assert "return logits from forward()" in problem and "applies log-softmax" in problem
    check_head(ProbabilitiesTakenAsSuch)  # the same output with a loss made for it passes


class ProbabilitiesIntoNll(SoftmaxHead):
    """Probabilities out, and nll_loss on them rather than on their log: -p of the right class."""

    def loss(self, output, target):
        return F.nll_loss(output, target)


def test_a_head_whose_loss_does_not_read_its_probabilities_as_a_log_loss_fails_saying_so():
    with pytest.raises(ConformanceError) as e:
        check_head(ProbabilitiesIntoNll)
    (problem,) = e.value.problems
    assert "probabilities" in problem and "not as a log-loss" in problem and "return logits from forward()" in problem


class SummedLossHead(Classify):
    """Its loss sums over the batch (reduction="sum"): the contract's loss is a mean."""

    def loss(self, output, target):
        return F.cross_entropy(output, target, reduction="sum")


def test_a_head_whose_loss_sums_over_the_batch_fails_saying_so():
    with pytest.raises(ConformanceError) as e:
        check_head(SummedLossHead)
    (problem,) = e.value.problems
    assert "a sum over the batch, not its mean" in problem and 'reduction="mean"' in problem


class OneNumberHead(SoftmaxHead):
    """A class-logits head (the default output_kind) whose forward gives one number per sample."""

    def __init__(self, params, in_features, target):
        super().__init__(params, in_features, target)
        self.linear = torch.nn.Linear(in_features, 1)

    def forward(self, features):
        return self.linear(features).squeeze(1)


def test_a_head_whose_output_is_not_its_declared_shape_is_named_before_its_loss_trips():
    with pytest.raises(ConformanceError) as e:
        check_head(OneNumberHead)
    (problem,) = e.value.problems  # not cross_entropy's "Expected floating point type for target ..."
    assert problem.startswith("forward(): output_kind 'class_logits' (the default) declares one score per class")
    assert "shape (8, 10), got (8,)" in problem and "output_kind = 'value'" in problem


class LossBomb(SoftmaxHead):
    """A head whose loss raises."""

    def loss(self, output, target):
        raise RuntimeError("the loss's own bug")


def test_a_component_that_raises_is_reported_with_the_method_and_line_of_its_own_code():
    with pytest.raises(ConformanceError) as e:
        check_head(LossBomb)
    (problem,) = e.value.problems
    assert problem.startswith("it raised RuntimeError in loss() (test_conformance.py, line ")
    assert problem.endswith(": the loss's own bug")


@pytest.fixture
def softmax_head():
    with registered(heads, "softmax_head", SoftmaxHead) as name:
        yield name


def test_a_recipe_whose_head_softmaxes_twice_fails_naming_the_cause(tmp_path, softmax_head):
    with pytest.raises(ConformanceError) as e:
        check_recipe(RECIPES / "original.toml", tmp_path, [f'heads.sum={{type="{softmax_head}", target="sum"}}', *DOUBLE_SOFTMAX[2:]])
    (sum_head,) = [p for p in e.value.problems if p.startswith("heads.sum")]
    assert "did not learn" in sum_head and "softmax applied twice" in sum_head and "return logits" in sum_head


def test_the_loss_must_fall_by_the_margin(tmp_path):
    # The original recipe's digit head's loss falls about 99 % on the tiny data, its sum head's 15-19 %.
    with pytest.raises(ConformanceError) as e:
        check_recipe(RECIPES / "original.toml", tmp_path, min_fall=0.5)
    (problem, _hint) = e.value.problems
    assert problem.startswith("heads.sum did not learn: test loss ") and "needs to fall 50%" in problem
    assert "after 64 steps of 32 (1 epoch of 2048 tiny training images)" in problem  # what ran, by default


def test_the_budget_is_a_setting_and_the_message_says_what_ran(tmp_path):
    with pytest.raises(ConformanceError) as e:  # no loss falls all the way to 0 in 4 steps
        check_recipe(RECIPES / "original.toml", tmp_path, steps=4, min_fall=1.0)
    *heads, _hint = e.value.problems
    assert len(heads) == 2 and all("after 4 steps of 32 (1 epoch of 128 tiny training images)" in p for p in heads)


class NanLoss(Classify):
    """A classifier whose loss is NaN."""

    def loss(self, output, target):
        return super().loss(output, target) * float("nan")


@pytest.fixture
def nan_head():
    with registered(heads, "nan_loss", NanLoss) as name:
        yield name


def test_a_non_finite_loss_fails(tmp_path, nan_head):
    with pytest.raises(ConformanceError, match=r"the loss became NaN in epoch 1"):
        check_recipe(RECIPES / "original.toml", tmp_path, [f'heads.sum={{type="{nan_head}", target="sum"}}'])


class NoisyConcat(Concat):
    """Concat whose output changes from call to call, even in eval mode."""

    def forward(self, batch):
        return super().forward(batch) + torch.rand(1)


class LooseParams(Classify):
    """Classify whose Params accept anything and miss descriptions."""

    class Params(Classify.Params):
        model_config = {"extra": "allow"}
        label_smoothing: float = 0.0


class Crashes(Classify):
    """A head that crashes when built."""

    def __init__(self, params, in_features, target):
        raise RuntimeError("forgot something")


CRASH_LINE = Crashes.__init__.__code__.co_firstlineno + 1  # the raise: the line its author looks at


class WrongShape(Fusion):
    """Claims 8 features, gives 4."""

    out_features = 8

    def __init__(self, params, inputs):
        super().__init__(params, inputs)
        self.linear = torch.nn.Linear(1, 4)

    def forward(self, batch):
        return self.linear(batch["number"].float()[:, None])


class ProbabilitiesOut(Classify):
    """A head whose metrics are per batch, not per sample."""

    def metrics(self, output, target):
        return {"accuracy": (output.argmax(1) == target).float().mean()}


class OldContract(Classify):
    """Written for another contract version."""

    contract = 0


class WeightParam(Classify):
    """A parameter named like the [heads.<name>] table's own key."""

    class Params(Classify.Params):
        weight: float = Field(1.0, description="its own weight")


class RequiredParam(Classify):
    """A parameter without a default."""

    class Params(Classify.Params):
        depth: int = Field(description="layers")


@pytest.mark.parametrize(
    "cls,expected",
    [
        (NoisyConcat, "eval mode differs"),
        (LooseParams, "accepts unknown keys"),
        (LooseParams, "parameter 'label_smoothing' has no description"),
        (WrongShape, "expected float (4, 8)"),
        (ProbabilitiesOut, "per-sample tensor"),
        (OldContract, "contract = 0"),
        (WeightParam, "WeightParam.Params declares 'weight', which [heads.<name>] keeps for itself"),
        (RequiredParam, "RequiredParam.Params has parameters without a default (depth)"),
        (Crashes, f"it raised RuntimeError in __init__() (test_conformance.py, line {CRASH_LINE}): forgot something"),
    ],
)
def test_broken_components_are_caught_with_a_reason(cls, expected):
    with pytest.raises(ConformanceError) as e:
        check_component(cls)
    assert expected in str(e.value)


def test_a_generator_that_ignores_its_rng_or_its_declaration_is_caught(tiny_root):
    from digitsum.components.data.single_digit import SingleDigit

    class Careless(SingleDigit):
        """Draws from the global RNG and forgets the sum."""

        def draw(self, split, index, rng):
            batch = super().draw(split, index, rng)
            batch["number"] = torch.randint(0, 10, index.shape)
            del batch["sum"]
            return batch

    with pytest.raises(ConformanceError) as e:
        check_generator(Careless, root=tiny_root)
    assert "missing ['sum']" in str(e.value) and "same rng seed" in str(e.value)


def test_head_options_select_the_target():
    built: list[tuple[int, Classes]] = []

    class Binary(Classify):
        """Two classes only."""

        class Params(Classify.Params):
            label_smoothing: float = Field(0.0, description="smoothing")

        @classmethod
        def check(cls, params, target):
            return [] if target == Classes(2) else ["binary targets only"]

        def __init__(self, params, in_features, target):
            super().__init__(params, in_features, target)
            built.append((in_features, target))

    with pytest.raises(ConformanceError, match=r"refuses Classes\(classes=10\): \['binary targets only'\]; pass target="):
        check_component(Binary)
    assert built == []  # refused before anything was built
    check_component(Binary, target=Classes(2), in_features=5)
    assert built and set(built) == {(5, Classes(2))}  # every head the check built predicts the chosen target


class LazyFusion(Fusion):
    """Flattens the image; a LazyLinear learns its width from the first batch."""

    def __init__(self, params, inputs) -> None:
        super().__init__(params, inputs)
        self.image = next(k for k, s in inputs.items() if isinstance(s, Image))
        self.proj = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(16))
        self.out_features = 16

    def forward(self, batch):
        return self.proj(batch[self.image])


def test_a_lazy_layer_is_named_with_what_to_do_not_torchs_advice_to_run_a_dummy_batch():
    with pytest.raises(ConformanceError) as e:
        check_component(LazyFusion)
    message = str(e.value)
    assert "not initialised before its first batch: proj.1.weight, proj.1.bias (LazyLinear)" in message
    assert "nn.Linear instead of nn.LazyLinear" in message and "dummy batch" not in message


class RaisingLogger(Logger):
    """Raises as an epoch ends."""

    def on_epoch_end(self, trainer, epoch, train, test):
        raise OSError("the share went away")


def test_a_logger_raising_in_a_hook_is_reported_with_its_own_method_and_line(tmp_path):
    line = RaisingLogger.on_epoch_end.__code__.co_firstlineno + 1
    with pytest.raises(ConformanceError) as e:
        check_component(RaisingLogger, workdir=tmp_path)
    assert f"it raised OSError in on_epoch_end() (test_conformance.py, line {line}): the share went away" in str(e.value)


class UndeclaredFile(Logger):
    """Writes a file of its own into the run directory."""

    def on_start(self, trainer):
        (trainer.run_dir / "mine.log").write_text("started\n")


def test_a_logger_writing_a_file_it_does_not_declare_is_told_to_name_it(tmp_path):
    # --force removes only what a run's callbacks declare: an undeclared file would stay behind
    with pytest.raises(ConformanceError, match=r"it wrote mine.log into the run directory without naming it in `writes`.*writes = \('mine.log',\)"):
        check_component(UndeclaredFile, workdir=tmp_path / "undeclared")
    declared = type("DeclaredFile", (UndeclaredFile,), {"writes": ("*.log",), "__doc__": "The same, declared."})
    assert (check_component(declared, workdir=tmp_path / "declared") / "mine.log").is_file()


class SoftmaxInsideTheLoss(Classify):
    """Logits out, and a loss that softmaxes them before a cross-entropy that softmaxes again."""

    def loss(self, output, target):
        return F.cross_entropy(output.softmax(dim=1), target)


def test_a_head_whose_loss_cannot_fall_far_for_confident_right_logits_fails_saying_so():
    with pytest.raises(ConformanceError) as e:
        check_head(SoftmaxInsideTheLoss)
    (problem,) = e.value.problems
    # ln(1 + 9/e) for 10 digits, against ln 10 for uniform logits
    assert "at best 1.46, against 2.3 for uniform ones" in problem and "give the loss the logits themselves" in problem


class _OwnRateSgd(torch.optim.Optimizer):
    """Plain SGD at ``rate``, whatever the param groups' lr says (``rate`` None: at that lr)."""

    def __init__(self, params, lr, rate=None):
        super().__init__(params, {"lr": lr})
        self.rate = rate

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-(self.rate if self.rate is not None else group["lr"]))


@pytest.mark.parametrize("rate", [None, 0.01])
def test_an_optimizer_whose_step_ignores_the_groups_lr_fails_saying_so(rate):
    from digitsum.contracts import Optimizer
    from digitsum.testing import check_optimizer

    class StudentSgd(Optimizer):
        """SGD written by a student."""

        contract = 1

        class Params(Params):
            lr: float = Field(0.05, gt=0, description="the learning rate")

        def build(self, parameters):
            return _OwnRateSgd(parameters, self.params.lr, rate)

    if rate is None:
        check_optimizer(StudentSgd)
        return
    with pytest.raises(ConformanceError) as e:
        check_optimizer(StudentSgd)
    assert any("moved the weights with every param group's lr at 0" in p for p in e.value.problems), e.value.problems
