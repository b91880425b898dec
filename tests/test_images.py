"""digitsum.images and digitsum.mnist_format: a user's image in MNIST's format, whatever form
and polarity it comes in, on whatever it was photographed."""

from __future__ import annotations

import ast
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter

from digitsum import mnist_format
from digitsum.contracts import Image
from digitsum.errors import UserError
from digitsum.images import as_image, image_batch, read_grey, to_mnist

PAPER, INK = 235, 20


def seven(size: int = 200, ink: int = INK, paper: int = PAPER, stroke: int = 14) -> PILImage.Image:
    """A hand-drawn-looking 7, dark on light paper, as a phone photo of a note would be (its
    strokes ``stroke`` pixels wide at size 200)."""
    image = PILImage.new("L", (size, size), paper)
    draw = ImageDraw.Draw(image)
    s = size / 200
    draw.line([(50 * s, 40 * s), (150 * s, 40 * s), (90 * s, 165 * s)], fill=ink, width=int(stroke * s), joint="curve")
    draw.line([(75 * s, 100 * s), (125 * s, 100 * s)], fill=ink, width=int(stroke * s))
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


def test_a_photo_stored_sideways_is_turned_by_its_exif_tag_as_a_file_or_a_pil_image(tmp_path, reference):
    # was: the file was turned, the PIL image the caller opened from it was not (read as another digit)
    path = tmp_path / "sideways.png"
    exif = PILImage.Exif()
    exif[0x0112] = 6  # Orientation: shown turned 90 degrees clockwise
    seven().transpose(PILImage.Transpose.ROTATE_90).save(path, exif=exif)
    with PILImage.open(path) as opened:
        assert np.abs(mnist_of(opened) - reference).mean() < 0.01
    assert np.abs(mnist_of(path) - reference).mean() < 0.01


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
    postscript = tmp_path / "seven.eps"  # PIL would hand it to Ghostscript, a PostScript interpreter
    postscript.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n")
    truncated = tmp_path / "cut.png"
    seven().save(tmp_path / "whole.png")
    truncated.write_bytes((tmp_path / "whole.png").read_bytes()[:200])
    (tmp_path / "empty.jpg").write_bytes(b"")  # a photo whose upload or copy failed
    cases = {
        tmp_path / "missing.png": "no such file",
        tmp_path / "empty.jpg": "is an empty file (0 bytes)",
        tmp_path: "is a directory",
        text: "is not an image of a format read here (PNG, JPEG,",
        postscript: "is not an image of a format read here (PNG, JPEG,",
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


# -- photographs: a sheet on a desk, a frame, a scan's edge, faint ink, a tight crop ----------------------

DESK = 40


def photo(pixels, noise: float = 2.0, tilt: float = 0.0, seed: int = 0) -> np.ndarray:
    """A camera's view of ``pixels`` (grey levels 0-255): Gaussian noise of ``noise`` levels and
    light falling off by ``tilt`` levels from right to left."""
    pixels = np.asarray(pixels, dtype=np.float64)
    light = tilt * (np.arange(pixels.shape[1])[None] / pixels.shape[1] - 0.5)
    noisy = pixels + light + np.random.default_rng(seed).normal(0, noise, pixels.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def apart(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two fields, the better of b and b moved by a pixel: the centre
    of mass is rounded to a whole pixel (as MNIST's), and noise can tip it by one."""
    return min(float(np.abs(a - np.roll(b, (dy, dx), (0, 1))).mean()) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def on_desk(sheet, canvas: tuple[int, int], at: tuple[int, int], desk: int = DESK) -> np.ndarray:
    """``sheet`` laid on a darker desk filling ``canvas`` (height, width), its top left corner at
    ``at`` (negative or past the canvas: the sheet runs off the picture)."""
    sheet = np.asarray(sheet)
    out = np.full(canvas, desk, np.uint8)
    (y0, x0), (h, w) = at, sheet.shape
    ys, xs = slice(max(y0, 0), min(y0 + h, canvas[0])), slice(max(x0, 0), min(x0 + w, canvas[1]))
    out[ys, xs] = sheet[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return out


# seven() draws the 7's strokes within x 43-157, y 33-172 of its 200x200 sheet
PLACEMENTS = {
    "desk-all-round": ((420, 420), (110, 100)),  # the sheet a quarter of the picture: the desk is the ground's majority
    "sheet-most-of-it": ((260, 240), (30, 20)),  # the desk a strip around it
    "off-the-right-edge": ((300, 280), (50, 100)),
    "off-a-corner": ((300, 300), (-30, -30)),
    "off-the-bottom": ((300, 320), (120, 60)),
}


@pytest.mark.parametrize("placement", PLACEMENTS.values(), ids=PLACEMENTS.keys())
@pytest.mark.parametrize("noise", [0.0, 2.0], ids=["clean", "noisy"])
def test_a_sheet_on_a_darker_desk_gives_the_digit_not_the_sheet(placement, noise, reference):
    # the ground measured on the picture's border is the desk: the sheet stood out as a light blob
    # with the 7 a hole in it (read as an 8 or a 0); now the sheet is the area the 7 is found in
    canvas, at = placement
    result = mnist_of(photo(on_desk(seven(), canvas, at), noise=noise))
    assert apart(result, reference) < 0.01  # measured: 0 clean, under 0.001 noisy


def test_a_turned_sheet_under_uneven_light(reference):
    turned = seven().rotate(6, PILImage.Resampling.BILINEAR, expand=True, fillcolor=DESK)
    expected = mnist_of(seven().rotate(6, PILImage.Resampling.BILINEAR, fillcolor=PAPER))
    assert apart(mnist_of(photo(on_desk(turned, (400, 400), (90, 80)), tilt=60)), expected) < 0.01


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: np.pad(np.asarray(seven()), 4), id="thin-black-frame"),
        pytest.param(lambda: np.pad(np.asarray(seven()), 25), id="thick-black-frame"),
        pytest.param(lambda: np.concatenate([np.full((200, 30), 15, np.uint8), np.asarray(seven())[:, 30:]], 1), id="scan-edge-left"),
        pytest.param(lambda: np.concatenate([np.full((25, 200), 15, np.uint8), np.asarray(seven())[25:]]), id="scan-edge-top"),
        pytest.param(lambda: on_desk(seven(), (240, 240), (-20, 40)), id="desk-on-three-sides"),
    ],
)
def test_frames_and_dark_edges_are_not_part_of_the_digit(make, reference):
    # a frame the border sees as ground: its inside is the sheet; a frame or a scan's dark edge
    # the border sees little of: dark clutter along the edge, dropped as a digit remains apart
    for noise in (0.0, 2.0):
        assert apart(mnist_of(photo(make(), noise=noise)), reference) < 0.01


def test_faint_ink_is_a_digit_when_it_stands_out_from_the_noise(reference):
    # 12 grey levels below the paper, noise 2 levels: the ink is 6 noise levels deep (the fixed
    # floor of 0.08 = 20 levels called it blank); specks of noise are not part of it
    for seed in range(3):
        faint = photo(seven(ink=128, paper=140), noise=2.0, seed=seed)
        assert apart(mnist_of(faint), reference) < 0.04  # measured 0.028-0.029: the strokes are noisy
    clean = seven(ink=132, paper=134)  # 2 levels, but no noise at all (a drawing): still a digit
    assert apart(mnist_of(clean), reference) < 0.01


@pytest.mark.parametrize("noise", [0.0, 2.0], ids=["clean", "noisy"])
def test_a_digit_cropped_tightly_touches_the_border_and_stays(noise, reference):
    tight = np.asarray(seven())[33:173, 43:158]  # the strokes' bounding box: the 7 touches all four sides
    assert apart(mnist_of(photo(tight, noise=noise)), reference) < 0.01


@pytest.mark.parametrize("stroke", [1, 3, 6])
def test_a_pen_line_much_thinner_than_mnists_strokes_is_widened_not_faded(stroke, reference):
    # was: a 4-pixel pen line on a 260-pixel digit came out as a grey trace (its brightest pixel
    # 0.25-0.55), read as a 1 or a 7; MNIST's strokes are 0.1-0.2 of the digit's longer side
    thin = mnist_of(photo(seven(size=600, stroke=stroke), noise=2.0))
    assert np.sort(thin[thin > 0])[-10:].min() > 0.9  # the strokes reach the ink level, as MNIST's
    assert apart(thin, reference) < 0.04  # the same 7 (measured 0.022-0.026; unwidened 0.055-0.099)


def test_strong_uneven_light_on_paper(reference):
    dim = photo(seven(paper=200), noise=3.0, tilt=80)  # the paper from 160 to 240 across the picture
    assert apart(mnist_of(dim), mnist_of(seven(paper=200))) < 0.01


def test_a_piece_of_the_digit_cut_by_the_edge_is_kept():
    # a 7 whose foot runs off the bottom and a short bar apart from it: the part touching the
    # edge is the digit, not clutter (it meets the edge with a stroke's end)
    image = PILImage.new("L", (200, 200), PAPER)
    draw = ImageDraw.Draw(image)
    draw.line([(50, 40), (150, 40), (90, 200)], fill=INK, width=14, joint="curve")
    draw.line([(20, 120), (45, 120)], fill=INK, width=10)
    field = mnist_of(image)
    ys, xs = np.nonzero(field > 0.35)
    assert ys.max() - ys.min() + 1 == 20  # the whole 7 and the bar are scaled into the box
    assert field[:, :8].max() > 0.35  # the bar, on the left, is kept


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(photo(np.full((300, 300), 140), noise=2.0), id="noise-field"),
        pytest.param(photo(np.full((300, 300), 140), noise=2.0, tilt=50), id="noise-under-uneven-light"),
        pytest.param(np.full((50, 50), 140, np.uint8) + np.eye(50, dtype=np.uint8), id="one-level-diagonal"),
        # 1.48 levels: above 5 x the quantisation noise, not above what it reaches in a million pixels
        pytest.param(np.pad(np.full((20, 20), 0.0058), 490), id="a-speck-of-a-million-pixels"),
    ],
)
def test_noise_and_sub_quantum_contrast_stay_blank(source):
    with pytest.raises(UserError, match="is blank"):
        to_mnist(source)


# -- the standalone module ---------------------------------------------------------------------------------


def test_mnist_format_needs_only_numpy_pillow_and_the_standard_library():
    tree = ast.parse(Path(mnist_format.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))  # no relative imports
    assert imported - set(sys.stdlib_module_names) == {"numpy", "PIL"}


def test_mnist_format_raises_its_own_error_which_digitsum_makes_a_user_error(tmp_path):
    blank = tmp_path / "blank.png"
    PILImage.new("L", (40, 40), 200).save(blank)
    with pytest.raises(mnist_format.ImageError, match=f"{blank} is blank") as raw:
        mnist_format.to_mnist_format(blank)
    assert not isinstance(raw.value, UserError) and isinstance(raw.value, ValueError)
    with pytest.raises(UserError) as converted:
        to_mnist(blank)
    assert converted.value.message == raw.value.message
    with pytest.raises(mnist_format.ImageError, match="is a dict: give a file path, a PIL image or a numpy array"):
        mnist_format.read_pixels({"pixels": 1})


def test_mnist_format_is_what_digitsum_predicts_on(tmp_path):
    path = tmp_path / "desk.png"
    PILImage.fromarray(photo(on_desk(seven(), (420, 420), (110, 100)))).save(path)
    for source in (path, seven(), np.asarray(seven()), photo(seven(ink=128, paper=140))):
        expected = mnist_format.to_mnist_format(source, 56, 42)
        assert expected.dtype == np.float32 and expected.shape == (56, 42)
        assert np.array_equal(to_mnist(source, Image(1, 56, 42))[0].numpy(), expected)


def test_a_large_photo_is_reduced_first_and_gives_the_same_digit(reference):
    large = PILImage.fromarray(photo(on_desk(seven(), (420, 420), (110, 100)))).resize((2400, 2400), PILImage.Resampling.BILINEAR)
    assert apart(mnist_of(large), reference) < 0.03


def _flood_fill_components(mask: np.ndarray, eight: bool) -> np.ndarray:
    labels, count = np.zeros(mask.shape, int), 0
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)] + ([(-1, -1), (-1, 1), (1, -1), (1, 1)] if eight else [])
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for dy, dx in steps:
                n = (y + dy, x + dx)
                if 0 <= n[0] < mask.shape[0] and 0 <= n[1] < mask.shape[1] and mask[n] and not labels[n]:
                    labels[n] = count
                    queue.append(n)
    return labels


@pytest.mark.parametrize("eight", [True, False], ids=["8-connected", "4-connected"])
def test_components_match_a_flood_fill(eight):
    rng = np.random.default_rng(3)
    for _ in range(60):
        mask = rng.random((int(rng.integers(1, 25)), int(rng.integers(1, 25)))) < rng.random()
        labels, count = mnist_format._components(mask, eight=eight)
        expected = _flood_fill_components(mask, eight)
        assert count == expected.max() and ((labels > 0) == mask).all()
        # the same partition: each label of one is exactly one label of the other
        assert len(set(zip(labels[mask], expected[mask]))) == count


def test_the_steps_in_words_name_each_setting_with_its_value():
    steps = mnist_format.steps()
    assert len(steps) == 8 and steps[0].startswith("Read the image") and steps[-1].startswith("Geometry.")
    text = " ".join(steps)
    assert ":data:" not in text and "``" not in text and "**" not in text
    for name, value in mnist_format.settings().items():
        assert name.isupper() and getattr(mnist_format, name) == value
    assert "BOX_THRESHOLD (0.35)" in text and "BLANK_SIGMAS (5)" in text and "SHEET_HULL_FILL (0.95)" in text


def test_the_module_run_as_a_script_shows_what_the_model_is_given(tmp_path):
    import subprocess

    seven().save(tmp_path / "seven.png")
    PILImage.new("L", (40, 40), 200).save(tmp_path / "blank.png")
    result = subprocess.run(
        [sys.executable, "-I", mnist_format.__file__, str(tmp_path / "seven.png"), str(tmp_path / "blank.png")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and f"{tmp_path / 'blank.png'} is blank" in result.stderr
    written = np.asarray(PILImage.open(tmp_path / "seven_mnist.png"))
    assert written.shape == (28, 28) and np.array_equal(written, np.round(mnist_of(seven()) * 255).astype(np.uint8))
    assert not (tmp_path / "blank_mnist.png").exists()


def test_a_huge_file_is_reduced_as_it_is_decoded(tmp_path):
    # 5000 x 4500 pixels in a few kB: arrays of its full size would take hundreds of MB
    from digitsum.mnist_format import MAX_DECODED_SIDE, read_pixels

    path = tmp_path / "huge.png"
    PILImage.new("L", (5000, 4500), 255).save(path)
    assert path.stat().st_size < 100_000
    assert read_pixels(path).shape == (2250, 2500, 1) and max(read_pixels(path).shape) <= MAX_DECODED_SIDE


def test_a_file_between_pils_warning_and_error_sizes_is_read_without_a_warning(tmp_path):
    # 9500 x 9500 (90 megapixels, 1-bit to keep the test light): PIL warns past 89.5, with its own
    # source line on stderr; digitsum reduces such a file as it is decoded, so nothing is printed
    import warnings

    from digitsum.mnist_format import MAX_DECODED_SIDE, read_pixels

    path = tmp_path / "big.png"
    PILImage.new("1", (9500, 9500), 1).save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pixels = read_pixels(path)
    assert max(pixels.shape) <= MAX_DECODED_SIDE and not [w for w in caught if "DecompressionBomb" in w.category.__name__]


@pytest.mark.parametrize("angle", [0, 35, 120], ids=["upright-edge", "slanted-edge", "over-the-top"])
@pytest.mark.parametrize("noise", [0.0, 2.0], ids=["clean", "noisy"])
def test_a_shadow_across_the_paper_is_ground_not_ink(angle, noise, reference):
    # a hand's or a phone's shadow darkens part of the sheet, its edge through the digit: a plane
    # cannot follow that step, and the shadowed part stood out as ink (13-35 % of the result's
    # mass off the 7's strokes; measured now: under 3 % clean, up to 12 % noisy)
    ys, xs = np.indices((200, 200))
    theta = np.radians(angle)
    soft = 1 / (1 + np.exp(-(np.cos(theta) * (xs - 100) + np.sin(theta) * (ys - 100)) / 4.0))
    result = mnist_of(photo(np.asarray(seven(), dtype=np.float64) * (1 - 0.4 * soft), noise=noise))
    strokes = reference > 0.05
    strokes = strokes | np.roll(strokes, 1, 0) | np.roll(strokes, -1, 0) | np.roll(strokes, 1, 1) | np.roll(strokes, -1, 1)
    off = min(float(np.roll(result, (dy, dx), (0, 1))[~strokes].sum()) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert off / result.sum() < (0.05 if noise == 0 else 0.15)


def textured_paper(size: int, seed: int = 0) -> np.ndarray:
    """Paper under a camera (grey levels): its slow unevenness, +-6 levels, and a grain of 2."""
    rng = np.random.default_rng(seed)
    slow = np.asarray(PILImage.fromarray(rng.uniform(-6, 6, (8, 8)).astype(np.float32)).resize((size, size), PILImage.Resampling.BICUBIC))
    return PAPER - 10 + slow + rng.normal(0, 2, (size, size))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_small_digit_in_a_big_textured_photo_is_found(seed, reference):
    # a 30-pixel digit in a 700-pixel photo: its ink under 0.1 % of the pixels, so the pixels'
    # 1st and 99th percentiles were the paper's texture, which then decided the polarity (the
    # digit read as ground: blank, or the texture as the digit)
    page = textured_paper(700, seed)
    small = np.asarray(seven(40), dtype=np.float64)
    page[400:440, 250:290] = np.minimum(page[400:440, 250:290], small)
    assert apart(mnist_of(np.clip(np.round(page), 0, 255).astype(np.uint8)), mnist_of(seven(40))) < 0.03


@pytest.mark.parametrize("side", ["right", "bottom"])
@pytest.mark.parametrize("skin", [120, 170])
def test_a_finger_at_the_border_is_not_part_of_the_digit(side, skin, reference):
    # a finger holding the sheet: wider than a stroke but narrower than the window the ground is
    # followed under, it meets the edge end-on, so it neither was ground nor lay along the edge
    image = seven(paper=PAPER)
    finger = (125, 135, 275, 165) if side == "right" else (150, 120, 180, 280)  # an ellipse half off the photo
    ImageDraw.Draw(image).ellipse(finger, fill=skin)
    assert apart(mnist_of(photo(image)), mnist_of(photo(seven()))) < 0.02


@pytest.mark.parametrize("angle", [0, 90, 180, 270], ids=["lit-left", "lit-top", "lit-right", "lit-bottom"])
@pytest.mark.parametrize("noise", [0.0, 2.0], ids=["clean", "noisy"])
def test_a_shadow_over_most_of_the_border_keeps_the_polarity(angle, noise, reference):
    # a hand's shadow over all but a strip along one side, the light halved, a grey pen: the
    # plane of the ground took the shadow's level (most of the border), the lit strip stood
    # farther above it than the ink below, and the digit was read as light on a dark ground
    ys, xs = np.indices((200, 200))
    theta = np.radians(angle)
    soft = 1 / (1 + np.exp((np.cos(theta) * (xs - 100) + np.sin(theta) * (ys - 100) + 45) / 4.0))
    result = mnist_of(photo(np.asarray(seven(ink=70), dtype=np.float64) * (0.5 + 0.5 * soft), noise=noise))
    strokes = reference > 0.05
    strokes = strokes | np.roll(strokes, 1, 0) | np.roll(strokes, -1, 0) | np.roll(strokes, 1, 1) | np.roll(strokes, -1, 1)
    off = min(float(np.roll(result, (dy, dx), (0, 1))[~strokes].sum()) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert off / result.sum() < 0.15


@pytest.mark.parametrize("finger", [(97, 140, 137, 260), (140, 50, 260, 90)], ids=["bottom", "right"])
@pytest.mark.parametrize("skin", [110, 140])
def test_a_finger_touching_the_digit_is_not_part_of_it(finger, skin, reference):
    # a finger holding the sheet that touches a stroke: its pixels and the stroke's were one
    # part, so it was kept as the digit's; it is fainter than the ink (skin against paper) and a
    # blob meeting the edge, which a stroke cut by the edge is not
    hand = PILImage.new("L", (200, 200), PAPER)
    ImageDraw.Draw(hand).ellipse(finger, fill=skin)
    image = np.asarray(seven(paper=PAPER))
    image = np.where(image == PAPER, np.asarray(hand), image)  # the ink over the finger's shade
    assert apart(mnist_of(photo(image)), mnist_of(photo(seven()))) < 0.02


def squared_paper_photo(angle: float, step: int, seed: int = 0) -> np.ndarray:
    """A phone photo of a 7 on squared paper: lines 1.5 px wide every ``step`` px, 30 % darker
    than the paper, turned by ``angle`` degrees with the digit, light falling off to 60 % across
    the sheet, noise, a slight blur and heavy JPEG."""
    import io

    size = 300
    ys, xs = np.indices((size, size))
    t = np.radians(angle)
    u, v = np.cos(t) * xs + np.sin(t) * ys, -np.sin(t) * xs + np.cos(t) * ys
    page = PAPER * (1 - 0.3 * ((np.mod(u, step) < 1.5) | (np.mod(v, step) < 1.5)))
    digit = np.asarray(seven(150, ink=0, paper=255).rotate(angle, fillcolor=255), dtype=np.float64) / 255
    page[70:220, 80:230] = page[70:220, 80:230] * digit + INK * (1 - digit)
    page = page * (1 - 0.4 * (xs + ys) / (2 * size))
    blurred = PILImage.fromarray(photo(page, seed=seed)).filter(ImageFilter.GaussianBlur(1.0))
    jpeg = io.BytesIO()
    blurred.save(jpeg, "JPEG", quality=40)
    return np.asarray(PILImage.open(io.BytesIO(jpeg.getvalue())))


@pytest.mark.parametrize("angle", [2, -4])
@pytest.mark.parametrize("step", [10, 16])
def test_the_lines_of_squared_paper_are_ground(angle, step, reference):
    # a notebook's lines stand at about a third of the ink: under uneven light, blur and JPEG
    # pieces of them rose above BOX_THRESHOLD across the sheet, stretched the box (the 7 shrank
    # to 11 px) and the rest stayed as a grey mesh (1-30 % of the result's mass off the strokes)
    result = mnist_of(squared_paper_photo(angle, step))
    rows, cols = np.flatnonzero((result > 0.35).any(axis=1)), np.flatnonzero((result > 0.35).any(axis=0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == 20
    strokes = reference > 0.05
    strokes = strokes | np.roll(strokes, 1, 0) | np.roll(strokes, -1, 0) | np.roll(strokes, 1, 1) | np.roll(strokes, -1, 1)
    off = min(float(np.roll(result, (dy, dx), (0, 1))[~strokes].sum()) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert off / result.sum() < 0.01


@pytest.mark.parametrize("light", [0.6, 0.45], ids=["shade", "deep-shade"])
@pytest.mark.parametrize("noise", [0.0, 2.0], ids=["clean", "noisy"])
def test_strokes_under_a_shadow_are_as_bright_as_the_lit_ones(light, noise):
    # the 7's foot under a shadow: the ink is darker than the paper by a ratio, so its depth below
    # the local paper shrank with the light, and the shadowed strokes came out at 0.4-0.5 where
    # the lit ones reach 1 (the local paper level was subtracted, not divided out)
    ys, _ = np.indices((200, 200))
    soft = 1 / (1 + np.exp(-(ys - 110) / 4.0))
    result = mnist_of(photo(np.asarray(seven(), dtype=np.float64) * (1 - (1 - light) * soft), noise=noise))
    peaks = result.max(axis=1)
    inked = np.flatnonzero(peaks > 0.05)
    # the stroke's core in each row: the lower third (under the shadow) as bright as the upper
    upper, lower = peaks[inked[:6]], peaks[inked[-7:-1]]  # the last row holds the stroke's rounded end
    assert lower.mean() > 0.85 * upper.mean()


def test_a_dashed_line_hugging_the_edge_is_not_part_of_the_digit(reference):
    # a sheet's edge seen as a thin broken line along the photo's border (the desk's blurred edge,
    # a perspective's repeated edge): its pieces, each shorter than CLUTTER_SPAN, stayed and
    # stretched the box, and the digit shrank
    image = np.asarray(seven(), dtype=np.float64).copy()
    for x in range(0, 200, 12):
        image[1, x : x + 8] = INK
        image[x : x + 8, 198] = INK
    assert apart(mnist_of(photo(image)), reference) < 0.01



@pytest.mark.parametrize("noise", [0.0, 2.0], ids=["clean", "noisy"])
def test_strokes_under_glare_are_as_bright_as_the_others(noise):
    # a whiteboard's glare adds light over the 7's foot: paper and ink are raised by the same
    # amount, so dividing by the brighter local paper made the strokes there fainter
    ys, xs = np.indices((200, 200))
    spot = 75 * np.exp(-((ys - 165) ** 2 + (xs - 95) ** 2) / (2 * 30.0**2))
    result = mnist_of(photo(np.asarray(seven(paper=175), dtype=np.float64) + spot, noise=noise))
    peaks = result.max(axis=1)
    inked = np.flatnonzero(peaks > 0.05)
    upper, lower = peaks[inked[:6]], peaks[inked[-7:-1]]  # the last row holds the stroke's rounded end
    assert lower.mean() > 0.85 * upper.mean()


def test_a_large_file_of_the_wrong_size_is_named_by_its_own_size(tmp_path):
    path = tmp_path / "big.png"
    PILImage.new("L", (6000, 28), 255).save(path)  # read reduced (the widest side to 4096 or less)
    with pytest.raises(UserError, match=r"big.png is 28x6000 pixels; the model takes 28x28"):  # was: 10x3000
        as_image(path)
