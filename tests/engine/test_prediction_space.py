"""A head describes its own predictions (Head.prediction_space): export's sidecar, Run.predict
and the doctor ask it, so a plugin head predicting something other than its target's classes
(here: the parity of the sum) is described, reported and judged by its own declaration."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import digitsum
from digitsum.components.heads.classify import Classify
from digitsum.components.heads.per_digit import PerDigit
from digitsum.components.heads.regress import Regress
from digitsum.contracts import Classes, Digits, Head, Params, PredictionSpace
from digitsum.registry import heads

from ..conftest import RECIPES

PARITY = 'heads.sum={type="parity", target="sum"}'


class Parity(Head):
    """A plugin-style head: the parity of a class target (0 even, 1 odd), e.g. of a sum."""

    class Params(Params):
        pass

    def __init__(self, params, in_features: int, target: Classes) -> None:
        super().__init__(params, in_features, target)
        self.linear = nn.Linear(in_features, 2)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target % 2)

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {"accuracy": (self.predict(output) == target % 2).float()}

    def probabilities(self, output: Tensor) -> Tensor:
        return output.float().softmax(dim=1)

    def prediction_space(self) -> PredictionSpace:
        return PredictionSpace(2, relation="derived", derive=lambda y: y % 2, labels=("even", "odd"), meaning="the parity of the sum")


class Plain(Parity):
    """A plugin head that declares nothing: its space is its target's."""

    prediction_space = Head.prediction_space


@pytest.fixture(scope="module", autouse=True)
def parity_registered():
    heads.register("parity")(Parity)
    yield
    heads.remove("parity")


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory, tiny_root) -> digitsum.Run:
    overrides = [PARITY, "train.epochs=1", "data.batch_size=64", f"data.root='{tiny_root}'", "data.download=false"]
    return digitsum.train(RECIPES / "original.toml", tmp_path_factory.mktemp("parity") / "run", overrides=overrides, progress=False)


def test_the_default_space_is_the_targets_and_the_built_ins_declare_theirs():
    assert Plain(Plain.Params(), 8, Classes(19)).prediction_space() == PredictionSpace(19)
    assert Classify(Classify.Params(), 8, Classes(19)).prediction_space().classes == 19
    assert "softmax already applied" in Classify(Classify.Params(output="probabilities"), 8, Classes(3)).prediction_space().output
    regress = Regress(Regress.Params(), 8, Classes(19)).prediction_space()
    assert (regress.classes, regress.relation) == (19, "rounded") and "clamp it to [0, 18]" in regress.output
    digits = PerDigit(PerDigit.Params(), 30, Digits(3)).prediction_space()
    assert (digits.classes, digits.length, digits.relation) == (10, 3, "target")
    parity = Parity(Parity.Params(), 8, Classes(19)).prediction_space()
    assert parity.expected(torch.tensor([3, 4, 17])).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="derive"):
        PredictionSpace(2, relation="derived")
    with pytest.raises(ValueError, match="labels"):
        PredictionSpace(3, labels=("a", "b"))


def test_export_describes_the_heads_own_classes(parity_run, tmp_path):
    pytest.importorskip("onnxruntime")
    exported = parity_run.export("onnx", tmp_path / "model.onnx")
    outputs = {o["name"]: o for o in json.loads(exported.sidecar.read_text())["outputs"]}
    assert outputs["sum"]["classes"] == 2 and outputs["sum"]["head_type"] == "parity" and outputs["sum"]["target"] == "sum"
    assert outputs["sum"]["relation"] == "derived" and outputs["sum"]["labels"] == ["even", "odd"]
    assert "logits over the 2 classes" in outputs["sum"]["read"]
    prediction = outputs["sum_prediction"]["read"]
    assert "the parity of the sum" in prediction and "from 0 to 1" in prediction and "even, odd" in prediction
    assert outputs["digit"]["classes"] == 10 and outputs["digit"]["relation"] == "target"


def test_run_predict_returns_parity_classes(parity_run, tiny_root):
    from digitsum.data import load_mnist

    images = load_mnist(tiny_root, "test", torch.device("cpu"), download=False).images[:5].numpy()
    predictions = parity_run.predict(image=list(images), number=[0, 1, 2, 3, 4], preprocess=False, top=5)
    parity = predictions["sum"]
    assert parity.classes == 2 and parity.labels == ("even", "odd")
    assert set(parity.prediction.tolist()) <= {0, 1} and parity.top_classes.shape == (5, 2)
    sample = predictions.sample(0)["sum"]
    assert sample["label"] == ("even", "odd")[sample["prediction"]] and {t["label"] for t in sample["top"]} == {"even", "odd"}
    assert predictions.to_dict()["heads"]["sum"]["classes"] == 2
    assert predictions["digit"].classes == 10 and "label" not in predictions.sample(0)["digit"]


def test_the_doctor_judges_the_head_by_its_own_classes(tiny_data):
    report = digitsum.doctor(RECIPES / "original.toml", [PARITY])
    about_sum = [f for f in report.findings if "heads.sum" in f.title]
    assert not [f.title for f in about_sum if f.severity != "info"], [(f.check, f.title) for f in about_sum]
    assert not [f for f in report.findings if f.check == "overfit" and f.severity != "info"]
    (init,) = [f for f in about_sum if f.check == "loss_at_init"]
    assert init.figures["expected"] == pytest.approx(0.6931, abs=1e-3)  # ln 2, not ln 19
