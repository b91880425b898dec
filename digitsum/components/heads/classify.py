"""A linear classifier head: logits, cross-entropy, accuracy."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ...contracts import Classes, Head, Params, PredictionSpace, Spec


class Classify(Head):
    """Linear layer to logits; cross-entropy on the logits; reports accuracy.

    ``output = "probabilities"`` exists only to reproduce a classic bug (the notebook digitsum
    grew from): the head returns softmax probabilities and the loss still applies
    cross-entropy, i.e. a second softmax. Never use it to train; `digitsum doctor` flags it.
    """

    class Params(Params):
        label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")
        output: Literal["logits", "probabilities"] = Field(
            "logits",
            description="reproduction only: 'probabilities' applies softmax before cross-entropy "
            "(double softmax, as the original notebook did); keep 'logits' to train",
        )

    @classmethod
    def check(cls, params: Params, target: Spec) -> list[str]:
        return [] if isinstance(target, Classes) else [f"it needs a class target, not {target}"]

    def __init__(self, params: Params, in_features: int, target: Classes) -> None:
        super().__init__(params, in_features, target)
        self.linear = nn.Linear(in_features, target.classes)

    def forward(self, features: Tensor) -> Tensor:
        logits = self.linear(features)
        return logits.softmax(dim=1) if self.params.output == "probabilities" else logits

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        # with output = "probabilities" this is cross-entropy on probabilities: the bug, on purpose
        return F.cross_entropy(output, target, label_smoothing=self.params.label_smoothing)

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {"accuracy": (output.argmax(dim=1) == target).float()}

    def prediction_space(self) -> PredictionSpace:
        """The target's classes; with ``output = "probabilities"`` the output already is their softmax."""
        c = self.target.classes
        probabilities = f"probabilities over the {c} classes (softmax already applied); argmax over axis 1 is the class"
        return PredictionSpace(c, labels=self.target.labels, output=probabilities if self.params.output == "probabilities" else "")

    def probabilities(self, output: Tensor) -> Tensor:
        """The softmax of the logits; with ``output = "probabilities"`` the output already is it."""
        output = output.float()  # softmax and sums in float32 even if the model ran in half precision
        return output if self.params.output == "probabilities" else output.softmax(dim=1)
