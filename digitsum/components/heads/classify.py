"""A linear classifier head: logits, cross-entropy, accuracy."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ...contracts import Classes, Head, Params, Spec


class Classify(Head):
    """Linear layer to logits; cross-entropy on the logits; reports accuracy."""

    class Params(Params):
        label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")

    @classmethod
    def check(cls, params: Params, target: Spec) -> list[str]:
        return [] if isinstance(target, Classes) else [f"it needs a class target, not {target}"]

    def __init__(self, params: Params, in_features: int, target: Classes) -> None:
        super().__init__(params, in_features, target)
        self.linear = nn.Linear(in_features, target.classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target, label_smoothing=self.params.label_smoothing)

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {"accuracy": (output.argmax(dim=1) == target).float()}
