"""single_digit with corrupted images: Gaussian noise, salt-and-pepper and occlusion."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from .single_digit import SingleDigit


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
        """Gaussian noise of std ``sigma``; a fraction ``salt_pepper`` of pixels set to black or
        white; one black ``occlusion`` x ``occlusion`` square at a random place per image. By
        tensor ops, all randomness from ``rng``; the result clamped to [0, 1]."""
        p = self.params
        b, _, h, w = images.shape
        if p.sigma > 0:
            images = images + p.sigma * torch.randn(images.shape, generator=rng, device=images.device)
        if p.salt_pepper > 0:
            u = torch.rand(images.shape, generator=rng, device=images.device)
            images = torch.where(u < p.salt_pepper / 2, 0.0, torch.where(u > 1 - p.salt_pepper / 2, 1.0, images))
        if p.occlusion > 0:
            top = torch.randint(0, h - p.occlusion + 1, (b, 1, 1, 1), generator=rng, device=images.device)
            left = torch.randint(0, w - p.occlusion + 1, (b, 1, 1, 1), generator=rng, device=images.device)
            rows = torch.arange(h, device=images.device).view(1, 1, h, 1)
            cols = torch.arange(w, device=images.device).view(1, 1, 1, w)
            inside = (rows >= top) & (rows < top + p.occlusion) & (cols >= left) & (cols < left + p.occlusion)
            images = images.masked_fill(inside, 0.0)
        return images.clamp(0.0, 1.0)
