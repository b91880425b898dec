"""The notebook's network: a LeNet-style CNN whose features are concatenated with the number."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ...contracts import Batch, Fusion, Spec
from .common import CNNParams, ConvFeatures, categorical_inputs, image_inputs, image_problems, mlp


class Concat(Fusion):
    """Shared CNN over each image, concatenated with each number one-hot, then an MLP."""

    class Params(CNNParams):
        pass

    @classmethod
    def check(cls, params: Params, inputs: Mapping[str, Spec]) -> list[str]:
        return image_problems(inputs)

    def __init__(self, params: Params, inputs: Mapping[str, Spec]) -> None:
        super().__init__(params, inputs)
        self.images = image_inputs(inputs)
        self.numbers = {name: inputs[name].classes for name in categorical_inputs(inputs)}
        self.cnn = ConvFeatures(1, params.conv_channels)
        joined = self.cnn.out_features * len(self.images) + sum(self.numbers.values())
        self.mlp = mlp(joined, params.hidden)
        self.out_features = params.hidden[-1]

    def forward(self, batch: Batch) -> Tensor:
        parts = [self.cnn(batch[name]) for name in self.images]
        parts += [F.one_hot(batch[name], n).to(parts[0].dtype) for name, n in self.numbers.items()]
        return self.mlp(torch.cat(parts, dim=1))
