"""Wiring checks: whether each sample's output depends on its own inputs only (batch
independence), and whether the model reads each input a target depends on (input use)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ...contracts import Categorical
from ...errors import recipe_text
from ...recipe import MACHINE_LOCAL_KEYS
from ..findings import BROKEN_CODE, Change, Finding, fmt
from ..probe import Probe, batch_len, evaluating, off_defaults, slice_batch, too_few
from .data import pairing_counts
from .training import trace_of

#: Batch independence: a sample's output changes by more than this (relative to its size) when
#: only the other samples of its batch change.
MIXING_TOLERANCE = 1e-4


def _relative_change(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-6))


@torch.no_grad()
def check_batch_independence(probe: Probe) -> list[Finding]:
    """A sample's output does not depend on the other samples of its batch.

    The output of sample i must not depend on sample j (Karpathy's "use backprop to chart
    dependencies", by replacement): in eval mode, replace every other sample of a batch and
    compare the first sample's features and outputs."""
    held = probe.held_out
    if batch_len(held) < 32:
        return []
    a = slice_batch(held, 16)
    b = {k: torch.cat([v[:1], v[16:31]]) for k, v in held.items()}  # sample 0 kept, the 15 others replaced
    model = probe.model
    with evaluating(model):
        fa, fb = model.backbone(a), model.backbone(b)
        oa, ob = model(a), model(b)
        if (random := _random_in_eval(model, a, fa, oa)) is not None:
            return [random]  # every comparison below would read that noise as other samples' influence
    feature_change = _relative_change(fa[:1], fb[:1])
    head_change = {h: _relative_change(oa[h][:1].float(), ob[h][:1].float()) for h in oa}
    figures = {"backbone": feature_change, "heads": head_change}
    measured = (f"sample 0's change when the 15 other samples of its batch are replaced (eval mode): backbone features "
                f"{fmt(feature_change)}, " + ", ".join(f"heads.{h} {fmt(c)}" for h, c in head_change.items()) + " (relative)")  # fmt: skip
    culprit = None
    if not math.isfinite(feature_change) or feature_change > MIXING_TOLERANCE:
        culprit = f"backbone ({type(model.backbone).__name__})"
    else:
        mixing = [h for h, c in head_change.items() if not math.isfinite(c) or c > MIXING_TOLERANCE]
        if mixing:
            culprit = ", ".join(f"heads.{h} ({type(model.heads[h]).__name__})" for h in mixing)
    paired = _mispaired_losses(probe, a, oa)
    if culprit:
        return [Finding("batch_independence", "error", f"a sample's output depends on the other samples of its batch: {culprit}", measured,
            "statistics over the batch (a mean, a softmax or a sort across dim 0, a reshape mixing samples) leak other "
            "samples into each output: predictions change with the company a sample keeps, and in eval mode they should not",
            f"reduce over the sample's own dimensions in {culprit}, never over dim 0", [], figures), *paired]  # fmt: skip
    return [Finding("batch_independence", "info", "each sample's output depends on its own inputs only", measured, figures=figures), *paired]


def _mispaired_losses(probe: Probe, batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> list[Finding]:
    """An error per head whose loss pairs sample 0's output with another sample's target: the
    gradient of its loss at output 0 changes when the other samples' targets are permuted among
    themselves (which keeps every statistic of the batch's targets: a class-balanced loss keeps
    its gradient there; a ``target.roll(1, 0)`` in the loss does not)."""
    findings = []
    for head, output in outputs.items():
        target = batch[probe.target_of(head)]
        others = torch.cat([target[:1], target[1:].roll(1, 0)])
        if torch.equal(others, target):
            continue
        module = probe.model.heads[head]
        try:
            with torch.enable_grad():
                grads = []
                for t in (target, others):
                    free = output.detach().float().clone().requires_grad_(True)
                    (grad,) = torch.autograd.grad(module.loss(free.to(output.dtype), t), free)
                    grads.append(grad[:1])
        except Exception:  # noqa: BLE001 - a loss that takes no such output, or none with a gradient: the other checks name it
            continue
        change = _relative_change(grads[0], grads[1])
        if not change > MIXING_TOLERANCE:  # NaN too: a loss that is NaN already is the other checks' finding
            continue
        cls = type(module)
        findings.append(Finding("batch_independence", "error", f"heads.{head}'s loss pairs a sample's output with another sample's target",
            f"the gradient of {cls.__name__}.loss at sample 0's output changed by {fmt(change)} (relative) when the other "
            f"{batch_len(batch) - 1} samples' targets were permuted among themselves (sample 0's own unchanged)",
            "each output is trained towards a target that is not its own: the model can learn nothing but the targets' "
            "distribution, and no setting helps", f"in {cls.__module__}.{cls.__name__}.loss, compare each output with its own "
            "target (no roll, shift or sort of the targets; no reshape that mixes the batch's axis)", [],
            {"gradient_change": change, BROKEN_CODE: f"heads.{head}"}))  # fmt: skip
    return findings


def _random_in_eval(model, batch: dict[str, Tensor], features: Tensor, outputs: dict[str, Tensor]) -> Finding | None:
    """A finding when the same batch, run again in eval mode, gives other features or outputs: the
    model draws random numbers in evaluation (a dropout told ``training=True``), or None."""
    again = model.backbone(batch), model(batch)
    feature_change = _relative_change(features, again[0])
    head_change = {h: _relative_change(outputs[h].float(), again[1][h].float()) for h in outputs}
    # NaN compares false: a model whose outputs are NaN is not called random (the mixing check below reports it)
    if feature_change > MIXING_TOLERANCE:
        culprit = f"backbone ({type(model.backbone).__name__})"
    elif moved := [h for h, c in head_change.items() if c > MIXING_TOLERANCE]:
        culprit = ", ".join(f"heads.{h} ({type(model.heads[h]).__name__})" for h in moved)
    else:
        return None
    return Finding("batch_independence", "warning", f"the same batch gives other outputs each time in eval mode: {culprit} is random there",
        f"the same 16 samples run twice in eval mode: backbone features changed by {fmt(feature_change)}, "
        + ", ".join(f"heads.{h} by {fmt(c)}" for h, c in head_change.items()) + " (relative)",
        "evaluation, predictions and exports should give one answer per input: something in forward() draws random "
        "numbers whatever the mode (F.dropout(x, p, training=True), or noise added without checking self.training)",
        f"in {culprit}, use nn.Dropout or F.dropout(x, p, training=self.training), and add noise only when self.training",
        [], {"backbone": feature_change, "heads": head_change, "random_in_eval": True})  # fmt: skip


def _mutual_information(x: Tensor, y: Tensor) -> float:
    """Plug-in mutual information (nats) of two integer vectors."""
    x, y = x.long().flatten(), y.long().flatten()
    _, xi = torch.unique(x, return_inverse=True)
    _, yi = torch.unique(y, return_inverse=True)
    joint = torch.zeros(int(xi.max()) + 1, int(yi.max()) + 1)
    joint.index_put_((xi, yi), torch.ones(len(x)), accumulate=True)
    joint /= joint.sum()
    px, py = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    nz = joint > 0
    return float((joint[nz] * (joint[nz] / (px @ py)[nz]).log()).sum())


def depends(x: Tensor, y: Tensor, seed: int = 0) -> tuple[bool, float, float]:
    """Whether target ``y`` depends on categorical input ``x``, measured: their mutual information
    against the most the same vectors give with ``x`` shuffled (5 shuffles)."""
    mi = _mutual_information(x, y)
    g = torch.Generator().manual_seed(seed)
    null = max(_mutual_information(x[torch.randperm(len(x), generator=g)], y) for _ in range(5))
    return mi > max(3 * null, 0.02), mi, null


@torch.no_grad()
def _prediction_changes(model, batch, names: list[str]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Per input in ``names``: the share of each head's predictions that change when that input
    is rolled across the batch; and the inputs with which every head's outputs stay bit-identical
    (deaf to them). The unrolled outputs are computed once for all of them."""
    changes: dict[str, dict[str, float]] = {}
    deaf: list[str] = []
    with evaluating(model):
        out = model(batch)
        for name in names:
            out_r = model({**batch, name: batch[name].roll(1, dims=0)})
            changes[name] = {}
            for h in out:
                p, q = model.heads[h].predict(out[h]), model.heads[h].predict(out_r[h])
                changes[name][h] = float((p.reshape(len(p), -1) != q.reshape(len(q), -1)).any(dim=1).float().mean())
            if all(torch.equal(out[h], out_r[h]) for h in out):
                deaf.append(name)
    return changes, deaf


@torch.no_grad()
def _outputs_move(model, batch) -> dict[str, bool]:
    """Per head: whether its outputs differ at all between the samples of ``batch`` (eval mode)."""
    with evaluating(model):
        out = model(batch)
    return {h: not torch.equal(o, o[:1].expand_as(o)) for h, o in out.items()}


def _settings_that_vary(probe: Probe, name: str) -> dict[str, Any]:
    """The data settings off their defaults whose reset alone makes input ``name`` vary (a
    generator asked for one number makes a constant number), each with its default."""
    found: dict[str, Any] = {}
    for key, default, _ in off_defaults(probe.recipe.data.params):
        if f"data.{key}" in MACHINE_LOCAL_KEYS:
            continue
        try:
            x = probe.variant({f"data.{key}": default}).sample[name]
        except Exception:  # noqa: BLE001 - a reset the recipe refuses, or a generator that cannot draw with it
            continue
        if len(x) > 1 and not bool((x == x[:1]).all()):
            found[f"data.{key}"] = default
    return found


def check_input_use(probe: Probe) -> list[Finding]:
    """Constant inputs; inputs a target depends on that the model ignores.

    Inputs with no variation carry no information; an input that a head's target depends on
    (measured on the data) and that the model ignores (its outputs do not change when the input
    is shuffled across the batch after the short run) is an error naming the backbone."""
    findings: list[Finding] = []
    sample, held = probe.sample, slice_batch(probe.held_out, 512)
    trace = trace_of(probe)[0]
    learning = trace.learning()
    n = batch_len(sample)
    if (few := too_few("input_use", probe, n, batch_len(held))) is not None:
        return [few]
    trained_model = trace.model if trace.model is not None else probe.model
    constant = {name: n > 1 and bool((sample[name] == sample[name][:1]).all()) for name in probe.interface.inputs}
    varying = [name for name in constant if not constant[name]]
    changes, deaf_after = _prediction_changes(trained_model, held, varying)
    moving = _outputs_move(trained_model, held)
    read_at_init: set[str] = set()
    if deaf_after and trained_model is not probe.model:
        read_at_init = set(deaf_after) - set(_prediction_changes(probe.model, held, deaf_after)[1])
    if changes and not any(moving.values()):
        # every head gives every sample the same output: shuffling an input cannot change what
        # nothing reads any more (weights decayed to zero, every ReLU dead). A stalled network,
        # not one deaf to an input: the training findings say why it stalled.
        findings.append(Finding("input_use", "info", "the trained network's outputs are the same for every sample: it is stalled, not deaf to an input",
            f"after {trace.steps} steps every head's output is identical across {batch_len(held)} held-out samples, so shuffling "
            f"{', '.join(repr(n) for n in varying)} changes nothing", "a network whose outputs never move reads no input: whether the "
            "backbone reads each one cannot be told here", "see the training findings (learning, dead_relu, fixes): they say why it stalled",
            [], {"outputs_move": moving, "stalled": True}))  # fmt: skip
        changes = {}
    for name, spec in probe.interface.inputs.items():
        x = sample[name]
        if constant[name]:
            stalled = [h for h in probe.trained_heads() if not learning[h]]
            # the same samples drawn twice get different targets from the same (constant) inputs:
            # the targets are computed from a value the generator does not return
            unpaired = (pairing_counts(probe) or (0, 0))[1]
            why = ([f"not learning: {', '.join(f'heads.{h}' for h in stalled)}"] if stalled else []) + (
                [f"{unpaired} samples drawn twice got different targets from identical inputs"] if unpaired else [])
            measured = f"input '{name}' has the same value in all {n} samples" + "".join(f"; {w}" for w in why)
            severity = "error" if stalled or unpaired else "warning"
            title = f"input '{name}' is constant: it carries no information"
            reason = "a constant input cannot tell samples apart: a target computed from the real value cannot be learned"
            settings = _settings_that_vary(probe, name)
            if settings:  # a setting of the recipe makes it constant: that setting is the fix
                findings.append(Finding("input_use", severity, title, measured + "; it varies with " + " or ".join(f"{k} = {recipe_text(v)} (its default)" for k, v in settings.items()), reason,
                    "set " + " or ".join(f"{k} = {recipe_text(v)}" for k, v in settings.items()), sorted(settings), {"constant": True},
                    candidates=[Change(f"{k} = {recipe_text(v)}", {k: v}) for k, v in settings.items()]))  # fmt: skip
            else:
                findings.append(Finding("input_use", severity, title, measured, reason,
                    f"make the generator return the varying value of '{name}' (the one its targets are computed from)", [],
                    {"constant": True}))  # fmt: skip
            continue
        if name not in changes:
            continue
        after = changes[name]
        # Only a backbone that never reads the input (bit-identical outputs after the short run) is
        # flagged, an error whatever the head learns from the rest: at initialisation a
        # zero-initialised modulation (film's) is legitimately deaf to it, and after a short run a
        # head that reads it slowly (film on tiny data) can look deaf to it.
        if name not in deaf_after:
            continue
        if name in read_at_init:
            # the backbone read it at initialisation and training made the outputs deaf to it (its
            # path died: weights decayed to nothing, ReLUs killed): the code reads it, training
            # stalled; the training findings say why
            findings.append(Finding("input_use", "info", f"the trained network no longer reads input '{name}'; it did at initialisation",
                f"the outputs are bit-identical when '{name}' is shuffled across the batch after {trace.steps} steps, not at "
                "initialisation", "the backbone reads it: training stalled the path it takes (see dead_relu, learning, fixes)",
                figures={"read_at_init": True, "never_read": False}))  # fmt: skip
            continue
        for head in probe.model.heads:
            dep_text, mi, null = "", float("nan"), float("nan")  # an image's link to a target is not measured
            if isinstance(spec, Categorical):
                dep, mi, null = depends(x, sample[probe.target_of(head)], probe.recipe.seed)
                if not dep:
                    continue
                dep_text = f"target '{probe.target_of(head)}' depends on it (mutual information {fmt(mi)} nats, {fmt(null)} shuffled); "
            figures = {"mutual_information": mi, "shuffled": null, "changed_after": after[head], "never_read": True}
            backbone = type(probe.model.backbone).__name__
            findings.append(Finding("input_use", "error", f"heads.{head} needs input '{name}', which the backbone ({probe.recipe.backbone.section.type}) ignores",
                dep_text + f"the outputs are bit-identical when it is shuffled across the batch, after {trace.steps} steps",
                f"heads.{head} cannot predict its target without '{name}'",
                f"make backbone {backbone} ({type(probe.model.backbone).__module__}) use input '{name}' in its forward", [], figures))  # fmt: skip
    if not findings:
        findings.append(Finding("input_use", "info", "every input varies and the model reads it",
                                f"inputs: {', '.join(probe.interface.inputs)}"))  # fmt: skip
    return findings
