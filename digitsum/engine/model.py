"""Assemble a model from a recipe: one backbone, one head per recipe head."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

from ..contracts import Batch, Fusion, Head
from ..recipe import Recipe

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


def build_model(recipe: Recipe) -> DigitModel:
    """Build the model a recipe describes (on the CPU; move it with ``.to``)."""
    interface = recipe.interface()
    backbone = recipe.backbone.cls(recipe.backbone.params, interface.inputs)
    heads, bindings = {}, {}
    for name, choice in recipe.heads.items():
        target = interface.targets[choice.section.target]
        heads[name] = choice.cls(choice.params, backbone.out_features, target)
        bindings[name] = Binding(choice.section.target, choice.section.weight)
    return DigitModel(backbone, heads, bindings)


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; an explicit device must exist."""
    from ..errors import UserError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device = '{name}' but CUDA is not available here; use 'auto' or 'cpu'")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("train.device = 'mps' but MPS is not available here; use 'auto' or 'cpu'")
    return torch.device(name)
