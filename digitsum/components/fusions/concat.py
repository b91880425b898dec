"""The notebook's network: a LeNet-style CNN whose features are concatenated with the number."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from ...contracts import Batch, Categorical, Fusion, Image, Params, Spec


class ConvFeatures(nn.Module):
    """conv k5 -> ReLU -> max-pool 2, once per channel count; flattened."""

    def __init__(self, in_channels: int, channels: list[int], size: int = 28) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(in_channels, out, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2)]
            in_channels, size = out, (size - 4) // 2
        self.layers = nn.Sequential(*layers)
        self.out_features = in_channels * size * size

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x).flatten(1)


def image_inputs(inputs: Mapping[str, Spec]) -> list[str]:
    return [name for name, spec in inputs.items() if isinstance(spec, Image)]


def categorical_inputs(inputs: Mapping[str, Spec]) -> list[str]:
    return [name for name, spec in inputs.items() if isinstance(spec, Categorical)]


def mlp(in_features: int, hidden: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    return nn.Sequential(*layers)


class Concat(Fusion):
    """Shared CNN over each image, concatenated with each number one-hot, then an MLP."""

    class Params(Params):
        conv_channels: list[int] = Field([6, 12], min_length=1, max_length=2, description="output channels of each 5x5 conv block")
        hidden: list[int] = Field([120, 60], min_length=1, max_length=8, description="widths of the fully connected layers")

        @field_validator("conv_channels", "hidden")
        @classmethod
        def _positive(cls, value: list[int]) -> list[int]:
            if any(v < 1 or v > 4096 for v in value):
                raise ValueError("every size must be from 1 to 4096")
            return value

    @classmethod
    def check(cls, params: Params, inputs: Mapping[str, Spec]) -> list[str]:
        images = [inputs[n] for n in image_inputs(inputs)]
        if not images:
            return ["it needs at least one image input"]
        if any(s != Image(1, 28, 28) for s in images):
            return ["its CNN reads 1x28x28 images"]
        return []

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
