"""The optimizer's settings as a family of changes for the doctor to verify: the rate an
lr-range test proposes, momentum for a weak SGD, a smaller or decoupled weight decay
(:func:`optimizer_changes`; docs/doctor.md, "Verify before recommending")."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..engine.train import make_optimizer
from .findings import LR_KEY, Change, fmt
from .probe import Probe, fresh_copy, seeded

#: The lr-range test (Smith, "Cyclical learning rates", 2017): RANGE_STEPS steps of the run whose
#: learning rate rises geometrically from RANGE_LOW to RANGE_HIGH (the most a recipe accepts); the
#: smoothed loss is read at each step, and the rate RANGE_BACKOFF below the one where it was lowest
#: is proposed (the lowest point is already at the edge of divergence). Proposed only when the loss
#: fell there by RANGE_FELL of its start: a loss that no rate moves says nothing about the rate.
RANGE_STEPS, RANGE_LOW, RANGE_HIGH, RANGE_BACKOFF, RANGE_FELL = 100, 1e-6, 10.0, 10.0, 0.03
#: An SGD below this momentum is also tried with MOMENTUM (at the rate its own range test proposes).
LOW_MOMENTUM, MOMENTUM = 0.5, 0.9


def lr_range(probe: Probe, steps: int = RANGE_STEPS) -> dict[str, Any]:
    """The lr-range test with the recipe's optimizer on the run's first batches: the rates and the
    smoothed loss at each step, the rate where the loss was lowest, and the rate proposed (None
    when no rate lowered the loss by RANGE_FELL)."""
    with seeded(probe, "lr_range"):
        model = fresh_copy(probe.model)
        optimizer = make_optimizer(probe.recipe, model)
        rates, smoothed, average = [], [], 0.0
        batches = probe.train_batches(steps)
        for i, batch in enumerate(batches):
            rate = RANGE_LOW * (RANGE_HIGH / RANGE_LOW) ** (i / max(1, len(batches) - 1))
            for group in optimizer.param_groups:
                group["lr"] = rate
            loss = model.total_loss(model.losses(model(batch), batch))
            value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
            if not math.isfinite(value):
                break
            average = 0.9 * average + 0.1 * value
            rates.append(rate)
            smoothed.append(average / (1 - 0.9 ** (i + 1)))
            if i > 10 and smoothed[-1] > 4 * min(smoothed):
                break  # diverging: higher rates only diverge faster
            optimizer.zero_grad(set_to_none=True)
            if isinstance(loss, torch.Tensor) and loss.requires_grad:
                loss.backward()
                optimizer.step()
    if not smoothed:
        return {"rates": [], "losses": [], "lowest_at": None, "proposed": None}
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    fell_enough = smoothed[best] < (1 - RANGE_FELL) * smoothed[0]
    return {"rates": rates, "losses": smoothed, "lowest_at": rates[best], "start": smoothed[0], "lowest": smoothed[best],
            "proposed": float(f"{rates[best] / RANGE_BACKOFF:.2g}") if fell_enough else None}  # fmt: skip


def optimizer_changes(probe: Probe) -> tuple[list[Change], dict[str, Any]]:
    """The optimizer's settings as a family, each to be verified like any change: the rate the
    lr-range test proposes; for an SGD with little momentum, momentum MOMENTUM at the rate its own
    range test proposes; for a weight decay, one ten times smaller and (Adam's, an L2 penalty in
    the gradient) the same decay decoupled (AdamW). Returns the changes and the range tests' figures."""
    recipe = probe.recipe
    params, kind = recipe.optimizer.params, recipe.optimizer.section.type
    fields = type(params).model_fields
    lr = params.lr
    changes: list[Change] = []
    test = lr_range(probe)
    figures: dict[str, Any] = {"lr_range": {k: test[k] for k in ("lowest_at", "proposed")}}
    proposed = test["proposed"]
    if proposed is not None and not 0.5 <= proposed / lr <= 2:
        changes.append(Change(f"{LR_KEY} = {fmt(proposed)} (lr-range test: loss lowest at {fmt(test['lowest_at'])}; now {fmt(lr)})",
                              {LR_KEY: proposed}))  # fmt: skip
    if "momentum" in fields and getattr(params, "momentum", 1.0) < LOW_MOMENTUM:
        keys: dict[str, Any] = {"train.optimizer.momentum": MOMENTUM}
        with_momentum = lr_range(probe.variant(keys))
        figures["lr_range_momentum"] = {k: with_momentum[k] for k in ("lowest_at", "proposed")}
        if with_momentum["proposed"] is not None:
            keys[LR_KEY] = with_momentum["proposed"]
        changes.append(Change(f"train.optimizer.momentum = {MOMENTUM}" + (f", {LR_KEY} = {fmt(keys[LR_KEY])} (lr-range test with momentum)"
                              if LR_KEY in keys else "") + f" (now momentum {fmt(params.momentum)}, lr {fmt(lr)})", keys))  # fmt: skip
    decay = getattr(params, "weight_decay", 0.0) if "weight_decay" in fields else 0.0
    if decay > 0:
        changes.append(Change(f"train.optimizer.weight_decay = {fmt(decay / 10)} (now {fmt(decay)})", {"train.optimizer.weight_decay": decay / 10}))
        if kind == "adam":
            changes.append(Change(f'train.optimizer.type = "adamw" (weight decay {fmt(decay)} decoupled from the gradient; now "adam")',
                                  {"train.optimizer.type": "adamw"}))  # fmt: skip
    return changes, figures
