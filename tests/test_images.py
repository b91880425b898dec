"""digitsum.images: a user's image in MNIST's format, whatever form and polarity it comes in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageDraw

from digitsum.contracts import Image
from digitsum.errors import UserError
from digitsum.images import as_image, image_batch, read_grey, to_mnist

PAPER, INK = 235, 20


def seven(size: int = 200, ink: int = INK, paper: int = PAPER) -> PILImage.Image:
    """A hand-drawn-looking 7, dark on light paper, as a phone photo of a note would be."""
    image = PILImage.new("L", (size, size), paper)
    draw = ImageDraw.Draw(image)
    s = size / 200
    draw.line([(50 * s, 40 * s), (150 * s, 40 * s), (90 * s, 165 * s)], fill=ink, width=int(14 * s), joint="curve")
    draw.line([(75 * s, 100 * s), (125 * s, 100 * s)], fill=ink, width=int(14 * s))
    return image


def mnist_of(source, **options) -> np.ndarray:
    return to_mnist(source, **options)[0].numpy()


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return mnist_of(seven())


def test_the_result_has_mnists_geometry(reference):
    assert reference.shape == (28, 28) and reference.dtype == np.float32
    assert reference.min() == 0.0 and reference.max() == 1.0
    rows, cols = np.flatnonzero(reference.max(axis=1) > 0), np.flatnonzero(reference.max(axis=0) > 0)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == 20  # the longer side fills the 20-pixel box
    ys, xs = np.indices(reference.shape)
    mass = reference.sum()
    # centre of mass within half a pixel of pixel 14, as every MNIST training image
    assert abs((ys * reference).sum() / mass - 14) <= 0.5 and abs((xs * reference).sum() / mass - 14) <= 0.5
    assert (reference[:, :3] == 0).all() and (reference[:3] == 0).all()  # a black ground


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda: PILImage.eval(seven(), lambda v: 255 - v), id="light-on-dark"),
        pytest.param(lambda: seven().resize((60, 60), PILImage.Resampling.BILINEAR), id="rescaled"),
        pytest.param(lambda: np.pad(np.asarray(seven()), ((10, 80), (90, 5)), constant_values=PAPER), id="padded-off-centre"),
        pytest.param(lambda: seven().convert("RGB"), id="colour"),
        pytest.param(lambda: seven(ink=90, paper=170), id="low-contrast"),
        pytest.param(
            lambda: np.clip(np.asarray(seven()) / 255 + np.random.default_rng(0).normal(0, 0.03, (200, 200))
                            + np.linspace(-0.1, 0.05, 200)[None], 0, 1),
            id="noise-and-uneven-light",
        ),  # fmt: skip
    ],
)
def test_polarity_size_place_and_lighting_give_nearly_the_same_digit(variant, reference):
    # measured: 0 for polarity, padding, colour; under 0.01 rescaled or noisy; the digit's mean is 0.11
    assert np.abs(mnist_of(variant()) - reference).mean() < 0.02


def test_every_accepted_form_reads_the_same(tmp_path, reference):
    grey = np.asarray(seven())
    path = tmp_path / "seven.png"
    seven().save(path)
    transparent = PILImage.new("RGBA", (200, 200), (0, 0, 0, 0))  # a dark digit on a transparent canvas
    transparent.putalpha(PILImage.eval(seven(), lambda v: 255 - v))
    forms = {
        "str path": str(path),
        "Path": path,
        "PIL RGBA transparent": transparent,
        "uint8 HW": grey,
        "uint8 HWC": np.repeat(grey[..., None], 3, axis=2),
        "float CHW": grey[None] / 255.0,
        "tensor": torch.from_numpy(grey.copy()),
        "float64 tensor CHW": torch.from_numpy(grey[None] / 255.0),
    }
    for form, source in forms.items():
        assert np.abs(mnist_of(source) - reference).mean() < 0.01, form


def test_an_image_in_mnists_format_comes_back_nearly_unchanged(reference):
    # idempotent: MNIST's own test images change by 0.003 per pixel on average when re-processed
    assert np.abs(mnist_of(reference) - reference).mean() < 0.01
    assert np.abs(mnist_of((reference * 255).astype(np.uint8)) - reference).mean() < 0.01


def test_another_spec_scales_the_box_and_repeats_channels():
    out = to_mnist(seven(), Image(3, 56, 56)).numpy()
    assert out.shape == (3, 56, 56)
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[0], out[2])
    rows, cols = np.flatnonzero(out[0].max(axis=1) > 0), np.flatnonzero(out[0].max(axis=0) > 0)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == 40
    ys, xs = np.indices(out[0].shape)
    mass = out[0].sum()
    # pixel 14 of 28 is the point 14.5 of the field's 28; at 56 pixels, the point 29: pixel 28.5
    assert abs((ys * out[0]).sum() / mass - 28.5) <= 0.5 and abs((xs * out[0]).sum() / mass - 28.5) <= 0.5


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(np.full((40, 40), 128, np.uint8), id="uniform"),
        pytest.param(np.zeros((28, 28), np.float32), id="black"),
        pytest.param(np.clip(0.5 + np.random.default_rng(1).normal(0, 0.02, (60, 60)), 0, 1), id="paper-texture"),
        pytest.param(np.clip(0.5 + np.random.default_rng(2).normal(0, 0.03, (1000, 1000)), 0, 1), id="large-noisy-photo"),
        pytest.param(np.clip(0.8 + np.linspace(-0.2, 0.1, 300)[None] + np.zeros((300, 1)), 0, 1), id="uneven-light"),
    ],
)
def test_a_blank_image_is_a_user_error(source):
    with pytest.raises(UserError, match="is blank"):
        to_mnist(source, name="input 'image'")


def test_a_blank_file_is_named(tmp_path):
    path = tmp_path / "blank.png"
    PILImage.new("L", (50, 50), 255).save(path)
    with pytest.raises(UserError) as e:
        to_mnist(path)
    assert str(path) in e.value.message and "blank" in e.value.message


def test_bad_files_are_user_errors_naming_the_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    truncated = tmp_path / "cut.png"
    seven().save(tmp_path / "whole.png")
    truncated.write_bytes((tmp_path / "whole.png").read_bytes()[:200])
    cases = {
        tmp_path / "missing.png": "no such file",
        tmp_path: "is a directory",
        text: "is not an image (PIL cannot identify it)",
        truncated: "cannot read",
    }
    for path, expected in cases.items():
        with pytest.raises(UserError) as e:
            to_mnist(path)
        assert str(path) in e.value.message and expected in e.value.message, path


@pytest.mark.parametrize(
    "source, expected",
    [
        (np.zeros((5, 28, 28, 2), np.uint8), "has shape (5, 28, 28, 2)"),
        (np.zeros((28, 28, 7), np.uint8), "has shape (28, 28, 7)"),
        (np.zeros((0, 28), np.uint8), "is empty"),
        (np.full((28, 28), 2.0), "floats from 2 to 2"),
        (np.full((28, 28), np.nan), "NaN"),
        (np.full((28, 28), 300, np.int32), "integers from 300 to 300"),
        (np.zeros((28, 28), np.complex64), "dtype complex64"),
        ({"pixels": 1}, "is a dict"),
        (torch.nn.Linear(1, 1), "is a Linear"),
    ],
    ids=["4d", "7-channels", "empty", "float-range", "nan", "int-range", "complex", "dict", "module"],
)
def test_bad_arrays_are_user_errors_naming_the_input(source, expected):
    with pytest.raises(UserError) as e:
        read_grey(source, name="input 'image' [3]")
    assert "input 'image' [3]" in e.value.message and expected in e.value.message


def test_bools_and_small_integers_are_pixels():
    mask = np.zeros((40, 40), bool)
    mask[10:30, 18:22] = True  # a "1"
    assert np.array_equal(mnist_of(mask), mnist_of(mask.astype(np.int64) * 255))


def test_image_batch_reads_one_image_or_a_batch(reference):
    grey = np.asarray(seven())
    one, batched = image_batch(grey)
    assert one.shape == (1, 1, 28, 28) and not batched
    for batch in ([grey, seven()], np.stack([grey, grey]), np.stack([grey, grey])[:, None], torch.from_numpy(np.stack([grey, grey]))):  # [2, H, W]: two grey images
        images, batched = image_batch(batch)
        assert images.shape == (2, 1, 28, 28) and batched
        assert np.abs(images[1, 0].numpy() - reference).mean() < 0.01
    single_chw, batched = image_batch(grey[None])  # [1, H, W]: one grey image, not a batch of one
    assert single_chw.shape == (1, 1, 28, 28) and not batched
    three = np.stack([grey, grey, grey])  # [3, H, W]: three grey images for a grey model ...
    assert image_batch(three)[0].shape == (3, 1, 28, 28)
    rgb, batched = image_batch(three, Image(3, 28, 28))  # ... one RGB image for an RGB one
    assert rgb.shape == (1, 3, 28, 28) and not batched
    rgb_last, batched = image_batch(three.transpose(1, 2, 0))  # [H, W, 3]: one RGB image for any model
    assert rgb_last.shape == (1, 1, 28, 28) and not batched


def test_a_bad_item_of_a_batch_is_named_by_its_index():
    with pytest.raises(UserError, match=r"input 'digit' \[1\] is blank"):
        image_batch([np.asarray(seven()), np.zeros((28, 28), np.uint8)], name="digit")
    with pytest.raises(UserError, match="empty batch"):
        image_batch([], name="digit")
    with pytest.raises(UserError, match="has shape"):
        image_batch(np.zeros((2, 2, 28, 28, 1)), name="digit")


def test_without_preprocessing_only_the_form_changes():
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    out = as_image(pixels)
    assert out.shape == (1, 28, 28) and torch.equal(out[0], torch.from_numpy(pixels).float() / 255)
    assert as_image(pixels, Image(3, 28, 28)).shape == (3, 28, 28)
    images, batched = image_batch(np.stack([pixels, pixels]), preprocess=False)
    assert batched and torch.equal(images[1, 0], out[0])
    with pytest.raises(UserError, match="is 56x56 pixels; the model takes 28x28"):
        as_image(np.zeros((56, 56), np.uint8), name="input 'image'")
