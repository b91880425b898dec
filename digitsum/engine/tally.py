"""The running sums of a split's per-head losses and metrics: what an epoch's figures are the
means of, and what a checkpoint keeps of an epoch stopped part-way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from . import distributed
from .distributed import World
from .model import DigitModel


@dataclass
class Tally:
    """Sums of per-head losses and per-sample metrics, kept on the device until read."""

    count: int = 0
    sums: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    @torch.no_grad()
    def add(self, model: DigitModel, outputs: dict[str, Tensor], losses: dict[str, Tensor], batch: dict[str, Tensor]) -> None:
        n = len(next(iter(batch.values())))
        self.count += n
        for name, output in outputs.items():
            values = {"loss": losses[name].detach() * n}
            target = batch[model.bindings[name].target]
            values.update({k: v.sum() for k, v in model.heads[name].metrics(output, target).items()})
            head = self.sums.setdefault(name, {})
            for key, value in values.items():
                head[key] = head[key] + value if key in head else value.clone()

    def reduced(self, world: World) -> Tally:
        """The sums and counts of every rank of a data-parallel run added up (a collective: every
        rank calls it); in one process, this tally itself."""
        if not world.active:
            return self
        sums = {head: dict(values) for head, values in self.sums.items()}
        return Tally(distributed.all_reduce_sums(self.count, sums), sums)

    def means(self) -> dict[str, dict[str, float]]:
        return {head: {k: float(v) / max(self.count, 1) for k, v in values.items()} for head, values in self.sums.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sums": self.sums}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> Tally:
        sums = {head: {k: v.to(device) for k, v in values.items()} for head, values in state["sums"].items()}
        return cls(int(state["count"]), sums)
