"""The addition head: the exact likelihood of a labelled sum from per-image digit distributions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from ...contracts import Digits, Head, Params, PredictionSpace, Spec
from ..digits import argmax_sum, most_probable_sum, sum_log_likelihood


class Addition(Head):
    """Sum of two numbers from their digits' logits; exact log-likelihood of the sum (carry recursion).

    Reads the backbone's features as per-image digit logits (``digit_cnn``'s): 2N images, the
    first N one number's digits, the next N the other's, most significant first. For a
    ``Digits(N + 1)`` sum its loss is ``-log P(sum)`` under independent per-image digit
    distributions, exact, in O(N) small tensor ops (``digits.sum_log_likelihood``); no digit
    label is used. ``accuracy`` is the share of sums whose every digit is right, ``digit_match``
    the share of sum digits right.
    """

    output_kind = "other"  # one distribution per digit position, not [B, classes] logits

    class Params(Params):
        prediction: Literal["argmax", "viterbi"] = Field(
            "argmax", description="argmax: add the most probable digits exactly; viterbi: most probable sum digits and carries"
        )

    @classmethod
    def check(cls, params: Params, target: Spec) -> list[str]:
        if not isinstance(target, Digits) or target.length < 2:
            return [f"it needs the digits of a sum (a Digits target of length N + 1 >= 2), not {target}"]
        return []

    @classmethod
    def features_for(cls, params: Params, target: Digits) -> int:
        return 2 * (target.length - 1) * target.base

    def __init__(self, params: Params, in_features: int, target: Digits) -> None:
        super().__init__(params, in_features, target)
        self.n, self.base = target.length - 1, target.base

    def forward(self, features: Tensor) -> Tensor:
        """Log-probabilities ``[B, 2N, base]`` of each image's digit (float32 at least)."""
        # -1, not len(features): an exported (traced) model keeps the batch size free
        return features.float().view(-1, 2 * self.n, self.base).log_softmax(dim=-1)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return -sum_log_likelihood(output[:, : self.n], output[:, self.n :], target).mean()

    def predict(self, output: Tensor) -> Tensor:
        """The predicted sum ``[B, N + 1]``, most significant first."""
        a, b = output[:, : self.n].detach(), output[:, self.n :].detach()
        return most_probable_sum(a, b) if self.params.prediction == "viterbi" else argmax_sum(a, b)

    def prediction_space(self) -> PredictionSpace:
        """The sum's N + 1 digits, most significant first (the target's own)."""
        return PredictionSpace(self.base, self.n + 1, meaning="the digits of the sum, most significant first",
                               output=f"log-probabilities [batch, {2 * self.n}, {self.base}] of each image's digit, "
                                      f"the first {self.n} images one number's, the next {self.n} the other's")  # fmt: skip

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        right = self.predict(output) == target
        return {"accuracy": right.all(dim=1).float(), "digit_match": right.float().mean(dim=1)}
