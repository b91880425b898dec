"""A head describes its own predictions (Head.prediction_space): export's sidecar, Run.predict
and the doctor ask it, so a plugin head predicting something other than its target's classes
(here: the parity of the sum, and the two most probable digits) is described, reported and
judged by its own declaration."""

from __future__ import annotations

import json
import re

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
TOP2 = 'heads.digit={type="top2", target="digit"}'


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


class Top2(Head):
    """A plugin-style head that predicts its two most probable classes; right when either is."""

    class Params(Params):
        pass

    def __init__(self, params, in_features: int, target: Classes) -> None:
        super().__init__(params, in_features, target)
        self.linear = nn.Linear(in_features, target.classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target)

    def predict(self, output: Tensor) -> Tensor:
        return output.topk(2, dim=1).indices

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {"accuracy": (self.predict(output) == target[:, None]).any(dim=1).float()}

    def probabilities(self, output: Tensor) -> Tensor:
        return output.float().softmax(dim=1)

    def prediction_space(self) -> PredictionSpace:
        return PredictionSpace(self.target.classes, top=2, meaning="the two most probable digits")


class Plain(Parity):
    """A plugin head that declares nothing: its space is its target's."""

    prediction_space = Head.prediction_space


@pytest.fixture(scope="module", autouse=True)
def parity_registered():
    heads.register("parity")(Parity)
    heads.register("top2")(Top2)
    yield
    heads.remove("parity")
    heads.remove("top2")


def _train(tmp_path_factory, tiny_root, head: str) -> digitsum.Run:
    overrides = [head, "train.epochs=1", "data.batch_size=64", f"data.root='{tiny_root}'", "data.download=false"]
    return digitsum.train(RECIPES / "original.toml", tmp_path_factory.mktemp("space") / "run", overrides=overrides, progress=False)


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory, tiny_root) -> digitsum.Run:
    return _train(tmp_path_factory, tiny_root, PARITY)


@pytest.fixture(scope="module")
def top2_run(tmp_path_factory, tiny_root) -> digitsum.Run:
    return _train(tmp_path_factory, tiny_root, TOP2)


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
    with pytest.raises(ValueError, match="top=4"):
        PredictionSpace(3, top=4)


def test_a_top_k_space_is_right_when_the_expected_value_is_among_its_classes():
    space = PredictionSpace(10, top=2)
    assert space.shape(3) == (3, 2)
    assert space.right(torch.tensor([[1, 7], [2, 3], [9, 0]]), torch.tensor([7, 4, 9])).tolist() == [True, False, True]
    # the best constant guess of a top-2 prediction is the two most frequent values
    assert space.chance(torch.tensor([1, 1, 1, 2, 2, 3, 4, 5])) == pytest.approx(5 / 8)
    assert PredictionSpace(10).chance(torch.tensor([1, 1, 1, 2, 2, 3, 4, 5])) == pytest.approx(3 / 8)


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


def test_export_describes_a_top_k_prediction(top2_run, tmp_path):
    pytest.importorskip("onnxruntime")
    exported = top2_run.export("onnx", tmp_path / "model.onnx")
    outputs = {o["name"]: o for o in json.loads(exported.sidecar.read_text())["outputs"]}
    digit = outputs["digit_prediction"]
    assert (digit["classes"], digit["top"], digit["relation"], digit["shape"][1:]) == (10, 2, "target", [2])
    assert "the two most probable digits" in digit["read"] and "the 2 most probable classes, most probable first" in digit["read"]


def test_run_predict_returns_the_top_two_classes(top2_run, tiny_root):
    from digitsum.data import load_mnist

    images = load_mnist(tiny_root, "test", torch.device("cpu"), download=False).images[:4].numpy()
    predictions = top2_run.predict(image=list(images), number=[0, 1, 2, 3], preprocess=False, top=2)
    digit = predictions["digit"]
    assert digit.prediction.shape == (4, 2) and digit.classes == 10
    # the head's two classes are the two most probable ones, in order
    assert torch.equal(digit.prediction, digit.top_classes)
    assert predictions.sample(0)["digit"]["prediction"] == digit.top_classes[0].tolist()


@pytest.mark.parametrize("head, name, expected_init", [(PARITY, "sum", 0.6931), (TOP2, "digit", 2.3026)], ids=["parity", "top2"])
def test_the_doctor_judges_the_head_by_its_own_classes(tiny_data, head, name, expected_init):
    report = digitsum.doctor(RECIPES / "original.toml", [head])
    about = [f for f in report.findings if f"heads.{name}" in f.title]
    assert not [f.title for f in about if f.severity != "info"], [(f.check, f.title) for f in about]
    assert not [f for f in report.findings if f.check == "overfit" and f.severity != "info"]
    assert not report.errors, [(f.check, f.title) for f in report.errors]
    (init,) = [f for f in about if f.check == "loss_at_init"]
    assert init.figures["expected"] == pytest.approx(expected_init, abs=1e-3)  # ln of the head's own classes


@pytest.mark.parametrize("head", [Parity, Top2])
def test_heads_with_their_own_prediction_space_pass_the_conformance_suite(head):
    from digitsum.testing import check_head

    check_head(head, target=Classes(19) if head is Parity else Classes(10))


def test_the_top_classes_are_shown_by_their_labels(parity_run, tiny_root, cli, tmp_path):
    from PIL import Image as PILImage

    from digitsum.data import load_mnist

    image = load_mnist(tiny_root, "test", torch.device("cpu"), download=False).images[0].numpy()
    PILImage.fromarray(image).save(tmp_path / "digit.png")
    result = cli("predict", parity_run.run_dir, "--input", f"image={tmp_path / 'digit.png'}", "--input", "number=3")
    assert result.code == 0, result.err
    (line,) = [line for line in result.out.splitlines() if line.strip().startswith("sum")]
    assert re.search(r"top: (even|odd) \d+\.\d %, (even|odd) \d+\.\d %$", line), line  # was: "top: 1 60.0 %, 0 40.0 %"
    shown = repr(parity_run.predict(image=image, number=3, preprocess=False))
    assert re.search(r"sum: (even|odd) \(\d+\.\d%\)  top (even|odd) \d+\.\d%, (even|odd)", shown), shown
