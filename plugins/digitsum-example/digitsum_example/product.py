"""A multiplication task: an MNIST image and a random number; predict the digit and digit x number."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from digitsum import Batch, Categorical, Classes, Generator, Image, Interface, Params, mnist_pixels


class ProductDigit(Generator):
    """An MNIST image and a random number; targets: the digit and digit x number.

    ``draw`` builds raw inputs (pixels in [0, 1], the number) and prepares them with
    ``encode``, the method prediction uses on a user's inputs; digitsum's default ``encode``
    standardises the image unless ``normalize = false``, which is what this task wants.
    """

    contract = 1  # the digitsum contract version this component was written for

    class Params(Params):
        numbers: int = Field(10, ge=1, le=100, description="the number input is drawn from 0..numbers-1")
        normalize: bool = Field(True, description="standardise pixels with MNIST's mean and std")

    @classmethod
    def interface(cls, params: Params) -> Interface:
        largest = 9 * (params.numbers - 1)
        return Interface(
            inputs={"image": Image(1, 28, 28), "number": Categorical(params.numbers)},
            targets={"digit": Classes(10), "product": Classes(largest + 1)},
        )

    def size(self, split: str) -> int:
        return len(self.data.mnist(split))

    def draw(self, split: str, index: Tensor, rng: torch.Generator) -> Batch:
        digits = self.data.mnist(split)
        labels = digits.labels[index]
        # every random draw comes from `rng`: the engine decides what is reproducible
        number = torch.randint(0, self.params.numbers, labels.shape, generator=rng, device=labels.device)
        inputs = self.encode({"image": mnist_pixels(digits.images[index]), "number": number})
        return {**inputs, "digit": labels, "product": labels * number}

    def describe(self, batch: Batch, i: int) -> str:
        return f"x{int(batch['number'][i])}"
