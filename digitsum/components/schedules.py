"""Built-in learning-rate schedules: constant, one-cycle and cosine (with a linear warm-up).

Each peaks at the optimizer's learning rate and, unless a parameter asks for more, changes the
learning rate only: PyTorch's ``OneCycleLR`` cycles the momentum (or Adam's beta1) between 0.85
and 0.95 by default, which would make an SGD with ``momentum = 0`` train with momentum; here
that happens only when ``[train.schedule] momentum = [low, high]`` asks for it.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, field_validator
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, OneCycleLR

from ..contracts import Params, Schedule
from ..errors import UserError

#: Fewer steps than this leave OneCycleLR no warm-up to speak of (at 4 it divides by zero):
#: such runs (smoke tests, tiny data) keep the learning rate constant instead.
MIN_ONECYCLE_STEPS = 8


def _constant(optimizer: torch.optim.Optimizer) -> LRScheduler:
    return LambdaLR(optimizer, lambda _: 1.0)


class Constant(Schedule):
    """The optimizer's learning rate, unchanged for the whole run."""

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        return _constant(optimizer)


class OneCycle(Schedule):
    """One cycle (Smith): rises from lr / initial_div to lr over the warm-up, then anneals (cosine) to almost 0."""

    class Params(Params):
        warmup: float = Field(0.25, gt=0, lt=1, description="share of the run's steps spent rising to the peak")
        initial_div: float = Field(25.0, ge=1, description="the run starts at lr / initial_div")
        final_div: float = Field(1e4, ge=1, description="it ends at lr / initial_div / final_div")
        momentum: tuple[float, float] | None = Field(
            None,
            description="[low, high]: cycle the optimizer's momentum (SGD) or beta1 (Adam) against the lr, "
            "from high to low at the peak and back, replacing the optimizer's own value; absent or false: not cycled",
        )

        @field_validator("momentum", mode="before")
        @classmethod
        def _false_is_off(cls, value: object) -> object:
            # TOML has no null: `momentum = false` is how a recipe turns off the cycling it inherits
            return None if value is False else value

        @field_validator("momentum")
        @classmethod
        def _momentum_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
            if value is not None and not 0 <= value[0] <= value[1] < 1:
                raise ValueError("momentum = [low, high] needs 0 <= low <= high < 1")
            return value

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        p = self.params
        if total_steps < MIN_ONECYCLE_STEPS:
            return _constant(optimizer)
        cycle = p.momentum is not None
        if cycle and not ({"momentum", "betas"} & set(optimizer.defaults)):
            raise UserError(
                f"train.schedule.momentum: the optimizer ({type(optimizer).__name__}) has no momentum or betas to "
                "cycle; remove momentum from [train.schedule]"
            )
        low, high = p.momentum if cycle else (0.85, 0.95)  # the bounds are unused when not cycling
        return OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=p.warmup,
            div_factor=p.initial_div,
            final_div_factor=p.final_div,
            cycle_momentum=cycle,
            base_momentum=low,
            max_momentum=high,
        )


class Cosine(Schedule):
    """Cosine annealing from lr to end x lr over the run, after an optional linear warm-up."""

    class Params(Params):
        warmup: float = Field(0.0, ge=0, lt=1, description="share of the run's steps rising linearly to the peak (0: none)")
        end: float = Field(0.0, ge=0, le=1, description="the learning rate at the end, as a fraction of the peak")

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        p = self.params
        warm = int(p.warmup * total_steps)
        if warm == 0 and p.end == 0:
            # torch's own, step for step what digitsum's `cosine` has always been (runs resume exactly)
            return CosineAnnealingLR(optimizer, T_max=total_steps)
        return LambdaLR(optimizer, lambda step: _warm_cosine(step, warm, total_steps, p.end))


def _warm_cosine(step: int, warm: int, total: int, end: float) -> float:
    """The factor of the peak lr at ``step``: (step + 1) / warm during the warm-up, then a cosine to ``end``."""
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))
