"""The conformance suite's checks of what prediction uses: Generator.encode and Head.probabilities."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field

from digitsum.components.data.single_digit import SingleDigit
from digitsum.components.heads.classify import Classify
from digitsum.contracts import Batch, Classes, Generator, Image, Params, PredictionSpace
from digitsum.data import MNIST_MEAN, MNIST_STD, mnist_pixels
from digitsum.registry import datasets, heads
from digitsum.testing import ENCODE_TOLERANCE, ConformanceError, check_generator, check_head
from digitsum.testing.conformance.model_parts import memorised_predict_problems


class _OneImage(Generator):
    """One MNIST image; target: its digit. Draws its images in [0, 1] (no standardisation)."""

    inputs = {"image": Image(1, 28, 28)}
    targets = {"digit": Classes(10)}

    def size(self, split):
        return len(self.data.mnist(split))

    def pixels(self, images):
        return mnist_pixels(images)

    def draw(self, split, index, rng):
        digits = self.data.mnist(split)
        return {"image": self.pixels(digits.images[index]), "digit": digits.labels[index]}


class StandardisesInDrawOnly(_OneImage):
    """Standardises in draw and says normalize = false, so the default encode does not."""

    class Params(Params):
        normalize: bool = Field(False, description="ignored by draw, read by the default encode")

    def pixels(self, images):
        return mnist_pixels(images, normalize=True)


class InvertsInDrawOnly(_OneImage):
    """Draws dark digits on a light ground; the default encode keeps MNIST's light on dark."""

    class Params(Params):
        normalize: bool = Field(False, description="no standardisation")

    def pixels(self, images):
        return 1.0 - mnist_pixels(images)


class RawInDrawOnly(_OneImage):
    """No normalize parameter, so the default encode standardises; draw does not."""


class FixedByEncode(RawInDrawOnly):
    """RawInDrawOnly with the encode that matches its draw."""

    def encode(self, inputs):
        return {"image": inputs["image"].float().clone()}


class NoisyEncode(FixedByEncode):
    """Adds noise at prediction time."""

    def encode(self, inputs):
        return {"image": inputs["image"] + 0.01 * torch.rand(inputs["image"].shape)}


class EncodeReturnsTargets(FixedByEncode):
    """Returns a target as well."""

    def encode(self, inputs):
        return {**super().encode(inputs), "digit": torch.zeros(len(inputs["image"]), dtype=torch.long)}


class EncodeInPlace(RawInDrawOnly):
    """Standardises the caller's tensor in place."""

    class Params(Params):
        normalize: bool = Field(True, description="standardise")

    def pixels(self, images):
        return mnist_pixels(images, normalize=True)

    def encode(self, inputs):
        return {"image": inputs["image"].sub_(MNIST_MEAN).div_(MNIST_STD)}


class EncodeWrongShape(FixedByEncode):
    """Drops the channel axis."""

    def encode(self, inputs):
        return {"image": inputs["image"][:, 0]}


class EncodeCrashes(FixedByEncode):
    """Looks for an input that is not declared."""

    def encode(self, inputs):
        return {"image": inputs["picture"]}


@pytest.mark.parametrize(
    "cls, expected",
    [
        (StandardisesInDrawOnly, "encode() prepares 'image' unlike draw()"),
        (InvertsInDrawOnly, "encode() prepares 'image' unlike draw()"),
        (RawInDrawOnly, "encode() prepares 'image' unlike draw()"),
        (NoisyEncode, "encode() gives another 'image' for the same raw inputs"),
        (EncodeReturnsTargets, "undeclared ['digit']"),
        (EncodeInPlace, "encode() changed the raw tensors"),
        (EncodeWrongShape, "encode(): 'image' is torch.float32 (64, 28, 28)"),
        (EncodeCrashes, "encode(raw inputs) raised KeyError"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_a_generator_whose_encode_breaks_the_contract_is_caught_naming_encode(cls, expected, tiny_root):
    with pytest.raises(ConformanceError) as e:
        check_generator(cls, root=tiny_root)
    assert expected in str(e.value)


def test_the_mismatch_report_gives_both_levels(tiny_root):
    with pytest.raises(ConformanceError) as e:
        check_generator(StandardisesInDrawOnly, root=tiny_root)
    # draw standardises: ink at (1 - mean) / std = 2.82; the default encode leaves it at 1
    assert "ink level (99th percentile) 1 by encode, 2.82 by draw" in str(e.value)


def test_the_matching_encode_passes(tiny_root):
    check_generator(FixedByEncode, root=tiny_root)


def test_the_tolerance_is_far_from_a_missing_standardisation():
    # ink level 1 vs (1 - mean) / std, relative to draw's range: what a missing standardisation costs
    standardised_ink, standardised_background = (1 - MNIST_MEAN) / MNIST_STD, -MNIST_MEAN / MNIST_STD
    gap = (standardised_ink - 1) / (standardised_ink - standardised_background)
    assert gap > 2 * ENCODE_TOLERANCE


def _generator_variants():
    """Every built-in generator with its defaults, without standardisation, and noisy_digits heavily corrupted."""
    for name in datasets.names():
        cls = datasets.get(name)
        yield pytest.param(cls, {}, id=name)
        if "normalize" in cls.Params.model_fields:
            yield pytest.param(cls, {"normalize": False}, id=f"{name}-raw")
        if "numbers" in cls.Params.model_fields:
            yield pytest.param(cls, {"numbers": 3}, id=f"{name}-numbers3")
    noisy = datasets.get("noisy_digits")
    yield pytest.param(noisy, {"sigma": 0.5, "salt_pepper": 0.2, "occlusion": 10}, id="noisy_digits-heavy")


@pytest.mark.parametrize("cls, params", list(_generator_variants()))
def test_every_builtin_generator_encodes_as_it_draws(cls, params, tiny_root):
    check_generator(cls, cls.Params(**params), root=tiny_root)


# -- heads -----------------------------------------------------------------------------------------


class LogitsAsProbabilities(Classify):
    """Gives its logits as probabilities."""

    def probabilities(self, output):
        return output


class SoftmaxOverTheBatch(Classify):
    """Normalises over the wrong axis."""

    def probabilities(self, output):
        return output.softmax(dim=0)


class OneProbabilityPerSample(Classify):
    """Gives only the top probability."""

    def probabilities(self, output):
        return output.softmax(dim=1).max(dim=1).values


class NanProbabilities(Classify):
    """Divides by zero."""

    def probabilities(self, output):
        return output.softmax(dim=1) / 0 * 0


@pytest.mark.parametrize(
    "cls, expected",
    [
        (LogitsAsProbabilities, "probabilities(output) holds negative values"),
        (SoftmaxOverTheBatch, "probabilities(output) rows do not sum to 1"),
        (OneProbabilityPerSample, "expected None or float (8, 10)"),
        (NanProbabilities, "NaN or infinite"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_a_head_whose_probabilities_break_the_contract_is_caught(cls, expected):
    with pytest.raises(ConformanceError) as e:
        check_head(cls)
    assert expected in str(e.value)


class OffByOne(Classify):
    """Trains its logits on the digit and predicts the next one."""

    def predict(self, output):
        return output.argmax(dim=1) + 1


class OffByOneOther(OffByOne):
    """The same, told to declare output_kind 'other' (so the argmax rule no longer applies)."""

    output_kind = "other"


class Parity(Classify):
    """Two logits, the parity of a digit, without declaring its prediction space."""

    def __init__(self, params, in_features, target):
        super().__init__(params, in_features, Classes(2))
        self.target = target

    def loss(self, output, target):
        return F.cross_entropy(output, target % 2)


class DeclaredParity(Parity):
    """Parity with the prediction space it predicts."""

    def prediction_space(self):
        return PredictionSpace(2, relation="derived", derive=lambda y: y % 2, labels=("even", "odd"))


def test_a_predict_off_by_one_is_told_to_be_fixed_not_declared_other():
    with pytest.raises(ConformanceError) as e:
        check_head(OffByOne)
    (problem,) = e.value.problems
    assert "declares predict() = argmax of the outputs, and it is not (sample 0: argmax" in problem
    assert "make predict() return the argmax" in problem


@pytest.mark.parametrize("cls", [OffByOneOther, OffByOne], ids=lambda c: c.__name__)
def test_a_predict_that_disagrees_with_what_the_loss_trains_fails_whatever_the_output_kind(cls):
    head = cls(cls.Params(), 16, Classes(10))
    torch.manual_seed(0)
    features, labels = torch.randn(8, 16), torch.randint(0, 10, (8,))
    (problem,) = memorised_predict_problems(head, features, labels)
    assert "predict() disagrees with its loss" in problem and "probabilities() is right on 100%" in problem
    assert memorised_predict_problems(Classify(Classify.Params(), 16, Classes(10)), features, labels) == []  # control
    if cls is OffByOneOther:
        with pytest.raises(ConformanceError, match="predict\\(\\) disagrees with its loss"):
            check_head(cls)


def test_a_head_predicting_other_classes_than_its_targets_is_pointed_to_prediction_space():
    with pytest.raises(ConformanceError) as e:
        check_head(Parity)
    assert "got (8, 2): a head that predicts other classes than its target's" in str(e.value)
    assert "declares them in prediction_space()" in str(e.value)
    check_head(DeclaredParity)


@pytest.mark.parametrize("name", heads.names())
@pytest.mark.parametrize("classes", [2, 19])
def test_every_builtin_head_gives_probabilities_or_none(name, classes):
    cls, target = heads.get(name), Classes(classes)
    if cls.check(cls.Params(), target):  # e.g. addition: a Digits target only (tests/components/test_addition.py)
        pytest.skip(f"{name} refuses {target}")
    check_head(cls, target=target)


def test_classify_probabilities_are_the_softmax_of_logits_and_never_a_second_softmax():
    torch.manual_seed(0)
    features = torch.randn(5, 16)
    logits_head = Classify(Classify.Params(), 16, Classes(10))
    probs_head = Classify(Classify.Params(output="probabilities"), 16, Classes(10))
    probs_head.load_state_dict(logits_head.state_dict())
    expected = logits_head(features).softmax(dim=1)
    assert torch.allclose(logits_head.probabilities(logits_head(features)), expected)
    # the reproduction mode's output already is the probabilities: not softmaxed again
    assert torch.allclose(probs_head.probabilities(probs_head(features)), expected)


def test_regress_gives_no_probabilities():
    cls = heads.get("regress")
    head = cls(cls.Params(), 4, Classes(19))
    assert head.probabilities(head(torch.randn(3, 4))) is None


def test_single_digit_declares_its_interface_from_its_params_only():
    # no class attributes that could disagree with interface(params) when numbers != 10
    assert "inputs" not in vars(SingleDigit) and "targets" not in vars(SingleDigit)
    interface = SingleDigit.interface(SingleDigit.Params(numbers=4))
    assert interface.inputs["number"].classes == 4 and interface.targets["sum"] == Classes(13)


def test_a_generator_written_before_encode_still_conforms(tiny_root):
    """A contract-1 generator that standardises in draw with no parameter (as the scaffold's did)."""

    class Legacy(Generator):
        """Standardises in draw; knows nothing of encode."""

        contract = 1
        inputs = {"image": Image(1, 28, 28)}
        targets = {"digit": Classes(10)}

        def size(self, split):
            return len(self.data.mnist(split))

        def draw(self, split, index, rng) -> Batch:
            digits = self.data.mnist(split)
            image = digits.images[index].unsqueeze(1).float().div(255.0).sub(MNIST_MEAN).div(MNIST_STD)
            return {"image": image, "digit": digits.labels[index]}

    check_generator(Legacy, root=tiny_root)


def test_plugin_authors_import_the_pixel_helpers_from_digitsum():
    import digitsum
    from digitsum import data

    assert digitsum.mnist_pixels is data.mnist_pixels
    assert (digitsum.MNIST_MEAN, digitsum.MNIST_STD) == (data.MNIST_MEAN, data.MNIST_STD)
    assert {"mnist_pixels", "MNIST_MEAN", "MNIST_STD"} <= set(digitsum.__all__)
    images = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    assert mnist_pixels(images).tolist() == [[[[0.0, 1.0]]]]
    standardised = mnist_pixels(images, normalize=True)
    assert torch.allclose(standardised, (torch.tensor([[[[0.0, 1.0]]]]) - MNIST_MEAN) / MNIST_STD)
