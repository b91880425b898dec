"""An ordinal head: for ordered classes, one threshold per boundary instead of a softmax.

Class k is predicted as the number of thresholds "target > j" judged true. Mistakes by one
class cost less than mistakes by ten, which suits sums and products (Cao et al. 2020, CORAL:
one shared weight vector, one bias per threshold).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from digitsum import Classes, Head, Params, Spec


class Ordinal(Head):
    """Cumulative-logit (CORAL) head for ordered classes; reports accuracy and mean absolute error."""

    contract = 1
    primary_metric = "accuracy"
    output_kind = "other"  # K-1 threshold logits, not [B, classes]: judged through predict and metrics

    class Params(Params):
        hidden: int = Field(0, ge=0, le=4096, description="width of a hidden layer before the thresholds (0: none)")

    @classmethod
    def check(cls, params: Params, target: Spec) -> list[str]:
        if not isinstance(target, Classes) or target.classes < 2:
            return [f"it needs a class target with at least 2 classes, not {target}"]
        return []

    def __init__(self, params: Params, in_features: int, target: Classes) -> None:
        super().__init__(params, in_features, target)
        layers: list[nn.Module] = []
        if params.hidden:
            layers += [nn.Linear(in_features, params.hidden), nn.ReLU()]
            in_features = params.hidden
        self.body = nn.Sequential(*layers)
        self.score = nn.Linear(in_features, 1, bias=False)  # one direction shared by all thresholds
        self.thresholds = nn.Parameter(torch.linspace(-1, 1, target.classes - 1))

    def forward(self, features: Tensor) -> Tensor:
        """Logits of "target > j" for j = 0 .. classes-2, shape ``[B, classes-1]``."""
        return self.score(self.body(features)) - self.thresholds

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        levels = torch.arange(output.shape[1], device=target.device)
        above = (target[:, None] > levels).to(output.dtype)
        return F.binary_cross_entropy_with_logits(output, above)

    def predict(self, output: Tensor) -> Tensor:
        return (output > 0).sum(dim=1)

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        predicted = self.predict(output)
        return {"accuracy": (predicted == target).float(), "abs_error": (predicted - target).abs().float()}

    def probabilities(self, output: Tensor) -> Tensor:
        """Class probabilities ``[B, classes]`` from the cumulative logits.

        P(target > j) = sigmoid(output_j); P(target = k) = P(target > k-1) - P(target > k), with
        P(target > -1) = 1 and P(target > classes-1) = 0. The thresholds are free parameters, so
        the P(target > j) of a sample need not decrease with j; a running minimum makes them
        decrease, which keeps every class probability non-negative (and they sum to 1).
        """
        above = torch.sigmoid(output.float()).cummin(dim=1).values
        ones = torch.ones_like(above[:, :1])
        cumulative = torch.cat([ones, above, torch.zeros_like(ones)], dim=1)  # P(target > j), j = -1 .. classes-1
        return cumulative[:, :-1] - cumulative[:, 1:]
