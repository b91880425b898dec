"""Built-in optimizers: torch's SGD, Adam and AdamW, each with the parameters it really has.

Each runs as one fused kernel over all parameters where torch can fuse it (CPU and CUDA): for a
model this small the per-tensor overhead of the unfused optimizers is most of their time (7x
less at batch size 32 on a CPU).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from ..contracts import Optimizer, Params

_LR = Field(2e-3, gt=0, le=10, description="learning rate: the peak of the schedule")


def fused_if_possible(cls: type[torch.optim.Optimizer], parameters: list[nn.Parameter], **options: Any) -> torch.optim.Optimizer:
    """``cls(parameters, fused=True, **options)`` where torch can fuse it, else unfused."""
    device = parameters[0].device if parameters else torch.device("cpu")
    if device.type in ("cpu", "cuda"):
        try:
            return cls(parameters, fused=True, **options)
        except (RuntimeError, TypeError, ValueError):  # an older torch, or a dtype it cannot fuse
            pass
    return cls(parameters, **options)


class SGD(Optimizer):
    """Stochastic gradient descent, with momentum (heavy-ball or Nesterov) and L2 weight decay."""

    class Params(Params):
        lr: float = _LR
        momentum: float = Field(0.9, ge=0, lt=1, description="momentum factor (0: plain SGD)")
        nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0)")
        weight_decay: float = Field(0.0, ge=0, le=1, description="L2 penalty added to the gradient")

        @model_validator(mode="after")
        def _nesterov_needs_momentum(self):
            if self.nesterov and self.momentum == 0:
                raise ValueError("nesterov = true needs momentum > 0")
            return self

    def build(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        p = self.params
        return fused_if_possible(torch.optim.SGD, parameters, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay,
                                 nesterov=p.nesterov)  # fmt: skip


class _AdamParams(Params):
    lr: float = _LR
    betas: tuple[float, float] = Field((0.9, 0.999), description="decay rates of the gradient's running mean and square")
    eps: float = Field(1e-8, gt=0, le=1, description="added to the denominator for numerical stability")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError("each beta must be in [0, 1)")
        return value


class _AdamFamily(Optimizer):
    """Adam and AdamW differ only in how their weight decay acts: the torch class says which."""
    torch_class: type[torch.optim.Optimizer]

    def build(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        p = self.params
        return fused_if_possible(self.torch_class, parameters, lr=p.lr, betas=p.betas, eps=p.eps, weight_decay=p.weight_decay)


class Adam(_AdamFamily):
    """Adam; weight decay here is an L2 penalty added to the gradient (use adamw to decouple it)."""

    torch_class = torch.optim.Adam

    class Params(_AdamParams):
        weight_decay: float = Field(0.0, ge=0, le=1, description="L2 penalty added to the gradient")


class AdamW(_AdamFamily):
    """Adam with decoupled weight decay (Loshchilov & Hutter): the weights shrink by lr x weight_decay per step."""

    torch_class = torch.optim.AdamW

    class Params(_AdamParams):
        weight_decay: float = Field(0.0, ge=0, le=1, description="decoupled weight decay")
