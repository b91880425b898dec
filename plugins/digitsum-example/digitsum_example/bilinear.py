"""Low-rank bilinear fusion: image features and a number embedding multiplied elementwise.

Where concatenation adds the number's contribution to the image's, a bilinear fusion lets
every image feature be scaled by the number (Kim et al. 2017, "Hadamard product for low-rank
bilinear pooling") — the interaction a multiplication task needs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor, nn

from digitsum import Batch, Categorical, Fusion, Image, Params, Spec


class Bilinear(Fusion):
    """Small CNN on the image and an embedding of the number, fused by a low-rank bilinear product."""

    contract = 1

    class Params(Params):
        channels: int = Field(16, ge=1, le=256, description="channels of both 3x3 conv layers")
        rank: int = Field(64, ge=1, le=4096, description="rank of the bilinear product")
        out_features: int = Field(64, ge=1, le=4096, description="features handed to the heads")

    @classmethod
    def check(cls, params: Params, inputs: Mapping[str, Spec]) -> list[str]:
        images = [s for s in inputs.values() if isinstance(s, Image)]
        numbers = [s for s in inputs.values() if isinstance(s, Categorical)]
        if len(images) != 1 or images[0] != Image(1, 28, 28):
            return ["it needs exactly one 1x28x28 image input"]
        if len(numbers) != 1:
            return ["it needs exactly one categorical (number) input"]
        return []

    def __init__(self, params: Params, inputs: Mapping[str, Spec]) -> None:
        super().__init__(params, inputs)
        self.image_key = next(k for k, s in inputs.items() if isinstance(s, Image))
        self.number_key = next(k for k, s in inputs.items() if isinstance(s, Categorical))
        c = params.channels
        self.cnn = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
            nn.Flatten(),
        )  # fmt: skip
        self.image_proj = nn.Linear(c * 7 * 7, params.rank)
        self.number_embed = nn.Embedding(inputs[self.number_key].classes, params.rank)
        self.out = nn.Sequential(nn.Linear(params.rank, params.out_features), nn.ReLU())
        self.out_features = params.out_features

    def forward(self, batch: Batch) -> Tensor:
        image = torch.tanh(self.image_proj(self.cnn(batch[self.image_key])))
        number = torch.tanh(self.number_embed(batch[self.number_key]))
        return self.out(image * number)
