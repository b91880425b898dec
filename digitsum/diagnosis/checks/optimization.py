"""The doctor's checks of the recipe's optimizer and learning-rate schedule, made without training:
the schedule stepped over the whole run, the optimizer's parameter groups and one step of it on a copy."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ...contract_checks import lr_problem
from ...contracts import Batch
from ...engine.batches import steps_per_epoch
from ...engine.component_errors import built
from ...engine.train import make_optimizer, make_scheduler
from ...errors import recipe_text
from ...listing import plain
from ...recipe import Recipe, load_recipe
from ..findings import BROKEN_CODE, Finding, fmt, pct
from ..probe import Probe, fresh_copy, off_defaults, seeded, slice_batch

#: The schedule check: a run whose lr is below SCHEDULE_STARVED of the peak for more than
#: SCHEDULE_STARVED_SHARE of its steps barely trains (one-cycle and cosine to 0 spend 5-6 % of
#: their steps there); above the peak, at most SCHEDULE_ABOVE times it, is a warning (the
#: contract says never; the short runs assume the peak), further an error. Runs longer than
#: SCHEDULE_MAX_STEPS are simulated compressed to that many steps.
SCHEDULE_STARVED, SCHEDULE_STARVED_SHARE, SCHEDULE_ABOVE, SCHEDULE_MAX_STEPS = 0.01, 0.5, 2.0, 10_000
SCHEDULE_KEY = "train.schedule.type"
#: One step larger per weight than this many times both the lr and the lr times the gradient
#: (RMS over the weights): the optimizer amplifies its gradient (the built-in ones measured 0.92 at most;
#: RMSprop's first step is 10 by its definition, 1/sqrt(1 - alpha)).
AMPLIFIED = 100.0
#: The recipe section of the optimizer, named when its code is found broken (BROKEN_CODE).
OPTIMIZER_SECTION = "train.optimizer"


def run_steps(probe: Probe) -> int:
    """Optimizer steps of the recipe's whole run, as the Trainer counts them."""
    return probe.recipe.train.epochs * steps_per_epoch(probe.generator, probe.batch_size)


def lr_trajectory(recipe: Recipe, steps: int) -> list[float]:
    """The lr the recipe's optimizer uses at each of ``steps`` steps under its schedule (built
    over those steps, as the Trainer builds it), the first param group's; no model is trained:
    the optimizer holds a weight matrix and a bias and never steps (both: an optimizer that
    leaves biases out, or puts them in a group of their own, still gets its first group). An
    optimizer whose groups do not start at the recipe's lr is refused as a run refuses it (a
    ComponentError naming it): the trajectory would be read against a peak it never had."""
    return [float(group["lr"]) for group in _first_group(recipe, steps)]


def _first_group(recipe: Recipe, steps: int) -> Iterator[dict[str, Any]]:
    """The first param group of the recipe's optimizer at each of ``steps`` steps of its schedule
    (see :func:`lr_trajectory`)."""
    weights = [nn.Parameter(torch.zeros(1, 1)), nn.Parameter(torch.zeros(1))]
    component = recipe.optimizer.cls(recipe.optimizer.params)
    optimizer = built("optimizers", recipe.optimizer, component, component.build(weights))
    scheduler = make_scheduler(recipe, optimizer, steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "scheduler.step() before optimizer.step()" and the like
        for _ in range(steps):
            yield optimizer.param_groups[0]
            scheduler.step()  # no optimizer step: nothing to move, and a schedule reads only the param groups


def _momentum_replaced(recipe: Recipe, steps: int) -> Finding | None:
    """A warning when the recipe sets its optimizer's momentum (Adam's beta1) and the schedule
    moves it elsewhere (one-cycle's momentum cycling, inherited from a parent recipe, say): the
    setting is silently not the one training uses. None otherwise."""
    for name, default, value in off_defaults(recipe.optimizer.params):
        if name == "momentum" or (name == "betas" and plain(value)[0] != plain(default)[0]):
            wanted = float(value if name == "momentum" else value[0])
            break
    else:
        return None

    def used(group: dict[str, Any]) -> Any:  # the momentum the optimizer steps with: SGD's, or Adam's beta1
        return group.get("momentum") if name == "momentum" else (group.get("betas") or (None,))[0]

    moved = [float(m) for group in _first_group(recipe, steps) if (m := used(group)) is not None]
    if not moved or all(math.isclose(m, wanted, rel_tol=1e-6) for m in moved):
        return None
    shown = f"train.optimizer.{name} = {recipe_text(plain(value))}"
    cycling = "momentum" in type(recipe.schedule.params).model_fields
    return Finding("schedule", "warning", f"the schedule replaces {shown}: it moves {'beta1' if name == 'betas' else 'the momentum'} "
        f"between {fmt(min(moved))} and {fmt(max(moved))}", f"schedule '{recipe.schedule.section.type}' over {len(moved)} steps",
        "a schedule that cycles the momentum against the lr sets it at every step, so the optimizer's own value is never used",
        "to keep the optimizer's value, " + ("set train.schedule.momentum = false" if cycling else "use a schedule that leaves the momentum be")
        + "; to cycle it, leave it out of [train.optimizer]",
        ["train.schedule.momentum" if cycling else SCHEDULE_KEY, f"train.optimizer.{name}"])  # fmt: skip


def schedule_problem(lrs: list[float], peak: float) -> tuple[str, str] | None:
    """(severity, title) of what is wrong with an lr trajectory against its ``peak``, or None
    (``digitsum.testing.check_schedule`` fails a schedule on the errors)."""
    if not all(math.isfinite(lr) and lr >= 0 for lr in lrs):
        bad = next(lr for lr in lrs if not (math.isfinite(lr) and lr >= 0))
        return "error", f"the schedule sets the lr to {fmt(bad)}"
    starved = sum(lr < SCHEDULE_STARVED * peak for lr in lrs) / len(lrs)
    if starved > SCHEDULE_STARVED_SHARE:
        return "error", f"the schedule keeps the lr below {pct(SCHEDULE_STARVED)} of its peak for {pct(starved)} of the run"
    if max(lrs) > 1.01 * peak:
        severity = "error" if max(lrs) > SCHEDULE_ABOVE * peak else "warning"
        return severity, f"the schedule raises the lr to {fmt(max(lrs) / peak)} times its peak"
    return None


def run_schedule(probe: Probe) -> tuple[int, int, list[float]]:
    """The recipe's whole run in steps, the steps its schedule is simulated over (at most
    SCHEDULE_MAX_STEPS: compressed beyond), and the lr at each (:func:`lr_trajectory`); cached
    on the probe (the schedule check and a stalled head's warm-up read it)."""
    if "schedule" not in probe.cache:
        total = run_steps(probe)
        steps = min(total, SCHEDULE_MAX_STEPS)
        probe.cache["schedule"] = (total, steps, lr_trajectory(probe.recipe, steps))
    return probe.cache["schedule"]


def warm_up_steps(probe: Probe) -> int:
    """Steps of the recipe's whole run before its schedule first reaches its highest lr (0 when
    it starts there, or when the schedule cannot be simulated: the schedule check reports that)."""
    try:
        total, steps, lrs = run_schedule(probe)
    except Exception:  # a plugin schedule or optimizer that raises: check_schedule names it
        return 0
    if not lrs or not max(lrs) > 0:
        return 0
    first = next(i for i, lr in enumerate(lrs) if lr >= 0.99 * max(lrs))
    return round(first * total / steps)


def check_schedule(probe: Probe) -> list[Finding]:
    """The learning rate the recipe's schedule sets at every step of the run.

    The short runs hold the peak lr, so a schedule that zeroes the lr, or climbs past the peak,
    shows only here: the lr must be finite and non-negative, above a hundredth of the peak for
    most of the run and not above the peak. A fix is verified by simulating the schedule it
    sets, the same way."""
    recipe, peak = probe.recipe, probe.recipe.optimizer.params.lr
    total, steps, lrs = run_schedule(probe)
    name = recipe.schedule.section.type
    at = [0, steps // 4, steps // 2, 3 * steps // 4, steps - 1]
    measured = (f"schedule '{name}' over {steps} steps" + (f" (the run's {total}, compressed)" if steps < total else " (the whole run)")
                + f", peak lr {fmt(peak)}: lr at steps " + ", ".join(f"{s + 1}: {fmt(lrs[s])}" for s in at)
                + f"; lowest {fmt(min(lrs))}, highest {fmt(max(lrs))}")  # fmt: skip
    figures = {"steps": steps, "run_steps": total, "peak": peak, "lowest": min(lrs), "highest": max(lrs)}
    problem = schedule_problem(lrs, peak)
    replaced = [found] if (found := _momentum_replaced(recipe, steps)) is not None else []
    if problem is None:
        return [Finding("schedule", "info", f"the schedule '{name}' keeps the lr in range", measured, figures=figures), *replaced]
    severity, title = problem
    default = type(recipe.schedule.section).model_fields["type"].get_default()
    fix, verified = f"fix the build() of schedule '{name}'", {}
    for other in dict.fromkeys((default, "constant")):
        if other == name:
            continue
        keys = {SCHEDULE_KEY: other}
        if schedule_problem(lr_trajectory(load_recipe(recipe.to_dict(), keys, label=f"recipe {recipe.name!r}"), steps), peak) is None:
            fix, verified = f'set {SCHEDULE_KEY} = "{other}" — verified: its lr stays in range over the same {steps} steps', keys
            break
    return [Finding("schedule", severity, title, measured,
                    "the lr is what each step moves the weights by: at about 0 the run stops learning, above the peak it "
                    "trains at rates the recipe never asked for (the doctor's short runs hold the peak, so they do not see it)",
                    fix, [SCHEDULE_KEY], figures, verified=verified), *replaced]  # fmt: skip


def _one_step(probe: Probe, batch: Batch, gradient: bool, lr: float | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """One step of the recipe's optimizer on a copy of the model: its trainable parameters before,
    after, and the gradient of the total loss on ``batch`` they were given (zeros when not
    ``gradient``: what the step does on its own, its weight decay, say); ``lr``: the rate every
    param group is set to first, as a schedule sets it (None: the recipe's)."""
    model = fresh_copy(probe.model)
    optimizer = make_optimizer(probe.recipe, model, checked=False)
    for group in optimizer.param_groups if lr is not None else ():
        group["lr"] = lr
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in trained.items()}
    optimizer.zero_grad(set_to_none=True)
    total = model.total_loss(model.losses(model(batch), batch))
    if isinstance(total, Tensor) and total.requires_grad:
        total.backward()
    grads = {name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for name, p in trained.items()}
    for p in trained.values():
        p.grad = p.grad if gradient and p.grad is not None else torch.zeros_like(p)
    optimizer.step()
    return before, {name: p.detach().clone() for name, p in trained.items()}, grads


def check_optimizer(probe: Probe) -> list[Finding]:
    """An optimizer that misses trainable tensors, or whose step stands still or goes uphill.

    Measured on copies of the model: its param groups against the trainable tensors, and one step
    against the same step given a zero gradient (the gradient's part of the step must have a
    negative dot product with the gradient)."""
    model, recipe = probe.model, probe.recipe
    kind = recipe.optimizer.section.type
    optimizer = make_optimizer(recipe, model, checked=False)  # built, never stepped: the probe's model is not changed
    cls = type(optimizer)
    name = f"train.optimizer ({kind}: {cls.__module__}.{cls.__name__})"
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trained if id(p) not in held]
    findings: list[Finding] = []
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        findings.append(Finding("optimizer", "error", f"the optimizer holds {len(trained) - len(missing)} of the model's {len(trained)} trainable tensors",
            f"{name}: its param groups miss {shown}",
            "the optimizer never changes the tensors it does not hold: those layers keep their initial weights",
            f"build the optimizer over every parameter its build() is given ({kind})", ["train.optimizer.type"],
            {"missing": missing, "trainable": len(trained), BROKEN_CODE: OPTIMIZER_SECTION}))  # fmt: skip
    batch = slice_batch(probe.sample, probe.batch_of(64))  # 64 images' worth: cheap for samples of many images
    with seeded(probe, "optimizer"):
        before, after, grads = _one_step(probe, batch, gradient=True)
    with seeded(probe, "optimizer"):
        _, idle, _ = _one_step(probe, batch, gradient=False)
    moved = sum(float((after[n] - before[n]).abs().sum()) for n in before)
    slope = sum(float((grads[n] * (after[n] - idle[n])).sum()) for n in before)  # the gradient's part of the step, along it
    has_gradient = any(bool(g.abs().sum() > 0) for g in grads.values())
    figures = {"moved": moved, "slope": slope}
    if has_gradient and (moved == 0 or slope > 0):
        figures[BROKEN_CODE] = OPTIMIZER_SECTION
    if has_gradient and moved == 0:
        findings.append(Finding("optimizer", "error", "the optimizer's step does not move the parameters",
            f"{name}: one step with a gradient on every trainable tensor changed none of them", "nothing trains",
            f"make {cls.__name__}.step() update the parameters from their .grad", ["train.optimizer.type"], figures))  # fmt: skip
    elif has_gradient and slope > 0:
        findings.append(Finding("optimizer", "error", "the optimizer steps uphill: along the gradient, not against it",
            f"{name}: the step's change from the gradient has a dot product of {fmt(slope)} with the gradient (downhill: below 0)",
            "each step raises the loss on its batch: the loss grows instead of falling",
            f"make {cls.__name__}.step() subtract the lr times the update (a sign error)", ["train.optimizer.type"], figures))  # fmt: skip
    if has_gradient and not findings:
        with seeded(probe, "optimizer"):
            _, still, _ = _one_step(probe, batch, gradient=True, lr=0.0)
        if moved_at_zero := sum(float((still[n] - before[n]).abs().sum()) for n in before):
            figures[BROKEN_CODE] = OPTIMIZER_SECTION
            findings.append(Finding("optimizer", "error", "the optimizer's step ignores the lr its param groups hold",
                f"{name}: one step with every param group's lr set to 0 still moved the weights by {fmt(moved_at_zero)} "
                f"(summed absolute change; {fmt(moved)} at the recipe's lr)",
                "schedules set the rate in the param groups at every step, as the doctor's fixes and a sweep's trials "
                "do: a step that ignores it trains at a rate of its own, and train.optimizer.lr and the schedule change nothing",
                f"make {cls.__name__}.step() scale its update by group['lr'], not by a rate of its own",
                ["train.optimizer.type"], figures))  # fmt: skip
    # the step's size: an optimizer moves a weight by about the lr (Adam's first step: exactly) or
    # the lr times its gradient (SGD); far more than both, it amplifies the gradient (Adam divided
    # by v, not its square root: 1/|g| per weight)
    lr = float(optimizer.param_groups[0].get("lr", 0.0) or 0.0)
    count = sum(g.numel() for g in grads.values())
    step_rms = math.sqrt(sum(float(((after[n] - idle[n]) ** 2).sum()) for n in before) / max(count, 1))
    grad_rms = math.sqrt(sum(float((g**2).sum()) for g in grads.values()) / max(count, 1))
    amplified = step_rms / lr / max(grad_rms, 1.0) if lr > 0 else 0.0
    figures.update({"step_rms_in_lr": step_rms / lr if lr > 0 else None, "grad_rms": grad_rms})
    if has_gradient and not findings and amplified > AMPLIFIED:
        figures[BROKEN_CODE] = OPTIMIZER_SECTION
        findings.append(Finding("optimizer", "error", f"the optimizer's step is {fmt(step_rms / lr)} times the lr per weight",
            f"{name}: one step moved the weights by {fmt(step_rms)} (RMS) at lr {fmt(lr)}, from gradients of RMS {fmt(grad_rms)}",
            "an optimizer moves a weight by about the lr (Adam, RMSprop, Lion) or the lr times its gradient (SGD): a step "
            f"{fmt(amplified)} times larger than both amplifies the gradient, and the run diverges",
            f"check {cls.__name__}.step(): a missing square root (Adam divides by the square root of its second moment), "
            "or a division by a small number", ["train.optimizer.type"], figures))  # fmt: skip
    if has_gradient and not findings and (unsettled := _unsettled(recipe, name)) is not None:
        findings.append(unsettled)
    if not findings:
        findings.append(Finding("optimizer", "info", "the optimizer holds every trainable tensor and steps downhill",
                                f"{name}: {len(trained)} tensors; one step's slope along the gradient {fmt(slope)}", figures=figures))
    return findings


#: The bowl: BOWL_STEPS steps of the recipe's optimizer, at its lr, on 0.5 c |w - w*|^2 with c =
#: 0.1 / lr (SGD's step shrinks the distance by a tenth), starting BOWL_SPREAD lrs from w* per
#: weight (Adam's steps, about the lr, arrive in as many). It has not settled when its loss over
#: the last ten steps is above BOWL_UNSETTLED of the start and BOWL_OVERSHOOT times the lowest it
#: reached: it passed the minimum and kept swinging (measured: every torch optimizer at its
#: defaults ends below 1e-4 of the start, or, Adagrad and Adadelta, still falling slowly; SGD at
#: momentum 0.999, Adam at beta1 0.999 and a velocity that never decays end at 0.17-0.51, after
#: reaching 3e-6-3e-5).
BOWL_STEPS, BOWL_SPREAD, BOWL_UNSETTLED, BOWL_OVERSHOOT = 300, 50.0, 0.01, 100.0


def _bowl(recipe: Recipe) -> tuple[float, float, float] | None:
    """The recipe's optimizer on the bowl: its loss at the start, the lowest and over the last ten
    steps; None when it cannot run there (the one-step checks measure such an optimizer)."""
    lr = recipe.optimizer.params.lr
    g = torch.Generator().manual_seed(0)
    shapes = [(16, 16), (16,)]  # a weight matrix and a bias, as an optimizer meets them
    centre = [BOWL_SPREAD * lr * torch.randn(shape, generator=g) for shape in shapes]
    weights = [nn.Parameter(c + BOWL_SPREAD * lr * (2 * torch.randint(0, 2, c.shape, generator=g) - 1)) for c in centre]
    losses = []
    try:
        component = recipe.optimizer.cls(recipe.optimizer.params)
        optimizer = component.build(weights)
        if lr_problem(component, optimizer) is not None:
            return None  # at another rate than the recipe's: the schedule check names that breach, the bowl would misread it
        for _ in range(BOWL_STEPS):
            loss = sum(0.5 * (0.1 / lr) * ((w - c) ** 2).sum() for w, c in zip(weights, centre))
            losses.append(float(loss.detach()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    except Exception:  # noqa: BLE001 - a plugin optimizer that needs more than this
        return None
    end = sum(losses[-10:]) / 10
    return (losses[0], min(losses), end) if all(map(math.isfinite, losses)) else (losses[0], 0.0, math.inf)


def _settled(figures: tuple[float, float, float] | None) -> bool:
    return figures is None or not (figures[2] > BOWL_UNSETTLED * figures[0] and figures[2] > BOWL_OVERSHOOT * figures[1])


def _unsettled(recipe: Recipe, name: str) -> Finding | None:
    """An error when the recipe's optimizer passes the minimum of a simple bowl and keeps swinging
    (:data:`BOWL_STEPS`): its momentum never decays enough. Each of its settings off its default is
    reset alone; one that settles it is named (a setting); with none, its step() is (code)."""
    figures = _bowl(recipe)
    if _settled(figures):
        return None
    start, best, end = figures
    settings = [(key, default, value) for key, default, value in off_defaults(recipe.optimizer.params) if key != "lr"]
    mending = [(key, default, value) for key, default, value in settings
               if _settled(_bowl(load_recipe(recipe.to_dict(), {f"train.optimizer.{key}": default}, label=f"recipe {recipe.name!r}")))]
    measured = (f"{name} at lr {fmt(recipe.optimizer.params.lr)} on a quadratic bowl, {BOWL_STEPS} steps: loss {fmt(start)} -> "
                f"lowest {fmt(best)} -> {fmt(end)} over the last 10 steps")
    why = ("an optimizer at a stable rate settles into the bottom of a bowl; this one passes it and swings on, as a momentum "
           "that never decays does: on the model's loss the steps keep overshooting and the run does not converge")
    if mending and all(k in ("momentum", "betas") for k, _, _ in mending) and _momentum_replaced(recipe, BOWL_STEPS) is not None:
        return None  # the schedule sets the momentum at every step: the schedule check's warning says the setting is unused
    if mending:
        shown = ", ".join(f"train.optimizer.{k} = {recipe_text(plain(d))} (default; now {recipe_text(plain(v))})" for k, d, v in mending)
        return Finding("optimizer", "error", "the optimizer does not settle: it overshoots the minimum of a bowl and keeps swinging",
            f"{measured}; it settles with " + ", ".join(f"{k} = {recipe_text(plain(d))}" for k, d, _ in mending), why,
            f"set {shown}", [f"train.optimizer.{k}" for k, _, _ in mending], {"bowl": list(figures)})  # fmt: skip
    return Finding("optimizer", "error", "the optimizer does not settle: it overshoots the minimum of a bowl and keeps swinging",
        measured + (" (and with each of its settings at its default)" if settings else ""), why,
        f"check the step() of {name}: a velocity or first moment never multiplied by a factor below 1 each step",
        ["train.optimizer.type"],
        {"bowl": list(figures), BROKEN_CODE: OPTIMIZER_SECTION})  # fmt: skip
