"""Photos of handwritten digits: how well does ``to_mnist_format`` bring them back to MNIST?

Each of the first ``--count`` MNIST test digits (per condition; the same digits for every
condition) is made into a synthetic photo under one condition: rendered as ink on a paper
texture at a random size and position, then lit unevenly, shadowed, noised, blurred, saved as
JPEG, drawn on lined or squared paper, in coloured ink, turned and seen in perspective, small in
a big photo, off centre, in thick marker, thin pencil or a ballpoint's line, in dark mode (light on dark), as an
alpha PNG, with a desk's edge or a finger at the border, or a random mix of several. Every
photo goes through ``digitsum.mnist_format.to_mnist_format`` and the shipped ``original``
model's digit head (``digitsum.load``, no training, no data beyond MNIST's test split). The
report gives each condition's digit accuracy against the clean MNIST digits' (the 28x28 arrays
as they are, preprocessed the same way), blanks (ImageError), and ms per image of
``to_mnist_format``.

    DIGITSUM_DATA=<folder holding MNIST/raw> .venv/bin/python benchmarks/photos.py [--seed 0] [--count 100]

What each condition models (one at a time; a dark pen on off-white paper unless it says):

- ``clean``: MNIST's 28x28 digits as they are (the reference); ``paper``: the digit written on
  a textured sheet filling the photo, lit evenly;
- ``lighting``: light falling off across the sheet (to 45-75 %); ``shadow``: a soft shadow of a
  hand or a phone over one side of a line (50-75 % of the light), over the ink as well;
- ``noise``, ``blur``, ``jpeg``: a dim sensor, out of focus or shaken, heavy JPEG compression;
- ``grid``: lined or squared paper, the lines under the ink; ``colour``: blue, red, green or
  purple ink; ``pencil``: thin grey uneven graphite; ``marker``: thick strokes; ``pen``: a
  ballpoint's line in a photo taken close, the digit 250-400 px tall, its strokes thinned by 12
  px on each side (MNIST's thinnest strokes, 0.1 of the digit, become a line of 1-15 px);
- ``rotation``: the sheet turned up to 10 degrees and seen a little from the side;
- ``offcentre``: a smaller digit near a corner; ``small``: a 30-70 px digit in a 600-900 px photo;
- ``dark``: a drawing app in dark mode (light strokes on a dark ground, no texture);
  ``alpha``: an RGBA drawing, the ink's colour everywhere and only the alpha telling the digit;
- ``desk``: the photo taken too wide, the desk beside the sheet along one or two sides; the
  digit stays on the sheet (the desk never covers the ink);
- ``finger``: a finger holding the sheet entering from one side, which may touch the digit;
- ``mixed``: a random mix (turned ink, grid, blue ink, lighting, shadow, desk, finger,
  perspective, blur, noise, JPEG), as a real photo has;
- ``lamp``: a ballpoint on white printer paper under a desk lamp: a warm colour cast and a
  vignette (the light falling off around the lamp's spot to 40-70 %), a little noise, JPEG;
- ``glare``: a marker on a whiteboard, a bright spot of glare (reflected light, up to white)
  somewhere on it, over the ink too;
- ``paint``: drawn in a paint program or a screenshot of one: black on pure white, a big
  canvas, a thick anti-aliased brush, no noise.

``--save DIR`` writes a few photos of each condition and what the model was given, to look at.
Everything drawn at random comes from ``--seed``: the same seed gives the same photos.
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

import digitsum
from digitsum.data import default_root, load_mnist
from digitsum.mnist_format import ImageError, to_mnist_format

Rng = np.random.Generator


# -- the photo's parts --------------------------------------------------------------------------------


class Photo:
    """A photo being made: the paper (RGB floats in [0, 1]) and the digit's ink coverage (alpha in
    [0, 1]) on the same canvas, with the ink's colour; :meth:`pixels` composites them."""

    def __init__(self, digit: np.ndarray, rng: Rng, *, canvas: tuple[int, int] | None = None,
                 height: float | None = None, thickness: int = 0, angle: float = 0.0,
                 centre: tuple[float, float] | None = None) -> None:  # fmt: skip
        self.rng = rng
        h, w = canvas or (int(rng.integers(200, 330)), int(rng.integers(200, 330)))
        # the digit's 20-pixel box becomes `height` pixels (default: 35-65 % of the shorter side)
        height = height or min(h, w) * rng.uniform(0.35, 0.65)
        scale = height / 20.0
        size = max(8, int(round(28 * scale)))
        ink = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
        if thickness > 0:  # a marker: strokes widened
            ink = ink.filter(ImageFilter.MaxFilter(2 * thickness + 1))
        elif thickness < 0:  # a fine pencil: strokes thinned
            ink = ink.filter(ImageFilter.MinFilter(-2 * thickness + 1))
        if angle:
            ink = ink.rotate(angle, Image.Resampling.BICUBIC, expand=True)
        a = np.asarray(ink, dtype=np.float64) / 255.0
        a = np.clip((a - 0.1) / 0.8, 0, 1)  # MNIST's soft edges as a pen's: mostly full or none
        ah, aw = a.shape
        if centre is None:  # anywhere, the digit's 20-px box inside the canvas
            margin_y, margin_x = 0.4 * ah, 0.4 * aw
            centre = (rng.uniform(margin_y, max(margin_y, h - margin_y)), rng.uniform(margin_x, max(margin_x, w - margin_x)))
        top, left = int(round(centre[0] - ah / 2)), int(round(centre[1] - aw / 2))
        self.alpha = np.zeros((h, w))
        y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + ah, h), min(left + aw, w)
        self.alpha[y0:y1, x0:x1] = a[y0 - top : y1 - top, x0 - left : x1 - left]
        self.paper = paper(h, w, rng)
        self.ink = np.array([rng.uniform(0.05, 0.25)] * 3)  # a dark pen

    def pixels(self) -> np.ndarray:
        """The photo as RGB floats: ink over paper."""
        a = self.alpha[..., None]
        return self.paper * (1 - a) + self.ink * a


def smooth_noise(h: int, w: int, rng: Rng, cells: int) -> np.ndarray:
    """Noise varying slowly over the image (a coarse random grid, enlarged smoothly), about [-1, 1]."""
    coarse = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64)


def paper(h: int, w: int, rng: Rng) -> np.ndarray:
    """Off-white paper with a slow texture and a fine grain."""
    tint = np.array([rng.uniform(0.85, 0.95), rng.uniform(0.83, 0.93), rng.uniform(0.78, 0.9)])
    texture = 0.02 * smooth_noise(h, w, rng, 8) + 0.01 * rng.standard_normal((h, w))
    return np.clip(tint * (1 + texture[..., None]), 0, 1)


def lighting(x: np.ndarray, rng: Rng) -> np.ndarray:
    """Light falling off across the image in a random direction, to 45-75 % at the far side."""
    h, w = x.shape[:2]
    theta = rng.uniform(0, 2 * math.pi)
    ys, xs = np.indices((h, w))
    t = (np.cos(theta) * xs / w + np.sin(theta) * ys / h)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    return x * (1 - rng.uniform(0.25, 0.55) * t)[..., None]


def shadow(x: np.ndarray, rng: Rng) -> np.ndarray:
    """A soft shadow (a hand's or a phone's) over one side of a random line, 50-75 % of the light."""
    h, w = x.shape[:2]
    theta = rng.uniform(0, 2 * math.pi)
    ys, xs = np.indices((h, w))
    d = np.cos(theta) * (xs - w * rng.uniform(0.2, 0.8)) + np.sin(theta) * (ys - h * rng.uniform(0.2, 0.8))
    soft = 1 / (1 + np.exp(-d / (0.03 * min(h, w))))
    return x * (1 - rng.uniform(0.25, 0.5) * soft)[..., None]


def grid(photo: Photo, rng: Rng, squared: bool | None = None) -> None:
    """Lined or squared paper: thin blue-grey lines every 4-9 % of the shorter side, under the ink."""
    h, w = photo.alpha.shape
    step = max(6, int(min(h, w) * rng.uniform(0.04, 0.09)))
    colour = np.array([rng.uniform(0.45, 0.7), rng.uniform(0.6, 0.8), rng.uniform(0.8, 0.95)])
    lines = np.zeros((h, w))
    width = int(rng.integers(1, 3))
    offset = int(rng.integers(0, step))
    for y in range(offset, h, step):
        lines[y : y + width] = 1
    if squared if squared is not None else rng.random() < 0.5:
        for x in range(offset, w, step):
            lines[:, x : x + width] = 1
    photo.paper = photo.paper * (1 - 0.7 * lines[..., None]) + 0.7 * lines[..., None] * colour * photo.paper


def desk(x: np.ndarray, rng: Rng, ink: np.ndarray | None = None) -> np.ndarray:
    """The desk beside the sheet along one or two sides: 5-15 % of the image, a dark wood colour.

    The digit is written on the sheet, so the sheet's edge stays clear of the ink (``ink``: its
    coverage on the canvas; a margin of 2 % of the shorter side): where the digit lies close to
    a side, the desk there is narrower, or not in the photo at all."""
    h, w = x.shape[:2]
    colour = np.array([rng.uniform(0.2, 0.45), rng.uniform(0.12, 0.3), rng.uniform(0.05, 0.2)])
    out = x.copy()
    ys, xs = np.indices((h, w))
    written = ink > 0.05 if ink is not None else np.zeros((h, w), dtype=bool)
    for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
        depth = int(min(h, w) * rng.uniform(0.05, 0.15))
        slope = rng.uniform(-0.05, 0.05)  # the sheet's edge a little skew
        along, across, n = [(xs, ys, w), (xs, h - 1 - ys, w), (ys, xs, h), (ys, w - 1 - xs, h)][side]
        edge = across - slope * (along - n / 2)  # the desk is where this is below its depth
        if written.any():
            depth = min(depth, int(edge[written].min() - 0.02 * min(h, w)))
        if depth < 2:
            continue
        mask = edge < depth
        out[mask] = colour * (1 + 0.05 * rng.standard_normal((int(mask.sum()), 1)))
    return out


def finger(x: np.ndarray, rng: Rng) -> np.ndarray:
    """A finger (a shaded skin-coloured ellipse) entering from one side."""
    h, w = x.shape[:2]
    img = Image.new("L", (w, h), 0)
    side = int(rng.integers(4))
    width, length = min(h, w) * rng.uniform(0.12, 0.2), min(h, w) * rng.uniform(0.25, 0.45)
    at = rng.uniform(0.15, 0.85)
    box = [  # an ellipse centred on the edge, reaching `length` into the photo
        (at * w - width / 2, -length, at * w + width / 2, length),
        (at * w - width / 2, h - length, at * w + width / 2, h + length),
        (-length, at * h - width / 2, length, at * h + width / 2),
        (w - length, at * h - width / 2, w + length, at * h + width / 2),
    ][side]
    ImageDraw.Draw(img).ellipse(box, fill=255)
    mask = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float64)[..., None] / 255
    skin = np.array([rng.uniform(0.55, 0.9), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.55)])
    return x * (1 - mask) + skin * mask * (0.8 + 0.2 * smooth_noise(h, w, rng, 3)[..., None])


def lamp(x: np.ndarray, rng: Rng) -> np.ndarray:
    """A desk lamp: a warm colour cast, the light falling off around its spot (a vignette, to
    40-70 % at the farthest corner), a little noise and JPEG."""
    h, w = x.shape[:2]
    ys, xs = np.indices((h, w))
    cy, cx = h * rng.uniform(0.2, 0.8), w * rng.uniform(0.2, 0.8)
    r = np.hypot(ys - cy, xs - cx)
    light = 1 - rng.uniform(0.3, 0.6) * (r / r.max()) ** 2
    warm = np.array([1.0, rng.uniform(0.82, 0.92), rng.uniform(0.55, 0.75)])
    x = x * light[..., None] * warm + 0.015 * rng.standard_normal((h, w, 1))
    return jpeg(x, rng)


def glare(x: np.ndarray, rng: Rng) -> np.ndarray:
    """A bright spot of reflected light (a whiteboard's glare): light added, up to white, in a
    soft spot 10-25 % of the shorter side wide, anywhere (over the ink too); a little noise."""
    h, w = x.shape[:2]
    ys, xs = np.indices((h, w))
    cy, cx, radius = h * rng.uniform(0.1, 0.9), w * rng.uniform(0.1, 0.9), min(h, w) * rng.uniform(0.1, 0.25)
    spot = rng.uniform(0.3, 0.8) * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius**2))
    return x + spot[..., None] + 0.01 * rng.standard_normal((h, w, 1))


def perspective(x: np.ndarray, rng: Rng, most: float = 0.06) -> np.ndarray:
    """The photo seen a little from the side: each corner moved up to ``most`` of the side,
    the whole turned by up to 5 degrees (what falls outside is the photo's edge, repeated)."""
    h, w = x.shape[:2]
    pad = int(0.15 * max(h, w))
    big = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    angle = math.radians(rng.uniform(-5, 5))
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    centre = np.array([w / 2, h / 2])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    source = (corners - centre) @ rot.T + centre + rng.uniform(-most, most, size=(4, 2)) * [w, h] + pad
    coeffs = _perspective_coefficients(corners, source)
    out = [np.asarray(Image.fromarray(big[..., c].astype(np.float32)).transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)) for c in range(3)]
    return np.stack(out, axis=-1).astype(np.float64)


def _perspective_coefficients(to: np.ndarray, frm: np.ndarray) -> list[float]:
    """PIL's 8 coefficients mapping output points ``to`` onto input points ``frm``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(to, frm):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    return list(np.linalg.solve(np.array(rows), np.array(rhs)))


def noise(x: np.ndarray, rng: Rng) -> np.ndarray:
    """A phone's sensor noise in dim light: Gaussian, 3-8 % of full scale, some of it in colour."""
    h, w = x.shape[:2]
    sigma = rng.uniform(0.03, 0.08)
    return x + sigma * (0.7 * rng.standard_normal((h, w, 1)) + 0.3 * rng.standard_normal((h, w, 3)))


def blur(x: np.ndarray, rng: Rng) -> np.ndarray:
    """Out of focus or shaken: a Gaussian blur of 0.8-2.5 % of the shorter side."""
    radius = min(x.shape[:2]) * rng.uniform(0.008, 0.025)
    blurred = Image.fromarray(to_uint8(x)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(blurred, dtype=np.float64) / 255


def jpeg(x: np.ndarray, rng: Rng) -> np.ndarray:
    """Saved as a heavily compressed JPEG (quality 8-30), colour subsampled."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(x)).save(buffer, "JPEG", quality=int(rng.integers(8, 31)))
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float64) / 255


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


# -- the conditions ------------------------------------------------------------------------------------


def make(condition: str, digit: np.ndarray, rng: Rng) -> np.ndarray:
    """One photo of ``digit`` (MNIST's uint8 28x28) under ``condition``: uint8 RGB (RGBA for alpha)."""
    if condition == "clean":
        return digit
    if condition == "mixed":
        return mixed(digit, rng)
    options = {
        "small": dict(canvas=(int(rng.integers(600, 900)), int(rng.integers(600, 900))), height=rng.uniform(30, 70)),
        "marker": dict(thickness=int(rng.integers(2, 4))),
        "pencil": dict(thickness=-1),
        "pen": dict(canvas=(int(rng.integers(500, 800)), int(rng.integers(500, 800))), height=rng.uniform(250, 400), thickness=-12),
        "rotation": dict(angle=rng.uniform(-10, 10)),
        "lamp": dict(thickness=int(rng.choice([-1, 0]))),
        "glare": dict(thickness=int(rng.integers(1, 3))),
        "paint": dict(canvas=(int(rng.integers(400, 900)), int(rng.integers(500, 1300))), thickness=int(rng.integers(3, 9))),
    }.get(condition, {})
    photo = _off_centre(digit, rng) if condition == "offcentre" else Photo(digit, rng, **options)
    if condition == "pencil":  # grey graphite, uneven
        photo.ink = np.array([rng.uniform(0.35, 0.55)] * 3)
        photo.alpha *= np.clip(0.85 + 0.25 * rng.standard_normal(photo.alpha.shape), 0.4, 1)
    if condition == "colour":
        photo.ink = np.array([[0.1, 0.15, 0.6], [0.7, 0.1, 0.1], [0.1, 0.45, 0.15], [0.35, 0.1, 0.5]][int(rng.integers(4))])
        photo.ink = photo.ink * rng.uniform(0.8, 1.2)
    if condition == "grid":
        grid(photo, rng)
    if condition == "lamp":  # white printer paper, a ballpoint's thin blue-black line
        photo.paper = np.clip(rng.uniform(0.95, 1.0) + 0.01 * rng.standard_normal(photo.alpha.shape), 0, 1)[..., None] * np.ones(3)
        photo.ink = np.array([0.1, 0.1, rng.uniform(0.2, 0.5)])
    if condition == "glare":  # a whiteboard and a marker
        photo.paper = np.broadcast_to(np.array([0.86, 0.88, 0.9]) * rng.uniform(0.9, 1.05), photo.alpha.shape + (3,))
        photo.ink = [np.array([0.1, 0.1, 0.12]), np.array([0.1, 0.2, 0.6]), np.array([0.6, 0.1, 0.1]), np.array([0.1, 0.45, 0.2])][int(rng.integers(4))]
    if condition == "paint":  # black on pure white: no paper, no noise
        photo.paper, photo.ink = np.ones(photo.alpha.shape + (3,)), np.zeros(3)
    if condition == "alpha":  # drawn on a transparent canvas: colour everywhere the ink's
        rgb = np.broadcast_to(photo.ink, photo.alpha.shape + (3,))
        return np.concatenate([to_uint8(rgb), to_uint8(photo.alpha)[..., None]], axis=-1)
    x = photo.pixels()
    if condition == "dark":  # a drawing app in dark mode: light ink on a dark ground
        ground, ink = rng.uniform(0.05, 0.2), rng.uniform(0.8, 1.0)
        x = np.broadcast_to((ground + (ink - ground) * photo.alpha)[..., None], x.shape)
    effects = {"lighting": lighting, "shadow": shadow, "noise": noise, "blur": blur, "jpeg": jpeg,
               "finger": finger, "rotation": perspective, "lamp": lamp, "glare": glare}  # fmt: skip
    if condition == "desk":
        x = desk(x, rng, photo.alpha)
    elif condition in effects:
        x = effects[condition](x, rng)
    return to_uint8(x)


def _off_centre(digit: np.ndarray, rng: Rng) -> Photo:
    h, w = int(rng.integers(220, 330)), int(rng.integers(220, 330))
    height = min(h, w) * rng.uniform(0.25, 0.4)
    half = 0.7 * height
    centre = (rng.choice([half, h - half]), rng.choice([half, w - half]))
    return Photo(digit, rng, canvas=(h, w), height=height, centre=centre)


def mixed(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """A photo with a random mix of conditions, as a real one has."""
    thickness = int(rng.choice([-1, 0, 0, 2]))
    photo = Photo(digit, rng, thickness=thickness, angle=rng.uniform(-6, 6))
    if rng.random() < 0.4:
        grid(photo, rng)
    if rng.random() < 0.3:
        photo.ink = np.array([0.1, 0.15, 0.6])
    x = photo.pixels()
    for effect, chance in ((lighting, 0.6), (shadow, 0.3), (desk, 0.3), (finger, 0.15), (perspective, 0.5),
                           (blur, 0.3), (noise, 0.4), (jpeg, 0.5)):  # fmt: skip
        if rng.random() < chance:
            x = desk(x, rng, photo.alpha) if effect is desk else effect(x, rng)
    return to_uint8(x)


# new conditions go last: each condition's photos are drawn from (seed, its index)
CONDITIONS = ("clean", "paper", "lighting", "shadow", "noise", "blur", "jpeg", "grid", "colour", "rotation",
              "offcentre", "small", "marker", "pencil", "pen", "dark", "alpha", "desk", "finger", "mixed",
              "lamp", "glare", "paint")  # fmt: skip


# -- the run -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--count", type=int, default=100, help="photos per condition (default 100)")
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated subset of: " + ", ".join(CONDITIONS))
    parser.add_argument("--save", type=Path, help="write the first 5 photos of each condition, and their 28x28 result, here")
    args = parser.parse_args()

    test = load_mnist(default_root(), "test", digitsum_cpu(), download=False)
    digits, labels = test.images[: args.count].numpy(), test.labels[: args.count].numpy()
    zoo = digitsum.load("original")
    print(f"original (shipped weights), first {args.count} MNIST test digits per condition, seed {args.seed}")
    print(f"{'condition':12s}{'accuracy':>10s}{'vs clean':>10s}{'blank':>7s}{'ms/image':>10s}")
    clean = None
    for condition in args.conditions.split(","):
        rng = np.random.default_rng([args.seed, CONDITIONS.index(condition)])
        photos = [make(condition, d, rng) for d in digits]
        started = time.perf_counter()
        given, blank = [], 0
        for i, photo in enumerate(photos):
            try:
                given.append(to_mnist_format(photo))
            except ImageError:
                blank += 1
                given.append(np.zeros((28, 28), np.float32))  # counts as wrong unless the model guesses right
        ms = 1000 * (time.perf_counter() - started) / len(photos)
        predicted = zoo.predict(image=np.stack(given), number=np.zeros(len(given), dtype=np.int64), preprocess=False)
        accuracy = float((predicted["digit"].prediction.numpy() == labels).mean())
        clean = accuracy if clean is None else clean
        print(f"{condition:12s}{accuracy:10.3f}{100 * (accuracy - clean):+9.1f}p{blank:7d}{ms:10.1f}", flush=True)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            for i in range(min(5, len(photos))):
                Image.fromarray(photos[i]).save(args.save / f"{condition}-{i}.png")
                Image.fromarray(to_uint8(given[i])).resize((112, 112), Image.Resampling.NEAREST).save(args.save / f"{condition}-{i}_mnist.png")


def digitsum_cpu():
    import torch

    return torch.device("cpu")


if __name__ == "__main__":
    main()
