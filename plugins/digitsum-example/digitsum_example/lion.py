"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): each step moves every
weight by the learning rate, in the direction of the sign of an interpolated momentum, with
weight decay decoupled from the gradient:

    update = sign(beta1 * m + (1 - beta1) * g)
    w      = w * (1 - lr * weight_decay) - lr * update
    m      = beta2 * m + (1 - beta2) * g

It keeps one buffer per weight (Adam keeps two). As every coordinate moves by the full learning
rate, Lion wants a learning rate 3-10x smaller than AdamW's and a weight decay as much larger.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field, field_validator
from torch import nn

from digitsum import Optimizer, Params


class LionOptimizer(torch.optim.Optimizer):
    """The torch optimizer: one ``exp_avg`` buffer per parameter (in its state, so checkpoints resume it)."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), decay = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg = state["exp_avg"]
                update = exp_avg.mul(beta1).add_(p.grad, alpha=1 - beta1).sign_()
                p.mul_(1 - lr * decay).add_(update, alpha=-lr)
                exp_avg.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


class Lion(Optimizer):
    """Lion: every weight moves by lr along the sign of an interpolated momentum; decoupled weight decay."""

    contract = 1  # the digitsum component contract this class is written for

    class Params(Params):
        lr: float = Field(4e-4, gt=0, le=1, description="learning rate: 3-10x smaller than AdamW's")
        betas: tuple[float, float] = Field((0.9, 0.99), description="beta1 interpolates the update's momentum, beta2 decays it")
        weight_decay: float = Field(0.0, ge=0, le=10, description="decoupled weight decay: 3-10x larger than AdamW's")

        @field_validator("betas")
        @classmethod
        def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
            if not all(0 <= b < 1 for b in value):
                raise ValueError("each beta must be in [0, 1)")
            return value

    def build(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        p = self.params
        return LionOptimizer(parameters, lr=p.lr, betas=p.betas, weight_decay=p.weight_decay)
