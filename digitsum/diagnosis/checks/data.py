"""Data checks: the batch against the generator's specs, input statistics and ranges, label
ranges, class balance and pairing (whether the targets can be learned at all: learnability.py)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...contract_checks import batch_problems
from ...contracts import Categorical, Classes, Image, Images
from ...engine.component_errors import check_losses, check_metrics, output_problem
from ...seeding import make_rng, stream_seed
from ..emulate import standardised_input
from ..findings import Change, Finding, fmt, pct
from ..probe import SAMPLE, Probe, batch_len, eval_outputs, slice_batch

#: One class of a K-class target "dominates" above this share: half-way from uniform (1/K) to
#: always (1). 55 % for 10 classes; 75 % for 2 (a 2-class target at 54 % is balanced enough).
def dominated_share(classes: int) -> float:
    return 0.5 + 0.5 / max(classes, 1)


def generator_named(probe: Probe) -> str:
    """The recipe's generator as its author knows it: "generator 'f64' (Float64Images)"."""
    return f"generator '{probe.recipe.data.section.type}' ({type(probe.generator).__name__})"


def batch_contract(probe: Probe) -> list[Finding]:
    """The training batch against the generator's declared specs, by the rule plugin authors'
    conformance check applies (``contract_checks.batch_problems``: dtype and shape; the values are judged
    below, where the model can still run): an error per tensor
    that breaks it, marked ``batch_contract`` (the model cannot take such a batch: every check
    after this one would crash in the model, so :func:`~digitsum.diagnosis.diagnose` stops)."""
    batch, interface = probe.sample, probe.interface
    specs = {**interface.inputs, **interface.targets}
    findings = []
    for name, problem in batch_problems(interface, batch, batch_len(batch), probe.device):
        spec, kind = specs[name], "input" if name in interface.inputs else "target"
        fits = ("float32, prepared as encode() prepares raw pixels in [0, 1] (the built-in generators give float32 "
                "standardised with MNIST's mean and std, or in [0, 1] with normalize = false): end draw() with "
                "self.encode({...}) on mnist_pixels(...)") if isinstance(spec, (Image, Images)) else "what its spec declares"  # fmt: skip
        findings.append(Finding("data", "error", f"{kind} '{name}' is not what its spec declares", f"{generator_named(probe)}: {problem}",
            "the model is built for its declared inputs and targets: it cannot take this batch (training fails in its first layer "
            "or its loss), and the doctor's other checks would only fail the same way: they were not run",
            f"make {generator_named(probe)}'s draw() return '{name}' as {fits}", [], {"batch_contract": True, "problem": problem}))  # fmt: skip
    for name, x in batch.items():
        if name in specs and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            kind, bad = "input" if name in interface.inputs else "target", int((~torch.isfinite(x)).sum())
            findings.append(Finding("data", "error", f"{kind} '{name}' holds NaN or inf",
                f"{generator_named(probe)}: {bad} of the {x.numel()} values of '{name}' in {batch_len(batch)} samples are NaN or inf",
                "every loss and gradient they reach becomes NaN: the model cannot learn from them, and the doctor's other "
                "checks would only fail the same way: they were not run",
                f"make {generator_named(probe)}'s draw() return finite values for '{name}' (a division by a standard deviation "
                "of 0, over pixels that never vary, or a log of 0, makes them)", [], {"batch_contract": True, "non_finite": bad}))  # fmt: skip
    return findings


@torch.no_grad()
def heads_contract(probe: Probe) -> list[Finding]:
    """The heads' outputs, losses and metrics on a few training samples, checked as the first
    training step checks them (:mod:`digitsum.engine.component_errors`): a head that breaks its
    contract (a per-sample loss, a metric averaged over the batch) raises the ComponentError
    ``digitsum run`` would, which :func:`~digitsum.diagnosis.diagnose` reports before any check
    trips on it in digitsum's own code; [] when every head keeps it, or when the model or a loss
    raises (every check that runs them then reports that crash, as one finding). A crash in
    ``metrics()``, which no check runs, is raised here: the run's first step would raise it."""
    batch = slice_batch(probe.sample, 64)
    try:
        outputs = eval_outputs(probe.model, batch)
        losses = probe.model.losses(outputs, batch)
    except Exception:  # noqa: BLE001 - a crash, not a breach: the checks report it
        return []
    check_losses(probe.recipe, losses)
    check_metrics(probe.recipe, probe.model, outputs, batch)
    return []


#: Above this, non-negative image values are not pixels in [0, 1] nor standardised ones (MNIST's
#: standardised maximum is 2.82; noise added to them stays far below): bytes 0..255 as floats.
UNSCALED_MAX = 10.0


def check_data(probe: Probe) -> list[Finding]:
    """Input ranges and statistics, label ranges against head sizes, class balance."""
    if findings := batch_contract(probe):
        return findings
    batch = probe.sample
    for name, spec in probe.interface.inputs.items():
        x = batch[name]
        if isinstance(spec, Image):
            findings += _image_stats(probe, name, x.float())
        elif isinstance(spec, Categorical):
            findings += _range_finding("input", name, x, spec.classes, "the fusion one-hots it with that many classes")
    with torch.no_grad():
        outputs = probe.model(slice_batch(batch, 64))
    widths: list[Finding] = []
    for target, spec in probe.interface.targets.items():
        if not isinstance(spec, Classes):
            continue
        y = batch[target]
        findings += _range_finding("target", target, y, spec.classes, "the loss indexes the head's outputs with it")
        for head in (h for h in probe.model.heads if probe.target_of(h) == target):
            widths += _width_finding(probe, head, outputs[head], probe.classes_of(head), target)
        if y.numel():
            sorted_batches = _batch_balance(probe, target, spec.classes)
            if sorted_batches is None:
                findings.append(_balance(target, y, spec.classes))
            else:  # the sample above is one draw, as one-class as a batch: the labels are judged over the batches
                finding, pooled = sorted_batches
                findings += [finding, _balance(target, pooled, spec.classes)]
            findings += _split_coverage(probe, target, y, spec.classes)
    return findings + widths + _declared_shapes(probe, outputs, {f.figures["head"] for f in widths}) + _repeated_samples(probe)


#: Training samples "repeat" when fewer than this share of those the first batches hold are distinct
#: (an epoch's batches draw each index once: MNIST's own duplicates are a handful in 60,000).
DISTINCT_SHARE = 0.5


def _repeated_samples(probe: Probe) -> list[Finding]:
    """A warning when the run's first training batches hold the same samples again and again
    (a ``draw`` that ignores the index it is given): a head then memorises a few samples."""
    seen: set[bytes] = set()
    total = 0
    one_epoch = math.ceil(probe.generator.size("train") / probe.batch_size)  # a second epoch repeats the first
    for batch in probe.train_batches(min(BALANCE_BATCHES, one_epoch)):
        inputs = [batch[name].reshape(batch_len(batch), -1).float().cpu() for name in probe.interface.inputs if name in batch]
        if not inputs:
            return []
        rows = torch.cat(inputs, dim=1).numpy()
        seen.update(row.tobytes() for row in rows)
        total += len(rows)
    if total < 2 * probe.batch_size or len(seen) >= DISTINCT_SHARE * total:
        return []
    return [Finding("data", "warning", f"the training batches repeat their samples: {len(seen)} distinct of {total}",
                    f"the inputs of the run's first {total} training samples ({BALANCE_BATCHES} batches at most): {len(seen)} distinct",
                    "an epoch draws each training index once, so its samples should differ: a head fits the few there "
                    "are and predicts held-out ones badly", f"make {generator_named(probe)}'s draw() return the samples "
                    "of the indices it is given", [], {"distinct": len(seen), "drawn": total})]  # fmt: skip


def _declared_shapes(probe: Probe, outputs: dict[str, Tensor], named: set[str]) -> list[Finding]:
    """Heads (other than those ``named`` already) whose output has another shape than their
    ``output_kind`` declares: a run refuses them at its first step (a logit too many trains
    without an error otherwise, spending probability on a class that never comes)."""
    findings = []
    for head, output in outputs.items():
        module = probe.model.heads[head]
        problem = output_problem(module, output, len(output)) if head not in named and isinstance(output, Tensor) else None
        if problem is not None:
            cls = type(module)
            findings.append(Finding("data", "error", f"heads.{head} does not output what it declares",
                f"heads.{head} ({cls.__module__}.{cls.__name__}): {problem}", "`digitsum run` refuses it at its first step",
                f"make {cls.__name__}.forward() return the shape its output_kind declares (docs/plugins.md, \"Head\")",
                [], {"head": head, "shape": list(output.shape)}))  # fmt: skip
    return findings


#: Training batches read for the per-batch class balance (the first ones of the run).
BALANCE_BATCHES = 16


def _majority(parts: list[Tensor], classes: int) -> float:
    """The mean, over ``parts``, of the share of each part's most frequent class."""
    return sum(float(torch.bincount(y.clamp(0, classes - 1), minlength=classes).max()) / len(y) for y in parts) / len(parts)


def _batch_balance(probe: Probe, target: str, classes: int) -> tuple[Finding, Tensor] | None:
    """Whether the run's training batches each hold far fewer classes than the same samples
    shuffled into batches of the same sizes (a sorted data set, or a ``draw`` that ignores the
    index it is given): a warning and the batches' labels pooled, else None. Batch size 1 is never judged (a shuffle gives the same)."""
    parts = [b[target].flatten() for b in probe.train_batches(BALANCE_BATCHES) if target in b and b[target].numel()]
    if len(parts) < 2:
        return None
    pooled = torch.cat(parts)
    shuffled = pooled[torch.randperm(len(pooled), generator=torch.Generator().manual_seed(probe.recipe.seed))]
    observed, expected = _majority(parts, classes), _majority(list(shuffled.split([len(y) for y in parts])), classes)
    if observed <= expected + 0.5 * (1 - expected):  # not half-way from shuffled batches to one class each
        return None
    return Finding("data", "warning", f"each training batch of target '{target}' holds mostly one class",
        f"target '{target}': the most frequent class is {pct(observed)} of a training batch on average over the run's first "
        f"{len(parts)} batches of {probe.batch_size}; the same {len(pooled)} samples shuffled into batches: {pct(expected)}",
        "each step's gradient pulls every output toward that batch's class, and batch statistics (BatchNorm, a batch "
        "mean) see one class: the model forgets the others between steps; the labels themselves may be balanced",
        f"make {generator_named(probe)}'s draw() return the samples of the index it is given (the engine shuffles it every "
        "epoch), not samples chosen by class", [], {"batch_majority": observed, "shuffled_majority": expected}), pooled  # fmt: skip


#: A class "should" appear among n samples when the other split's share of it expects at least
#: this many there (none of them by chance: e^-5, under 1 %).
EXPECTED_SEEN = 5.0
#: Classes the training samples lack are an error when they hold this share of the held-out ones.
UNTRAINED_SHARE = 0.05


def _split_coverage(probe: Probe, target: str, trained: Tensor, classes: int) -> list[Finding]:
    """Classes of ``target`` that one split holds and the other never does, where the other's
    share of them makes their absence no accident: the training samples lacking classes that the
    held-out samples hold (the head cannot learn them: an error when they are 5 % of held-out
    samples, their accuracy lost), or the held-out samples lacking classes training has (the
    metric never measures them: a warning). A generator that filters a split by label, or maps
    one split's labels differently, shows this way."""
    held = probe.held_out.get(target)
    if held is None or not held.numel() or not trained.numel():
        return []
    count = {"train": torch.bincount(trained.flatten().clamp(0, classes - 1), minlength=classes).float(),
             "held": torch.bincount(held.flatten().clamp(0, classes - 1), minlength=classes).float()}  # fmt: skip
    n = {k: float(v.sum()) for k, v in count.items()}
    findings = []
    names = {"train": "training", "held": "held-out"}
    for absent, present in (("train", "held"), ("held", "train")):
        expected = count[present] / n[present] * n[absent]
        missing = [c for c in range(classes) if count[absent][c] == 0 and expected[c] >= EXPECTED_SEEN]
        if not missing:
            continue
        share = float(count[present][missing].sum()) / n[present]
        listed = ", ".join(map(str, missing))
        figures = {"missing": missing, "split": "train" if absent == "train" else "held_out", "share": share}
        measured = (f"target '{target}': class{'es' if len(missing) > 1 else ''} {listed}: {pct(share)} of {int(n[present])} {names[present]} "
                    f"samples, none of {int(n[absent])} {names[absent]} samples "
                    f"(at least {fmt(float(expected[missing].min()))} expected)")  # fmt: skip
        where = f"compare the labels {generator_named(probe)}'s draw() gives for each split (a filter, or labels mapped on one split)"
        if absent == "train":
            findings.append(Finding("data", "error" if share >= UNTRAINED_SHARE else "warning",
                f"target '{target}': the training samples never hold class{'es' if len(missing) > 1 else ''} {listed}",
                measured, "a head never trained on a class never predicts it: held-out samples of it are lost, whatever "
                "else is fixed", where, [], figures))  # fmt: skip
        else:
            findings.append(Finding("data", "warning", f"target '{target}': the held-out samples never hold class{'es' if len(missing) > 1 else ''} {listed}",
                measured, "the held-out metric never measures those classes: what the head learns of them goes unjudged", where, [], figures))  # fmt: skip
    return findings


def _argmax_like(probe: Probe, head: str, width: int) -> bool:
    """Whether the head's ``predict`` reads its output as one score per class (argmax): a
    one-hot output row at position j is predicted as j. An ordinal head (K-1 thresholds) is not."""
    rows = torch.eye(width) * 10
    with torch.no_grad():
        try:
            predicted = probe.model.heads[head].predict(rows)
        except Exception:  # a head whose predict needs another shape: not argmax over this one
            return False
    return predicted.shape == (width,) and bool((predicted.cpu() == torch.arange(width)).all())


def _width_finding(probe: Probe, head: str, output: Tensor, classes: int | None, target: str) -> list[Finding]:
    """A head with fewer outputs than the classes it declares it predicts, when its declaration
    and its ``predict`` both say it scores one output per class (then classes above its width
    cannot be predicted)."""
    if classes is None or output.dim() != 2 or output.shape[1] >= classes or probe.output_kind(head) != "class_logits":
        return []
    width = output.shape[1]
    if not _argmax_like(probe, head, width):
        return []  # judged through its predict and metrics, not through its output's width
    return [Finding("data", "error", f"heads.{head} has {width} outputs for {classes} classes",
                    f"heads.{head} predicts {classes} classes of target '{target}'; it outputs {width} values per sample and predicts their argmax",
                    "labels above the head's size cannot be predicted", "bind the head to a target of its size",
                    [f"heads.{head}.target"], {"outputs": width, "classes": classes, "head": head})]  # fmt: skip


def _image_stats(probe: Probe, name: str, x: Tensor) -> list[Finding]:
    lo, hi, mean, std = float(x.min()), float(x.max()), float(x.mean()), float(x.std())
    figures = {"min": lo, "max": hi, "mean": mean, "std": std}
    measured = f"input '{name}': min {fmt(lo)}, max {fmt(hi)}, mean {fmt(mean)}, std {fmt(std)} over {len(x)} samples"
    if hi == lo:  # nothing to standardise: (x - mean) / std would divide by 0
        return [Finding("data", "warning", f"input '{name}' is constant: every value is {fmt(lo)}", measured,
                        "a constant input carries nothing to learn from, whatever its scale",
                        f"check what {generator_named(probe)} draws for '{name}' (input_use says whether the model needs it)", [], figures)]  # fmt: skip
    if abs(mean) > 0.5 or not 0.5 <= std <= 2.0:
        key = "data.normalize" if getattr(probe.recipe.data.params, "normalize", None) is False else ""
        fix = f"set {key} = true" if key else f"standardise input '{name}' in {generator_named(probe)}: (x - {fmt(mean)}) / {fmt(std)}"
        if lo >= 0 and hi > UNSCALED_MAX:
            fix += (f"; its pixels look unscaled (0..{fmt(hi)}, MNIST's bytes 0..255 as floats): raw pixels are floats in [0, 1] "
                    "(mnist_pixels divides by 255), which the default encode() standardises")  # fmt: skip
        change = (Change(f"{key} = true", {key: True}) if key else
                  Change(f"input '{name}' standardised", emulate=standardised_input(name, mean, std), code=fix))  # fmt: skip
        return [Finding("data", "warning", f"input '{name}' is not standardised", measured + " (standardised: mean 0, std 1)",
                        "unscaled inputs make the first layers' gradients and a good learning rate depend on the pixel scale",
                        fix, [key] if key else [], figures, candidates=[change])]  # fmt: skip
    return [Finding("data", "info", f"input '{name}' is standardised", measured, figures=figures)]


def _range_finding(kind: str, name: str, values: Tensor, classes: int, why: str) -> list[Finding]:
    if not values.numel():
        return []
    lo, hi = int(values.min()), int(values.max())
    if 0 <= lo and hi < classes:
        return []
    return [Finding("data", "error", f"{kind} '{name}' holds values outside 0..{classes - 1}",
                    f"{kind} '{name}' ranges over {lo}..{hi} but declares {classes} classes", why,
                    "fix the generator's declared classes or its values", [], {"min": lo, "max": hi, "classes": classes})]  # fmt: skip


def _balance(target: str, y: Tensor, classes: int) -> Finding:
    counts = torch.bincount(y.clamp(0, classes - 1), minlength=classes).float()
    share = counts / counts.sum()
    majority, seen = float(share.max()), int((counts > 0).sum())
    limit = dominated_share(classes)
    figures = {"majority_share": majority, "classes_seen": seen, "classes": classes, "samples": len(y), "limit": limit}
    measured = f"target '{target}': most frequent class {pct(majority)} of {len(y)} samples (uniform {pct(1 / classes)}), {seen} of {classes} classes seen"
    if seen <= 1 or majority > limit:
        return Finding("data", "warning", f"target '{target}' is dominated by one class", measured + f" (dominated above {pct(limit)})",
                       "a constant prediction scores well: accuracy says little, and the head may learn nothing else",
                       "check the generator's targets", [], figures)  # fmt: skip
    return Finding("data", "info", f"target '{target}' class balance", measured, figures=figures)


def pairing_counts(probe: Probe) -> tuple[int, int] | None:
    """Draw the same training samples twice, with two random streams: how many got identical
    inputs, and how many of those got different targets (targets that are not a function of the
    inputs). None when the same stream does not reproduce the same batch. Measured once per
    probe (``check_pairing`` and ``check_input_use`` both read it)."""
    if "pairing" not in probe.cache:
        n = min(batch_len(probe.sample), SAMPLE)
        index = torch.arange(n, device=probe.device) % probe.generator.size("train")
        draw = lambda s: probe.generator.draw("train", index, make_rng(probe.device, stream_seed(probe.recipe.seed, "pairing", s)))  # noqa: E731
        a, a_again, b = draw(0), draw(0), draw(1)
        if any(not torch.equal(a[k], a_again[k]) for k in a):
            probe.cache["pairing"] = None
        else:
            same_inputs = torch.ones(n, dtype=torch.bool, device=probe.device)
            for name in probe.interface.inputs:
                same_inputs &= (a[name] == b[name]).reshape(n, -1).all(dim=1)
            mismatched = torch.zeros(n, dtype=torch.bool, device=probe.device)
            for name in probe.interface.targets:
                mismatched |= (a[name] != b[name]).reshape(n, -1).any(dim=1)
            probe.cache["pairing"] = (int(same_inputs.sum()), int((mismatched & same_inputs).sum()))
    return probe.cache["pairing"]


def check_pairing(probe: Probe) -> list[Finding]:
    """Targets must be a function of the inputs: draw the same samples twice, compare."""
    counts = pairing_counts(probe)
    n = min(batch_len(probe.sample), SAMPLE)
    if counts is None:
        return [Finding("pairing", "warning", "batches are not reproducible from their random stream",
            "the same samples drawn twice with the same stream differ",
            "the generator draws randomness it was not given: runs cannot be replayed and pairings cannot be checked",
            "draw every random value from the rng passed to draw()")]  # fmt: skip
    checked, bad = counts
    if not checked:
        return [Finding("pairing", "info", "pairing not checked", f"no sample of {n} drawn twice got identical inputs")]
    figures = {"samples_with_same_inputs": checked, "with_different_targets": bad}
    measured = f"{checked} samples drawn twice got identical inputs; {bad} of them got different targets"
    if bad:
        return [Finding("pairing", "error", "targets are not a function of the inputs", measured,
                        "mispaired targets cannot be learned: the loss stays at chance",
                        "make the generator compute targets from the inputs it returns", [], figures)]  # fmt: skip
    return [Finding("pairing", "info", "inputs and targets are paired", measured, figures=figures)]
