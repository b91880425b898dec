"""Two MNIST images and no number: predict each digit and their sum."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ...contracts import Batch, Classes, Generator, Image, Params
from ...data import mnist_pixels


class TwoImages(Generator):
    """Two MNIST images; targets: each digit and their sum. Pairs are drawn afresh every epoch."""

    class Params(Params):
        normalize: bool = Field(True, description="standardise pixels with MNIST's mean and std")

    inputs = {"image_a": Image(1, 28, 28), "image_b": Image(1, 28, 28)}
    targets = {"digit_a": Classes(10), "digit_b": Classes(10), "sum": Classes(19)}

    def size(self, split: str) -> int:
        return len(self.data.mnist(split))

    def draw(self, split: str, index: Tensor, rng: torch.Generator) -> Batch:
        # Sample i is image_a; its partner is drawn from the rng, so train pairs change every
        # epoch and the test pairs are fixed by the seed (the engine's test streams are).
        digits = self.data.mnist(split)
        partner = torch.randint(0, len(digits), index.shape, generator=rng, device=index.device)
        digit_a, digit_b = digits.labels[index], digits.labels[partner]
        raw = {"image_a": mnist_pixels(digits.images[index]), "image_b": mnist_pixels(digits.images[partner])}
        return {**self.encode(raw), "digit_a": digit_a, "digit_b": digit_b, "sum": digit_a + digit_b}
