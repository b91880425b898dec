"""The conformance suite (digitsum.testing) passes every built-in and catches broken components."""

from __future__ import annotations

import pytest
import torch
from pydantic import Field

from digitsum.components.fusions.concat import Concat
from digitsum.components.heads.classify import Classify
from digitsum.contracts import Classes, Fusion
from digitsum.registry import REGISTRIES
from digitsum.testing import ConformanceError, check_component, check_generator, check_recipe

from .conftest import RECIPES

BUILTINS = [entry for registry in REGISTRIES.values() for entry in registry.entries() if entry.origin.builtin]


@pytest.mark.parametrize("entry", BUILTINS, ids=lambda e: f"{e.kind}:{e.name}")
def test_every_builtin_conforms(entry):
    check_component(entry.load())


def test_the_original_recipe_trains_on_tiny_data(tmp_path):
    summary = check_recipe(RECIPES / "original.toml", tmp_path)
    assert summary["epochs"] == 1 and (tmp_path / "run" / "summary.json").is_file()


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


@pytest.mark.parametrize(
    "cls,expected",
    [
        (NoisyConcat, "eval mode differs"),
        (LooseParams, "accepts unknown keys"),
        (LooseParams, "parameter 'label_smoothing' has no description"),
        (WrongShape, "expected float (4, 8)"),
        (ProbabilitiesOut, "per-sample tensor"),
        (OldContract, "contract = 0"),
        (Crashes, "it raised RuntimeError: forgot something"),
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
