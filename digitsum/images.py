"""A user's image in MNIST's format, made the way MNIST was made.

MNIST's digits are grey, a light digit on a black ground; each was scaled, keeping its aspect
ratio, to fit a 20x20 box, with anti-aliasing, and placed in a 28x28 field so that its centre of
mass falls on pixel 14. Measured on the 60,000 training images: the longer side of the digit is
20 pixels in all but 13 (19 in those); the centres of mass lie in [13.5, 14.5] in both axes for
all but 2 (mean 14.0), so the shift was a whole number of pixels. :func:`to_mnist` does the
same to any image:

1. read it (a file, a PIL image, a numpy array or a torch tensor) as grey pixels in [0, 1];
2. fit the ground's level to the border (a plane: light falls unevenly on paper), and find the
   polarity: when the ink is darker than the ground, invert, so the digit is light on dark;
3. subtract the ground, scale the ink to 1 (MNIST's strokes reach 255) and clear what is left
   of the ground's noise (its level measured on the border);
4. crop the digit's bounding box, scale it into a 20x20 box keeping its aspect ratio (PIL's
   anti-aliased Lanczos resampling) and paste it in a 28x28 field by its centre of mass.

Re-processing MNIST's first 1000 test images this way changes them by 0.003 per pixel on
average; inverted or padded they give the same result, enlarged to 56x56 a result 0.026 away.

For an ``Image`` spec of another size the 20-pixel box and the centre scale with the field;
for several channels the grey image is repeated. :func:`as_image` converts an image already in
MNIST's format without changing its pixels (``preprocess=False`` in prediction), and
:func:`image_batch` takes one image or a batch in any of these forms.

numpy, PIL and torch are imported inside the functions: this module is used only to predict.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover - this module imports no torch, numpy or PIL until used
    import numpy as np
    import torch

    from .contracts import Image

#: MNIST's geometry in its 28x28 field: the box the digit is scaled into, and where (in
#: pixel-centre coordinates, 0-based) its centre of mass is put.
MNIST_SIZE = 28
MNIST_BOX = 20
MNIST_CENTRE = 14.0
#: The border that tells the ground's level: this fraction of the shorter side (at least 1 px).
BORDER_FRACTION = 0.05
#: Below this contrast between ink and ground (pixels in [0, 1]) an image is blank.
MIN_CONTRAST = 0.08
#: Pixels above this fraction of the ink level make the digit's bounding box: high enough that
#: faint blur around an enlarged digit does not widen it (tuned on MNIST's test images
#: re-processed, inverted, enlarged and made into photographs).
BOX_THRESHOLD = 0.35
#: The ground's noise (paper texture, sensor noise, uneven light) is measured on the border, as
#: 1.4826 x its median absolute deviation (the standard deviation of Gaussian noise, robust to
#: the strokes that reach the border); pixels less than this many of it above the ground are
#: set to 0 and the rest stretched back to [0, 1], as MNIST's ground is exactly 0.
NOISE_SIGMAS = 2.0
#: An image whose ink stands less than this many noise levels above its ground is blank.
BLANK_SIGMAS = 5.0
#: PIL resampling filter for the scaling (anti-aliased when shrinking).
RESAMPLE = "LANCZOS"

# ITU-R 601-2 luma, the weights of PIL's convert("L"), so files and arrays give the same grey.
_LUMA = (0.299, 0.587, 0.114)
_CHANNELS = (1, 2, 3, 4)  # grey, grey + alpha, RGB, RGBA: channels last ([H, W, C])
# channels first ([C, H, W], torchvision's layout): not 2, so that [2, H, W] is two grey images
_CHANNELS_FIRST = (1, 3, 4)


def _spec(spec: Image | None) -> Image:
    from .contracts import Image

    return Image() if spec is None else spec


def _label(source: Any, name: str | None) -> str:
    """How an error names the image: its file, else the name the caller gave it."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return name or "the image"


# -- reading ------------------------------------------------------------------------------------


def read_pixels(source: Any, *, name: str | None = None) -> np.ndarray:
    """Any accepted image as float32 ``[H, W, C]`` in [0, 1], C = 1 (grey) or 3 (colour).

    ``source``: a file path (``str`` or ``Path``; any format PIL reads, EXIF orientation
    applied, the first frame of an animation), a PIL image, or a numpy array or torch tensor
    shaped ``[H, W]``, ``[H, W, C]`` with C = 1 to 4 (grey, grey + alpha, RGB, RGBA) or
    ``[C, H, W]`` with C = 1, 3 or 4, holding uint8 0-255 (or other integers in 0-255),
    bools, or floats in [0, 1]. 16-bit files are scaled by 65535, float files by their range.
    Transparent pixels are laid on a ground that contrasts with the opaque ones. ``name``
    names a source that is not a file in error messages. Raises :class:`UserError` naming
    the file (or ``name``) and what is wrong.
    """
    from PIL import Image as PILImage

    label = _label(source, name)
    if isinstance(source, (str, os.PathLike)):
        source = _open(Path(source).expanduser(), label)
    if isinstance(source, PILImage.Image):
        array = _pil_array(source, label)
    else:
        array = _array(source, label)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise UserError(f"{label} is empty: {array.shape[0]}x{array.shape[1]} pixels")
    return _composite(array)


def _open(path: Path, label: str):
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    if not path.exists():
        raise UserError(f"{label}: no such file")
    if path.is_dir():
        raise UserError(f"{label} is a directory, not an image file")
    try:
        image = PILImage.open(path)
        image.load()
    except UnidentifiedImageError:
        raise UserError(f"{label} is not an image (PIL cannot identify it)") from None
    except PILImage.DecompressionBombError as e:
        raise UserError(f"{label} is too large to read safely: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt files
        raise UserError(f"cannot read {label}: {e}") from None
    return ImageOps.exif_transpose(image)  # phone photos are stored sideways with an EXIF tag


def _pil_array(image, label: str) -> np.ndarray:
    """A PIL image as float32 ``[H, W, C]`` in [0, 1], C in (1, 2, 3, 4) (alpha last)."""
    import numpy as np

    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        # 16/32-bit integer and float images: scaled by their bit depth, floats by their range
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            values = values / 65535.0
        elif mode == "I":
            values = values / (255.0 if values.max(initial=0) <= 255 else 65535.0)
        elif values.size and (values.min() < 0 or values.max() > 1):
            low, high = values.min(), values.max()
            values = (values - low) / (high - low) if high > low else np.zeros_like(values)
        if not np.isfinite(values).all():
            raise UserError(f"{label} holds NaN or infinite pixel values")
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


def _array(source: Any, label: str) -> np.ndarray:
    """A numpy array or torch tensor as float32 ``[H, W, C]`` in [0, 1] (alpha last)."""
    import numpy as np

    if type(source).__module__.startswith("torch"):
        import torch

        if not isinstance(source, torch.Tensor):
            raise UserError(f"{label} is a {type(source).__name__}, not an image")
        tensor = source.detach().cpu()
        source = (tensor.float() if tensor.is_floating_point() else tensor).numpy()
    if not isinstance(source, np.ndarray):
        raise UserError(
            f"{label} is a {type(source).__name__}: give a file path, a PIL image, a numpy array or a torch tensor"
        )
    array = _scaled(source, label)
    if array.ndim == 2:
        return array[..., None]
    if array.ndim == 3 and array.shape[-1] in _CHANNELS:
        return array
    if array.ndim == 3 and array.shape[0] in _CHANNELS_FIRST:
        return np.moveaxis(array, 0, -1)
    raise UserError(
        f"{label} has shape {tuple(source.shape)}: an image is [H, W], [H, W, C] with C = 1 to 4 channels, "
        "or [C, H, W] with C = 1, 3 or 4"
    )


def _scaled(array: np.ndarray, label: str) -> np.ndarray:
    """Pixel values to float32 in [0, 1]: uint8 (or integers in 0-255) / 255, bools, floats in [0, 1]."""
    import numpy as np

    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise UserError(
                f"{label} holds integers from {array.min()} to {array.max()}: integer pixels must be 0-255 "
                "(or give floats in [0, 1])"
            )
        return array.astype(np.float32) / 255.0
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise UserError(f"{label} holds NaN or infinite pixel values")
        if array.size and (array.min() < -1e-3 or array.max() > 1 + 1e-3):
            raise UserError(
                f"{label} holds floats from {array.min():.4g} to {array.max():.4g}: float pixels must be in [0, 1] "
                "(give uint8 for 0-255 values)"
            )
        return np.clip(array, 0, 1).astype(np.float32)
    raise UserError(f"{label} has dtype {array.dtype}: pixels must be uint8 (0-255), bool or float (0-1)")


def _composite(array: np.ndarray) -> np.ndarray:
    """Drop an alpha channel, laying transparent pixels on a ground that contrasts with the
    opaque ones (a black digit drawn on a transparent canvas gets white paper, and vice versa)."""
    import numpy as np

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


# -- MNIST's procedure ---------------------------------------------------------------------------


def _resample():
    from PIL import Image as PILImage

    return getattr(PILImage.Resampling, RESAMPLE)


def _border_mask(shape: tuple[int, int]) -> np.ndarray:
    import numpy as np

    h, w = shape
    ring = max(1, int(round(BORDER_FRACTION * min(h, w))))
    mask = np.zeros(shape, dtype=bool)
    mask[:ring], mask[-ring:], mask[:, :ring], mask[:, -ring:] = True, True, True, True
    return mask


def _ground(x: np.ndarray) -> np.ndarray:
    """The ground's level at every pixel: a plane fitted to the border (light falling unevenly
    on the paper), refitted once without the border pixels far from it (strokes reaching the
    border). A flat ground, MNIST's, gives its own level."""
    import numpy as np

    mask = _border_mask(x.shape)
    ys, xs = np.nonzero(mask)
    values = x[mask]
    design = np.stack([np.ones_like(ys, dtype=np.float64), ys / max(x.shape[0] - 1, 1), xs / max(x.shape[1] - 1, 1)], axis=1)
    keep = np.ones(len(values), dtype=bool)
    for _ in range(2):
        coef = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
        residual = values - design @ coef
        centre = np.median(residual[keep])
        spread = 1.4826 * np.median(np.abs(residual[keep] - centre))
        refit = np.abs(residual - centre) <= max(3 * spread, 1e-3)
        if refit.sum() < 3:  # nothing like a ground on the border: keep the fit of all of it
            break
        keep = refit
    grid_y, grid_x = np.indices(x.shape)
    return coef[0] + coef[1] * grid_y / max(x.shape[0] - 1, 1) + coef[2] * grid_x / max(x.shape[1] - 1, 1)


def normalize_digit(grey: np.ndarray, *, height: int = MNIST_SIZE, width: int = MNIST_SIZE, label: str = "the image") -> np.ndarray:
    """Grey pixels ``[H, W]`` in [0, 1] -> float32 ``[height, width]`` in MNIST's format.

    Light digit on a black ground, ground removed, ink scaled to 1, the digit's bounding box
    scaled into a box of 20/28 of the field keeping its aspect ratio, its centre of mass on
    pixel 14/28 of the field (rounded to a whole pixel, as MNIST's). Raises
    :class:`UserError` (naming ``label``) for an image without ink.
    """
    import numpy as np
    from PIL import Image as PILImage

    x = np.asarray(grey, dtype=np.float64)
    x = x - _ground(x)  # the digit's pixels stand out from 0, above (light ink) or below (dark ink)
    border = x[_border_mask(x.shape)]
    noise = 1.4826 * float(np.median(np.abs(border)))
    low, high = np.percentile(x, [1, 99])
    if -low > high:  # the ink is darker than the ground: a digit on paper
        x = -x
    x = np.clip(x, 0.0, None)
    peak = float(x.max())
    # the ink level: most stroke pixels, not the single brightest one (a speck of glare)
    ink = float(np.percentile(x[x >= 0.5 * peak], 90)) if peak > 0 else 0.0
    # Blank: too faint, or no brighter than the ground's own noise gets somewhere in a large
    # image (the largest of a million Gaussian values is about 5 sigma, and the strokes' level
    # of pure noise under 4)
    if peak < MIN_CONTRAST or ink < BLANK_SIGMAS * noise:
        raise UserError(
            f"{label} is blank: no digit stands out from its ground (ink {ink:.3f} above the ground, "
            f"whose noise is {noise:.3f}; needs {max(MIN_CONTRAST, BLANK_SIGMAS * noise):.3f})"
        )
    floor = min(0.5, NOISE_SIGMAS * noise / ink)
    x = np.clip((x / ink - floor) / (1.0 - floor), 0.0, 1.0)

    rows = np.flatnonzero((x > BOX_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((x > BOX_THRESHOLD).any(axis=0))
    digit = x[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box_h, box_w = MNIST_BOX * height / MNIST_SIZE, MNIST_BOX * width / MNIST_SIZE
    scale = min(box_h / digit.shape[0], box_w / digit.shape[1])
    size = (max(1, int(round(digit.shape[1] * scale))), max(1, int(round(digit.shape[0] * scale))))
    scaled = PILImage.fromarray(digit.astype(np.float32)).resize(size, _resample())  # mode "F"
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


def to_mnist(source: Any, spec: Image | None = None, *, name: str | None = None) -> torch.Tensor:
    """A user's image -> float32 ``[channels, height, width]`` in [0, 1], in MNIST's format.

    ``source``: any form :func:`read_pixels` accepts (file path, PIL image, array, tensor);
    ``spec``: the model's Image input (None: ``Image(1, 28, 28)``; other sizes scale the
    20-pixel box and the centre with the field, several channels repeat the grey). A photo of a dark
    digit on paper and a light digit on a dark ground give the same result. Raises
    :class:`UserError` naming the file (or ``name``) for an unreadable or blank image.
    """
    import torch

    spec = _spec(spec)
    label = _label(source, name)
    grey = read_grey(source, name=name)
    field = normalize_digit(grey, height=spec.height, width=spec.width, label=label)
    return torch.from_numpy(field)[None].expand(spec.channels, -1, -1).contiguous()


def as_image(source: Any, spec: Image | None = None, *, name: str | None = None) -> torch.Tensor:
    """An image already in MNIST's format and the spec's size (None: ``Image(1, 28, 28)``) ->
    float32 ``[C, H, W]`` in [0, 1].

    Only the form changes (dtype, layout, channels: grey is repeated to the spec's channels,
    colour becomes grey for a one-channel spec); the pixels are not. Raises
    :class:`UserError` when the size differs from the spec's or the channels cannot match.
    """
    import torch

    spec = _spec(spec)
    label = _label(source, name)
    pixels = read_pixels(source, name=name)
    if pixels.shape[:2] != (spec.height, spec.width):
        raise UserError(
            f"{label} is {pixels.shape[0]}x{pixels.shape[1]} pixels; the model takes {spec.height}x{spec.width} "
            "(without preprocessing images must already be in MNIST's format and size)"
        )
    if spec.channels == pixels.shape[-1]:
        chw = pixels.transpose(2, 0, 1)
    elif pixels.shape[-1] == 1 or spec.channels == 1:
        chw = _grey(pixels)[None].repeat(spec.channels, axis=0)
    else:
        raise UserError(f"{label} has {pixels.shape[-1]} channels; the model takes {spec.channels}")
    return torch.from_numpy(chw.copy())


def image_batch(value: Any, spec: Image | None = None, *, preprocess: bool = True, name: str = "image") -> tuple[torch.Tensor, bool]:
    """One image or a batch -> (float32 ``[B, C, H, W]`` in [0, 1], whether it was a batch).

    A batch is a list or tuple of images (each in any form :func:`read_pixels` accepts), a
    4-D array or tensor ``[B, C, H, W]`` or ``[B, H, W, C]``, or a 3-D one ``[B, H, W]``. A 3-D
    array is one image when its last axis has 1 to 4 entries (``[H, W, C]``) or its first has
    1 or ``spec.channels`` entries (``[C, H, W]``, torchvision's layout); otherwise it is a
    batch of grey images. So for a grey model ``[3, 28, 28]`` is three images (as MNIST's
    tensors are), and an RGB image is given as ``[28, 28, 3]``, a file or a PIL image. Each
    image goes through :func:`to_mnist` (``preprocess``) or :func:`as_image`. Errors name
    ``name`` and the item's index.
    """
    import torch

    spec = _spec(spec)
    convert = to_mnist if preprocess else as_image
    items, batched = _split_batch(value, spec, name)
    if batched and not items:
        raise UserError(f"input '{name}' is an empty batch")
    tensors = [convert(item, spec, name=f"input '{name}'" + (f" [{i}]" if batched else "")) for i, item in enumerate(items)]
    return torch.stack(tensors), batched


def _split_batch(value: Any, spec: Image, name: str) -> tuple[Sequence[Any], bool]:
    if isinstance(value, (list, tuple)):
        return list(value), True
    shape = getattr(value, "shape", None)
    if shape is None or isinstance(value, (str, os.PathLike)):
        return [value], False
    ndim = len(shape)
    if ndim == 4:
        return [value[i] for i in range(shape[0])], True
    if ndim == 3 and shape[0] not in (1, spec.channels) and shape[-1] not in _CHANNELS:
        return [value[i] for i in range(shape[0])], True
    if ndim in (2, 3):
        return [value], False
    raise UserError(
        f"input '{name}' has shape {tuple(shape)}: give one image ([H, W], [H, W, C], [C, H, W]) or a batch "
        "([B, C, H, W], [B, H, W, C], [B, H, W] or a list of images)"
    )
