"""A multiplication task: an MNIST image and a random number; predict the digit and digit x number."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from digitsum import Batch, Categorical, Classes, Generator, Image, Interface, Params
from digitsum import MNIST_MEAN, MNIST_STD


class ProductDigit(Generator):
    """An MNIST image and a random number; targets: the digit and digit x number."""

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
        image = digits.images[index].unsqueeze(1).float().div_(255.0)
        if self.params.normalize:
            image = image.sub_(MNIST_MEAN).div_(MNIST_STD)
        return {"image": image, "number": number, "digit": labels, "product": labels * number}

    def describe(self, batch: Batch, i: int) -> str:
        return f"x{int(batch['number'][i])}"
