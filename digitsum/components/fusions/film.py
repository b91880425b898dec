"""FiLM (Perez et al. 2018): the numbers scale and shift the CNN's feature maps."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...contracts import Batch, Categorical, Spec
from .common import CNNFusion, CNNParams, inputs_of, mlp


class Film(CNNFusion):
    """Shared CNN over each image; the numbers scale and shift every conv block's channels (FiLM); needs a number input."""

    @classmethod
    def check(cls, params: CNNParams, inputs: Mapping[str, Spec]) -> list[str]:
        problems = super().check(params, inputs)
        if not inputs_of(Categorical, inputs):
            problems.append("it conditions the images on a number input, and there is none")
        return problems

    def __init__(self, params: CNNParams, inputs: Mapping[str, Spec]) -> None:
        super().__init__(params, inputs)
        condition = sum(self.numbers.values())
        # One linear map per conv block from the numbers' one-hots to (scale, shift) per channel.
        self.film = nn.ModuleList(nn.Linear(condition, 2 * c) for c in params.conv_channels)
        for layer in self.film:  # start as the identity: scale 1, shift 0
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.mlp = mlp(self.cnn.out_features * len(self.images), params.hidden)

    def modulation(self, batch: Batch) -> list[tuple[Tensor, Tensor]]:
        """``(scale, shift)`` per conv block, each ``[B, channels]``."""
        condition = torch.cat([F.one_hot(batch[name], n).float() for name, n in self.numbers.items()], dim=1)
        pairs = []
        for layer in self.film:
            delta_scale, shift = layer(condition).chunk(2, dim=1)
            pairs.append((1 + delta_scale, shift))
        return pairs

    def forward(self, batch: Batch) -> Tensor:
        modulation = self.modulation(batch)
        return self.mlp(torch.cat([self.cnn(batch[name], modulation) for name in self.images], dim=1))
