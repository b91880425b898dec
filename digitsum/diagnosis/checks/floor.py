"""The lowest loss each head can reach under its settings (its floor): what the trend and the
metrics are read against, and a check that names a floor no setting explains (the head's loss
code raises it: a softmax before a cross-entropy, say)."""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from ..emulate import cross_entropy_loss
from .loss import probability_output
from ..findings import BROKEN_CODE, Change, Finding, fmt
from ..probe import Probe, evaluating, off_defaults, slice_batch

#: A floor above this share of the head's loss at initialisation is reported as raised.
RAISED = 0.25


#: The floor: each head's loss minimised over free outputs (its settings fixed, the network out of
#: the way) with Adam at 0.1 for this many steps on 256 samples, from the outputs at init.
FLOOR_STEPS = 300
#: ... or, for a head whose forward runs at each step, until the loss is below this share of its start.
FLOOR_DONE = 0.01
#: Free outputs start from the outputs at init clipped to this range (Adam at 0.1 moves each by
#: at most 30 in FLOOR_STEPS).
FREE_START = 10.0
#: The noise added to free features before that search (Adam's first steps move them by 0.1).
JITTER = 0.01
#: A class-logits head's floor through its forward this far (nats) above its floor over free
#: outputs: its forward bounds what the loss reads as logits (a sigmoid: ln(1 + 18/e) = 2.03 for
#: 19 classes, against 0.004); a linear head reaches the free floor within 0.05.
FORWARD_GAP = 0.5


def _floor_raisers(probe: Probe, head: str, floor: float) -> dict[str, dict]:
    """The head's settings off their defaults whose reset alone lowers its floor by more than
    half: each measured on the probe with that one key reset (label smoothing, an output of
    probabilities, say)."""
    found: dict[str, dict] = {}
    for name, default, value in off_defaults(probe.recipe.heads[head].params):
        if not isinstance(value, (int, float, str)) or isinstance(value, bool):
            continue
        key = f"heads.{head}.{name}"
        try:
            lower = loss_floor(probe.variant({key: default}), head)
        except Exception:  # a reset the recipe refuses
            continue
        if lower is not None and lower < 0.5 * floor:
            found[key] = {"value": value, "default": default, "floor": lower}
    return found


def loss_floor(probe: Probe, head: str) -> float | None:
    """The lowest loss ``head`` can reach under its settings: its loss minimised over free
    outputs of the shape it gives (label smoothing, say, keeps it above 0) — for a class-logits
    head whose outputs are probabilities, its loss of perfect ones (what the ``double_softmax``
    check reports); for a head whose output is not class logits, over free features into the
    head, since its forward may bound what it can output (there, an upper bound once below
    FLOOR_DONE of the start). A class-logits head's floor is measured through its forward too,
    and taken from there when its forward bounds the loss: below 0 over free outputs and not
    through a forward that returns log-probabilities (into ``nll_loss``), or :data:`FORWARD_GAP`
    above it through one that squashes its logits (the floor over free outputs is then kept as
    ``floor:<head>:free outputs``). None when the loss does not depend differentiably on the
    output. Cached on the probe."""
    key = f"floor:{head}"
    if key in probe.cache:
        return probe.cache[key]
    logits = probe.output_kind(head) == "class_logits"
    probe.cache[key] = floor = _minimised(probe, head, free_outputs=logits)
    if floor is not None and logits:
        # through its forward, from free features: stopped as soon as it is plain that the forward
        # does not bound the loss (a linear head gets there in a few dozen of the 300 steps)
        bounded = _minimised(probe, head, free_outputs=False, stop_below=0.0 if floor < 0 else floor + FORWARD_GAP)
        # below 0 over free outputs, not through the forward (log-probabilities into nll_loss); or
        # far above: the forward squashes what the loss takes as logits (a sigmoid before it)
        if bounded is not None and ((floor < 0 <= bounded) or (bounded > floor + FORWARD_GAP and _squashes(probe, head))):
            probe.cache[f"floor:{head}:free outputs"] = floor
            probe.cache[key] = floor = bounded
    return floor


#: A forward squashes its outputs when features this many times larger widen them (each row's
#: max - min) less than SQUASH_GROWTH times: a linear layer's widen as much, a sigmoid's not at all.
SQUASH_SCALE, SQUASH_GROWTH = 1e4, 100.0


@torch.no_grad()
def _squashes(probe: Probe, head: str) -> bool:
    """Whether ``head``'s forward keeps its outputs within bounds however large its features (a
    sigmoid, a tanh, a clamp after the last layer), rather than spanning too few directions to
    reach a free floor (one feature into a linear head: the narrow backbone is the cause there)."""
    module = probe.model.heads[head]
    features = probe.model.backbone(slice_batch(probe.sample, 256)).float()

    def spread(x: Tensor) -> float:
        out = module(x).float()
        return float((out.max(dim=1).values - out.min(dim=1).values).mean())

    # in eval mode: a batch norm inside the head is then the affine map it trains towards, not a
    # per-batch normalisation that would hide the features' scale (and its running statistics stay)
    with evaluating(module):
        return spread(SQUASH_SCALE * features) < SQUASH_GROWTH * max(spread(features), 1e-12)


def floor_through_forward(probe: Probe, head: str) -> bool:
    """Whether ``head``'s floor was measured through its forward, not over free outputs."""
    return probe.output_kind(head) != "class_logits" or f"floor:{head}:free outputs" in probe.cache


def _minimised(probe: Probe, head: str, free_outputs: bool, stop_below: float | None = None) -> float | None:
    """``head``'s loss minimised over free outputs, or over free features through its forward
    (the head's own trainable weights free too, on a copy); with ``stop_below``, only until it
    falls below that (then an upper bound)."""
    batch = slice_batch(probe.sample, 256)
    module = probe.model.heads[head]
    target = batch[probe.target_of(head)]
    weights: list[Tensor] = []
    if free_outputs:
        # logits are free: any [B, classes] is reachable, so the floor is the loss's own
        with torch.no_grad():
            # from the outputs at init, within a reach of Adam's 300 steps at 0.1 (a backbone
            # initialised far too large gives logits of 1e3: the floor is the loss's, not the start's)
            free = probe.model(batch)[head].detach().float().clamp(-FREE_START, FREE_START)
        squashed = probability_output(module, free, target)
        if squashed is not None:  # but these are probabilities: rows of [0, 1], a perfect one the best reachable
            return squashed.floor
        loss_fn = module.loss
        cheap_enough = True  # the loss alone: all FLOOR_STEPS, for the floor as a figure of its own
    else:
        # another output may be constrained by the head itself (normalised, bounded): its
        # reachable outputs are those of its forward, so the features it reads are the free part
        with torch.no_grad():
            free = probe.model.backbone(batch).detach().float().clone()
            # jittered (by a generator of its own: the run's random state untouched): features that
            # start alike (a zero last layer) get alike gradients where the head is symmetric in
            # them (a + b), and would stay alike, stuck on a floor the network itself is not held to
            jitter = torch.Generator().manual_seed(0)
            free += JITTER * torch.randn(free.shape, generator=jitter)
        # what the forward can reach is what training reaches: its weights move as well (a batch
        # norm inside it bounds each batch's outputs only for the weights after it at their
        # initial values). A copy: the model the other checks read keeps its weights and statistics
        module = copy.deepcopy(module)
        weights = [p for p in module.parameters() if p.requires_grad]

        def loss_fn(features: Tensor, target: Tensor) -> Tensor:
            return module.loss(module(features), target)

        # each step runs the head's forward (add-100's exact inference: 20 ms); below FLOOR_DONE of
        # the start, more steps change nothing the floor is read for: there it is an upper bound.
        # A class-logits head's runs every step: whether its loss falls below 0 is the question.
        cheap_enough = probe.output_kind(head) == "class_logits"
    free.requires_grad_(True)
    optimizer = torch.optim.Adam([free, *weights], lr=0.1)
    best = start = None
    try:
        for _ in range(FLOOR_STEPS):
            loss = loss_fn(free, target)
            if not loss.requires_grad or not torch.isfinite(loss):
                break
            value = float(loss.detach())
            best = value if best is None else min(best, value)
            start = value if start is None else start
            if stop_below is not None and best < stop_below:
                break
            if not cheap_enough and 0 <= best < FLOOR_DONE * start:
                break  # (a loss that goes below 0, a Poisson log-likelihood's, is followed to its floor)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    except Exception:
        best = None
    probe.model.zero_grad(set_to_none=True)
    return best


def check_loss_floor(probe: Probe) -> list[Finding]:
    """The lowest loss each head can reach under its settings.

    A floor the settings raise is reported (the trend and the metrics are read against it); a
    class-logits head's that no setting explains is its loss code's: a warning, with the head
    trained by cross-entropy on its logits as the candidate fix for a plugin's head."""
    findings = []
    batch = slice_batch(probe.sample, 256)
    with torch.no_grad():
        outputs = probe.model(batch)
        losses = {h: float(v) for h, v in probe.model.losses(outputs, batch).items()}
    for head in probe.model.heads:
        floor = loss_floor(probe, head)
        if floor is None or not math.isfinite(losses[head]):
            continue
        start = losses[head]
        figures = {"floor": floor, "at_init": start}
        squashed = probe.logits_head(head) and probability_output(probe.model.heads[head], outputs[head], batch[probe.target_of(head)])
        over = ("of perfect probabilities (its outputs are probabilities)" if squashed else
                "through its forward" if floor_through_forward(probe, head) else "over free outputs")  # fmt: skip
        measured = f"heads.{head}: lowest loss {over} {fmt(floor)}, at initialisation {fmt(start)}"
        if floor < 0 and probe.logits_head(head) and not squashed:
            findings.append(_unbounded(probe, head, floor, measured, figures))
            continue
        if not (start > 0 and floor > RAISED * start):
            findings.append(Finding("loss_floor", "info", f"heads.{head} can lower its loss to {fmt(floor)}", measured, figures=figures))
            continue
        measured += f" ({100 * floor / start:.0f} % of it)"
        raising = _floor_raisers(probe, head, floor)
        figures["raised_by"] = raising
        if squashed and not raising:  # its forward() gives probabilities: the double_softmax check names the fault and the fix
            findings.append(Finding("loss_floor", "info", f"heads.{head} outputs probabilities, so its loss cannot fall below {fmt(floor)}",
                measured, "see double_softmax", figures=figures))  # fmt: skip
        elif raising or not probe.logits_head(head):
            # for another output kind the floor is reached through the head's forward, over free
            # features: an upper bound (the example plugin's ordinal head stops at 0.28), no proof
            named = "; ".join(f"{k} = {v['value']} (at {v['default']} the floor is {fmt(v['floor'])})" for k, v in raising.items())
            findings.append(Finding("loss_floor", "info",
                f"heads.{head}'s settings raise its lowest reachable loss to {fmt(floor)}" + (f": {', '.join(raising)}" if raising else ""),
                f"{measured}: its loss cannot fall far; its metric says whether it learns" + (f"; raised by {named}" if named else ""),
                "a raised floor is what these settings ask for (label smoothing keeps every class's probability up); "
                "it also shrinks the gradient that teaches the head",
                ("if the floor is not intended, set " + ", ".join(f"{k} = {v['default']}" for k, v in raising.items())) if raising else "",
                sorted(raising), figures))  # fmt: skip
        elif f"floor:{head}:free outputs" in probe.cache:
            findings.append(_floor_in_forward(probe, head, floor, measured, outputs[head], figures))
        else:
            findings.append(_floor_in_code(probe, head, floor, measured, figures))
    return findings


def _floor_in_forward(probe: Probe, head: str, floor: float, measured: str, output: Tensor, figures: dict) -> Finding:
    """A class-logits head whose forward bounds its outputs: its loss, which could fall to the
    floor over free outputs, cannot fall below the floor through its forward (a sigmoid or a
    clamp on what the loss takes as logits)."""
    cls, free = type(probe.model.heads[head]), probe.cache[f"floor:{head}:free outputs"]
    lo, hi = float(output.min()), float(output.max())
    figures = {**figures, "free_floor": free, "output_min": lo, "output_max": hi}
    return Finding("loss_floor", "error",
        f"heads.{head}'s forward bounds its logits: its loss cannot fall below {fmt(floor)}",
        f"{measured}; over free outputs {fmt(free)}; its outputs at initialisation lie in [{fmt(lo)}, {fmt(hi)}]",
        "the loss reads the head's outputs as logits, which a cross-entropy needs free: squashed (a sigmoid, a tanh, a "
        "clamp) they cannot grow confident, the loss stays high for perfect predictions and its gradient shrinks",
        f"return the logits themselves from {cls.__module__}.{cls.__name__}.forward (no sigmoid, tanh or clamp after "
        "the last layer)", [], {**figures, BROKEN_CODE: f"heads.{head}"})  # fmt: skip


def _loss_code_fix(probe: Probe, head: str, corrects: bool = False) -> tuple[type, bool, list[Change]]:
    """The class of a head whose loss code is at fault, whether it is digitsum's own, and the fix
    to verify for a plugin's: its logits trained with cross-entropy (none for a built-in, whose
    fix is another ``type``)."""
    cls = type(probe.model.heads[head])
    built_in = cls.__module__.startswith("digitsum.")
    candidates = [] if built_in else [Change(f"heads.{head} trained with cross-entropy on its logits", emulate=cross_entropy_loss(head),
                                             code=f"{cls.__name__}.loss: a cross-entropy on the class logits", corrects=corrects)]  # fmt: skip
    return cls, built_in, candidates


def _unbounded(probe: Probe, head: str, floor: float, measured: str, figures: dict) -> Finding:
    """A class-logits head whose loss goes below 0: no cross-entropy does (it is a negative
    log-probability), so its loss code is not one (``nll_loss`` on raw logits, say): the loss
    falls without end by growing the logits, and the falls the other checks read mean nothing."""
    cls, built_in, candidates = _loss_code_fix(probe, head, corrects=True)
    return Finding("loss_floor", "error", f"heads.{head}'s loss has no lower bound: it falls below 0 ({fmt(floor)}) as its logits grow",
        measured + " and still falling", "a cross-entropy is never below 0 (a negative log-probability): this loss rewards "
        "ever larger logits, not right classes (nll_loss on raw logits does this: it expects log-probabilities); every "
        "loss figure the other checks read against it means nothing",
        f"make {cls.__module__}.{cls.__name__}.loss a cross-entropy of the logits (F.cross_entropy, or nll_loss of log_softmax)",
        [f"heads.{head}.type"] if built_in else [], {**figures, "unbounded": True}, candidates=candidates)  # fmt: skip


def _floor_in_code(probe: Probe, head: str, floor: float, measured: str, figures: dict) -> Finding:
    """A class-logits head's floor no setting of it raises: its loss code does. A softmax before
    a log-softmax loss is recognised by its floor, ln(1 + (K - 1)/e) for K classes."""
    cls, built_in, candidates = _loss_code_fix(probe, head)
    classes = probe.classes_of(head)
    squashed = math.log(1 + (classes - 1) / math.e)
    if abs(floor - squashed) < 0.01 * squashed:
        measured += f"; ln(1 + {classes - 1}/e) = {fmt(squashed)}: the floor of a softmax applied before a log-softmax loss"
    fix = (f"use a head whose loss reaches 0 on perfect outputs (the recipe's heads.{head}.type)" if built_in else
           f"make {cls.__module__}.{cls.__name__}.loss reach 0 on perfect outputs: cross-entropy on the logits themselves, "
           "with no softmax before it")  # fmt: skip
    return Finding("loss_floor", "warning",
        f"heads.{head}'s loss cannot fall below {fmt(floor)}, whatever its outputs: {cls.__name__}.loss raises it",
        measured, "no setting of the head raises this floor, so its loss code does (a softmax or another squashing "
        "before a loss that applies log-softmax itself): the loss stays high for perfect outputs and its gradient shrinks",
        fix, [f"heads.{head}.type"] if built_in else [], figures, candidates=candidates)  # fmt: skip
