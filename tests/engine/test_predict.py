"""digitsum.predict: a trained model on a user's own inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageDraw

import digitsum
from digitsum.engine.build import build
from digitsum.predict import Predictions, predict
from digitsum.errors import UserError
from digitsum.recipe import load_recipe

from ..conftest import RECIPES


def _tiny(root) -> list[str]:
    return [f"data.root={str(root)!r}", "data.download=false", "train.device='cpu'"]


def built(recipe_name: str, root, *overrides: str):
    """An untrained model and its generator, as a run's recipe describes them."""
    made = build(load_recipe(RECIPES / recipe_name, [*_tiny(root), *overrides]), "cpu")
    return made.model, made.generator


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    """The original recipe trained for three epochs on tiny data: a model that predicts something."""
    from digitsum.engine.train import Trainer

    recipe = load_recipe(RECIPES / "original.toml", [*_tiny(tiny_root), "train.epochs=3", "data.batch_size=64"])
    trainer = Trainer(recipe, tmp_path_factory.mktemp("run") / "run")
    trainer.fit()
    return trainer.model, trainer.generator


@pytest.fixture(scope="module")
def test_set(trained):
    _, generator = trained
    digits = generator.data.mnist("test")
    return digits.images[:32], digits.labels[:32]


def test_batch_predictions_have_the_shapes_heads_give(trained, test_set):
    model, generator = trained
    images, _ = test_set
    numbers = list(range(10)) * 3 + [0, 1]
    out = predict(model, generator, {"image": images, "number": numbers}, device="cpu", preprocess=False, top=4)
    assert isinstance(out, Predictions) and out.batched and out.batch_size == 32
    assert list(out) == ["digit", "sum"] and out["sum"].target == "sum"
    for name, classes in (("digit", 10), ("sum", 19)):
        head = out[name]
        assert head.prediction.shape == (32,) and head.prediction.dtype == torch.int64
        assert head.probabilities.shape == (32, classes)
        assert torch.allclose(head.probabilities.sum(dim=1), torch.ones(32)) and float(head.probabilities.min()) >= 0
        assert head.top_classes.shape == (32, 4) and head.top_probabilities.shape == (32, 4)
        assert (head.top_probabilities[:, :-1] >= head.top_probabilities[:, 1:]).all()  # most likely first
        assert torch.equal(head.top_classes[:, 0], head.prediction)  # classify predicts its most likely class
        assert torch.equal(head.top_probabilities, head.probabilities.gather(1, head.top_classes))


def test_predictions_are_the_models_on_a_drawn_batch(trained, test_set):
    """Raw test images and numbers through predict give what the model gives on draw's batch:
    encode prepares them as draw does."""
    model, generator = trained
    index = torch.arange(32)
    rng = torch.Generator()
    rng.manual_seed(0)
    batch = generator.draw("test", index, rng)
    model.eval()
    with torch.no_grad():
        expected = {name: out.softmax(dim=1) for name, out in model(batch).items()}
    images, labels = test_set
    out = predict(model, generator, {"image": images, "number": batch["number"]}, device="cpu", preprocess=False)
    for name in expected:
        assert torch.allclose(out[name].probabilities, expected[name], atol=1e-6)
    # and the trained model does predict the tiny digits
    assert float((out["digit"].prediction == labels).float().mean()) > 0.9
    assert torch.equal(out["sum"].prediction == labels + batch["number"], out["sum"].prediction == batch["sum"])


def test_a_single_sample_reads_back_simply(trained, test_set):
    model, generator = trained
    images, _ = test_set
    one = predict(model, generator, {"image": images[3].numpy(), "number": 4}, device="cpu", preprocess=False)
    assert not one.batched and one.batch_size == 1
    many = predict(model, generator, {"image": images, "number": [4] * 32}, device="cpu", preprocess=False)
    assert one["digit"].value() == many["digit"].value(3) == int(many["digit"].prediction[3])
    sample = one.sample()
    assert sample["digit"]["prediction"] == one["digit"].value() and sample["sum"]["target"] == "sum"
    assert sample["digit"]["probability"] == pytest.approx(float(many["digit"].probabilities[3, one["digit"].value()]), abs=1e-6)
    assert [t["class"] for t in sample["digit"]["top"]] == many["digit"].top_classes[3].tolist()
    text = repr(one)
    assert "Predictions(1 sample; heads: digit, sum)" in text and f"digit: {one['digit'].value()} (" in text and "top" in text


def test_a_single_value_is_repeated_to_the_batch_size(trained, test_set):
    model, generator = trained
    images, _ = test_set
    broadcast = predict(model, generator, {"image": images[:5], "number": 7}, device="cpu", preprocess=False)
    explicit = predict(model, generator, {"image": images[:5], "number": [7] * 5}, device="cpu", preprocess=False)
    assert broadcast.batch_size == 5 and broadcast.batched
    assert torch.equal(broadcast["sum"].probabilities, explicit["sum"].probabilities)
    one_image = predict(model, generator, {"image": images[0], "number": torch.arange(10)}, device="cpu", preprocess=False)
    assert one_image.batch_size == 10 and len(set(one_image["digit"].prediction.tolist())) == 1


def test_to_dict_is_json_ready(trained, test_set):
    model, generator = trained
    images, _ = test_set
    out = predict(model, generator, {"image": images[:3], "number": np.array([1, 2, 3])}, device="cpu", preprocess=False, top=2)
    doc = json.loads(json.dumps(out.to_dict()))
    assert doc["batch_size"] == 3 and doc["batched"] is True
    digit = doc["heads"]["digit"]
    assert digit["target"] == "digit" and len(digit["prediction"]) == 3 and len(digit["probabilities"][0]) == 10
    assert [len(row) for row in digit["top"]] == [2, 2, 2] and set(digit["top"][0][0]) == {"class", "probability"}
    assert "[2] digit:" in repr(out)


@pytest.mark.parametrize("top, expected", [(0, 0), (1, 1), (50, 10)])
def test_top_is_clipped_to_the_classes(trained, test_set, top, expected):
    model, generator = trained
    out = predict(model, generator, {"image": test_set[0][:2], "number": 0}, device="cpu", preprocess=False, top=top)
    assert out["digit"].top_classes.shape == (2, expected)


def test_a_negative_top_is_refused(trained, test_set):
    model, generator = trained
    with pytest.raises(UserError, match="top = -1"):
        predict(model, generator, {"image": test_set[0][0], "number": 0}, device="cpu", top=-1)


def test_the_models_modes_are_restored_module_by_module(trained, test_set):
    model, generator = trained
    model.train()
    model.heads["sum"].eval()  # a caller's own choice, kept
    predict(model, generator, {"image": test_set[0][:2], "number": 1}, device="cpu", preprocess=False)
    assert model.training and model.backbone.training and model.heads["digit"].training
    assert not model.heads["sum"].training
    model.eval()
    predict(model, generator, {"image": test_set[0][:2], "number": 1}, device="cpu", preprocess=False)
    assert not any(m.training for m in model.modules())


def test_no_gradients_are_kept(trained, test_set):
    model, generator = trained
    model.zero_grad(set_to_none=True)
    out = predict(model, generator, {"image": test_set[0][:2], "number": 1}, device="cpu", preprocess=False)
    assert not out["digit"].probabilities.requires_grad
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "inputs, expected",
    [
        ({"imgae": 0, "number": 1}, ["unknown input 'imgae': did you mean 'image'?", "missing input 'image': an image"]),
        ({"image": 0}, ["missing input 'number': an integer from 0 to 9", "it takes: image (an image"]),
        ({"image": 0, "number": 1, "colour": 2}, ["unknown input 'colour'", "valid: image, number"]),
    ],
    ids=["typo", "missing", "extra"],
)
def test_wrong_input_names_are_user_errors_with_suggestions(trained, inputs, expected):
    model, generator = trained
    with pytest.raises(UserError) as e:
        predict(model, generator, inputs, device="cpu")
    for text in expected:
        assert text in e.value.message


@pytest.mark.parametrize(
    "number, expected",
    [
        (10, "input 'number' = 10 is out of range: valid values are 0 to 9"),
        ([1, -1], "input 'number' = -1 is out of range"),
        (torch.tensor([3, 12]), "input 'number' = 12 is out of range"),
        (3.0, "give an integer"),
        (True, "give an integer"),
        ([1, "2"], "holds '2' (str)"),
        (np.array([1.0, 2.0]), "has dtype float64"),
        (np.zeros((2, 2), np.int64), "has shape (2, 2)"),
        ([], "empty list"),
    ],
    ids=["too-big", "negative", "tensor", "float", "bool", "str", "float-array", "2d", "empty"],
)
def test_bad_categorical_values_are_user_errors_naming_the_input_and_range(trained, test_set, number, expected):
    model, generator = trained
    with pytest.raises(UserError) as e:
        predict(model, generator, {"image": test_set[0][0], "number": number}, device="cpu", preprocess=False)
    assert expected in e.value.message


def test_batch_sizes_must_agree(trained, test_set):
    model, generator = trained
    with pytest.raises(UserError, match=r"batch sizes differ \(image: 3, number: 2\)"):
        predict(model, generator, {"image": test_set[0][:3], "number": [1, 2]}, device="cpu", preprocess=False)


def test_a_model_on_another_device_is_refused(trained, test_set):
    model, generator = trained
    with pytest.raises(ValueError, match="the model is on cpu, not on meta"):
        predict(model, generator, {"image": test_set[0][0], "number": 1}, device="meta")


def _digit_file(path, ink=30, paper=230):
    image = PILImage.new("L", (120, 160), paper)
    ImageDraw.Draw(image).line([(60, 20), (60, 140)], fill=ink, width=12)  # a "1"
    image.save(path)
    return path


def test_user_images_are_preprocessed_from_files_and_arrays(trained, tmp_path):
    model, generator = trained
    path = _digit_file(tmp_path / "one.png")
    light = 255 - np.asarray(PILImage.open(path))
    out = predict(model, generator, {"image": [path, str(path), light], "number": 5}, device="cpu")
    assert out.batch_size == 3
    # the same digit, whatever its form and polarity: the same probabilities
    assert torch.allclose(out["digit"].probabilities[0], out["digit"].probabilities[2], atol=1e-5)
    with pytest.raises(UserError) as e:
        predict(model, generator, {"image": tmp_path / "nothing.png", "number": 0}, device="cpu")
    assert str(tmp_path / "nothing.png") in e.value.message
    with pytest.raises(UserError, match="is 120x160 pixels; the model takes 28x28"):  # W x H as PIL says
        predict(model, generator, {"image": np.zeros((120, 160), np.uint8), "number": 0}, device="cpu", preprocess=False)


def test_a_regression_head_gives_values_without_probabilities(tiny_root):
    model, generator = built("regress-sum.toml", tiny_root)
    out = predict(model, generator, {"image": np.zeros((28, 28), np.uint8), "number": 3}, device="cpu", preprocess=False)
    assert out["sum"].probabilities is None and out["sum"].top_classes is None and out["sum"].top() == []
    assert 0 <= out["sum"].value() <= 18  # regress predicts a class index in range
    doc = out.to_dict()["heads"]["sum"]
    assert doc["probabilities"] is None and doc["top"] is None
    assert out.sample()["sum"]["probability"] is None and "sum: " in repr(out)


def test_two_images_take_two_image_inputs_and_no_number(tiny_root, tmp_path):
    model, generator = built("two-images.toml", tiny_root)
    path = _digit_file(tmp_path / "one.png")
    out = predict(model, generator, {"image_a": path, "image_b": [path, path]}, device="cpu")
    assert out.batch_size == 2 and set(out) == {"digit_a", "digit_b", "sum"} and out["digit_a"].target == "digit_a"
    with pytest.raises(UserError, match="unknown input 'number'"):
        predict(model, generator, {"image_a": path, "image_b": path, "number": 1}, device="cpu")


def test_a_categorical_range_follows_the_generators_params(tiny_root):
    model, generator = built("original.toml", tiny_root, "data.numbers=3")
    with pytest.raises(UserError, match="valid values are 0 to 2"):
        predict(model, generator, {"image": np.zeros((28, 28), np.uint8), "number": 3}, device="cpu", preprocess=False)
    out = predict(model, generator, {"image": np.zeros((28, 28), np.uint8), "number": 2}, device="cpu", preprocess=False)
    assert out["sum"].probabilities.shape == (1, 12)


@pytest.mark.parametrize("shape", [(3, 2, 28, 28), (3, 2, 1, 28, 28)])
def test_a_batch_of_sequences_may_be_one_array(shape):
    # add-2's a and b: two images each; an array [B, 2, ...] is three samples, as a list of lists is
    run = digitsum.load("add-2")
    pixels = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    as_array = run.predict(a=pixels, b=pixels.flip(0), preprocess=False)
    as_lists = run.predict(a=[list(s) for s in pixels], b=[list(s) for s in pixels.flip(0)], preprocess=False)
    assert as_array["sum"].prediction.shape[0] == 3
    assert torch.equal(as_array["sum"].prediction, as_lists["sum"].prediction)
