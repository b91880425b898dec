"""A user's image in MNIST's format, for a trained model to predict on.

The procedure is :mod:`digitsum.mnist_format` (numpy and Pillow only, so that ``digitsum export``
can copy it next to an exported model). This module adds torch tensors, a model's ``Image`` spec
(other sizes scale the box and the centre with the field, several channels repeat the grey),
batches, and :class:`UserError` naming the file (or the input) for an image that cannot be read
or is blank.

numpy and PIL are imported with this module, torch inside the functions: it is used only to predict.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image as PILImage

from . import mnist_format
from .errors import UserError
from .mnist_format import _label

if TYPE_CHECKING:  # pragma: no cover - this module imports no torch until used
    import torch

    from .contracts import Image

_T = TypeVar("_T")


def _spec(spec: Image | None) -> Image:
    from .contracts import Image

    return Image() if spec is None else spec


def _user_errors(call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``call(*args, **kwargs)``, its :class:`~digitsum.mnist_format.ImageError` a :class:`UserError`
    (the message, which names the file or input, unchanged)."""
    try:
        return call(*args, **kwargs)
    except mnist_format.ImageError as e:
        raise UserError(e.message) from None


def _numpy(source: Any, name: str | None) -> Any:
    """A torch tensor as a numpy array (on the CPU, floats as float32); a path, a numpy array or
    a PIL image as it is; anything else a UserError naming ``name``."""
    if type(source).__module__.startswith("torch"):
        import torch

        if not isinstance(source, torch.Tensor):
            raise UserError(f"{_label(source, name)} is a {type(source).__name__}, not an image")
        tensor = source.detach().cpu()
        return (tensor.float() if tensor.is_floating_point() else tensor).numpy()
    if isinstance(source, (str, os.PathLike, np.ndarray, PILImage.Image)):
        return source
    raise UserError(
        f"{_label(source, name)} is a {type(source).__name__}: give a file path, a PIL image, a numpy array or a torch tensor"
    )


def read_pixels(source: Any, *, name: str | None = None) -> np.ndarray:
    """Any accepted image as float32 ``[H, W, C]`` in [0, 1], C = 1 (grey) or 3 (colour).

    ``source``: what :func:`digitsum.mnist_format.read_pixels` reads (a file path, a PIL image,
    a numpy array), or a torch tensor of the same shapes. ``name`` names a source that is not a
    file in error messages. Raises :class:`UserError` naming the file (or ``name``).
    """
    return _user_errors(mnist_format.read_pixels, _numpy(source, name), name=name)


def read_grey(source: Any, *, name: str | None = None) -> np.ndarray:
    """Any accepted image (see :func:`read_pixels`) as grey float32 ``[H, W]`` in [0, 1]."""
    return _user_errors(mnist_format.read_grey, _numpy(source, name), name=name)


def to_mnist(source: Any, spec: Image | None = None, *, name: str | None = None) -> torch.Tensor:
    """A user's image -> float32 ``[channels, height, width]`` in [0, 1], in MNIST's format.

    ``source``: any form :func:`read_pixels` accepts (file path, PIL image, array, tensor);
    ``spec``: the model's Image input (None: ``Image(1, 28, 28)``). A dark digit on paper and a
    light one on a dark ground give the same result. Raises :class:`UserError` naming the file
    (or ``name``) for an unreadable or blank image.
    """
    import torch

    spec = _spec(spec)
    field = _user_errors(mnist_format.to_mnist_format, _numpy(source, name), spec.height, spec.width, name=name)
    return torch.from_numpy(field)[None].expand(spec.channels, -1, -1).contiguous()


def _stored_size(source: Any) -> tuple[int, int] | None:
    """A file's own height and width, read from its header (a large one is read reduced)."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    try:
        with PILImage.open(os.path.expanduser(source)) as image:
            return image.height, image.width
    except Exception:  # noqa: BLE001 - read_pixels has read it: its size as read will do
        return None


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
        height, width = _stored_size(source) or pixels.shape[:2]
        raise UserError(
            f"{label} is {height}x{width} pixels; the model takes {spec.height}x{spec.width} "
            "(without preprocessing images must already be in MNIST's format and size)"
        )
    if spec.channels == pixels.shape[-1]:
        chw = pixels.transpose(2, 0, 1)
    elif pixels.shape[-1] == 1 or spec.channels == 1:
        chw = mnist_format._grey(pixels)[None].repeat(spec.channels, axis=0)
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
    if ndim == 3 and shape[0] not in (1, spec.channels) and shape[-1] not in mnist_format._CHANNELS:
        return [value[i] for i in range(shape[0])], True
    if ndim in (2, 3):
        return [value], False
    raise UserError(
        f"input '{name}' has shape {tuple(shape)}: give one image ([H, W], [H, W, C], [C, H, W]) or a batch "
        "([B, C, H, W], [B, H, W, C], [B, H, W] or a list of images)"
    )
