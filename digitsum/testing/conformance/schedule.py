"""The conformance check of a Schedule, on SGD with momentum and on Adam."""

import math

import torch

from ...contracts import Schedule
from ._common import common_checks, reporting_crashes, resume_problems, toy_model, train_steps

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
    """Check a Schedule against its contract, on SGD with momentum and on Adam.

    Checks: Params; ``build`` works for runs of 1, 3, 10 and ``total_steps`` steps and returns a
    scheduler (``step``, ``get_last_lr``, ``state_dict``, ``load_state_dict``); every learning
    rate is finite, at least 0 and at most the optimizer's lr (the peak); with its default
    parameters it changes nothing but the learning rate (momentum, betas, weight decay stay as
    the optimizer was built); and resuming is exact: a scheduler built anew and given the first
    one's ``state_dict`` (as read back from a checkpoint) part-way gives the same learning
    rates to the end.
    """
    problems, checked = common_checks("schedule", cls, Schedule, params)
    for name, make in OPTIMIZERS.items():
        for steps in sorted({1, 3, 10, total_steps}):
            model, x, y = toy_model()
            optimizer = make(list(model.parameters()))
            group = optimizer.param_groups[0]
            hyper = {k: group[k] for k in HYPER_PARAMETERS if k in group}
            scheduler = cls(checked).build(optimizer, steps)
            missing = [m for m in ("step", "get_last_lr", "state_dict", "load_state_dict") if not callable(getattr(scheduler, m, None))]
            if missing:
                problems.fail(f"build() returned {type(scheduler).__name__}, without {', '.join(missing)}")
            rates = [group["lr"]]
            for _ in range(steps):
                train_steps(model, optimizer, x, y, 1, scheduler)
                rates.append(group["lr"])
            bad = [r for r in rates if not (math.isfinite(r) and 0 <= r <= PEAK * (1 + 1e-9))]
            if bad:
                problems.append(f"{name}, {steps} steps: learning rates outside [0, the optimizer's lr {PEAK}]: {bad[:3]}")
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
