"""A digit classifier applied to every image alone: the backbone of tasks with structure on top."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from ...contracts import Batch, Fusion, Image, Images, Params, Spec
from .common import MNIST_IMAGE, ConvFeatures, _sizes_in_range


class DigitCNN(Fusion):
    """One CNN shared by every image, classifying each alone; features: each image's digit logits.

    Reads every ``Image`` and ``Images`` input (1x28x28) in the generator's order, each
    sequence's images in theirs: K images in all. The features are the K logit vectors side by
    side, ``[B, K * classes]``, which heads that know what the digits mean (``addition``,
    ``per_digit``) read as ``[B, K, classes]``. No image sees another.
    """

    class Params(Params):
        conv_channels: list[int] = Field([32, 64], min_length=1, max_length=2, description="output channels of each 5x5 conv block")
        hidden: int = Field(128, ge=0, le=4096, description="units of the ReLU layer before the logits (0: none)")
        dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the logits, in training only")
        classes: int = Field(10, ge=2, le=1000, description="classes per image (logits per image)")
        test_shifts: int = Field(
            0, ge=0, le=4,
            description="in evaluation only: each image's log-probabilities averaged over it and its copies moved by 1..this many "
                        "pixels up, down, left and right (1 + 4 x this many views; 0: the image alone)",
            json_schema_extra={"evaluation_only": True},  # the doctor builds without it (Params.for_diagnosis)
        )  # fmt: skip
        last_layer_scale: float = Field(
            1.0, ge=0, le=1,
            description="the last layer's random initial weights and bias times this: below 1, every image starts read as "
                        "nearly uniform, so the first image-dependent reading is learnt from the labels rather than drawn by "
                        "the random initialisation (0: zero)",
        )  # fmt: skip

        _check_sizes = field_validator("conv_channels")(_sizes_in_range)

    @classmethod
    def check(cls, params: Params, inputs: Mapping[str, Spec]) -> list[str]:
        images = {n: s for n, s in inputs.items() if isinstance(s, (Image, Images))}
        others = [n for n in inputs if n not in images]
        problems = []
        if not images:
            problems.append("it needs at least one image input (Image or Images)")
        if others:
            problems.append(f"it classifies each image alone, and has no use for the input(s) {', '.join(others)}")
        if any((s.image if isinstance(s, Images) else s) != MNIST_IMAGE for s in images.values()):
            problems.append("its CNN reads 1x28x28 images")
        return problems

    def __init__(self, params: Params, inputs: Mapping[str, Spec]) -> None:
        super().__init__(params, inputs)
        self.images = [n for n, s in inputs.items() if isinstance(s, (Image, Images))]
        self.count = sum(inputs[n].count if isinstance(inputs[n], Images) else 1 for n in self.images)
        self.cnn = ConvFeatures(1, params.conv_channels)
        layers: list[nn.Module] = []
        width = self.cnn.out_features
        if params.hidden:
            layers += [nn.Linear(width, params.hidden), nn.ReLU()]
            width = params.hidden
        if params.dropout:
            layers.append(nn.Dropout(params.dropout))
        layers.append(nn.Linear(width, params.classes))
        self.classifier = nn.Sequential(*layers)
        if params.last_layer_scale != 1.0:
            # Learnt from long sums (add-100), a random reading of the images can be a bet that the
            # labels then amplify: one digit in two read as its neighbour (0 as 1, 1 as 0, ...)
            # keeps half the pair sums right and is a trap training never leaves. From a (nearly)
            # uniform start, the first reading the gradient makes follows the labels (docs/benchmarks.md).
            with torch.no_grad():
                layers[-1].weight.mul_(params.last_layer_scale)
                layers[-1].bias.mul_(params.last_layer_scale)
        self.out_features = self.count * params.classes

    def forward(self, batch: Batch) -> Tensor:
        # every image of the batch in one pass: [B, K, 1, 28, 28] -> [B * K, 1, 28, 28]
        parts = [batch[n] if batch[n].dim() == 5 else batch[n].unsqueeze(1) for n in self.images]
        x = torch.cat(parts, dim=1).flatten(0, 1)
        if self.training or not self.params.test_shifts:
            logits = self.classifier(self.cnn(x))
        else:
            logits = self._averaged_over_shifts(x)
        return logits.view(-1, self.count * self.params.classes)  # -1: an exported model keeps the batch size free

    def _averaged_over_shifts(self, x: Tensor) -> Tensor:
        """Test-time augmentation: the mean log-probabilities of ``x`` ``[N, 1, 28, 28]`` and its
        copies moved by 1..``test_shifts`` pixels along each axis. The digits' margins are blank,
        so a roll moves a blank row around the edge: the same as filling with the background."""
        moves = [(0, 0)] + [m for k in range(1, self.params.test_shifts + 1) for m in ((k, 0), (-k, 0), (0, k), (0, -k))]
        total = None
        for move in moves:  # one view at a time: the memory of one evaluation, whatever the views
            logits = self.classifier(self.cnn(torch.roll(x, shifts=move, dims=(2, 3))))
            log_p = torch.log_softmax(logits.float(), dim=-1)
            total = log_p if total is None else total + log_p
        return (total / len(moves)).to(logits.dtype)
