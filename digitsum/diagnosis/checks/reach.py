"""Reach: how far a head's logits can move while every weight trains. A head whose forward scales
its logits down (a division by a large constant, a temperature of 1000) keeps them near uniform
for thousands of steps: nothing bounds them, so the floor through its forward is reached with
weights free to grow, yet a training run's steps never get there. Read when a model cannot fit
one batch even with a sane optimizer (the ``overfit`` check)."""

from __future__ import annotations

import math

import torch

from ...contracts import Batch
from ..emulate import logits_scaled
from ..findings import BROKEN_CODE, Change, Finding, fmt
from ..probe import Probe, batch_len, evaluating, fresh_copy, seeded
from .floor import floor_through_forward, loss_floor
from .loss import probability_output

#: A run that can move a head's logits by less than this (the largest change of a sample's
#: logits, averaged over the batch) cannot make it confident: a logit margin of 0.3 leaves the
#: right class of K a probability of about 1.35 / (1.35 + K - 1), near chance. Measured in 300
#: steps of Adam at 1e-3 on a batch of 32: the shipped recipes' heads 11 to 34; original's sum
#: head divided by 10, 100, 1000: 1.43, 0.14, 0.014; with its last layer initialised to zeros
#: (which trains well: to first order only that layer moves) 1.09.
REACH_MIN = 0.3
#: What the shipped recipes' heads reach there, about: a head far below it is tried with its logits
#: scaled up by the power of ten that brings it here (its forward divided by 1000: 1000).
TYPICAL_REACH = 15.0


def logit_reach(probe: Probe, batch: Batch, head: str, lr: float, steps: int) -> float:
    """How far ``steps`` steps that each move every trainable weight by ``lr`` against the sign of
    the gradient of ``head``'s loss (Adam's first steps) move its logits, to first order: one
    such step, measured on ``batch`` in eval mode, times ``steps``. Infinite when the loss does
    not reach a weight (another check names that)."""
    model = fresh_copy(probe.model)
    weights = [w for w in model.parameters() if w.requires_grad]
    with seeded(probe, "reach"):
        loss = model.losses(model(batch), batch)[head]
    if not weights or not loss.requires_grad:
        return float("inf")
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    with torch.no_grad(), evaluating(model):
        before = model(batch)[head].float()
        for weight, grad in zip(weights, grads):
            if grad is not None:
                weight -= lr * grad.sign()
        after = model(batch)[head].float()
    moved = (after - before).abs().reshape(len(after), -1).max(dim=1).values.mean()
    return steps * float(moved)


def reach_findings(probe: Probe, batch: Batch, heads: list[str], lr: float, steps: int) -> list[Finding]:
    """An error for each class-logits head of ``heads`` whose logits ``steps`` steps of Adam at
    ``lr`` can hardly move (below :data:`REACH_MIN`): its forward's scale, not a setting, is the
    cause. Not for a head whose outputs are probabilities or bounded (the ``double_softmax`` and
    ``loss_floor`` checks name those: their outputs hardly move for another reason)."""
    findings = []
    with torch.no_grad():
        outputs = probe.model(batch)
    for head in heads:
        loss_floor(probe, head)  # (cached) whether its forward bounds its logits
        if floor_through_forward(probe, head) or probability_output(probe.model.heads[head], outputs[head], batch[probe.target_of(head)]):
            continue
        if not (reach := logit_reach(probe, batch, head, lr, steps)) < REACH_MIN:
            continue
        cls = type(probe.model.heads[head])
        factor = 10.0 ** round(math.log10(TYPICAL_REACH / max(reach, 1e-12)))
        fix = Change(f"heads.{head}'s logits {factor:g} times larger", emulate=logits_scaled(head, factor),
                     code=f"{cls.__name__}.forward: its logits {factor:g} times larger (no division)")  # fmt: skip
        findings.append(Finding("overfit", "error", f"heads.{head}'s logits hardly move as the weights train",
            f"{steps} steps of Adam at lr {lr:g} move heads.{head}'s logits by about {fmt(reach)} on one batch of "
            f"{batch_len(batch)} (to first order: one step that moves every weight by the lr, times {steps})",
            "its logits stay near uniform, so its loss hardly falls and no learning rate or other setting helps: its "
            "forward scales down what its last layer computes (a division by a large constant, a temperature), or its "
            "weights reach the logits through a tiny factor",
            f"return the last layer's output unscaled from {cls.__module__}.{cls.__name__}.forward", [],
            {"reach": reach, "steps": steps, "lr": lr, "factor": factor, BROKEN_CODE: f"heads.{head}"}, candidates=[fix]))  # fmt: skip
    return findings
