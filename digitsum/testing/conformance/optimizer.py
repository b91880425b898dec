"""The conformance check of an Optimizer, on a small MLP fitting a fixed regression."""

import math

import torch

from ...contracts import Optimizer
from ._common import common_checks, reporting_crashes, resume_problems, toy_model, train_steps


@reporting_crashes("optimizer")
def check_optimizer(cls: type, params=None, *, steps: int = 50) -> None:
    """Check an Optimizer against its contract on a small MLP fitting a fixed regression.

    Checks: Params (and a float field ``lr``); ``build`` returns a ``torch.optim.Optimizer``
    holding every parameter it was given exactly once, at ``params.lr``; ``steps`` steps lower
    the loss; the same weights from the same start; a parameter without a gradient is left
    alone; and resuming is exact: an optimizer built anew, given the first one's
    ``state_dict`` (as read back from a checkpoint with ``weights_only=True``), continues with
    the very same weights as the first.
    """
    problems, params = common_checks("optimizer", cls, Optimizer, params)
    lr = getattr(params, "lr", None)
    if "lr" not in cls.Params.model_fields or not isinstance(lr, float):
        problems.fail("Params needs a float field `lr`: the learning rate, the peak of every schedule")
    model, x, y = toy_model()
    frozen = model[2].bias  # a parameter that gets no gradient: left alone
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    parameters = list(model.parameters())
    optimizer = cls(params).build(parameters)
    if not isinstance(optimizer, torch.optim.Optimizer):
        problems.fail(f"build() returned {type(optimizer).__name__}, not a torch.optim.Optimizer")
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if len(held) != len(parameters) or {id(p) for p in held} != {id(p) for p in parameters}:
        problems.append("build(parameters) must hold every parameter it is given, each once")
    if any(group.get("lr") != lr for group in optimizer.param_groups):
        problems.append(f"its param groups' lr {[g.get('lr') for g in optimizer.param_groups]} differ from params.lr = {lr}")
    losses = train_steps(model, optimizer, x, y, steps)
    if not all(map(math.isfinite, losses)) or not losses[-1] < losses[0]:
        problems.append(f"{steps} steps at its default settings did not lower a small regression's loss ({losses[0]:.4g} -> {losses[-1]:.4g})")
    if not torch.equal(frozen, before):
        problems.append("it changed a parameter that had no gradient")
    again, x, y = toy_model()
    again[2].bias.requires_grad_(False)
    train_steps(again, cls(params).build(list(again.parameters())), x, y, steps)
    if not all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters())):
        problems.append("the same steps from the same start gave other weights")
    # resume: the state after 5 steps, read back as a checkpoint is, into a new optimizer
    problems += resume_problems(lambda model: (cls(params).build(list(model.parameters())), None), 5, 5,
                                "an optimizer given another's state_dict does not continue as it does: resumed runs would differ")  # fmt: skip
    problems.raise_any()
