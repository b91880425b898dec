"""The model: one fusion backbone feeding one head per recipe head (built by ``engine/build.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from torch import Tensor, nn

from ..contracts import Batch, Fusion, Head

Loss = TypeVar("Loss", Tensor, float)


@dataclass(frozen=True)
class Binding:
    """Which target a head predicts, and the weight of its loss."""

    target: str
    weight: float


class DigitModel(nn.Module):
    """A fusion backbone feeding several heads; returns one output per head."""

    def __init__(self, backbone: Fusion, heads: dict[str, Head], bindings: dict[str, Binding]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.bindings = bindings

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        features = self.backbone(batch)
        return {name: head(features) for name, head in self.heads.items()}

    def losses(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """Each head's mean loss on the batch."""
        return {name: self.heads[name].loss(out, batch[self.bindings[name].target]) for name, out in outputs.items()}

    def total_loss(self, losses: Mapping[str, Loss]) -> Loss:
        """The weighted sum that is back-propagated: every head with a weight is trained.

        Also takes per-head mean losses as floats (the watch weighs an epoch's means with it).
        """
        return sum(self.bindings[name].weight * loss for name, loss in losses.items())
