"""Building blocks shared by the built-in fusion backbones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from ...contracts import Categorical, Fusion, Image, Params, Spec

#: The image every built-in CNN reads.
MNIST_IMAGE = Image(1, 28, 28)


class ConvFeatures(nn.Module):
    """conv k5 -> ReLU -> max-pool 2, once per channel count; flattened.

    Computed as conv -> max-pool -> ReLU: the same function and gradients (ReLU never reorders
    values), with the ReLU on a quarter of the values (measured: 2-17 % faster training steps).
    The weights are channels-last whatever ``train.channels_last`` says: ATen's max-pool is
    several times faster in that layout on the CPU (docs/performance.md). ``modulation`` (a
    ``(scale, shift)`` pair of ``[B, channels]`` tensors per block) is applied before each ReLU,
    as FiLM conditions.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], size: int = 28) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(in_channels, out, kernel_size=5), nn.MaxPool2d(2), nn.ReLU()]
            in_channels, size = out, (size - 4) // 2
        self.layers = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.channels = list(channels)
        self.out_features = in_channels * size * size

    def forward(self, x: Tensor, modulation: Sequence[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        if modulation is None:
            return self.layers(x).flatten(1)
        for block, (scale, shift) in enumerate(modulation):
            conv, pool, relu = self.layers[3 * block : 3 * block + 3]
            x = relu(pool(conv(x) * scale[:, :, None, None] + shift[:, :, None, None]))
        return x.flatten(1)


def inputs_of(kind: type, inputs: Mapping[str, Spec]) -> list[str]:
    """Names of the inputs whose spec is a ``kind`` (``Image``, ``Categorical``), in the generator's order."""
    return [name for name, spec in inputs.items() if isinstance(spec, kind)]


def mlp(in_features: int, hidden: Sequence[int]) -> nn.Sequential:
    """Linear -> ReLU per width."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    return nn.Sequential(*layers)


def _sizes_in_range(value: list[int]) -> list[int]:
    if any(v < 1 or v > 4096 for v in value):
        raise ValueError("every size must be from 1 to 4096")
    return value


class CNNParams(Params):
    """The notebook's sizes: conv 1->6->12 (k5), fully connected 120 -> 60."""

    conv_channels: list[int] = Field([6, 12], min_length=1, max_length=2, description="output channels of each 5x5 conv block")
    hidden: list[int] = Field([120, 60], min_length=1, max_length=8, description="widths of the fully connected layers")

    _check_sizes = field_validator("conv_channels", "hidden")(_sizes_in_range)


class CNNFusion(Fusion):
    """The part concat, embedding and film share: a CNN over each image, the numbers beside it.

    Sets ``images`` (the Image inputs' names), ``numbers`` (each Categorical input's name -> its
    classes), ``cnn`` and ``out_features``; a subclass adds how the numbers join and its ``mlp``.
    """

    Params = CNNParams

    @classmethod
    def check(cls, params: CNNParams, inputs: Mapping[str, Spec]) -> list[str]:
        images = [inputs[n] for n in inputs_of(Image, inputs)]
        if not images:
            return ["it needs at least one image input"]
        if any(s != MNIST_IMAGE for s in images):
            return ["its CNN reads 1x28x28 images"]
        return []

    def __init__(self, params: CNNParams, inputs: Mapping[str, Spec]) -> None:
        super().__init__(params, inputs)
        self.images = inputs_of(Image, inputs)
        self.numbers = {name: inputs[name].classes for name in inputs_of(Categorical, inputs)}
        self.cnn = ConvFeatures(1, params.conv_channels)
        self.out_features = params.hidden[-1]
