"""The notebook's task: one MNIST image and a random number 0-9; predict the digit and the sum."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ...contracts import Batch, Categorical, Classes, Generator, Image, Interface, Params
from ...data import mnist_pixels, shift_images


class SingleDigit(Generator):
    """An MNIST image and a random number 0-9; targets: the digit and digit + number.

    ``draw`` makes raw pixels in [0, 1], moves the training images by up to ``shift`` pixels,
    lets ``corrupt`` change them (subclasses add noise there) and ends with ``encode``,
    which prepares a user's image at prediction time the same way, without either step.
    """

    class Params(Params):
        normalize: bool = Field(True, description="standardise pixels with MNIST's mean and std")
        numbers: int = Field(10, ge=1, le=1000, description="the number input is drawn from 0..numbers-1")
        shift: int = Field(0, ge=0, le=4, description="training augmentation: each training image moved by up to this many pixels (0: none)")

    @classmethod
    def interface(cls, params: Params) -> Interface:
        n = params.numbers
        return Interface(
            {"image": Image(1, 28, 28), "number": Categorical(n)},
            {"digit": Classes(10), "sum": Classes(10 + n - 1)},
        )

    def size(self, split: str) -> int:
        return len(self.data.mnist(split))

    def draw(self, split: str, index: Tensor, rng: torch.Generator) -> Batch:
        digits = self.data.mnist(split)
        labels = digits.labels[index]
        # the number is drawn before any corruption: the order of draws from rng is part of
        # what a seed reproduces
        number = torch.randint(0, self.params.numbers, labels.shape, generator=rng, device=labels.device)
        images = digits.images[index].unsqueeze(1)
        if split == "train" and self.params.shift:
            images = shift_images(images, self.params.shift, rng)  # on the uint8 images: a quarter of the bytes to move
        image = self.corrupt(mnist_pixels(images.squeeze(1)), rng)
        return {**self.encode({"image": image, "number": number}), "digit": labels, "sum": labels + number}

    def corrupt(self, images: Tensor, rng: torch.Generator) -> Tensor:
        """Raw float images ``[B, 1, 28, 28]`` in [0, 1] -> the same, corrupted (here: unchanged).

        Called by ``draw`` only, never at prediction time; all randomness from ``rng``.
        """
        return images

    def describe(self, batch: Batch, i: int) -> str:
        return f"n={int(batch['number'][i])}"
