"""The conformance checks of optimizers and schedules, on a small MLP fitting a fixed regression."""

import copy
import math

import torch
from torch import nn

from ...contract_checks import built_problem
from ...contracts import Optimizer, Schedule
from ...diagnosis.checks.optimization import schedule_problem
from ._common import common_checks, reporting_crashes, weights_only_problem

@reporting_crashes("optimizer")
def check_optimizer(cls: type, params=None, *, steps: int = 50) -> None:
    """Check an Optimizer against its contract on a small MLP fitting a fixed regression:
    Params and a float field ``lr``, what ``build`` returns, ``steps`` steps lowering the loss,
    reproducibly, and an exact resume from its ``state_dict`` (docs/plugins.md lists every check).
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
    component = cls(params)
    optimizer = component.build(parameters)
    if problem := built_problem(component, optimizer, parameters):
        problems.fail(problem)
    losses = train_steps(model, optimizer, x, y, steps)
    if not all(map(math.isfinite, losses)) or not losses[-1] < losses[0]:
        problems.append(f"{steps} steps at its default settings did not lower a small regression's loss ({losses[0]:.4g} -> {losses[-1]:.4g})")
    if not torch.equal(frozen, before):
        problems.append("it changed a parameter that had no gradient")
    problems += _step_lr_problems(cls, params)
    again, x, y = toy_model()
    again[2].bias.requires_grad_(False)
    train_steps(again, cls(params).build(list(again.parameters())), x, y, steps)
    if not all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters())):
        problems.append("the same steps from the same start gave other weights")
    # resume: the state after 5 steps, read back as a checkpoint is, into a new optimizer
    problems += resume_problems(lambda model: (cls(params).build(list(model.parameters())), None), 5, 5,
                                "an optimizer given another's state_dict does not continue as it does: resumed runs would differ")  # fmt: skip
    problems.raise_any()


def _step_lr_problems(cls: type, params) -> list[str]:
    """Its steps follow the param groups' ``lr``: at lr 0 a step moves no weight (schedules, the
    doctor and sweeps set the rate there; a ``step()`` that ignores it makes them mean nothing)."""
    model, x, y = toy_model()
    optimizer = cls(params).build(list(model.parameters()))
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    train_steps(model, optimizer, x, y, 3)
    if all(torch.equal(a, b) for a, b in zip(before, model.parameters())):
        return []
    return ["its step() moved the weights with every param group's lr at 0: it must scale its steps by group['lr'] "
            "(schedules, sweeps and the doctor set the rate there), not by a rate of its own"]


#: What a schedule may change besides the learning rate only when its parameters ask for it.
HYPER_PARAMETERS = ("momentum", "betas", "weight_decay", "dampening", "nesterov", "eps")
#: The optimizers' learning rate: the peak no rate a schedule gives may pass.
PEAK = 0.1
OPTIMIZERS = {
    "SGD": lambda ps: torch.optim.SGD(ps, lr=PEAK, momentum=0.5, weight_decay=1e-4),
    "Adam": lambda ps: torch.optim.Adam(ps, lr=PEAK, betas=(0.8, 0.99), weight_decay=1e-4),
}


@reporting_crashes("schedule")
def check_schedule(cls: type, params=None, *, total_steps: int = 100) -> None:
    """Check a Schedule against its contract, on SGD with momentum and on Adam, for runs of 1,
    3, 10 and ``total_steps`` steps: what ``build`` returns, learning rates in [0, the peak],
    nothing else changed by default, and an exact resume from its ``state_dict`` part-way
    (docs/plugins.md lists every check).
    """
    problems, checked = common_checks("schedule", cls, Schedule, params)
    for name, make in OPTIMIZERS.items():
        for steps in sorted({1, 3, 10, total_steps}):
            model, x, y = toy_model()
            optimizer = make(list(model.parameters()))
            group = optimizer.param_groups[0]
            hyper = {k: group[k] for k in HYPER_PARAMETERS if k in group}
            component = cls(checked)
            scheduler = component.build(optimizer, steps)
            if problem := built_problem(component, scheduler):
                problems.fail(problem)
            rates = [group["lr"]]
            for _ in range(steps):
                train_steps(model, optimizer, x, y, 1, scheduler)
                rates.append(group["lr"])
            bad = [r for r in rates if not (math.isfinite(r) and 0 <= r <= PEAK * (1 + 1e-9))]
            if bad:
                problems.append(f"{name}, {steps} steps: learning rates outside [0, the optimizer's lr {PEAK}]: {bad[:3]}")
            elif steps == total_steps and (found := schedule_problem(rates[:-1], PEAK)) and found[0] == "error":
                problems.append(f"{name}, {steps} steps: {found[1]} (an error for `digitsum doctor` too)")
            changed = {k: (v, group[k]) for k, v in hyper.items() if group[k] != v}
            if params is None and changed:
                what = ", ".join(f"{k} from {a} to {b}" for k, (a, b) in changed.items())
                problems.append(f"{name}, {steps} steps: with its default parameters it changed {what}: a schedule changes "
                                "only the learning rate unless its parameters ask for more")  # fmt: skip
    # resume part-way, from state dicts read back as a checkpoint is
    def build(model):
        optimizer = OPTIMIZERS["SGD"](list(model.parameters()))
        return optimizer, cls(checked).build(optimizer, total_steps)

    problems += resume_problems(build, total_steps // 3, total_steps - total_steps // 3,
                                "a scheduler given another's state_dict part-way gives other learning rates: resumed runs would differ")  # fmt: skip
    problems.raise_any()


def toy_model(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP and a fixed regression problem it can fit: what optimizers are checked on."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    rng = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=rng)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.1 * torch.randn(64, 1, generator=rng)
    return model, x, y


def train_steps(model, optimizer, x, y, steps: int, scheduler=None) -> list[float]:
    """Train ``steps`` full-batch steps of mean squared error; the loss before each step."""
    losses = []
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        losses.append(float(loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return losses


def resume_problems(build, before: int, after: int, differs: str) -> list[str]:
    """Whether a run on :func:`toy_model` resumes exactly. ``build(model)`` gives its optimizer and
    scheduler (or None); the run trains ``before`` steps, then a run built anew on a copy of its
    model is given its state dicts as read back from a checkpoint: both train ``after`` more
    steps, with the same learning rates and weights, or the problem is ``differs``."""
    model, x, y = toy_model()
    optimizer, scheduler = build(model)
    train_steps(model, optimizer, x, y, before, scheduler)
    state = copy.deepcopy({"optimizer": optimizer.state_dict(), "scheduler": None if scheduler is None else scheduler.state_dict()})
    problems = weights_only_problem("its state_dict", state)
    other = copy.deepcopy(model)
    other_optimizer, other_scheduler = build(other)
    other_optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        other_scheduler.load_state_dict(state["scheduler"])
    rates = []
    for _ in range(after):
        train_steps(model, optimizer, x, y, 1, scheduler)
        train_steps(other, other_optimizer, x, y, 1, other_scheduler)
        rates.append((optimizer.param_groups[0]["lr"], other_optimizer.param_groups[0]["lr"]))
    same = all(a == b for a, b in rates) and all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))
    return problems + ([] if same else [differs])
