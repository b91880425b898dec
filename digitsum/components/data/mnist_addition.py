"""MNIST addition, the neurosymbolic benchmark: two N-digit numbers written in MNIST images, and their sum."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from ...contracts import Batch, Digits, Generator, Images, Interface, Params
from ...data import mnist_pixels, shift_images
from ..digits import add_digits


class MnistAddition(Generator):
    """Two N-digit numbers, one MNIST image per digit; target: their sum's N + 1 digits.

    The benchmark of Manhaeve et al. (2018, N = 1) in its multi-digit form (DeepStochLog,
    A-NeSI): inputs ``a`` and ``b``, each ``[B, N, 1, 28, 28]``, a number's digits, most
    significant first; target ``sum``: ``Digits(N + 1)``, most significant first (the leading
    digit is the last carry); target ``digits``: the 2N digits shown (``a``'s, then ``b``'s),
    *measured* only (never trained on) with ``supervision = "sum"``, the benchmark's.

    Pairing as in the literature: each split's images are shuffled once (``pairing_seed``) and
    cut into groups of 2N, each image used once: 60000 / (2N) training examples, 10000 / (2N)
    test ones, the same for every run and epoch. ``pairing = "redrawn"`` draws new training
    groups at every step instead: not the benchmark's setting, report it apart. ``shift``
    augments the training images only (never the test split, never ``encode``).
    """

    class Params(Params):
        n: int = Field(1, ge=1, le=1000, description="digits per number (N); 2N images per example")
        supervision: Literal["sum", "digits"] = Field(
            "sum",
            description="sum: only the sum is a training label (the benchmark), the digits are measured only; "
            "digits: the digits may be trained on too (for comparison)",
        )
        pairing: Literal["fixed", "redrawn"] = Field(
            "fixed", description="fixed: each image used once, groups fixed by pairing_seed (the benchmark); redrawn: new training groups every step"
        )
        pairing_seed: int = Field(0, ge=0, description="seed of the shuffle that groups the images into examples")
        shift: int = Field(0, ge=0, le=4, description="training augmentation: each training image moved by up to this many pixels (0: none)")
        normalize: bool = Field(True, description="standardise pixels with MNIST's mean and std")

    @classmethod
    def interface(cls, params: Params) -> Interface:
        n = params.n
        return Interface(
            {"a": Images(n), "b": Images(n)},
            {"sum": Digits(n + 1), "digits": Digits(2 * n)},
            measured=frozenset({"digits"}) if params.supervision == "sum" else frozenset(),
        )

    def __init__(self, params: Params, data) -> None:
        super().__init__(params, data)
        self._group_cache: dict[str, Tensor] = {}

    def _groups(self, split: str) -> Tensor:
        """``[examples, 2N]`` image indices of ``split``: a fixed shuffle cut into groups of 2N."""
        cache = self._group_cache
        if split not in cache:
            digits = self.data.mnist(split)
            width = 2 * self.params.n
            rng = torch.Generator().manual_seed(self.params.pairing_seed)
            order = torch.randperm(len(digits), generator=rng)
            usable = len(digits) // width * width  # the remainder (fewer than 2N images) is left out
            cache[split] = order[:usable].view(-1, width).to(digits.labels.device)
        return cache[split]

    def size(self, split: str) -> int:
        return len(self._groups(split))

    def draw(self, split: str, index: Tensor, rng: torch.Generator) -> Batch:
        digits = self.data.mnist(split)
        n = self.params.n
        if split == "train" and self.params.pairing == "redrawn":
            images = torch.randint(0, len(digits), (len(index), 2 * n), generator=rng, device=index.device)
        else:
            images = self._groups(split)[index]
        labels = digits.labels[images]  # [B, 2N]
        pixels = mnist_pixels(digits.images[images.flatten()])
        if split == "train" and self.params.shift:
            pixels = shift_images(pixels, self.params.shift, rng)
        pixels = pixels.view(len(index), 2 * n, 1, 28, 28)
        raw = {"a": pixels[:, :n], "b": pixels[:, n:]}
        return {**self.encode(raw), "sum": add_digits(labels[:, :n], labels[:, n:]), "digits": labels}

    def describe(self, batch: Batch, i: int) -> str:
        n = self.params.n
        shown = "".join(str(int(d)) for d in batch["digits"][i])
        if n > 6:
            return ""
        return f"{shown[:n]} + {shown[n:]}"
