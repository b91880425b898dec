"""Learned number embeddings joined to the CNN's image features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ...contracts import Batch, Spec
from .common import CNNFusion, CNNParams, mlp


class Embedding(CNNFusion):
    """Shared CNN over each image; a learned vector per number, concatenated or added; then an MLP."""

    class Params(CNNParams):
        dim: int = Field(16, ge=1, le=4096, description="embedding size (join = 'concat'; 'add' uses the image feature size)")
        join: Literal["concat", "add"] = Field("concat", description="concat: append the embeddings; add: add them to the image features")

    def __init__(self, params: Params, inputs: Mapping[str, Spec]) -> None:
        super().__init__(params, inputs)
        image_features = self.cnn.out_features * len(self.images)
        dim = params.dim if params.join == "concat" else image_features
        self.embeddings = nn.ModuleDict({name: nn.Embedding(classes, dim) for name, classes in self.numbers.items()})
        joined = image_features + (dim * len(self.numbers) if params.join == "concat" else 0)
        self.mlp = mlp(joined, params.hidden)

    def forward(self, batch: Batch) -> Tensor:
        features = torch.cat([self.cnn(batch[name]) for name in self.images], dim=1)
        embedded = [self.embeddings[name](batch[name]) for name in self.numbers]
        if self.params.join == "concat":
            features = torch.cat([features, *embedded], dim=1)
        else:
            features = features + sum(embedded, torch.zeros_like(features))
        return self.mlp(features)
