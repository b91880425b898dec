"""Digit sources: MNIST loaded once into uint8 tensors on the training device.

The IDX files are read directly (``numpy.fromfile``); torchvision is imported only to download.

The root folder is, in order: the recipe's ``data.root``, ``$DIGITSUM_DATA``, or a per-user
cache folder. It holds torchvision's layout, ``<root>/MNIST/raw/<four IDX files>``.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .errors import UserError, clipped
from .files import file_in_the_way
from .paths import user_cache_dir
from .seeding import make_rng, stream_seed

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Pixel statistics of the MNIST training set (pixels in [0, 1]), for input standardisation:
#: ``(x - MNIST_MEAN) / MNIST_STD``.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
_IDX_MAGIC = {3: 2051, 1: 2049}  # number of dimensions -> magic number for uint8 IDX files


def mnist_pixels(images: Tensor, normalize: bool = False) -> Tensor:
    """uint8 images ``[B, H, W]`` (as ``DataContext.mnist`` holds them) -> float ``[B, 1, H, W]``.

    Pixels in ``[0, 1]``, a light digit on a dark ground: the raw form ``Generator.encode``
    takes. With ``normalize``, standardised with :data:`MNIST_MEAN` and :data:`MNIST_STD`.
    """
    x = images.unsqueeze(1).float().div_(255.0)
    return x.sub_(MNIST_MEAN).div_(MNIST_STD) if normalize else x


def shift_images(x: Tensor, most: int, rng: torch.Generator) -> Tensor:
    """Images ``[B, 1, H, W]`` each moved by a random ``(dy, dx)`` in ``[-most, most]``, the
    border filled with 0 (black); one vectorised gather, all randomness from ``rng``."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (most, most, most, most))
    dy, dx = torch.randint(0, 2 * most + 1, (2, b), generator=rng, device=x.device)
    wide = w + 2 * most
    # where each output pixel is read in the padded image, flattened: one grid shared by the
    # batch plus each image's own offset (an index built per pixel cost 6x the time)
    grid = (torch.arange(h, device=x.device)[:, None] * wide + torch.arange(w, device=x.device)).flatten()
    return padded.flatten(1).gather(1, (dy * wide + dx)[:, None] + grid).view(b, 1, h, w)


@dataclass(frozen=True)
class DigitSet:
    """Images ``[N, 28, 28]`` (uint8) and their labels ``[N]`` (int64), on one device."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)


def default_root() -> Path:
    """``$DIGITSUM_DATA`` if set, else the per-user cache folder."""
    env = os.environ.get("DIGITSUM_DATA")
    return Path(env).expanduser() if env else user_cache_dir()


def _missing_files_message(root: Path, reason: str) -> str:
    raw = root / "MNIST" / "raw"
    names = "\n".join(f"  {raw / n}" for pair in MNIST_FILES.values() for n in pair)
    where = "" if root.is_absolute() else f" (a path relative to the working folder, {Path.cwd()})"
    return (
        f"MNIST is not available under {root}{where}: {reason}.\n"
        f"Put the four uncompressed IDX files here:\n{names}\n"
        "or point `data.root` in the recipe (or $DIGITSUM_DATA) at a folder that has them."
    )


def _ensure_mnist(root: Path, download: bool) -> None:
    raw = root / "MNIST" / "raw"
    try:
        missing = [n for pair in MNIST_FILES.values() for n in pair if not (raw / n).is_file()]
    except OSError as e:  # a root too long to look up, say (data.root, $DIGITSUM_DATA)
        shown = str(root) if len(str(root)) <= 80 else f"{str(root)[:60]}…({len(str(root))} characters)"
        raise UserError(f"data folder {shown}: {e.strerror or e}") from None
    if not missing:
        return
    if (blocked := file_in_the_way(raw)) is not None:
        raise UserError(_missing_files_message(root, f"{blocked} is a file, not a folder"))
    # there, but no regular file (a folder, a FIFO, a link to a device or to nothing): named, and
    # never downloaded over (the download would write into it, or block on it)
    if odd := [n for n in missing if os.path.lexists(raw / n)]:
        what = "a folder" if (raw / odd[0]).is_dir() else "a link to nothing" if not (raw / odd[0]).exists() else "not a regular file"
        raise UserError(_missing_files_message(root, f"{raw / odd[0]} is {what}" + (f" (and {len(odd) - 1} more)" if len(odd) > 1 else "")
                                               + "; MNIST's files are regular files: move it away"))  # fmt: skip
    if gzipped := [n for n in missing if (raw / f"{n}.gz").is_file()]:
        raise UserError(_missing_files_message(root, f"{', '.join(f'{n}.gz' for n in gzipped)} "
                                                     f"{'is' if len(gzipped) == 1 else 'are'} there compressed: unpack with gunzip"))  # fmt: skip
    if not download:
        raise UserError(_missing_files_message(root, "download is off: data.download = false"))
    from torchvision.datasets import MNIST

    made = [folder for folder in (raw, raw.parent, root) if not folder.exists()]  # deepest first
    try:
        MNIST(str(root), train=True, download=True)
        MNIST(str(root), train=False, download=True)
    except Exception as e:  # any failure to fetch is the same problem for the user
        for folder in made:  # the folders the attempt created, when it left them empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        detail = clipped(" ".join(str(e).split()), 200)  # torchvision's message spans lines
        raise UserError(_missing_files_message(root, f"download failed: {detail}")) from None


def read_idx(path: Path, ndim: int) -> Tensor:
    """A uint8 IDX file as a uint8 tensor of its shape, its magic number and size checked against
    its header (a :class:`UserError` saying what is wrong).

    The IDX layout is raw uint8 after a short header, so one ``numpy.fromfile`` is the fastest
    load there is (about 10 ms for MNIST's 47 MB training images from the page cache, the same as
    a ``.npy`` copy of them): no parsed cache is kept, and torchvision (2 s to import) is not
    needed to read it.
    """
    import numpy as np

    start = 4 + 4 * ndim
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device would block or never end
            raise UserError(f"{path} is not a regular file")
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            header = file.read(start)
            if len(header) < start:
                raise UserError(f"{path} is truncated: {len(header)} bytes is shorter than an IDX header")
            magic = int.from_bytes(header[:4], "big")
            if magic != _IDX_MAGIC[ndim]:
                raise UserError(
                    f"{path} is not a uint8 IDX file with {ndim} dimension(s): magic number {magic}, "
                    f"expected {_IDX_MAGIC[ndim]}"
                )
            dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
            if ndim == 3 and dims[1:] != [28, 28]:
                raise UserError(f"{path} holds {dims[1]}x{dims[2]} images; MNIST images are 28x28")
            expected = start + math.prod(dims)
            if size != expected:  # checked before reading: a wrong file is never read whole
                raise UserError(
                    f"{path} has {size} bytes but its header ({' x '.join(map(str, dims))}) "
                    f"needs {expected}: the file is truncated or corrupt"
                )
            data = np.fromfile(file, dtype=np.uint8)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    return torch.from_numpy(data.reshape(dims))


def load_mnist(root: Path, split: str, device: torch.device, download: bool = True) -> DigitSet:
    """Load one MNIST split (its two IDX files) into uint8 images and int64 labels on ``device``."""
    _ensure_mnist(root, download)
    images_name, labels_name = MNIST_FILES[split]
    raw = root / "MNIST" / "raw"
    images = read_idx(raw / images_name, 3)
    labels = read_idx(raw / labels_name, 1).long()
    if len(images) != len(labels):
        raise UserError(f"{raw / images_name} has {len(images)} images but {raw / labels_name} has {len(labels)} labels")
    if len(labels) and int(labels.max()) > 9:
        raise UserError(f"{raw / labels_name} holds label {int(labels.max())}; MNIST labels are 0-9")
    return DigitSet(images.to(device), labels.to(device))


@dataclass
class DataContext:
    """What a generator may load data from: a root folder, the device to put it on, and the
    validation split held out of the training data. Each source is loaded once and cached, so
    generators can ask for it freely.

    ``val`` samples of MNIST's training split (``data.val`` in a recipe; 0: none), chosen by
    ``seed``, are held out: a generator that draws a split's samples from ``mnist(split)`` gives
    a validation split that training never sees; one with data of its own uses :meth:`holdout`.
    """

    root: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    download: bool = True
    val: int = 0
    seed: int = 0
    #: Where ``val`` was set ("recipes/x.toml:7"), named when it is too large for the data.
    val_where: str | None = None
    _cache: dict[str, DigitSet] = field(default_factory=dict, repr=False)

    def mnist(self, split: str) -> DigitSet:
        """The MNIST ``split`` ("train", "test", or "val" when ``val`` > 0) as uint8 images and
        int64 labels; "train" without the held-out validation samples."""
        if split not in self._cache:
            if split not in ("train", "test", "val"):
                raise UserError(f"MNIST has no split {split!r}: train, test, or val (data.val > 0)")
            if split == "test" or (split == "train" and not self.val):
                self._cache[split] = load_mnist(self.root, split, self.device, self.download)
            else:
                full = load_mnist(self.root, "train", self.device, self.download)
                train_index, val_index = self.holdout(len(full), "MNIST's training split")
                index = (val_index if split == "val" else train_index).to(self.device)
                self._cache[split] = DigitSet(full.images[index], full.labels[index])
        return self._cache[split]

    def holdout(self, n: int, what: str = "the training split") -> tuple[Tensor, Tensor]:
        """Of ``n`` training samples, the indices kept for training and the ``val`` held out.

        Both sorted int64 CPU tensors, disjoint, together ``0..n-1``; the same for the same
        ``seed``, ``val`` and ``n``. ``what`` names the data in the error when ``val`` >= ``n``.
        """
        if self.val <= 0:
            raise UserError("there is no validation split: set data.val to the number of training samples to hold out")
        if self.val >= n:
            where = f" ({self.val_where})" if self.val_where else ""
            raise UserError(f"data.val = {self.val}{where} leaves no training samples: {what} has {n}")
        order = torch.randperm(n, generator=make_rng(torch.device("cpu"), stream_seed(self.seed, "holdout", n)))
        return order[self.val :].sort().values, order[: self.val].sort().values
