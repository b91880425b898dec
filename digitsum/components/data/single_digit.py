"""The notebook's task: one MNIST image and a random number 0-9; predict the digit and the sum."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ...contracts import Batch, Categorical, Classes, Generator, Image, Params
from ...data import MNIST_MEAN, MNIST_STD


def mnist_pixels(images: Tensor, normalize: bool) -> Tensor:
    """uint8 ``[B, 28, 28]`` -> float ``[B, 1, 28, 28]``, standardised when asked."""
    x = images.unsqueeze(1).float().div_(255.0)
    return x.sub_(MNIST_MEAN).div_(MNIST_STD) if normalize else x


class SingleDigit(Generator):
    """An MNIST image and a random number 0-9; targets: the digit and digit + number."""

    class Params(Params):
        normalize: bool = Field(True, description="standardise pixels with MNIST's mean and std")
        numbers: int = Field(10, ge=1, le=1000, description="the number input is drawn from 0..numbers-1")

    inputs = {"image": Image(1, 28, 28), "number": Categorical(10)}
    targets = {"digit": Classes(10), "sum": Classes(19)}

    @classmethod
    def interface(cls, params: Params):
        from ...contracts import Interface

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
        number = torch.randint(0, self.params.numbers, labels.shape, generator=rng, device=labels.device)
        return {
            "image": self.pixels(digits.images[index], rng),
            "number": number,
            "digit": labels,
            "sum": labels + number,
        }

    def pixels(self, images: Tensor, rng: torch.Generator) -> Tensor:
        """uint8 ``[B, 28, 28]`` -> the float image input (subclasses corrupt it here)."""
        return mnist_pixels(images, self.params.normalize)

    def describe(self, batch: Batch, i: int) -> str:
        return f"n={int(batch['number'][i])}"
