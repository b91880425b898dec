"""Per-image classification: one digit per image, read from per-image logits."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ...contracts import Digits, Head, Params, PredictionSpace, Spec


class PerDigit(Head):
    """Each image's digit from its logits (``digit_cnn``'s features); cross-entropy; digit accuracy.

    Reads the features as ``[B, K, base]`` logits for a ``Digits(K)`` target, the digits of K
    images in the backbone's order. ``accuracy`` is the share of the K digits right,
    ``all_right`` the share of samples with every digit right. Bound to a measured target
    (weight 0) it reports what a model trained on something else (a sum) learnt of the digits.
    """

    output_kind = "other"  # one distribution per digit position, not [B, classes] logits

    class Params(Params):
        label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")

    @classmethod
    def check(cls, params: Params, target: Spec) -> list[str]:
        return [] if isinstance(target, Digits) else [f"it needs a Digits target (one digit per image), not {target}"]

    @classmethod
    def features_for(cls, params: Params, target: Digits) -> int:
        return target.length * target.base

    def __init__(self, params: Params, in_features: int, target: Digits) -> None:
        super().__init__(params, in_features, target)
        self.length, self.base = target.length, target.base

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``[B, K, base]``."""
        return features.view(-1, self.length, self.base)  # -1: an exported model keeps the batch size free

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output.flatten(0, 1), target.flatten(), label_smoothing=self.params.label_smoothing)

    def predict(self, output: Tensor) -> Tensor:
        """The most probable digit of each image, ``[B, K]``."""
        return output.argmax(dim=-1)

    def prediction_space(self) -> PredictionSpace:
        """A digit per image: the target's digits, in the backbone's order."""
        return PredictionSpace(self.base, self.length, meaning="the digit of each image, in the backbone's order",
                               output=f"logits [batch, {self.length}, {self.base}]: argmax over the last axis is each image's digit")  # fmt: skip

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        right = self.predict(output) == target
        return {"accuracy": right.float().mean(dim=1), "all_right": right.all(dim=1).float()}
