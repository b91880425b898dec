"""The notebook's network: a LeNet-style CNN whose features are concatenated with the number."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ...contracts import Batch, Spec
from .common import CNNFusion, CNNParams, mlp


class Concat(CNNFusion):
    """Shared CNN over each image, concatenated with each number one-hot, then an MLP."""

    def __init__(self, params: CNNParams, inputs: Mapping[str, Spec]) -> None:
        super().__init__(params, inputs)
        joined = self.cnn.out_features * len(self.images) + sum(self.numbers.values())
        self.mlp = mlp(joined, params.hidden)

    def forward(self, batch: Batch) -> Tensor:
        parts = [self.cnn(batch[name]) for name in self.images]
        parts += [F.one_hot(batch[name], n).to(parts[0].dtype) for name, n in self.numbers.items()]
        return self.mlp(torch.cat(parts, dim=1))
