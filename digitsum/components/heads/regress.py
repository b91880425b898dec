"""A regression head: the target's class index read as a real number."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ...contracts import Classes, Head, Params, PredictionSpace, Spec


class Regress(Head):
    """Linear layer to one real number; MSE or Huber loss; reports MAE and rounded accuracy."""

    class Params(Params):
        loss: Literal["mse", "huber"] = Field("mse", description="mse, or huber (quadratic within delta, linear beyond)")
        delta: float = Field(1.0, gt=0, le=100, description="Huber threshold (loss = 'huber' only)")
        hidden: int = Field(0, ge=0, le=4096, description="units of a ReLU hidden layer before the output (0: none)")

    primary_metric = "rounded_accuracy"
    output_kind = "value"

    @classmethod
    def check(cls, params: Params, target: Spec) -> list[str]:
        return [] if isinstance(target, Classes) else [f"it needs a numeric (class index) target, not {target}"]

    def __init__(self, params: Params, in_features: int, target: Classes) -> None:
        super().__init__(params, in_features, target)
        # A value is not a linear function of features shaped for classification (the digit
        # head's): a hidden layer lets the head compute it.
        width = params.hidden or in_features
        self.hidden = nn.Sequential(nn.Linear(in_features, width), nn.ReLU()) if params.hidden else nn.Identity()
        self.linear = nn.Linear(width, 1)
        # Start at the middle of the range, so early steps learn the shape, not the offset.
        nn.init.constant_(self.linear.bias, (target.classes - 1) / 2)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(self.hidden(features)).squeeze(1)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        if self.params.loss == "huber":
            return F.huber_loss(output, target.to(output.dtype), delta=self.params.delta)
        return F.mse_loss(output, target.to(output.dtype))

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {
            "mae": (output - target).abs(),
            "rounded_accuracy": (self.predict(output) == target).float(),
        }

    def predict(self, output: Tensor) -> Tensor:
        """The nearest valid value: rounded and clamped to the target's range."""
        return output.detach().round().clamp(0, self.target.classes - 1).long()

    def prediction_space(self) -> PredictionSpace:
        """The target's classes, reached by rounding the one real number the head outputs."""
        c = self.target.classes
        return PredictionSpace(c, relation="rounded", labels=self.target.labels, output="one real number per sample, the target's value: "
                               f"round it and clamp it to [0, {c - 1}] for the class")  # fmt: skip
