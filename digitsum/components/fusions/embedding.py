"""Learned number embeddings joined to the CNN's image features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ...contracts import Batch, Fusion, Spec
from .common import CNNParams, ConvFeatures, categorical_inputs, image_inputs, image_problems, mlp


class Embedding(Fusion):
    """Shared CNN over each image; a learned vector per number, concatenated or added; then an MLP."""

    class Params(CNNParams):
        dim: int = Field(16, ge=1, le=4096, description="embedding size (join = 'concat'; 'add' uses the image feature size)")
        join: Literal["concat", "add"] = Field("concat", description="concat: append the embeddings; add: add them to the image features")

    @classmethod
    def check(cls, params: Params, inputs: Mapping[str, Spec]) -> list[str]:
        return image_problems(inputs)

    def __init__(self, params: Params, inputs: Mapping[str, Spec]) -> None:
        super().__init__(params, inputs)
        self.images = image_inputs(inputs)
        self.numbers = categorical_inputs(inputs)
        self.cnn = ConvFeatures(1, params.conv_channels)
        image_features = self.cnn.out_features * len(self.images)
        dim = params.dim if params.join == "concat" else image_features
        self.embeddings = nn.ModuleDict({name: nn.Embedding(inputs[name].classes, dim) for name in self.numbers})
        joined = image_features + (dim * len(self.numbers) if params.join == "concat" else 0)
        self.mlp = mlp(joined, params.hidden)
        self.out_features = params.hidden[-1]

    def forward(self, batch: Batch) -> Tensor:
        features = torch.cat([self.cnn(batch[name]) for name in self.images], dim=1)
        embedded = [self.embeddings[name](batch[name]) for name in self.numbers]
        if self.params.join == "concat":
            features = torch.cat([features, *embedded], dim=1)
        else:
            features = features + sum(embedded, torch.zeros_like(features))
        return self.mlp(features)
