"""Training checks on a short run: dead ReLUs (at initialisation or killed by training), gradient
norms, the loss read against its floor, each head's metric on held-out samples; the one-batch
overfit."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ...contracts import Batch
from ...engine.progress import fell, fraction_fallen
from ...engine.train import make_optimizer
from ..emulate import cross_entropy_loss
from ..findings import SEE_FIXES, STALLED_HEAD, Change, Finding, fmt, pct
from ..probe import Probe, batch_len, eval_outputs, fresh_copy, learns, log_losses, scores, seeded, slice_batch, too_few
from ..short_run import RunTrace, schedule_warms_up, short_run
from .floor import loss_floor
from .optimization import run_steps, warm_up_steps
from .reach import reach_findings
from .relus import ReluProbe, dead_relu_findings

#: Samples of training the short run sees (at the recipe's batch size), and its step bounds.
SHORT_RUN_SAMPLES, SHORT_RUN_STEPS = (12_000, (60, 400))
#: The one-batch overfit: batch size and step budget; when the recipe's optimizer fails, a sane
#: one (Adam at 1e-3, twice the steps) says whether the model can fit it at all.
OVERFIT_BATCH, OVERFIT_STEPS, SANE_ADAM_LR = 32, 150, 1e-3
#: Over the short run the total loss must fall by at least this share of the way to its floor.
LOSS_FALL = 0.2
#: A head at chance whose training loss fell is judged again on a run this many times longer.
SLOW_HORIZON = 5


def short_run_steps(probe: Probe) -> int:
    """Steps of the short run: SHORT_RUN_SAMPLES images' worth (:meth:`Probe.steps_for`)."""
    return probe.steps_for(SHORT_RUN_SAMPLES, SHORT_RUN_STEPS)


def trace_of(probe: Probe) -> tuple[RunTrace, dict[str, float], dict[str, float], dict[str, str], dict[str, float]]:
    """The probe's short run (run once, shared by the checks that read it): its trace, the dead
    fraction of every ReLU layer before and after, each layer label's module path, and the share
    of each layer's units silent on an input that is the same for every sample (before or after)."""
    if "short_run" not in probe.cache:
        steps = short_run_steps(probe)
        model = fresh_copy(probe.model)
        relus, batch = ReluProbe(model), slice_batch(probe.sample, 1024)
        before = relus.dead_fractions(model, batch)
        blind = relus.blind
        relus.close()
        trace = _judged_run(probe, steps)
        relus = ReluProbe(trace.model)
        after = relus.dead_fractions(trace.model, batch)
        relus.close()
        blind = {layer: max(share, relus.blind.get(layer, 0.0)) for layer, share in blind.items()}
        probe.cache["short_run"] = (trace, before, after, relus.feeds, blind)
    return probe.cache["short_run"]


def _judged_run(probe: Probe, steps: int) -> RunTrace:
    """The short run a recipe is judged on. A recipe whose schedule warms up is judged first on
    the run that rises to the peak as its warm-up does and then holds it, since it never meets
    its peak from initialisation (docs/doctor.md: `speedrun`, `add-100`); when a head does not
    learn there, or the schedule has no warm-up, on the peak lr held from the first step (longer
    when a head is slow but moving), and the warmed run is the one judged if it learns there."""

    def run(steps: int, warmed: bool = False) -> RunTrace:
        return short_run(probe, steps, grad_norms=True, keep_model=True, warmed=warmed)

    def warmed_learning(steps: int) -> RunTrace | None:
        """The warmed run of ``steps``, when the schedule warms up and every head learns there."""
        if schedule_warms_up(probe, steps):
            warmed = run(steps, warmed=True)
            if _all_learn(probe, warmed):
                return warmed
        return None

    if (warmed := warmed_learning(steps)) is not None:
        return warmed
    trace = run(steps)
    if _slow_but_moving(probe, trace):
        # a head at chance whose training loss still fell: judge it on a longer run rather
        # than call it broken (the example plugin's ordinal head is at chance after 93 steps)
        steps *= SLOW_HORIZON
        trace = run(steps)
        if not _all_learn(probe, trace) and (warmed := warmed_learning(steps)) is not None:
            return warmed
    return trace


def _ends(losses: Tensor) -> tuple[float, float]:
    """The mean loss over the first and over the last tenth of a run's steps."""
    window = max(1, len(losses) // 10)
    return float(losses[:window].mean()), float(losses[-window:].mean())


def _all_learn(probe: Probe, trace: RunTrace) -> bool:
    learning = trace.learning()
    return all(learning.get(head, True) for head in probe.trained_heads())


def _slow_but_moving(probe: Probe, trace: RunTrace) -> bool:
    """Whether some trained head is not learning on held-out samples yet while its training loss
    fell at least LOSS_FALL of the way to its floor: the run may just be too short for it."""
    learning = trace.learning()
    for head in probe.trained_heads():
        losses = trace.head_losses.get(head)
        if learning.get(head, True) or losses is None or len(losses) < 2:
            continue
        if fell(*_ends(losses), LOSS_FALL, loss_floor(probe, head) or 0.0):
            return True
    return False


def run_name(probe: Probe, trace: RunTrace) -> str:
    warm_up = ", reached through the recipe's warm-up" if trace.warmed else ""
    return f"{trace.steps} steps of {probe.recipe.optimizer.section.type} at lr {fmt(probe.recipe.optimizer.params.lr)}{warm_up}"


def check_short_run(probe: Probe) -> list[Finding]:
    """A short run at the peak lr: each head's held-out metric, dead ReLUs, gradient norms, the loss against its floor.

    Train a copy for a few hundred steps at the recipe's peak lr: each head's held-out
    metric and loss against its floor, dead ReLUs, gradient norms, the loss trend."""
    trace, before, after, feeds, blind = trace_of(probe)
    if not trace.steps:
        return []
    name = run_name(probe, trace)
    floors = {h: loss_floor(probe, h) or 0.0 for h in probe.model.heads}
    all_learn = _all_learn(probe, trace)
    findings = _learning_findings(probe, trace, floors, name) + _step_growth_findings(probe, trace, name)
    findings += dead_relu_findings(before, after, name, probe.recipe.optimizer.params.lr, all_learn, feeds, blind)
    layers = set(trace.grad_norms)
    untrained = {n for n in layers if any(n == f"heads.{h}" or n.startswith(f"heads.{h}.") for h in probe.model.heads if probe.weight_of(h) == 0)}
    findings += _gradient_findings(trace.grad_norms, layers - untrained, name, probe.model)
    floor_total = sum(probe.weight_of(h) * floors[h] for h in probe.trained_heads())
    return findings + _trend_findings(trace.losses, name, floor_total, all_learn) + _run_too_short(probe, trace.steps)


#: The whole run is called too short when it has fewer than this share of the short run's steps
#: (tests on tiny data train 32 steps against a 93-step short run, and learn).
RUN_SHARE = 0.25


def _run_too_short(probe: Probe, steps: int) -> list[Finding]:
    """The recipe's whole run far shorter than the short run that judged its heads (a batch of
    20,000 for one epoch: 3 steps against 60): what the doctor saw learn, the run never gets to."""
    total = run_steps(probe)
    if total >= RUN_SHARE * steps:
        return []
    epochs, batch_size = probe.recipe.train.epochs, probe.batch_size
    return [Finding("learning", "warning", f"the whole run is {total} optimizer steps, under a quarter of the short run's {steps}",
        f"train.epochs = {epochs} of {total // epochs} steps each: data.batch_size = {batch_size} of "
        f"{probe.generator.size('train')} training samples", "the heads were judged over the short run, which the run "
        "itself stops before: it ends nearer initialisation than anything measured here", f"lower data.batch_size or raise "
        f"train.epochs, for {steps} steps or more", ["data.batch_size", "train.epochs"], {"run_steps": total, "short_run_steps": steps})]  # fmt: skip


def _step_growth_findings(probe: Probe, trace: RunTrace, name: str) -> list[Finding]:
    """The optimizer's steps growing without bound (:meth:`RunTrace.step_growth`): the run
    diverges later even when every head still learns in the short run."""
    growth = trace.step_growth()
    if growth is None:
        return []
    mid, end = growth
    n = trace.steps
    optimizer = probe.recipe.optimizer
    return [Finding("learning", "error", f"the optimizer's steps grow without bound: {fmt(mid)} lr -> {fmt(end)} lr per step",
        f"RMS change of the weights per step, in units of the lr, over {name}: steps {int(0.4 * n)}-{int(0.5 * n)} {fmt(mid)}, "
        f"the last {n - int(0.9 * n)} steps {fmt(end)}",
        f"steps that keep growing while the lr stays put diverge later in the run, whatever the short run's accuracy "
        f"({optimizer.section.type}: an Adam whose beta1^2 >= beta2 does this; so does a rate past the edge of stability)",
        SEE_FIXES, ["train.optimizer"], {"step_mid": mid, "step_end": end, "steps": n})]  # fmt: skip


def _learning_findings(probe: Probe, trace: RunTrace, floors: dict[str, float], name: str) -> list[Finding]:
    """Each trained head read through its metric on held-out samples, its loss against its floor;
    a head at chance is told apart as a loss/predict mismatch (the argmax of its own probabilities
    is right), slow learning (:meth:`RunTrace.learning`) or no learning at all."""
    findings = []
    warm_up: int | None = None  # the recipe's warm-up in steps, simulated when a head stalls
    n = batch_len(probe.held_out)
    if (few := too_few("learning", probe, batch_len(probe.sample), n)) is not None:
        return [few]
    for head in probe.trained_heads():
        losses = trace.head_losses[head]
        if not len(losses):
            continue
        first, last = _ends(losses)
        floor = floors[head]
        loss_fell = fell(first, last, LOSS_FALL, floor)
        by_argmax = trace.probability_accuracy(head)
        figures = {"before": trace.before[head], "after": trace.after[head], "chance": trace.chance[head],
                   "loss_first": first, "loss_last": last, "floor": floor, "fell": fraction_fallen(first, last, floor),
                   "log_loss": trace.nll.get(head), "best_constant_log_loss": trace.entropy.get(head), "argmax_accuracy": by_argmax}  # fmt: skip
        measured = (f"heads.{head} over {name}, on {n} held-out '{probe.held_out_split}' samples: "
                    f"accuracy {pct(trace.before[head])} -> {pct(trace.after[head])} "
                    f"(best constant guess {pct(trace.chance[head])}); loss {fmt(first)} -> {fmt(last)}, "
                    f"{pct(max(0.0, fraction_fallen(first, last, floor)))} of the way to its floor {fmt(floor)}")  # fmt: skip
        if trace.nll.get(head) is not None:
            measured += f"; held-out log-loss {fmt(trace.nll[head])} (best constant {fmt(trace.entropy[head])})"
        held_out = learns(trace.after[head], trace.chance[head], n)
        trained = _fits_training_not_held_out(probe, trace, head, first, last, floor, held_out)
        if trained is not None:
            figures["train_accuracy"] = trained
            findings.append(Finding("learning", "warning" if held_out else "error",
                f"heads.{head} fits its training samples, not held-out ones", f"{measured}; on {SAMPLES_READ} of its training "
                f"samples: {pct(trained)}", "its training loss is near its floor and it predicts its training samples, while "
                "held-out ones do worse than a constant guess: what it trains on differs from the held-out samples (a "
                "transform on the training split only) or is a few samples repeated (a draw() that ignores its index)",
                f"compare what {type(probe.generator).__name__}.draw() returns for the 'train' and '{probe.held_out_split}' splits, and "
                "check that the training batches hold distinct samples", [], figures))  # fmt: skip
        elif held_out:
            title = f"heads.{head} learns" if loss_fell else f"heads.{head} learns; its loss falls little (its floor is {fmt(floor)})"
            findings.append(Finding("learning", "info", title, measured, figures=figures))
        elif by_argmax is not None and learns(by_argmax, trace.chance[head], n):
            findings.append(Finding("learning", "error", f"heads.{head}: the loss falls but the accuracy stays at chance",
                measured + f"; the argmax of its own probabilities is right on {pct(by_argmax)}",
                f"heads.{head}'s loss trains its output, but predict() does not read that output the way the loss trains it "
                "(an offset, a different order, another output)", f"make heads.{head}'s predict() agree with its loss "
                f"({type(probe.model.heads[head]).__module__}.{type(probe.model.heads[head]).__name__})", [], figures))  # fmt: skip
        elif trace.learning().get(head):
            if trace.nll.get(head) is None and head in trace.held_loss:
                held_before, held_after = trace.held_loss[head]
                why = f"its own loss on held-out samples falls ({fmt(held_before)} -> {fmt(held_after)})"
            else:
                why = "its log-loss beats a constant guess"
            findings.append(Finding("learning", "info", f"heads.{head} learns slowly: {why}, its accuracy not yet",
                                    measured, figures=figures))  # fmt: skip
        elif loss_fell and math.isfinite(last) and fell(float(losses[0]), last, LOSS_FALL, floor) and last < CONSTANT_SHARE * _constant_loss(probe, head):
            # fell from where it started, not only from a spike early in the run (lr 0.5 blows the
            # loss up, then it settles back at a uniform guess's: that loss teaches nothing either),
            # and clearly below what the best constant output gives (from a start far too
            # confident down to a constant guess is no fall that teaches)
            findings.append(_loss_metric_finding(probe, head, measured, figures))
        elif head in probe.cache.get("taught_by_recipe_optimizer", {}):
            # the recipe's optimizer, at its lr, teaches it from the learnability check's fixed
            # samples: slow in the short run, not broken (two-images' sum under Adam at 1e-3)
            findings.append(Finding("learning", "warning", f"heads.{head} learns slowly: not yet in the short run",
                measured + f"; the recipe's optimizer learns it from fixed training samples (see [learnability]): "
                f"{pct(probe.cache['taught_by_recipe_optimizer'][head])} held out",
                "a head that learns beats the best constant guess on held-out samples within a few hundred steps; this one "
                "needs more, or a higher rate", f"{SEE_FIXES}: a change that makes it learn sooner", [], figures))  # fmt: skip
        else:
            why = "a head that learns beats the best constant guess on held-out samples within a few hundred steps"
            if warm_up is None:
                warm_up = warm_up_steps(probe)
            if warm_up > trace.steps:
                # add-100's zero last layer starts after 300-600 steps of its 900-step warm-up: the
                # short run cannot tell such a start from none (docs/doctor.md)
                why += (f"; but the recipe's own warm-up takes {warm_up} steps, more than this run's {trace.steps}: "
                        "a network that starts only under that warm-up is not judged here")
            findings.append(Finding("learning", "error", f"heads.{head} does not learn", measured, why,
                SEE_FIXES, [], {**figures, STALLED_HEAD: head}))  # fmt: skip
    return findings


#: A loss that fell while the metric stays at chance is read as the two disagreeing only below
#: this share of the loss of the best constant output (fitted in CONSTANT_STEPS Adam steps).
CONSTANT_SHARE, CONSTANT_STEPS = 0.95, 200
#: A head "fits its training samples" once its training loss has gone this share of the way to
#: its floor; its accuracy on them is read on this many of the probe's training samples.
FITTED, SAMPLES_READ = 0.8, 512


def _fits_training_not_held_out(probe: Probe, trace: RunTrace, head: str, first: float, last: float, floor: float,
                                held_out: bool) -> float | None:  # fmt: skip
    """The head's accuracy on training samples when it predicts them (its training loss most of
    the way to its floor, :data:`FITTED`) while held-out samples do worse than a constant guess
    (at chance, or a held-out log-loss above the best constant's); else None. A healthy head's
    held-out log-loss is well below the constant's after a short run, whatever its accuracy;
    a head whose loss and metric disagree predicts its training samples at chance too."""
    nll, constant = trace.nll.get(head), trace.entropy.get(head)
    worse = not held_out or (nll is not None and constant is not None and nll > constant)
    if trace.model is None or not math.isfinite(last) or fraction_fallen(first, last, floor) < FITTED or not worse:
        return None
    trained = scores(probe, trace.model, slice_batch(probe.sample, SAMPLES_READ))[head]
    return trained if learns(trained, trace.chance[head], SAMPLES_READ) else None


def _constant_loss(probe: Probe, head: str) -> float:
    """The head's loss for the best constant output (one output row for every sample, fitted by
    Adam on 256 held-out samples): what a loss reaches without reading its inputs (the targets'
    entropy, for a cross-entropy); inf where its loss cannot be fitted so."""
    batch = slice_batch(probe.held_out, 256)
    module, target = probe.model.heads[head], batch[probe.target_of(head)]
    try:
        with torch.no_grad():
            shape = probe.model(batch)[head].shape
        row = torch.zeros((1, *shape[1:]), requires_grad=True)
        optimizer = torch.optim.Adam([row], lr=0.1)
        best = math.inf
        for _ in range(CONSTANT_STEPS):
            loss = module.loss(row.expand(shape), target)
            best = min(best, float(loss.detach()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    except Exception:  # noqa: BLE001 - a loss that takes no such output: not a reason to hold a finding back
        return math.inf
    probe.model.zero_grad(set_to_none=True)
    return best if math.isfinite(best) else math.inf


def _loss_metric_finding(probe: Probe, head: str, measured: str, figures: dict) -> Finding:
    """A head whose training loss fell toward its floor while its held-out metric stays at chance:
    the loss trains something its metric does not read (a regression loss on class logits, say)."""
    module = probe.model.heads[head]
    cls = type(module)
    try:
        batch = slice_batch(probe.held_out, 2)
        with torch.no_grad():
            metrics = sorted(module.metrics(probe.model(batch)[head], batch[probe.target_of(head)]))
    except Exception:
        metrics = []
    metric = ", ".join(metrics) or "predict() == target"
    pair = f"{cls.__name__}.loss and {cls.__name__}'s {metric}"
    built_in = cls.__module__.startswith("digitsum.")
    fix = (f"use a head whose loss trains what its metric reads (the recipe's heads.{head}.type)" if built_in
           else f"make {cls.__module__}.{cls.__name__}.loss train what its metric ({metric}) reads: for class logits, "
                "a classification loss (cross-entropy), not a regression on the class index")  # fmt: skip
    # measured, not assumed: the same head trained with cross-entropy on its logits (a plugin's code)
    candidates = [] if built_in or not probe.logits_head(head) else [
        Change(f"heads.{head} trained with cross-entropy on its logits", emulate=cross_entropy_loss(head),
               code=f"{cls.__name__}.loss: a cross-entropy on the class logits")]  # fmt: skip
    return Finding("learning", "error", f"heads.{head}: its loss falls while its {metric} stays at chance ({pair} disagree)",
                   measured, f"the training loss of heads.{head} fell toward its floor, yet on held-out samples its {metric} is no "
                   "better than the best constant guess: what the loss rewards is not what the metric counts",
                   fix, [f"heads.{head}.type"] if built_in else [], {**figures, "loss": f"{cls.__name__}.loss", "metric": metric},
                   candidates=candidates)  # fmt: skip


def _gradient_findings(norms: dict[str, Tensor], trained: set[str], run: str, model: nn.Module) -> list[Finding]:
    """Gradient norms per layer of ``model`` over the short run."""
    median = {name: float(n.median()) for name, n in norms.items()}
    late = {name: float(n[-max(1, len(n) // 10):].mean()) for name, n in norms.items()}
    figures = {"median": median, "last_10pct": late}
    rows = "; ".join(f"{name or 'model'} {fmt(median[name])}" for name in norms)
    measured = f"median gradient norm per layer over {run}: {rows}"
    if not all(math.isfinite(v) for v in median.values()) or not all(math.isfinite(v) for v in late.values()):
        return [Finding("grad_norm", "error", "gradients became NaN or inf", measured, "a non-finite step ruins every weight",
                        f"{SEE_FIXES}; check the inputs and the loss", [], figures)]  # fmt: skip
    top = max((median[n] for n in trained), default=0.0)
    cut = [n for n in norms if n in trained and top > 0 and not bool(norms[n].any())]
    if cut:  # exactly 0 at every step while other layers learn: not vanishing, cut off
        owners = sorted({_owner(model, n) for n in cut})
        return [Finding("grad_norm", "warning", f"no gradient ever reaches {', '.join(cut)}",
            measured + f"; {', '.join(cut)}: exactly 0 at every step",
            "these layers are trained but never change: the forward never calls them (a layer made in __init__ and left "
            "unused), or something after them cuts the gradient off (a detach(), .data or torch.no_grad() applied to their "
            "output), or every unit after them is zero or dead; the rest of the network learns from their random initial values",
            f"find where the gradient stops after them in {' / '.join(owners)}.forward (an unused layer? a detach()?); if they "
            "are meant to stay fixed, set requires_grad = False on them", [], {**figures, "cut": cut})]  # fmt: skip
    silent = [n for n in norms if n in trained and (late[n] == 0.0 or (top > 0 and late[n] < 1e-4 * top))]
    if silent:
        return [Finding("grad_norm", "warning", f"gradients vanish in {', '.join(silent)}",
            measured + "; late in the run: " + ", ".join(f"{n} {fmt(late[n])}" for n in silent),
            "layers without gradient stop learning (dead units upstream, or a saturated output)",
            "find what stops the gradient after them: units that never fire (a ReLU after a large negative bias), a "
            "saturated output (a softmax or sigmoid before the loss), weights decayed to 0, or a head's loss weight near 0 "
            "(see [loss_weights])", [], figures)]  # fmt: skip
    if top > 1e3:
        return [Finding("grad_norm", "warning", "gradients explode", measured, "huge steps make training unstable",
                        "see the other findings: unscaled inputs ([data]), the learning rate, the optimizer's own step "
                        "([optimizer], [learnability])", [], figures)]  # fmt: skip
    return [Finding("grad_norm", "info", "gradient norms in range", measured, figures=figures)]


def _owner(model: nn.Module, layer: str) -> str:
    """The class of the component ``layer`` belongs to (``backbone.cnn.0``: the backbone's)."""
    part = ".".join(layer.split(".")[:2]) if layer.startswith("heads.") else layer.split(".")[0]
    try:
        return type(model.get_submodule(part)).__name__
    except AttributeError:
        return type(model).__name__


def _trend_findings(totals: Tensor, run: str, floor: float, learning: bool) -> list[Finding]:
    window = max(1, len(totals) // 10)
    first, last = _ends(totals)
    figures = {"first": first, "last": last, "steps": len(totals), "floor": floor}
    measured = f"total loss over {run}: {fmt(first)} (first {window} steps) -> {fmt(last)} (last {window}); lowest reachable {fmt(floor)}"
    if not math.isfinite(last) or not torch.isfinite(totals).all():
        return [Finding("loss_trend", "error", "the loss became NaN or inf", measured, "nothing trains after a NaN",
                        SEE_FIXES, [], figures)]  # fmt: skip
    if not fell(first, last, LOSS_FALL, floor):
        share = fraction_fallen(first, last, floor)
        title = f"the loss hardly falls ({pct(share)} of the way to its floor)" if last < first else "the loss does not fall"
        if learning:
            return [Finding("loss_trend", "info", title + ", but every trained head learns", measured, figures=figures)]
        return [Finding("loss_trend", "warning", title, measured,
                        f"a model that learns lowers its training loss by more than {pct(LOSS_FALL)} of the way to its floor in a few hundred steps",
                        "see the other findings: they say why", [], figures)]  # fmt: skip
    # a fall from a huge start (1e13) is "100 % of the way" while a head learns nothing: say so
    unlearnt = "" if learning else ", but not every trained head learns (see [learning])"
    return [Finding("loss_trend", "info", f"the loss falls ({pct(fraction_fallen(first, last, floor))} of the way to its floor){unlearnt}", measured, figures=figures)]


def _overfit(probe: Probe, batch: Batch, optimizer_of: Callable[[nn.Module], torch.optim.Optimizer],
             steps: int = OVERFIT_STEPS) -> tuple[int | None, dict[str, float], float, float, nn.Module]:  # fmt: skip
    """Train a fresh copy on one batch; return the step at which every trained head predicts it
    all (None if none did), each head's share predicted, the first and last loss, and the copy."""
    with seeded(probe, "overfit"):
        model = fresh_copy(probe.model)
        optimizer = optimizer_of(model)
        heads, first, fit, last = probe.trained_heads(), None, {}, float("nan")
        for step in range(1, steps + 1):
            loss = model.total_loss(model.losses(model(batch), batch))
            first = float(loss.detach()) if first is None else first
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % 10 == 0 or step == steps:
                fit = {h: v for h, v in scores(probe, model, batch).items() if h in heads}
                with torch.no_grad():
                    last = float(model.total_loss(model.losses(model(batch), batch)))
                if all(v >= 0.99 for v in fit.values()):
                    return step, fit, first, last, model
        return None, fit, first if first is not None else float("nan"), last, model


#: predict() disagrees with the loss when, on the batch the copy memorised (the argmax of the
#: head's own probabilities right on this share of it), it is right on this much less.
MEMORISED, DISAGREES = 0.9, 0.5


def predict_disagrees(by_argmax: float | None, right: float) -> bool:
    """Whether a head that memorised a batch by the argmax of its own probabilities (``by_argmax``
    of it right) reads it otherwise in ``predict`` (``right`` of it): the rule of the doctor's
    ``overfit`` check and of ``digitsum.testing.check_head``."""
    return by_argmax is not None and by_argmax >= MEMORISED and right <= by_argmax - DISAGREES


def _predict_disagrees(probe: Probe, model: nn.Module, batch: Batch, fit: dict[str, float], what: str) -> list[Finding]:
    """Heads whose probabilities() have memorised the batch while their predict() misses it:
    the loss trains what predict() does not read (an offset, another order). A head slow to
    learn held out (a sum) shows it here, long before its held-out accuracy could."""
    argmax = log_losses(probe, model, batch, eval_outputs(model, batch))
    findings = []
    for head, right in fit.items():
        by_argmax = argmax.get(f"{head}:argmax")
        if not predict_disagrees(by_argmax, right):
            continue
        cls = type(probe.model.heads[head])
        findings.append(Finding("overfit", "error", f"heads.{head}: predict() disagrees with its loss",
            f"after {what} on one batch of {batch_len(batch)}, the argmax of heads.{head}'s own probabilities is right on "
            f"{pct(by_argmax)} of it, {cls.__name__}.predict() on {pct(right)}",
            f"the loss has taught heads.{head} this batch, but predict() does not read its output the way the loss trains "
            "it (an offset, a different order, another output): every prediction and metric is wrong while training works",
            f"make {cls.__module__}.{cls.__name__}.predict() agree with its loss (the argmax of its probabilities)", [],
            {"argmax_fit": by_argmax, "predict_fit": right}))  # fmt: skip
    return findings


def check_overfit(probe: Probe) -> list[Finding]:
    """A model that works fits one small batch exactly within a few dozen steps."""
    heads = probe.trained_heads()
    if not heads:
        return []
    size = probe.batch_of(OVERFIT_BATCH)
    batch = slice_batch(probe.sample, size)
    recipe = probe.recipe
    step, fit, first, last, model = _overfit(probe, batch, lambda m: make_optimizer(recipe, m))
    fits = ", ".join(f"{h} {pct(v)}" for h, v in fit.items())
    lr = recipe.optimizer.params.lr
    what = f"{recipe.optimizer.section.type} at lr {fmt(lr)}"
    figures: dict[str, Any] = {"steps": step, "fit": fit, "loss_first": first, "loss_last": last}
    if step is not None:
        return [Finding("overfit", "info", f"fits one batch of {size} in {step} steps",
                        f"{what}: predictions matching targets {fits}; loss {fmt(first)} -> {fmt(last)}", figures=figures)]  # fmt: skip
    measured = f"after {OVERFIT_STEPS} steps of {what} on one batch of {size}: predictions matching targets {fits}; loss {fmt(first)} -> {fmt(last)}"
    if disagree := _predict_disagrees(probe, model, batch, fit, f"{OVERFIT_STEPS} steps of {what}"):
        return disagree
    trace = trace_of(probe)[0]
    if trace.steps and all(trace.learning().get(h, False) for h in heads):
        # held-out learning is stronger evidence of a working model than memorising one batch
        # exactly: a head that must set 81 thresholds right per sample (ordinal) is slow at that
        return [Finding("overfit", "info", f"does not memorise one batch of {size} in {OVERFIT_STEPS} steps, but every head learns on held-out samples",
                        measured + f" (the short run: {run_name(probe, trace)})", figures=figures)]  # fmt: skip
    sane_step, sane_fit, _, sane_last, _ = _overfit(probe, batch, lambda m: torch.optim.Adam(m.parameters(), lr=SANE_ADAM_LR), 2 * OVERFIT_STEPS)
    figures.update(sane_steps=sane_step, sane_fit=sane_fit)
    sane_fits = ", ".join(f"{h} {pct(v)}" for h, v in sane_fit.items())
    # logits a head's forward scales down: Adam's steps do not shrink with the gradient, other optimizers' do
    scaled = reach_findings(probe, batch, [h for h in heads if min(fit.get(h, 1.0), sane_fit.get(h, 1.0)) < 0.99], SANE_ADAM_LR, 2 * OVERFIT_STEPS)
    if sane_step is not None:
        return scaled + [Finding("overfit", "warning" if scaled else "error", f"cannot fit one batch with {what}; Adam at {SANE_ADAM_LR:g} can",
            measured + f"; Adam at lr {SANE_ADAM_LR:g} fits it in {sane_step} steps", "a model that cannot memorise 32 samples cannot learn "
            "the task: " + ("Adam's steps do not shrink with the gradient that the scaled-down logits above make tiny" if scaled else
                            "the optimizer's settings are to blame"), SEE_FIXES, [], figures)]  # fmt: skip
    return scaled + [Finding("overfit", "error",
        f"cannot fit one batch of {size}, even with Adam at lr {SANE_ADAM_LR:g}",
        measured + f"; {2 * OVERFIT_STEPS} steps of Adam at lr {SANE_ADAM_LR:g}: {sane_fits}, loss -> {fmt(sane_last)}",
        "a model that cannot memorise 32 samples is broken: loss, outputs, wiring or targets",
        "fix the error-level findings above first", [], figures)]  # fmt: skip
