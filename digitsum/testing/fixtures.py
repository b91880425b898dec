"""Data for tests without the network or the real MNIST: tiny IDX files and random batches."""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..contract_checks import image_shape
from ..contracts import Image, Images
from ..data import MNIST_FILES, mnist_pixels


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (the format MNIST ships in)."""
    magic = {3: 2051, 1: 2049}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def tiny_digit_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 images where digit d is a bright 8x8 block at a place of its own, plus noise.

    Learnable in a few steps, so tests can tell a model that trains from one that does not.
    """
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, d in enumerate(labels):
        row, col = divmod(int(d), 4)
        images[i, 2 + 8 * row : 8 + 8 * row, 2 + 6 * col : 8 + 6 * col] = 255
    return images


def write_tiny_mnist(root: Path, n_train: int = 512, n_test: int = 256, seed: int = 0) -> Path:
    """Write a small, learnable MNIST look-alike in torchvision's layout under ``root``."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images_name, labels_name = MNIST_FILES[split]
        write_idx(raw / images_name, tiny_digit_images(labels, rng))
        write_idx(raw / labels_name, labels.astype(np.uint8))
    return Path(root)


def tiny_overrides(root: Path, batch_size: int) -> list[str]:
    """The ``--set`` overrides that train one epoch on the CPU on tiny MNIST data under ``root``."""
    return ["train.epochs=1", f"data.batch_size={batch_size}", f"data.root={str(root)!r}", "data.download=false", "train.device='cpu'"]


def random_batch(inputs, batch_size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of random tensors matching ``inputs`` (name -> spec), for testing fusions."""
    rng = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(batch_size, *image_shape(spec), generator=rng)
        if isinstance(spec, (Image, Images))
        else torch.randint(0, spec.classes, (batch_size,), generator=rng)
        for name, spec in inputs.items()
    }


def raw_inputs(inputs, images, seed: int = 0) -> dict[str, torch.Tensor]:
    """Raw inputs for ``Generator.encode``: ``images`` (uint8 ``[B, 28, 28]``, e.g. MNIST's) as
    float pixels in [0, 1] resized to each Image spec, and random values for each Categorical.
    An Images input of ``count`` images gets ``images`` rolled by 0, 1, ... places along the batch:
    ``count`` different images per sample."""
    rng = torch.Generator().manual_seed(seed)
    raw = {}
    for name, spec in inputs.items():
        if isinstance(spec, (Image, Images)):
            x = mnist_pixels(images)
            if x.shape[-2:] != (spec.height, spec.width):
                x = F.interpolate(x, size=(spec.height, spec.width), mode="bilinear", antialias=True).clamp_(0, 1)
            x = x.expand(-1, spec.channels, -1, -1)
            if isinstance(spec, Images):
                x = torch.stack([x.roll(k, dims=0) for k in range(spec.count)], dim=1)
            raw[name] = x.contiguous()
        else:
            raw[name] = torch.randint(0, spec.classes, (len(images),), generator=rng)
    return raw
