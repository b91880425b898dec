"""Helpers for testing digitsum and plugins without the network or the real MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import MNIST_FILES


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
