"""A picture of a handwritten digit in MNIST's format, made the way MNIST was made.

This module stands alone: it needs numpy and Pillow and nothing else (no digitsum, no torch),
so that the same code that prepares images for ``digitsum predict`` can travel with an exported
model (``digitsum export`` copies this file next to it as ``<model>_preprocess.py``)::

    from model_preprocess import to_mnist_format      # or: import digitsum.mnist_format
    pixels = to_mnist_format("seven.jpg")             # float32 [28, 28] in [0, 1]

MNIST's digits are grey, a light digit on a black ground; each was scaled, keeping its aspect
ratio, to fit a 20x20 box, with anti-aliasing, and placed in a 28x28 field so that its centre of
mass falls on pixel 14. Measured on the 60,000 training images: the longer side of the digit is
20 pixels in all but 13 (19 in those); the centres of mass lie in [13.5, 14.5] in both axes for
all but 2 (mean 14.0), so the shift was a whole number of pixels. :func:`to_mnist_format` does
the same to a photo, a scan or a drawing, in these steps (:func:`steps` gives them as text, with
the settings' values; ``digitsum export`` writes them into the sidecar):

1. **Read** the image (a file in a raster format PIL decodes itself, ``FORMATS``: PNG, JPEG,
   TIFF, WebP...; never EPS, whose reader runs Ghostscript; a PIL image or a numpy array) as
   grey levels in [0, 1]: ITU-R
   601 luma, as PIL's ``convert("L")``; transparent pixels laid on a ground that contrasts with
   the opaque ones. An image whose longer side is above :data:`MAX_SIDE` pixels is reduced by
   the smallest whole factor that brings it under (PIL's ``reduce``: each pixel the mean of a
   block).
2. **Ground.** The *area* the digit is looked for in is at first the whole image. The ground's
   level is a plane (light falls unevenly on paper) fitted to the area's border, a ring
   :data:`BORDER_FRACTION` of the area's shorter side wide (at least 1 pixel). It is the level
   most border pixels share, not their average: starting from the border's median, the plane
   is refitted (least squares) to the border pixels within 3 noise levels of it until those
   stay the same (at most 10 times), so that strokes reaching the border, or a desk along part
   of it, do not pull it. The noise level for this is 1.4826 x the median absolute difference
   between neighbouring border pixels / sqrt(2) (at least :data:`QUANTUM_NOISE`); the ground's
   *noise* is sqrt(pi / 2) x the mean absolute deviation of the refitted pixels from the plane.
3. **Polarity.** Subtract the ground. When, smoothed (reduced to about :data:`POLARITY_SIDE`
   pixels on the shorter side by block means, or by a 3x3 mean), the area's darkest pixel
   is farther below 0 than its brightest is above it, the ink is darker than the ground: negate,
   so that the digit is light on dark (the extremes, not percentiles: a small digit in a big
   photo covers under 1 % of it). In the last area (step 6) the pixels are measured, for this,
   from the local ground: the median of a window :data:`POLARITY_WINDOW` of the area's shorter
   side (the image mirrored beyond its edge), which keeps a shadow's edge and passes over strokes, so that a shadow over
   most of the border does not make the lit paper the ink; when neither side stands out
   :data:`POLARITY_MARGIN` farther, the plane decides. Values below 0, and everything outside
   the area, become 0.
4. **Ink.** The ink level is the 90th percentile of the pixels at or above half the brightest
   one (the strokes, not a speck of glare). Below :data:`BLANK_SIGMAS` times the noise (at least
   :data:`QUANTUM_NOISE`) the image is blank. Each pixel becomes (value / ink level - floor) /
   (1 - floor), clipped to [0, 1], where the floor is :data:`NOISE_SIGMAS` noise levels over the
   ink level (at most 0.5): MNIST's ground is exactly 0 and its strokes reach 1.
5. **Parts.** The pixels above :data:`BOX_THRESHOLD` are grouped into 8-connected parts.
6. **Sheets.** A part may be a sheet of paper (or a frame's inside) holding the digit, not the
   digit. Of the 3 largest parts, the first that is a sheet becomes the area, and steps 2 to 6
   are repeated inside it (at most :data:`MAX_SHEETS` times; when nothing stands out inside,
   the previous look is kept). A part is a sheet when its holes filled (the 4-connected regions
   of other pixels it cuts off from the image's edge) fill at least :data:`SHEET_HULL_FILL` of
   their convex hull, and the largest 8-connected piece of what it encloses that is no part
   (the digit, in the ground's colour): spans at least :data:`SHEET_CONTENT_SPAN` of the part
   (the longer side of their bounding boxes); is a stroke, its width (twice its area over its
   boundary pixels) at most :data:`STROKE_WIDTH` of its span (the inside of a digit's loop is a
   blob); and is less deep than the part: the part's depth (the largest city-block distance
   from its pixels to a pixel outside it, beyond the image's edge counting as inside) at least
   :data:`SHEET_DEPTH_RATIO` times the piece's and 2 pixels more. Then the last area is looked
   at once more (steps 2 to 5), the ground followed pixel by pixel after the polarity: what is
   wider than a stroke, the opening of the values (each pixel the minimum of a square window
   :data:`LOCAL_GROUND` of the area's shorter side, then the maximum of that), is subtracted,
   and the result's median over the area brought to 0 (the opening runs below the noise). A
   shadow's edge or uneven paper is ground; a stroke, narrower than the window, is not. Dark
   ink on light ground is measured as a ratio: light multiplies paper and ink alike, so each
   pixel is also multiplied by the area's median paper level over the local one (the plane
   less the opening; from 1, as brighter paper is rather glare, which adds light, to
   :data:`MAX_PAPER_GAIN` times), and strokes under a shadow come out as bright as the lit
   ones.
7. **Clutter.** A part is a speck when its brightest pixel is no brighter than the noise (at
   least :data:`QUANTUM_NOISE`) x sqrt(2 ln N), N the area's pixels: what Gaussian noise reaches
   somewhere in that many pixels. When a part that is no speck and does not touch the area's edge
   (its pixels 1 step from outside the area or the image) spans at least :data:`MIN_DIGIT_SPAN`
   of the area's shorter side, every part that lies along the edge is clutter (a desk around a
   sheet, a frame, a scan's dark edge): its pixels on the edge at least :data:`EDGE_CONTACT` of
   its span and its span at least :data:`CLUTTER_SPAN` of the area's shorter side, or none of its
   pixels more than :data:`EDGE_HUG` pixels inside the area (a thin line hugging the edge, a
   sheet's edge broken into pieces, whatever its length); so is every
   part touching the edge that is a blob (a finger at the border, meeting it end-on): its stroke
   width at least :data:`EDGE_BLOB_WIDTH` times the widest stroke width of the parts that do
   not touch the edge and span at least :data:`MIN_DIGIT_SPAN`, and at least
   :data:`EDGE_BLOB_SPAN` of its own span. Clutter too, whether it touches the digit or not, is
   what meets the edge as a blob fainter than the ink (a finger's skin against paper): the
   parts' pixels below :data:`EDGE_FAINT` of the ink level, opened by a 5x5 window (a stroke's
   faint rim goes), in pieces touching the edge whose stroke width is at least
   :data:`EDGE_BLOB_SPAN` of their span and whose span is at least :data:`MIN_DIGIT_SPAN` of the
   area's shorter side (a stroke cut by the edge is ink to its core). Specks and
   clutter are dropped (set to 0; with clutter, a margin of :data:`CLUTTER_MARGIN` of the area's
   shorter side, at least 2 pixels, goes too), and steps 4 and 5 redone without them, the new
   parts' specks set to 0. When every part is a speck, the image is blank. The ground's own
   pattern is ground too (a notebook's lines, fainter than ink, whose pieces rise above
   :data:`BOX_THRESHOLD` under uneven light, blur or JPEG): in that redoing the floor of step 4
   is raised to the :data:`GROUND_TEXTURE` quantile of the area's pixels more than 2 pixels from
   every part that reaches :data:`EDGE_FAINT` of the ink level (as a fraction of it; at most 0.5).
8. **Geometry.** Strokes thinner than :data:`MIN_STROKE` of the digit's longer side (a pen's
   line in a large photo) are widened to about that: each pixel becomes the maximum of a square
   window as many pixels wider as they fall short (their width twice the area of the pixels
   above :data:`BOX_THRESHOLD` over their boundary pixels). Crop the bounding box of the pixels above :data:`BOX_THRESHOLD`, scale it into a
   20x20 box keeping its aspect ratio (PIL's anti-aliased Lanczos resampling on float pixels,
   clipped to [0, 1]) and paste it into the 28x28 field so that its centre of mass, rounded to a
   whole pixel, falls on pixel 14. For another field size the box and the centre scale with the
   field (a box of 20/28 of it; the point 14.5/28 of it, in pixel-centre coordinates).

Re-processing MNIST's first 1000 test images this way changes them by 0.003 per pixel on
average; inverted or padded they give the same result, enlarged to 56x56 a result 0.026 away.

Errors (a file that cannot be read, an array that is no image, a blank image) raise
:class:`ImageError`, whose message names the file or the ``name`` given.

Run as a script, it shows what a model is given: ``python mnist_format.py photo.jpg`` writes
``photo_mnist.png`` (the 28x28 result) next to the photo.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "normalize_digit", "read_grey", "read_pixels", "settings", "steps", "to_mnist_format"]

#: MNIST's geometry in its 28x28 field: the box the digit is scaled into, and where (in
#: pixel-centre coordinates, 0-based) its centre of mass is put.
MNIST_SIZE = 28
MNIST_BOX = 20
MNIST_CENTRE = 14.0
#: The border that tells the ground's level: this fraction of the area's shorter side (at least 1 px).
BORDER_FRACTION = 0.05
#: Pixels above this fraction of the ink level are the digit's (its parts, its bounding box):
#: high enough that faint blur around an enlarged digit does not widen the box (tuned on
#: MNIST's test images re-processed, inverted, enlarged and made into photographs).
BOX_THRESHOLD = 0.35
#: Pixels less than this many noise levels above the ground are set to 0, the rest stretched
#: back to [0, 1], as MNIST's ground is exactly 0.
NOISE_SIGMAS = 2.0
#: An image whose ink stands less than this many noise levels above its ground is blank: the
#: brightest of a million Gaussian values is about 5 sigma, and the ink level of pure noise
#: (a percentile of its brightest pixels) under 4.
BLANK_SIGMAS = 5.0
#: The least noise any image stored in 8 bits has: the rounding to 1/255, whose standard
#: deviation is 1/255/sqrt(12). A perfectly flat image (a drawing) is measured as noiseless;
#: with this, ink must still stand about 1.5 grey levels (of 255) out to be a digit.
QUANTUM_NOISE = 1.0 / 255.0 / math.sqrt(12.0)
#: The window under which the ground is followed pixel by pixel (a shadow's edge, uneven paper),
#: as a fraction of the area's shorter side: wider than any stroke of a digit that fills the area.
LOCAL_GROUND = 0.3
#: Dark ink is measured against the local paper level as a ratio (divided out, step 6), raised
#: at most this many times: paper in a deep shadow keeps a quarter of the light.
MAX_PAPER_GAIN = 4.0
#: The polarity's local ground: the median of a window this fraction of the area's shorter side
#: (wider than a digit's loops, so that strokes are fewer than half its pixels)
POLARITY_WINDOW = 0.5
#: ... computed on the area reduced to about this many pixels on its shorter side (block means).
POLARITY_SIDE = 64
#: ... and decides when one side stands out this fraction farther than the other.
POLARITY_MARGIN = 0.1
#: At most this many sheets inside one another (a sheet on a desk, inside a scan's frame).
MAX_SHEETS = 2
#: A sheet, its holes filled, fills at least this fraction of its convex hull (measured: 0.97
#: and more for drawn sheets turned by up to 8 degrees). MNIST's digits, their loops filled, fill
#: about 0.75; of MNIST's 10,000 test images as they are, inverted and enlarged to 56 and 112
#: pixels, 2 of the 40,000 pass all the sheet tests, and as nothing stands out inside them they
#: are read as before.
SHEET_HULL_FILL = 0.95
#: The digit on a sheet spans at least this fraction of the sheet's longer side (a pinhole,
#: a speck of dust on the paper, is not a digit).
SHEET_CONTENT_SPAN = 0.2
#: A sheet is at least this many times deeper than the digit on it, and 2 pixels deeper (its
#: largest city-block distance from a pixel to its own edge: a stroke's half width for a digit,
#: the margins' for a sheet). A digit's ring (a bold 0) is about as deep as the loop it encloses.
SHEET_DEPTH_RATIO = 2.0
#: A stroke's width (twice its area over its boundary pixels) is at most this fraction of its
#: longer side: a digit is strokes, the inside of a digit's loop is a blob.
STROKE_WIDTH = 0.3
#: A part none of whose pixels lies more than this many pixels inside the area hugs its edge:
#: a thin line along it (a sheet's edge), clutter whatever its length.
EDGE_HUG = 2
#: A part touching the area's edge along at least this fraction of its longer side lies along
#: it, as a desk, a frame or a scan's dark edge do (a digit touches it with a stroke's end).
EDGE_CONTACT = 0.5
#: ... and is clutter when its longer side is also at least this fraction of the area's shorter
#: side (a small piece of a digit cut by the edge is none).
CLUTTER_SPAN = 0.25
#: ... or when its stroke width is at least this many times the widest of the digit's parts
#: that do not touch the edge (a finger or a thumb at the border, meeting it end-on).
EDGE_BLOB_WIDTH = 1.5
#: ... and at least this fraction of its own longer side (a blob: a digit's strokes, cut by the
#: edge or not, are about 0.1 of the digit's span, MNIST's 2-3 pixels of 20).
EDGE_BLOB_SPAN = 0.15
#: A blob meeting the area's edge with its pixels below this fraction of the ink level is
#: clutter too, wherever it touches (a finger's skin stands out from paper far less than ink).
EDGE_FAINT = 0.75
#: The ground's pattern reaches this quantile of the area's pixels away from the ink: a
#: notebook's lines cover a few percent of the paper or more.
GROUND_TEXTURE = 0.97
#: Clutter is dropped only when a part remains whose longer side is at least this fraction of
#: the area's shorter side: a digit, not a speck.
MIN_DIGIT_SPAN = 0.1
#: Dropped clutter takes a margin of this fraction of the area's shorter side with it (at least
#: 2 px): the blurred edge of a desk or a frame.
CLUTTER_MARGIN = 0.01
#: Strokes are widened to at least this fraction of the digit's longer side. A pen's line in a
#: photo is far thinner than MNIST's strokes (4 pixels of a 300-pixel digit): scaled into the
#: 20-pixel box it fades to a grey trace that the models read as a 1 or a 7. Of MNIST's 10,000
#: test images (pixels above :data:`BOX_THRESHOLD`) all but 10 have a stroke width (twice the area
#: over the boundary pixels) of at least 0.1 of it (median 0.16); noise makes edges ragged and
#: the measure low (MNIST's digits as noisy photos: 0.09 at the 1st percentile, against 0.11 clean),
#: hence 0.08 (benchmarks/photos.py: 0.06 and 0.08 alike, 0.1 and 0.12 lose a noisy digit).
MIN_STROKE = 0.08
#: An image whose longer side is above this is first reduced by a whole factor (each pixel the
#: mean of a block, PIL's ``reduce``): the digit ends up 20 pixels tall anyway, and a phone's
#: 12-megapixel photo takes 0.5 s instead of 11 s (measured on 2 shared CPU cores).
MAX_SIDE = 1024
#: A file larger than this on its longer side is reduced as soon as it is decoded, before any
#: array of it is made (a 13000 x 13000 PNG of 58 KB would otherwise take gigabytes); below
#: it, only :data:`MAX_SIDE` applies. Camera photos (4032 x 3024) are far below it.
MAX_DECODED_SIDE = 4096
#: The file formats read (PIL's names): raster images PIL decodes itself. Not EPS (PIL hands it
#: to Ghostscript, a PostScript interpreter: a file would run as a program) nor the scientific
#: and vector formats that need another library; a photo, a scan or a drawing comes in one of these.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM", "TGA", "ICO", "PCX", "SGI", "QOI")
#: PIL resampling filter for the scaling (anti-aliased when shrinking).
RESAMPLE = Image.Resampling.LANCZOS

# ITU-R 601-2 luma, the weights of PIL's convert("L"), so files and arrays give the same grey.
_LUMA = (0.299, 0.587, 0.114)
_CHANNELS = (1, 2, 3, 4)  # grey, grey + alpha, RGB, RGBA: channels last ([H, W, C])
# channels first ([C, H, W], torchvision's layout): not 2 ([2, H, W] is two grey images to digitsum)
_CHANNELS_FIRST = (1, 3, 4)


class ImageError(ValueError):
    """An image that cannot be read, is not an image, or holds no digit. The message names the
    file (or the ``name`` given) and says what is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _label(source: Any, name: str | None) -> str:
    """How an error names the image: its file (with the name the caller gave it, when given:
    "input 'image': 3"), else that name."""
    if isinstance(source, (str, os.PathLike)):
        return f"{name}: {source}" if name else str(source)
    return name or "the image"


# -- reading ------------------------------------------------------------------------------------


def read_pixels(source: Any, *, name: str | None = None) -> np.ndarray:
    """Any accepted image as float32 ``[H, W, C]`` in [0, 1], C = 1 (grey) or 3 (colour).

    ``source``: a file path (``str`` or ``Path``; any format PIL reads, the first frame of an
    animation), a PIL image (EXIF orientation applied to both), or a numpy array shaped ``[H, W]``,
    ``[H, W, C]`` with C = 1 to 4 (grey, grey + alpha, RGB, RGBA) or ``[C, H, W]`` with C = 1,
    3 or 4, holding uint8 0-255 (or other integers in 0-255), bools, or floats in [0, 1].
    16-bit files are scaled by 65535, float files by their range. Transparent pixels are laid
    on a ground that contrasts with the opaque ones. ``name`` names a source that is not a file
    in error messages. Raises :class:`ImageError` naming the file (or ``name``).
    """
    label = _label(source, name)
    if isinstance(source, (str, os.PathLike)):
        source = _open(Path(source).expanduser(), label)
    elif isinstance(source, Image.Image):  # opened by the caller: a phone photo is stored sideways all the same
        source = ImageOps.exif_transpose(source)
    if isinstance(source, Image.Image):
        array = _pil_array(source, label)
    elif isinstance(source, np.ndarray):
        array = _array(source, label)
    else:
        raise ImageError(f"{label} is a {type(source).__name__}: give a file path, a PIL image or a numpy array")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{label} is empty: {array.shape[0]}x{array.shape[1]} pixels")
    return _composite(array)


def _open(path: Path, label: str) -> Image.Image:
    if not path.exists():
        if path.is_symlink():  # exists() follows it: a link to nothing, or links in a loop
            raise ImageError(f"{label} is a link that leads to no file (its target is missing, or links lead in a loop)")
        raise ImageError(f"{label}: no such file (an image is given as a file path, a PIL image or an array)")
    if path.is_dir():
        raise ImageError(f"{label} is a directory, not an image file")
    if not path.is_file():  # reading a FIFO or a device would wait, or never end
        raise ImageError(f"{label} is not a regular file (a pipe, a socket or a device): give an image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{label} is an empty file (0 bytes): no image")
    try:
        with warnings.catch_warnings():  # a file between PIL's warning and error sizes: reduced below, at once
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.init()  # a format this Pillow lacks (QOI before 9.5) is left out, not an error
            # closed here, whatever happens: an animation (whose frames are read on demand) or a
            # truncated file would keep it open
            with Image.open(path, formats=[f for f in FORMATS if f in Image.OPEN]) as opened:
                opened.load()
                image = opened.copy()  # the first frame, detached from the file
        factor = math.ceil(max(image.size) / MAX_DECODED_SIDE)
        if factor > 1:
            try:
                image = image.reduce(factor)
            except ValueError:  # a mode reduce does not take (palette, 1-bit): as colour with alpha, the same grey
                image = image.convert("RGBA").reduce(factor)
    except UnidentifiedImageError:
        raise ImageError(f"{label} is not an image of a format read here ({', '.join(FORMATS)})") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{label} is too large to read safely: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt files
        raise ImageError(f"cannot read {label}: {e}") from None
    return ImageOps.exif_transpose(image)  # phone photos are stored sideways with an EXIF tag


def _pil_array(image: Image.Image, label: str) -> np.ndarray:
    """A PIL image as float32 ``[H, W, C]`` in [0, 1], C in (1, 2, 3, 4) (alpha last)."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        # 16/32-bit integer and float images: scaled by their bit depth, floats by their range
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ImageError(f"{label} holds NaN or infinite pixel values")
        if mode.startswith("I;16"):
            values = values / 65535.0
        elif mode == "I":
            values = values / (255.0 if values.max(initial=0) <= 255 else 65535.0)
        elif values.size and (values.min() < 0 or values.max() > 1):
            low, high = values.min(), values.max()
            values = (values - low) / (high - low) if high > low else np.zeros_like(values)
        return np.clip(values, 0, 1).astype(np.float32)[..., None]
    transparent = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info)
    if mode in ("1", "L"):
        target = "L"
    elif mode in ("LA", "La"):
        target = "LA"
    else:
        target = "RGBA" if transparent else "RGB"
    values = np.asarray(image.convert(target), dtype=np.float32) / 255.0
    return values if values.ndim == 3 else values[..., None]


def _array(source: np.ndarray, label: str) -> np.ndarray:
    """A numpy array as float32 ``[H, W, C]`` in [0, 1] (alpha last)."""
    array = _scaled(source, label)
    if array.ndim == 2:
        return array[..., None]
    if array.ndim == 3 and array.shape[-1] in _CHANNELS:
        return array
    if array.ndim == 3 and array.shape[0] in _CHANNELS_FIRST:
        return np.moveaxis(array, 0, -1)
    raise ImageError(
        f"{label} has shape {tuple(source.shape)}: an image is [H, W], [H, W, C] with C = 1 to 4 channels, "
        "or [C, H, W] with C = 1, 3 or 4"
    )


def _scaled(array: np.ndarray, label: str) -> np.ndarray:
    """Pixel values to float32 in [0, 1]: uint8 (or integers in 0-255) / 255, bools, floats in [0, 1]."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ImageError(
                f"{label} holds integers from {array.min()} to {array.max()}: integer pixels must be 0-255 "
                "(or give floats in [0, 1])"
            )
        return array.astype(np.float32) / 255.0
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError(f"{label} holds NaN or infinite pixel values")
        if array.size and (array.min() < -1e-3 or array.max() > 1 + 1e-3):
            raise ImageError(
                f"{label} holds floats from {array.min():.4g} to {array.max():.4g}: float pixels must be in [0, 1] "
                "(give uint8 for 0-255 values)"
            )
        return np.clip(array, 0, 1).astype(np.float32)
    raise ImageError(f"{label} has dtype {array.dtype}: pixels must be uint8 (0-255), bool or float (0-1)")


def _composite(array: np.ndarray) -> np.ndarray:
    """Drop an alpha channel, laying transparent pixels on a ground that contrasts with the
    opaque ones (a black digit drawn on a transparent canvas gets white paper, and vice versa)."""
    channels = array.shape[-1]
    if channels not in (2, 4):
        return array
    colour, alpha = array[..., :-1], array[..., -1:]
    if alpha.min() >= 1.0:
        return colour
    grey = _grey(colour)[..., None]
    weight = float(alpha.sum())
    opaque = float((grey * alpha).sum() / weight) if weight > 0 else 0.0
    ground = 1.0 if opaque < 0.5 else 0.0
    return (colour * alpha + ground * (1 - alpha)).astype(np.float32)


def _grey(pixels: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` (C = 1 or 3) -> ``[H, W]``, with the luma weights PIL uses."""
    if pixels.shape[-1] == 1:
        return pixels[..., 0]
    r, g, b = _LUMA
    return r * pixels[..., 0] + g * pixels[..., 1] + b * pixels[..., 2]


def read_grey(source: Any, *, name: str | None = None) -> np.ndarray:
    """Any accepted image (see :func:`read_pixels`) as grey float32 ``[H, W]`` in [0, 1]."""
    return _grey(read_pixels(source, name=name))


# -- shapes: parts, holes, depth ----------------------------------------------------------------------


def _components(mask: np.ndarray, eight: bool = True) -> tuple[np.ndarray, int]:
    """Connected components of a boolean mask: labels (0 outside, 1..n) and n.

    numpy only (no scipy): the mask's runs along rows are found at once; runs in neighbouring
    rows that touch are joined, and the joins are resolved by propagating the least label."""
    h, w = mask.shape
    if not mask.any():
        return np.zeros(mask.shape, np.int32), 0
    padded = np.zeros((h, w + 2), dtype=np.int8)  # a False column either side: no run spans two rows
    padded[:, 1:-1] = mask
    steps = np.diff(np.concatenate([[0], padded.ravel(), [0]]))
    starts, ends = np.flatnonzero(steps == 1), np.flatnonzero(steps == -1)
    row = starts // (w + 2)
    first = starts - row * (w + 2) - 1  # first column of each run
    stop = ends - row * (w + 2) - 1  # one past its last column
    # runs a (row r) and b (row r + 1) touch when their columns overlap, or meet at a corner (8-connected)
    stride, reach = w + 4, int(eight)
    lo = np.searchsorted(row * stride + stop, (row + 1) * stride + first - reach + 1, "left")
    hi = np.searchsorted(row * stride + first, (row + 1) * stride + stop + reach - 1, "right")
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    a = np.repeat(np.arange(len(first)), counts)
    b = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(total)
    labels = np.arange(len(first))
    while total:
        least = np.minimum(labels[a], labels[b])
        joined = labels.copy()
        np.minimum.at(joined, a, least)
        np.minimum.at(joined, b, least)
        joined = joined[joined[joined]]  # follow the chain of least labels
        if np.array_equal(joined, labels):
            break
        labels = joined
    roots, component = np.unique(labels, return_inverse=True)
    lengths = stop - first
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    pixels = np.repeat(row * w + first, lengths) + np.arange(int(lengths.sum())) - offsets
    out = np.zeros(h * w, dtype=np.int32)
    out[pixels] = np.repeat(component + 1, lengths)
    return out.reshape(h, w), len(roots)


def _distance(mask: np.ndarray, *, edge_inside: bool) -> np.ndarray:
    """City-block distance from each pixel of ``mask`` to the nearest pixel outside it (0 outside).

    ``edge_inside``: beyond the image's edge counts as part of the mask (a sheet running off the
    image is as deep as what is seen of it); otherwise as outside (a ring along the edge)."""
    far = mask.shape[0] + mask.shape[1] + 2
    d = np.where(mask, far, 0).astype(np.int32)
    if not edge_inside:
        d = np.pad(d, 1)  # a ring of outside around the image
    # the city-block distance is separable: along columns, then along rows (as columns of the transpose)
    for axis in (0, 1):
        d = np.ascontiguousarray(d.T) if axis else d
        for i in range(1, d.shape[0]):
            np.minimum(d[i], d[i - 1] + 1, out=d[i])
        for i in range(d.shape[0] - 2, -1, -1):
            np.minimum(d[i], d[i + 1] + 1, out=d[i])
    d = d.T
    return d if edge_inside else d[1:-1, 1:-1]


def _filled(part: np.ndarray) -> np.ndarray:
    """A part with the holes it encloses (what it cuts off from the image's edge)."""
    labels, count = _components(~part, eight=False)  # 4-connected: the dual of 8-connected parts
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    reaches_edge = np.zeros(count + 1, dtype=bool)
    reaches_edge[edge] = True
    return part | ~reaches_edge[labels]


def _box(mask: np.ndarray) -> tuple[slice, slice]:
    """A mask's bounding box as slices (empty ones for an empty mask)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)) if len(rows) else (slice(0, 0), slice(0, 0))


def _sides(mask: np.ndarray) -> tuple[int, int]:
    """The height and width of a mask's bounding box, in pixels ((0, 0) for an empty mask)."""
    return tuple(int(s.stop - s.start) for s in _box(mask))  # type: ignore[return-value]


def _spans(labels: np.ndarray, count: int) -> np.ndarray:
    """The longer side of each component's bounding box (components 1..count)."""
    ys, xs = np.indices(labels.shape)
    flat = labels.ravel()
    spans = []
    for coord in (ys.ravel(), xs.ravel()):
        low, high = np.full(count + 1, coord.max(initial=0)), np.zeros(count + 1, dtype=coord.dtype)
        np.minimum.at(low, flat, coord)
        np.maximum.at(high, flat, coord)
        spans.append(high - low + 1)
    return np.maximum(*spans)[1:]


def _stroke_width(mask: np.ndarray) -> float:
    """Twice the area over the boundary pixels: a stroke's width, half a blob's diameter."""
    return float(_stroke_widths(mask.astype(np.int64), 1)[0])


def _stroke_widths(labels: np.ndarray, count: int) -> np.ndarray:
    """:func:`_stroke_width` of each component (1..count): its boundary pixels those with a
    4-neighbour outside it (beyond the image's edge counting as inside)."""
    p = np.pad(labels, 1, mode="edge")
    inner = (p[:-2, 1:-1] == labels) & (p[2:, 1:-1] == labels) & (p[1:-1, :-2] == labels) & (p[1:-1, 2:] == labels)
    area = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    boundary = np.bincount(labels[~inner].ravel(), minlength=count + 1)[1:]
    return 2.0 * area / np.maximum(boundary, 1)


def _hull_area(mask: np.ndarray) -> float:
    """Area of the convex hull of a mask's pixels (as unit squares)."""
    rows = np.flatnonzero(mask.any(axis=1))
    left = np.argmax(mask[rows], axis=1)
    right = mask.shape[1] - np.argmax(mask[rows, ::-1], axis=1)
    # each row's extreme pixels' outer corners: enough to span the hull
    corners = [np.stack([x, y], axis=1) for x in (left, right) for y in (rows, rows + 1)]
    points = np.unique(np.concatenate(corners).astype(np.float64), axis=0)  # sorted by x, then y
    if len(points) < 3:
        return 0.0

    def half(ordered: np.ndarray) -> list[np.ndarray]:  # Andrew's monotone chain
        chain: list[np.ndarray] = []
        for p in ordered:
            while len(chain) >= 2:
                (ox, oy), (ax, ay) = chain[-2], chain[-1]
                if (ax - ox) * (p[1] - oy) - (ay - oy) * (p[0] - ox) > 0:
                    break
                chain.pop()
            chain.append(p)
        return chain[:-1]

    hull = np.array(half(points) + half(points[::-1]))
    x, y = hull[:, 0], hull[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# -- MNIST's procedure -------------------------------------------------------------------------------


def _pixel_noise(x: np.ndarray, mask: np.ndarray) -> float:
    """The pixel noise on ``mask`` from neighbours' differences (step 2)."""
    steps = [(x[:, 1:] - x[:, :-1])[mask[:, 1:] & mask[:, :-1]], (x[1:] - x[:-1])[mask[1:] & mask[:-1]]]
    steps = np.concatenate(steps)
    return 1.4826 * float(np.median(np.abs(steps))) / math.sqrt(2) if len(steps) else 0.0


def _fit_plane(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The ground's plane at every pixel, fitted to ``mask``, and its noise (step 2)."""
    h, w = x.shape
    ys, xs = np.nonzero(mask)
    values = x[mask]
    design = np.stack([np.ones(len(ys)), ys / max(h - 1, 1), xs / max(w - 1, 1)], axis=1)
    band = 3 * max(_pixel_noise(x, mask), QUANTUM_NOISE)
    coef = np.array([float(np.median(values)), 0.0, 0.0])
    keep = np.zeros(len(values), dtype=bool)
    for _ in range(10):
        near = np.abs(values - design @ coef) <= band
        if near.sum() < 3 or np.array_equal(near, keep):
            break
        keep = near
        coef = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
    residual = values - design @ coef
    # the mean absolute deviation (x sqrt(pi / 2): Gaussian noise's standard deviation), not the
    # median: pixels rounded to whole grey levels make the median a whole number of levels
    noise = math.sqrt(math.pi / 2) * float(np.abs(residual[keep]).mean()) if keep.any() else 0.0
    grid_y, grid_x = np.indices(x.shape)
    return coef[0] + coef[1] * grid_y / max(h - 1, 1) + coef[2] * grid_x / max(w - 1, 1), noise


def _border(area: np.ndarray, ring: int | None = None) -> np.ndarray:
    """The ring along the area's edge, ``ring`` pixels wide (None: the one the ground is measured
    on, BORDER_FRACTION of the area's shorter side, at least 1 pixel)."""
    if ring is None:
        ring = max(1, int(round(BORDER_FRACTION * min(_sides(area)))))
    return area & (_border_distance(area) <= ring)


def _border_distance(area: np.ndarray) -> np.ndarray:
    """Each pixel's city-block distance to outside the area (the image's edge counting as
    outside); 0 outside. A rectangle's own for the whole image (no distance map)."""
    if area.all():
        ys, xs = np.indices(area.shape)
        return 1 + np.minimum(np.minimum(ys, area.shape[0] - 1 - ys), np.minimum(xs, area.shape[1] - 1 - xs))
    return _distance(area, edge_inside=False)


def _part_max(parts: np.ndarray, count: int, values: np.ndarray) -> np.ndarray:
    """The largest of ``values`` over each part's pixels (index 0: outside every part)."""
    peaks = np.zeros(count + 1, dtype=values.dtype)
    np.maximum.at(peaks, parts.ravel(), values.ravel())
    return peaks


def _ink_level(v: np.ndarray) -> float:
    """The strokes' level: most stroke pixels, not the single brightest one (a speck of glare)."""
    peak = float(v.max())
    return float(np.percentile(v[v >= 0.5 * peak], 90)) if peak > 0 else 0.0


def _window_extreme(x: np.ndarray, size: int, op: Any) -> np.ndarray:
    """The minimum (``op`` = np.minimum) or maximum of each pixel's ``size`` x ``size`` window,
    centred, the image's edge repeated beyond it: separable, each axis in log2(size) steps (a
    window of 2p is two of p side by side)."""
    for axis in (0, 1):
        n = x.shape[axis]
        before = size // 2
        m = np.moveaxis(np.pad(x, [(before, size - 1 - before) if a == axis else (0, 0) for a in (0, 1)], mode="edge"), axis, 0)
        p = 1
        while 2 * p <= size:
            m = op(m[:-p], m[p:])
            p *= 2
        x = np.moveaxis(op(m[:n], m[size - p : size - p + n]), 0, axis)
    return x


def _ink_is_dark(v: np.ndarray, area: np.ndarray, *, local: bool) -> bool:
    """Whether the ink is darker than the ground (``v``: the area less the ground's plane): step 3
    of the module's description (``local``: its last area); the window's median from 9 x 9 pixels."""
    box = _box(area)
    x = np.where(area[box], v[box], float(np.median(v[area])))  # outside the area: neither side
    f = max(1, min(x.shape) // POLARITY_SIDE)
    h, w = x.shape[0] // f, x.shape[1] // f
    x = x[: h * f, : w * f].reshape(h, f, w, f).mean(axis=(1, 3))
    inside = area[box][: h * f, : w * f].reshape(h, f, w, f).all(axis=(1, 3))
    if f < 3:
        padded = np.pad(x, 1, mode="edge")
        x = sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0
    if local:
        half = max(1, int(round(POLARITY_WINDOW * min(h, w) / 2)))
        offsets = range(0, 2 * half + 1, max(1, half // 4))
        padded = np.pad(x, half, mode="symmetric")  # mirrored: a desk along the edge stays a minority
        local_x = x - np.median(np.stack([padded[dy : dy + h, dx : dx + w] for dy in offsets for dx in offsets]), axis=0)
        r = local_x[inside] if inside.any() else local_x
        below, above = -float(r.min()), float(r.max())
        if abs(below - above) > POLARITY_MARGIN * max(below, above):
            return below > above
        # about even (strokes near half of a window, as in a digit cropped to its strokes): the plane decides
    r = x[inside] if inside.any() else x
    return -float(r.min()) > float(r.max())


def _opening(v: np.ndarray, area: np.ndarray) -> np.ndarray:
    """What of ``v`` is wider than a stroke, the ground followed pixel by pixel (step 6)."""
    size = max(3, int(round(LOCAL_GROUND * min(_sides(area)))))
    box = _box(area)
    opened = np.zeros_like(v)
    opened[box] = _window_extreme(_window_extreme(v[box], size, np.minimum), size, np.maximum)
    return opened


def _paper_gain(paper: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Per pixel, the area's median paper level over the local one (``paper``), in [1, MAX_PAPER_GAIN] (step 6)."""
    typical = float(np.median(paper[area]))
    return typical / np.clip(paper, typical / MAX_PAPER_GAIN, typical) if typical > 0 else np.ones_like(paper)


class _Level:
    """One look at the area: the ground, the polarity, the ink, its parts."""

    def __init__(self, x: np.ndarray, area: np.ndarray, label: str, *, local: bool = False) -> None:
        ground, noise = _fit_plane(x, _border(area))
        v = np.where(area, x - ground, 0.0)  # the digit's pixels stand out from 0, above or below
        dark = _ink_is_dark(v, area, local=local)
        if dark:  # the ink is darker than the ground: a digit on paper
            v = -v
        if local:  # the ground's level pixel by pixel, not only a plane: shadows, uneven paper
            opened = _opening(v, area)
            v = v - opened
            if dark:  # divided out: ink on paper under less light is darker by a ratio, not an amount
                v = v * _paper_gain(ground - opened, area)
            # the opening runs below the noise by its minima: the ground's pixels (most of the
            # area's, a digit's ink being fewer) brought back to 0
            v = np.where(area, v - np.median(v[area]), 0.0)
        self.area, self.v, self.noise = area, np.clip(v, 0.0, None), noise
        self.least_noise = max(noise, QUANTUM_NOISE)  # what blank and specks are judged against
        self.measure(label)

    def measure(self, label: str, *, texture: bool = False) -> None:
        """The ink level (or blank), the scaled pixels (ink to 1, the ground's noise, up to
        NOISE_SIGMAS of it, to 0; with ``texture``, the ground's pattern too) and the parts."""
        ink = _ink_level(self.v)
        if ink < BLANK_SIGMAS * self.least_noise:
            raise ImageError(
                f"{label} is blank: no digit stands out from its ground (ink {ink:.3f} above the ground, "
                f"whose noise is {self.least_noise:.3f}; needs {BLANK_SIGMAS * self.least_noise:.3f})"
            )
        floor = min(0.5, NOISE_SIGMAS * self.noise / ink)
        self.scale(ink, floor)
        if texture:  # the ground's own pattern (a notebook's lines, the paper's grain) is ground too
            level = self.texture(ink)
            if level > floor:
                self.scale(ink, min(0.5, level))

    def scale(self, ink: float, floor: float) -> None:
        """The pixels scaled (``floor`` of the ink level to 0, the ink level to 1) and their parts."""
        self.scaled = np.clip((self.v / ink - floor) / (1.0 - floor), 0.0, 1.0)
        self.strong = self.scaled > BOX_THRESHOLD
        self.parts, self.count = _components(self.strong)

    def texture(self, ink: float) -> float:
        """How bright, as a fraction of the ink level, the ground's own pattern reaches (step 7)."""
        peaks = _part_max(self.parts, self.count, self.scaled)
        inked = np.isin(self.parts, 1 + np.flatnonzero(peaks[1:] >= EDGE_FAINT)).astype(np.uint8)
        ground = self.area & ~_window_extreme(inked, 5, np.maximum).astype(bool)
        return float(np.quantile(self.v[ground], GROUND_TEXTURE)) / ink if ground.any() else 0.0

    def specks(self) -> np.ndarray:
        """Per part (1..count), whether it is a speck of noise (step 7)."""
        return _part_max(self.parts, self.count, self.v)[1:] <= self.least_noise * math.sqrt(2 * math.log(max(int(self.area.sum()), 2)))

    def sheet(self) -> np.ndarray | None:
        """The largest part that is a sheet holding the digit (its holes filled), or None."""
        if not (_filled(self.strong) & ~self.strong).any():  # no part encloses anything (most digits)
            return None
        sizes = np.bincount(self.parts.ravel(), minlength=self.count + 1)[1:]
        for index in np.argsort(sizes)[::-1][:3]:
            part = self.parts == index + 1
            filled = _filled(part)
            content = filled & ~self.strong  # what the part encloses in the ground's colour
            if not content.any():
                continue
            pieces, count = _components(content)
            largest = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel(), minlength=count + 1)[1:]))
            span = max(_sides(largest))
            if span < SHEET_CONTENT_SPAN * max(_sides(part)) or _stroke_width(largest) > STROKE_WIDTH * span:
                continue
            if filled.sum() < SHEET_HULL_FILL * _hull_area(filled):
                continue
            depth, inner = _distance(part, edge_inside=True).max(), _distance(largest, edge_inside=True).max()
            if depth >= max(SHEET_DEPTH_RATIO * inner, inner + 2):
                return filled
        return None

    def clutter(self, label: str) -> np.ndarray:
        """The pixels to drop: specks of noise, and clutter along the area's edge when a digit
        remains elsewhere. Only specks: the image is blank."""
        count, parts = self.count, self.parts
        index = np.arange(1, count + 1)
        specks = self.specks()
        if specks.all():
            raise ImageError(f"{label} is blank: only specks no brighter than its ground's noise ({self.least_noise:.3f}) reaches stand out")
        edge = _border(self.area, 1)
        contact = np.bincount(parts[edge], minlength=count + 1)[1:]
        spans = _spans(parts, count)
        shorter = min(_sides(self.area))
        inner = ~specks & (contact == 0)
        drop = specks.copy()
        digits = inner & (spans >= MIN_DIGIT_SPAN * shorter)
        if digits.any():
            along = (contact >= EDGE_CONTACT * spans) & (spans >= CLUTTER_SPAN * shorter)
            # a thin line hugging the edge (a sheet's or a desk's edge, broken into pieces) is
            # clutter however short: a digit's piece that close to the edge is a sliver of it
            along |= _part_max(parts, count, _border_distance(self.area))[1:] <= EDGE_HUG
            # a finger or a thumb meets the edge end-on: a blob, much wider than the digit's strokes
            widths = _stroke_widths(parts, count)
            wide = (contact > 0) & (widths >= EDGE_BLOB_WIDTH * widths[digits].max()) & (widths >= EDGE_BLOB_SPAN * spans)
            drop |= ~specks & (along | wide)
        dropped = np.isin(parts, index[drop])
        faint = self.faint_blobs(dropped, edge, shorter)
        dropped |= faint
        if dropped.any() and (faint.any() or not (drop == specks).all()):  # clutter's blurred edge goes with it
            margin = max(2, int(round(CLUTTER_MARGIN * shorter)))
            dropped = _distance(~dropped, edge_inside=True) <= margin
        return dropped


    def faint_blobs(self, dropped: np.ndarray, edge: np.ndarray, shorter: int) -> np.ndarray:
        """The pixels of what meets the area's edge as a blob fainter than the ink (step 7)."""
        faint = self.strong & ~dropped & (self.scaled < EDGE_FAINT)
        cores = _window_extreme(faint.astype(np.uint8), 5, np.minimum).astype(bool)  # a stroke's rim is narrower
        pieces, count = _components(cores)
        if not count:
            return cores
        touching = np.bincount(pieces[edge], minlength=count + 1)[1:] > 0
        spans = _spans(pieces, count)
        blob = touching & (_stroke_widths(pieces, count) >= EDGE_BLOB_SPAN * spans) & (spans >= MIN_DIGIT_SPAN * shorter)
        blobs = np.isin(pieces, 1 + np.flatnonzero(blob)).astype(np.uint8)
        return faint & _window_extreme(blobs, 5, np.maximum).astype(bool)  # the blob's own rim back


def normalize_digit(grey: np.ndarray, height: int = MNIST_SIZE, width: int = MNIST_SIZE, *,
                    name: str = "the image") -> np.ndarray:  # fmt: skip
    """Grey pixels ``[H, W]`` in [0, 1] -> float32 ``[height, width]`` in MNIST's format.

    Steps 2 to 8 of the module's description. Raises :class:`ImageError` (naming ``name``) for
    an image without ink.
    """
    x = np.asarray(grey, dtype=np.float64)
    factor = math.ceil(max(x.shape) / MAX_SIDE)
    if factor > 1:
        x = np.asarray(Image.fromarray(x.astype(np.float32)).reduce(factor), dtype=np.float64)
    level = _Level(x, np.ones(x.shape, dtype=bool), name)
    for _ in range(MAX_SHEETS):
        sheet = level.sheet()
        if sheet is None:
            break
        try:
            level = _Level(x, sheet, name)
        except ImageError:  # nothing stands out on it: it was no sheet holding a digit
            break
    level = _Level(x, level.area, name, local=True)
    level.v[level.clutter(name)] = 0.0
    # the ink level without clutter, and the ground's pattern measured without it (a finger's
    # skin is no pattern); a speck may have crossed the threshold
    level.measure(name, texture=True)
    level.scaled[np.isin(level.parts, 1 + np.flatnonzero(level.specks()))] = 0.0
    x = _widened(level.scaled)

    digit = x[_box(x > BOX_THRESHOLD)]
    box_h, box_w = MNIST_BOX * height / MNIST_SIZE, MNIST_BOX * width / MNIST_SIZE
    scale = min(box_h / digit.shape[0], box_w / digit.shape[1])
    size = (max(1, int(round(digit.shape[1] * scale))), max(1, int(round(digit.shape[0] * scale))))
    scaled = Image.fromarray(digit.astype(np.float32)).resize(size, RESAMPLE)  # mode "F"
    digit = np.clip(np.asarray(scaled, dtype=np.float64), 0.0, 1.0)  # Lanczos rings slightly past the range

    mass = digit.sum()
    ys, xs = np.indices(digit.shape)
    com_y, com_x = (ys * digit).sum() / mass, (xs * digit).sum() / mass
    # MNIST_CENTRE is a pixel centre of the 28-pixel field; the same point of a field of
    # another size, in its own pixel-centre coordinates
    centre_y = (MNIST_CENTRE + 0.5) * height / MNIST_SIZE - 0.5
    centre_x = (MNIST_CENTRE + 0.5) * width / MNIST_SIZE - 0.5
    top, left = int(round(centre_y - com_y)), int(round(centre_x - com_x))
    field = np.zeros((height, width), dtype=np.float32)
    # paste, clipping whatever falls outside the field (a digit whose mass sits at one end)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + digit.shape[0], height), min(left + digit.shape[1], width)
    if y1 > y0 and x1 > x0:
        field[y0:y1, x0:x1] = digit[y0 - top : y1 - top, x0 - left : x1 - left]
    return field


def _widened(x: np.ndarray) -> np.ndarray:
    """``x`` with strokes thinner than :data:`MIN_STROKE` of the digit's longer side widened to
    about that: each pixel the maximum of a square window as much wider as they fall short."""
    ink = x > BOX_THRESHOLD
    short = int(round(MIN_STROKE * max(_sides(ink)) - _stroke_width(ink)))
    return _window_extreme(x, short + 1, np.maximum) if short >= 1 else x


def to_mnist_format(image: Any, height: int = MNIST_SIZE, width: int = MNIST_SIZE, *,
                    name: str | None = None) -> np.ndarray:  # fmt: skip
    """A picture of a digit -> float32 ``[height, width]`` in [0, 1], in MNIST's format.

    ``image``: a file path, a PIL image or a numpy array (see :func:`read_pixels`). A dark
    digit on paper and a light digit on a dark ground give the same result; so do a sheet on a
    desk and a digit in a frame. Feed the result to a model exported by ``digitsum export`` as
    ``[1, 1, height, width]`` (``pixels[None, None]``). Raises :class:`ImageError` naming the
    file (or ``name``) for an unreadable or blank image.
    """
    label = _label(image, name)
    return normalize_digit(read_grey(image, name=name), height, width, name=label)


# -- the procedure in words ------------------------------------------------------------------------

#: The settings the steps name, in the order of their first mention.
SETTINGS = ("MAX_SIDE", "BORDER_FRACTION", "QUANTUM_NOISE", "BLANK_SIGMAS", "NOISE_SIGMAS", "BOX_THRESHOLD",
            "POLARITY_SIDE", "POLARITY_WINDOW", "POLARITY_MARGIN", "MAX_SHEETS", "SHEET_HULL_FILL", "SHEET_CONTENT_SPAN", "STROKE_WIDTH", "SHEET_DEPTH_RATIO",
            "LOCAL_GROUND", "MAX_PAPER_GAIN", "MIN_DIGIT_SPAN", "EDGE_CONTACT", "CLUTTER_SPAN", "EDGE_HUG", "EDGE_BLOB_WIDTH", "EDGE_BLOB_SPAN", "EDGE_FAINT", "CLUTTER_MARGIN", "GROUND_TEXTURE", "MIN_STROKE", "MNIST_SIZE", "MNIST_BOX",
            "MNIST_CENTRE")  # fmt: skip


def settings() -> dict[str, float | int]:
    """The procedure's settings by name (the module's constants)."""
    return {name: globals()[name] for name in SETTINGS}


def steps() -> list[str]:
    """The procedure's steps as this module's description has them, one string each, every
    setting named with its value (``BOX_THRESHOLD (0.35)``)."""
    import re

    text = (__doc__ or "").split("\n1. ", 1)[1].split("\n\n", 1)[0]
    found = re.split(r"\n(?=\d\. )", "1. " + text)
    values = settings()

    def plain(step: str) -> str:
        step = " ".join(step.split())
        step = re.sub(r":data:`(\w+)`", lambda m: f"{m[1]} ({values[m[1]]:.6g})", step)
        step = re.sub(r":\w+:`([^`]+)`", r"\1", step).replace("**", "").replace("``", "")
        return re.sub(r"^\d\. ", "", step)

    return [plain(step) for step in found]


def main(argv: list[str] | None = None) -> int:
    """``python mnist_format.py IMAGE...``: each image in MNIST's format, as ``IMAGE_mnist.png``;
    exit status 2 when an image cannot be read or is blank (the others are still written)."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    if not paths or paths[0] in ("-h", "--help"):
        print("usage: python mnist_format.py IMAGE...  (writes IMAGE_mnist.png: what the model is given)")
        return 0 if paths else 2
    status = 0
    for path in paths:
        try:
            pixels = to_mnist_format(path)
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2  # as digitsum's commands end on a bad input
            continue
        target = Path(path).with_name(Path(path).stem + "_mnist.png")
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(target)
        print(f"{path} -> {target}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
