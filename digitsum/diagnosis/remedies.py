"""Verify before recommending: every change the doctor would propose is tried first.

Each candidate change (those the checks proposed, and every recipe setting off its component's
default, reset alone) gets the same short run with only that change, and is recommended only
when it measurably restores learning; those that help are then combined, round by round. See
docs/doctor.md, "Verify before recommending".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from ..errors import RecipeError, recipe_text
from ..listing import DOCTOR_CHECKS, plain
from ..recipe import MACHINE_LOCAL_KEYS, Recipe, load_recipe
from .checks.optimization import run_schedule
from .checks.training import short_run_steps
from .findings import BROKEN_CODE, LR_KEY, SEE_FIXES, STALLED_HEAD, SUSPECTS_LR, Change, Finding, fmt, pct
from .lr_range import MOMENTUM, RANGE_HIGH, RANGE_LOW, RANGE_STEPS, optimizer_changes
from .probe import Probe, off_defaults
from .short_run import RunTrace, short_run

#: A change that leaves every head learning is kept in the improvement rounds when it raises the
#: mean held-out accuracy by this much and lowers no head's by more.
IMPROVES = 0.02
#: ... unless a head that learned falls back to chance, losing more than DROP (a head slowed down
#: early by another that now trains beside it is not harm: the mean says whether the change helps).
DROP = 0.15
#: Improvement rounds at most (each tries only the changes that improved in the round before).
ROUNDS = 3
#: Settings never reset: the machine-local ones (where the data are, where the run trains), the batch size, the components.
NOT_LEVERS = MACHINE_LOCAL_KEYS | {"data.batch_size", "data.type", "backbone.type", "train.optimizer.type"}


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


def _default_of(params: Any, name: str) -> Any:
    field = type(params).model_fields[name]
    return None if field.is_required() else field.get_default(call_default_factory=True)


def setting_changes(probe: Probe) -> list[Change]:
    """Every recipe setting that differs from its component's default, reset alone, where the
    recipe allows it (an addition recipe's measured-only ``digits`` head keeps weight 0); and
    the learning rate ten times lower or higher (towards the optimizer's default)."""
    recipe = probe.recipe
    changes: list[Change] = []
    tables: list[tuple[str, Any, Any]] = [("data", recipe.data.params, None), ("backbone", recipe.backbone.params, None),
                                          ("train.optimizer", recipe.optimizer.params, None),
                                          ("train.schedule", recipe.schedule.params, recipe.schedule.section)]  # fmt: skip
    tables += [(f"heads.{h}", c.params, c.section) for h, c in recipe.heads.items()]
    for prefix, params, section in tables:
        for name, default, value in off_defaults(params):
            key = f"{prefix}.{name}"
            if key not in NOT_LEVERS and name != "lr" and default is not None:
                changes.append(Change(f"{key} = {recipe_text(default)} (default; now {recipe_text(value)})", {key: plain(default)}))
        if section is not None and "weight" in type(section).model_fields and section.weight != 1.0:
            now = "" if section.weight == 0 else f" (default; now {recipe_text(section.weight)})"
            changes.append(Change(f"{prefix}.weight = 1.0{now}", {f"{prefix}.weight": 1.0}))
    schedule_default = type(recipe.schedule.section).model_fields["type"].get_default()
    if recipe.schedule.section.type != schedule_default:
        changes.append(Change(f'train.schedule.type = "{schedule_default}" (default; now "{recipe.schedule.section.type}")',
                              {"train.schedule.type": schedule_default}))  # fmt: skip
    lr, default_lr = recipe.optimizer.params.lr, _default_of(recipe.optimizer.params, "lr")
    for factor in (0.1, 10.0) if default_lr is None else ((0.1,) if lr > default_lr else (10.0,) if lr < default_lr else ()):
        changes.append(Change(f"train.optimizer.lr = {fmt(lr * factor)} (now {fmt(lr)})", {"train.optimizer.lr": lr * factor}))
    if default_lr is not None and not any(math.isclose(default_lr, lr * f) for f in (0.1, 10.0, 1.0)):
        changes.append(Change(f"train.optimizer.lr = {fmt(default_lr)} (default; now {fmt(lr)})", {"train.optimizer.lr": default_lr}))
    return [change for change in changes if _allowed(recipe, change)]


def _allowed(recipe: Recipe, change: Change) -> bool:
    """Whether the recipe with ``change`` loads and sets the same task: a reset the recipe
    refuses is no fix to try, nor one that changes the inputs or the targets (``data.n = 1`` on
    add-2 is another benchmark, not its fix)."""
    try:
        changed = load_recipe(recipe.to_dict(), dict(change.keys))
    except RecipeError:
        return False
    return changed.interface() == recipe.interface()


def _recipe_keys(changes: list[Change]) -> dict[str, Any]:
    """The recipe keys the changes set (those with a stand-in for code set none)."""
    return {k: v for c in changes if c.emulate is None for k, v in c.keys.items()}


def _apply(probe: Probe, changes: list[Change]) -> Probe:
    keys = _recipe_keys(changes)
    variant = probe.variant(keys) if keys else probe
    for change in changes:
        if change.emulate is not None:
            variant = change.emulate(variant)
    return variant


@dataclass
class Attempt:
    change: Change
    trace: RunTrace | None
    error: str = ""


def try_changes(probe: Probe, changes: list[Change], steps: int) -> Attempt:
    """A verification run of ``probe`` with ``changes``; a change the recipe refuses, or a model
    that fails with it, is an attempt with the error's first line (a refused recipe's: the problem)."""
    try:
        return Attempt(changes[-1], short_run(_apply(probe, changes), steps))
    except RecipeError as e:  # its first line is only "<source>: 1 problem"; the problem says why
        problem = e.problems[0]
        return Attempt(changes[-1], None, f"refused: {problem.key + ': ' if problem.key else ''}{problem.message}")
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return Attempt(changes[-1], None, f"{type(e).__name__}: {first}")


def _identity(change: Change) -> str:
    """What a change does, whatever its label: the keys it sets, or its stand-in for code."""
    return repr(sorted(change.keys.items())) if change.emulate is None else change.label


def _mean(trace: RunTrace, heads: list[str]) -> float:
    """The mean skill of the heads (see :meth:`RunTrace.skill`): held-out log-loss against the
    best constant distribution's, or accuracy where a head gives no probabilities."""
    return sum(trace.skill(h) for h in heads) / max(1, len(heads))


def verify(probe: Probe, findings: list[Finding], deadline: float | None = None) -> tuple[list[Finding], dict[str, Any], list[str]]:
    """Try each candidate change on the short run; mark findings' fixes with what was measured.

    Returns the findings added (the summary of what was tried), the recipe keys verified to
    restore learning (what ``--repair`` writes) and the code changes verified the same way.
    """
    heads = list(probe.model.heads)
    # fixes proposed for an error or a warning (a double softmax, unscaled inputs) are tried even
    # when every head learns: kept when they raise held-out skill; settings merely off their
    # defaults only restore
    proposed = [c for f in findings if f.severity in ("error", "warning") for c in f.candidates]
    diagnosed = probe.cache["short_run"][0] if "short_run" in probe.cache else None
    growing = diagnosed is not None and diagnosed.step_growth() is not None
    if diagnosed is not None and not proposed and not growing:  # the short run is the diagnosis: nothing to fix when every head learned in it
        if diagnosed.finite and all(diagnosed.learning().values()):
            return [], {}, []
    # as long as the short run that judged a head not to learn: a shorter one would ask more of a
    # fix than of a healthy recipe (a head that learns in 93 steps need not in 62); steps that
    # grow show it only on a run as long as the one that found them (a slow head's longer run)
    steps = max(short_run_steps(probe), diagnosed.steps if growing else 0)
    # at the recipe's peak lr held constant, as in the run that found the stall: that run itself
    # when it is as long (every short run of a probe trains alike)
    same = diagnosed is not None and diagnosed.steps == steps and not diagnosed.warmed
    base = diagnosed if same else short_run(probe, steps)
    stalled = [h for h, ok in base.learning().items() if not ok]
    unstable = not base.finite or base.step_growth() is not None
    if not stalled and not unstable and not proposed:
        return [], {}, []
    # sections whose component's code an error finds broken: none of their settings is a fix
    broken = {f.figures[BROKEN_CODE] for f in findings if f.severity == "error" and BROKEN_CODE in f.figures}

    def mends_nothing(change: Change) -> bool:
        return bool(change.keys) and all(any(k.startswith(f"{s}.") and k != f"{s}.type" for s in broken) for k in change.keys)

    # the optimizer's settings as a family (lr-range test, momentum, weight decay)
    family, family_figures = optimizer_changes(probe) if (stalled or unstable) and not any(LR_KEY.startswith(f"{s}.") for s in broken) else ([], {})
    candidates: dict[str, Change] = {}  # by what they set: the first of equal changes
    for change in [c for f in findings if f.severity != "info" for c in f.candidates] + setting_changes(probe) + family:
        if not mends_nothing(change):
            candidates.setdefault(_identity(change), change)

    # a short run is deterministic (same batches, same initialisation): a combination measured
    # once is not run again (the rounds below start from the changes tried alone, on top of none)
    measured: dict[tuple[str, ...], Attempt] = {}

    def attempt(changes: list[Change]) -> Attempt:
        key = tuple(_identity(c) for c in changes)
        if key not in measured:
            measured[key] = try_changes(probe, changes, steps)
        known = measured[key]
        return Attempt(changes[-1], known.trace, known.error)

    def rank(trace: RunTrace) -> tuple[int, float]:
        return len(_restores(trace, heads)), _mean(trace, heads)

    def preferred(change: Change, trace: RunTrace) -> tuple[int, bool, float]:
        """As many heads restored, a proven defect's fix (Change.corrects) before a setting that
        makes up for it (a loss summed over the batch averaged, not the lr cut 512 times to match)."""
        restored, skill = rank(trace)
        return restored, change.corrects, skill

    name = f"{steps} steps"
    alone = []
    for change in candidates.values() if stalled or unstable else []:
        if _past(deadline):
            break
        alone.append(attempt([change]))
    helping = [a for a in alone if (_restores(a.trace, stalled) or not stalled) and set(heads) - set(stalled) <= set(_restores(a.trace, heads))]
    if unstable:  # a change that leaves the steps growing (or the loss infinite) fixes nothing
        helping = [a for a in helping if a.trace.step_growth() is None]
    # one change per recipe key: the best of those that help (two learning rates, say)
    chosen: list[Attempt] = []
    for a in sorted(helping, key=lambda a: -_mean(a.trace, heads)):
        if not any(set(a.change.keys) & set(c.change.keys) for c in chosen):
            chosen.append(a)
    combined = [a.change for a in chosen]
    current = attempt(combined) if len(combined) > 1 else (chosen[0] if chosen else Attempt(Change("nothing"), base))
    rounds: list[tuple[Change, RunTrace]] = []
    best = max(chosen, key=lambda a: preferred(a.change, a.trace)) if chosen else None
    if len(combined) > 1 and (current.trace is None or rank(current.trace) < rank(best.trace)):
        # together they do worse than the best of them alone (two changes that each make up for
        # the same cause, say): that one alone; the others may still join in the rounds below
        combined, current = [best.change], best

    def on_top(change: Change) -> Attempt | None:
        """``change`` measured on top of the combination so far (recorded in ``rounds``); None
        when time is up, it touches a key the combination sets, or the run fails."""
        if _past(deadline) or set(change.keys) & {k for x in combined for k in x.keys}:
            return None
        a = attempt(combined + [change])
        if a.trace is not None:
            rounds.append((change, a.trace))
        return a if a.trace is not None else None

    # while a head stays at chance: the other changes on top, round by round; the best that
    # restores one more head is kept
    pool = [a.change for a in alone if a.change not in combined and a.trace is not None]
    for _ in range(ROUNDS):
        if not pool or current.trace is None or _past(deadline):
            break
        learning_now = set(_restores(current.trace, heads))
        if learning_now >= set(heads):
            break  # every head learns: nothing left to restore (tuning is --repair's, see tune())
        better = []
        for change in pool:
            a = on_top(change)
            if a is None:
                continue
            learning = set(_restores(a.trace, heads))
            if any(current.trace.after[h] - a.trace.after[h] > DROP for h in learning_now - learning):
                continue  # a head that learned is back at chance
            if len(learning) > len(learning_now):  # a head the others left at chance now learns
                better.append((rank(a.trace), change, a))
        if not better:
            break
        _, change, current = max(better, key=lambda x: preferred(x[1], x[2].trace))
        combined.append(change)
        pool = [c for c in pool if c is not change]  # the others again, on top of the new combination

    # the errors' own fixes left out so far, on top: kept when they raise held-out skill (a proven
    # defect's fix, Change.corrects, while it stops no head learning); those left out tried again
    # on top of what was kept (a fix for an untrained head shows only once another trains it)
    left = [c for c in proposed if c not in combined]
    while left and current.trace is not None:
        kept = []
        for change in left:
            a = on_top(change)
            if a is None:
                continue
            keeps = set(_restores(current.trace, heads)) <= set(_restores(a.trace, heads))
            if keeps and (change.corrects or _mean(a.trace, heads) - _mean(current.trace, heads) >= IMPROVES):
                combined.append(change)
                kept.append(change)
                current = a
                if not any(x.change is change for x in alone):
                    alone.append(Attempt(change, a.trace))
        left = [c for c in left if c not in kept] if kept else []

    _annotate(findings, alone, combined, base, stalled, heads, name)
    repair = _recipe_keys(combined)
    code = [c.code or c.label for c in combined if c.emulate is not None]
    tried_rows = [_row(a, base, heads, stalled) for a in alone]
    measured = f"held-out accuracy after {name} at the recipe's settings: " + ", ".join(
        f"{h} {pct(base.after[h])} (best constant guess {pct(base.chance[h])})" for h in heads)
    lines = "; ".join(f"{r['change']}: {', '.join(pct(r['after'][h]) for h in heads) if 'after' in r else r['error']}"
                      + (f" (restores {', '.join(r['restores'])})" if r["restores"] else "") for r in tried_rows)  # fmt: skip
    figures = {"steps": steps, "base": base.after, "chance": base.chance, "tried": tried_rows,
               "combined": [c.label for c in combined],
               "combined_after": current.trace.after if current.trace is not None else None,
               "rounds": [{"change": c.label, "after": t.after, "skill": _mean(t, heads)} for c, t in rounds],
               "combined_skill": _mean(current.trace, heads) if current.trace is not None else None, **family_figures}  # fmt: skip
    if family_figures.get("lr_range"):
        ranges = [f"{what}: loss lowest at lr {fmt(r['lowest_at']) if r['lowest_at'] else '-'}, proposed "
                  f"{fmt(r['proposed']) if r['proposed'] else 'none (no rate lowers the loss)'}"
                  for what, r in (("recipe's optimizer", family_figures["lr_range"]), (f"momentum {MOMENTUM}", family_figures.get("lr_range_momentum"))) if r]  # fmt: skip
        measured += f"; lr-range test ({RANGE_STEPS} steps, lr {fmt(RANGE_LOW)} -> {fmt(RANGE_HIGH)}): " + "; ".join(ranges)
    still = [h for h in stalled if h not in _restores(current.trace, heads)] if combined else stalled
    if not combined and not stalled:
        return [], {}, []  # every head learns, and no proposed fix measurably helps: nothing to recommend
    if not combined:
        for finding in _pointing_here(findings):  # "see the fixes tried below" would point at nothing that helps
            finding.fix = ("no change the doctor tried restores learning (see [fixes]): the cause is likely in code or the data "
                           "(see the error findings)" if lines else
                           "the doctor found no setting to try: the cause is likely in code or the data (see the error findings)")  # fmt: skip
        out = Finding("fixes", "error", f"no single change restores learning of {', '.join(stalled)}",
            measured + f"; tried alone ({', '.join(heads)} after): {lines or 'nothing to try'}",
            "each change was tried with the same batches and initialisation; none made a stalled head beat the best constant guess",
            "the cause is in code or in the data (see the error findings), or needs several changes at once", [], figures)  # fmt: skip
        return [out], {}, []
    together = ", ".join(c.label for c in combined)
    result = _describe(base, current.trace, heads)
    # an error that finds a component's code broken, with no stand-in to measure its fix: a
    # setting that helps around it (a higher lr for a backbone that never trains) mends nothing
    unmended = sorted({f.figures[BROKEN_CODE] for f in findings if f.severity == "error" and BROKEN_CODE in f.figures
                       and not f.candidates} - {k.removesuffix(".type") for c in combined for k in c.keys if k.endswith(".type")})  # fmt: skip
    if unmended:
        return [Finding("fixes", "error", f"{together} helps, but {' and '.join(unmended)}'s code stays broken",
            measured + f"; with {together}: {result}; tried alone: {lines}",
            f"a setting can only work around the error above that finds {' and '.join(unmended)}'s own code broken: "
            "the run would still train a broken model", "fix the code first (see that error); --repair writes no setting for it",
            [], figures)], {}, []  # fmt: skip
    if not still:  # the findings that pointed here get the fix itself (a weight decay of 1 read as "see below")
        for finding in _pointing_here(findings):
            finding.fix = f"{together} — verified: with it, {result} after {name} (see [fixes])"
        _slow_not_stalled(probe, findings, combined, steps)
    out = Finding("fixes", "error" if still else "info",
        f"verified fix: {together}" if not still else f"the verified changes restore only part: {', '.join(still)} still at chance",
        measured + f"; with {together}: {result}; tried alone: {lines}",
        "each change was tried alone on the same batches and initialisation; those that restored a stalled head were combined, "
        "then, while a head stays at chance, the others tried on top of them, round by round, and the best kept when it restores one",
        ("digitsum doctor RECIPE --repair FIXED.toml writes " + ", ".join(f"{k} = {recipe_text(v)}" for k, v in repair.items()) if repair else "")
        + (("; in code: " if repair else "in code: ") + "; ".join(code) if code else ""),
        sorted(repair), figures)  # fmt: skip
    return [out], repair, code


#: A head that only a higher learning rate restores in the short run is slow, not stalled, when
#: the recipe's whole run adds up at least this many times the rates of the short run that
#: restored it. The sum of the rates is how far a run goes at rates small enough that the
#: optimizer's steps scale with them. Measured on MNIST (docs/doctor.md): AdamW held at 3e-4
#: reaches 70 % of sums in 8 epochs (its rates add up to 1.9 times the 93 steps at 0.0064 that
#: restore the sum head: an error) and 98 % in 30 (7.0 times: a warning).
RUN_COVERS = 2.0


def _slow_not_stalled(probe: Probe, findings: list[Finding], combined: list[Change], steps: int) -> None:
    """The "does not learn" errors (findings.STALLED_HEAD) become warnings when the verified fix
    is a higher learning rate alone and the recipe's whole run covers :data:`RUN_COVERS` times
    what that rate needed: a recipe that is merely slow (AdamW at 3e-4 for 30 epochs) is told so,
    with the faster rate as its fix, not called broken."""
    if len(combined) != 1 or set(combined[0].keys) != {LR_KEY}:
        return
    lr, faster = probe.recipe.optimizer.params.lr, combined[0].keys[LR_KEY]
    try:
        total, simulated, lrs = run_schedule(probe)
    except Exception:  # a schedule that cannot be simulated: check_schedule reports it
        return
    covered, needed = sum(lrs) * total / simulated, steps * faster
    if not (faster > lr and covered >= RUN_COVERS * needed):
        return
    for finding in findings:
        head = finding.figures.get(STALLED_HEAD)
        if head is None or finding.severity != "error":
            continue
        finding.severity, finding.title = "warning", f"heads.{head} learns too slowly for the short run"
        finding.why += (f"; but the whole run's learning rates add up to {fmt(covered)} over {total} steps, "
                        f"{covered / needed:.1f} times the {steps} steps at {fmt(faster)} in which it learns: it should learn "
                        "in the run, only slowly")  # fmt: skip
        finding.figures["run_covers"] = covered / needed


def _pointing_here(findings: list[Finding]) -> list[Finding]:
    """The warnings and errors whose fix is "see the fixes tried below" (findings.SEE_FIXES)."""
    return [f for f in findings if f.severity != "info" and not f.candidates and f.fix.startswith(SEE_FIXES)]


def _restores(trace: RunTrace | None, of: list[str]) -> list[str]:
    """The heads of ``of`` that learn in ``trace`` (none when it failed or diverged)."""
    if trace is None or not trace.finite:
        return []
    learning = trace.learning()
    return [h for h in of if learning[h]]


def _row(a: Attempt, base: RunTrace, heads: list[str], stalled: list[str]) -> dict[str, Any]:
    """What one change measured, as the findings' ``tried`` rows and the figures record it."""
    if a.trace is None:
        return {"change": a.change.label, "keys": a.change.keys, "code": a.change.code, "error": a.error, "restores": []}
    return {"change": a.change.label, "keys": a.change.keys, "code": a.change.code,
            "before": {h: base.after[h] for h in heads}, "after": {h: a.trace.after[h] for h in heads},
            "restores": _restores(a.trace, stalled)}  # fmt: skip


def _annotate(findings: list[Finding], alone: list[Attempt], combined: list[Change], base: RunTrace,
              stalled: list[str], heads: list[str], name: str) -> None:
    """Each finding's candidates get what they measured; its fix says so (and an unverified
    warning whose change restores a head becomes an error: measured to be a cause; an error that
    blames the learning rate, whose rates tried restore no head, a warning: measured not to be)."""
    for finding in findings:
        refuted = bool(finding.candidates) and finding.severity == "error" and bool(finding.figures.get(SUSPECTS_LR))
        for change in finding.candidates:
            a = next((x for x in alone if x.change == change or x.change.label == change.label), None)
            if a is None:
                refuted = False  # not every rate it proposes was tried
                continue
            finding.tried.append(_row(a, base, heads, stalled))
            gain = _restores(a.trace, stalled)
            what = change.code or f"set {change.label}"
            if gain:
                finding.fix = f"{what} — verified: with only this change, {_describe(base, a.trace, gain)} after {name}"
                rival = next((c for c in combined if c != change and set(c.keys) & set(change.keys)), None)
                if rival is not None:  # another value of the same key did better: that one is recommended
                    finding.fix += f"; {rival.label} does better and is the fix kept (see [fixes])"
                if finding.severity == "warning" and finding.check in DOCTOR_CHECKS:  # a plugin's severities are its own
                    finding.severity = "error"
            elif change in combined and not stalled:  # kept as a measured defect's fix, or as a gain in the mean
                finding.fix = f"{what} — verified: every head still learns with it (held-out accuracy {_describe(base, a.trace, heads)} after {name})"
            elif change in combined:
                finding.fix = f"{what} — verified together with the other fixes (alone it restores no head)"
            else:
                finding.fix = (f"tried {change.label}: alone it restores no head ({_describe(base, a.trace, heads) if a.trace else a.error}); "
                               "see the fixes below")  # fmt: skip
            refuted = refuted and set(change.keys) <= {LR_KEY} and not gain and change not in combined
        if refuted:
            # dead ReLUs beside shifted labels or a broken loss: the rate is not what stops learning here
            finding.severity = "warning"


def _describe(base: RunTrace, trace: RunTrace | None, heads: list[str]) -> str:
    """Each head's held-out accuracy before -> after the change; and where the accuracy shows no
    change, its held-out log-loss, or for a head without class probabilities its own held-out
    loss (a head judged to learn by either would read "10 % -> 10 %", or add-100's "0 % -> 0 %")."""
    if trace is None:
        return "failed"
    parts = []
    for h in heads:
        text = f"{h} {pct(base.after[h])} -> {pct(trace.after[h])}"
        if pct(base.after[h]) == pct(trace.after[h]):
            was, now = base.nll.get(h), trace.nll.get(h)
            if was is not None and now is not None:
                text += f" (held-out log-loss {fmt(was)} -> {fmt(now)})"
            elif h in base.held_loss and h in trace.held_loss:
                text += f" (held-out loss {fmt(base.held_loss[h][1])} -> {fmt(trace.held_loss[h][1])})"
        parts.append(text)
    return ", ".join(parts)


#: Tuning (``--repair`` only) keeps a setting reset when it raises the held-out skill by this much
#: over a run as long as the short run's; at most this many settings.
TUNE_GAIN, TUNE_KEEP = 0.02, 3


def tune(probe: Probe, deadline: float | None = None) -> tuple[list[Finding], dict[str, Any]]:
    """For ``--repair``, on a recipe whose heads learn: each setting that differs from its
    component's default (and the lr ten times lower or higher) is tried on top of the recipe over
    a run as long as the short run (the recipe's own schedule, compressed); the one that raises
    the heads' held-out skill most is kept, then the others tried again, while one helps by
    ``TUNE_GAIN``. What a short run can measure only: a change whose benefit shows after
    thousands of steps is not found here."""
    steps = short_run_steps(probe)
    heads = list(probe.model.heads)
    base = short_run(probe, steps, scheduled=True)
    pool = setting_changes(probe)
    kept: list[Change] = []
    current = base
    tried: list[dict[str, Any]] = []
    while pool and len(kept) < TUNE_KEEP and not _past(deadline):
        best: tuple[float, Change, RunTrace] | None = None
        learning_now = {h for h, ok in current.learning().items() if ok}
        for change in pool:
            try:
                trace = short_run(_apply(probe, kept + [change]), steps, scheduled=True)
            except Exception:
                continue
            gain = _mean(trace, heads) - _mean(current, heads)
            tried.append({"change": change.label, "on_top_of": [c.label for c in kept], "skill": _mean(trace, heads), "gain": gain})
            if not trace.finite or not learning_now <= {h for h, ok in trace.learning().items() if ok}:
                continue
            if gain >= TUNE_GAIN and (best is None or gain > best[0]):
                best = (gain, change, trace)
        if best is None:
            break
        kept.append(best[1])
        current = best[2]
        pool = [c for c in pool if c is not best[1] and not set(c.keys) & set(best[1].keys)]
    keys = _recipe_keys(kept)
    figures = {"steps": steps, "base_skill": _mean(base, heads), "skill": _mean(current, heads), "tried": tried,
               "kept": [c.label for c in kept]}  # fmt: skip
    gains = "; ".join(f"{t['change']} {t['gain']:+.3f}" for t in tried)
    if not kept:
        return [Finding("tuning", "info", "no setting reset raises held-out skill", f"tried over {steps} steps: {gains}", figures=figures)], {}
    return [Finding("tuning", "info", f"tuned: {', '.join(c.label for c in kept)}",
                    f"held-out skill (1 - log-loss / the best constant guess's) over {steps} steps: {_mean(base, heads):.3f} -> "
                    f"{_mean(current, heads):.3f}; accuracy {_describe(base, current, heads)}; tried: {gains}",
                    fix="written by --repair", keys=sorted(keys), figures=figures)], keys  # fmt: skip
