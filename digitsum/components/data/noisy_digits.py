"""single_digit with corrupted images: Gaussian noise, salt-and-pepper and occlusion."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from .single_digit import SingleDigit


def corrupt(x: Tensor, rng: torch.Generator, sigma: float, salt_pepper: float, occlusion: int) -> Tensor:
    """Corrupt float images ``[B, 1, H, W]`` in ``[0, 1]`` by tensor ops, all randomness from ``rng``.

    Gaussian noise of std ``sigma``; a fraction ``salt_pepper`` of pixels set to black or white;
    one black ``occlusion`` x ``occlusion`` square at a random place per image. Result clamped to [0, 1].
    """
    b, _, h, w = x.shape
    if sigma > 0:
        x = x + sigma * torch.randn(x.shape, generator=rng, device=x.device)
    if salt_pepper > 0:
        u = torch.rand(x.shape, generator=rng, device=x.device)
        x = torch.where(u < salt_pepper / 2, 0.0, torch.where(u > 1 - salt_pepper / 2, 1.0, x))
    if occlusion > 0:
        top = torch.randint(0, h - occlusion + 1, (b, 1, 1, 1), generator=rng, device=x.device)
        left = torch.randint(0, w - occlusion + 1, (b, 1, 1, 1), generator=rng, device=x.device)
        rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
        inside = (rows >= top) & (rows < top + occlusion) & (cols >= left) & (cols < left + occlusion)
        x = x.masked_fill(inside, 0.0)
    return x.clamp(0.0, 1.0)


class NoisyDigits(SingleDigit):
    """single_digit with every batch corrupted: Gaussian noise, salt-and-pepper, occlusion.

    The corruption is a training condition, in ``draw`` only: ``encode`` adds none, so a
    prediction sees the user's clean input.
    """

    class Params(SingleDigit.Params):
        sigma: float = Field(0.3, ge=0, le=5, description="std of Gaussian pixel noise (pixels in 0..1)")
        salt_pepper: float = Field(0.05, ge=0, le=1, description="fraction of pixels set to black or white")
        occlusion: int = Field(6, ge=0, le=28, description="side of a black square hiding part of each image (0: none)")

    def corrupt(self, images: Tensor, rng: torch.Generator) -> Tensor:
        p = self.params
        return corrupt(images, rng, p.sigma, p.salt_pepper, p.occlusion)
