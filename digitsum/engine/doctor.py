"""Why does the loss not decrease? Measured checks on a recipe, in seconds.

Each check is a small function ``check(probe) -> list[Finding]``. A :class:`Probe` holds what
the checks share: the recipe, its generator, its model at initialisation (the run's own init:
same seed) and a few batches. Checks that train work on copies of the model, so a probe can be
handed the model a run is about to train (the preflight does).

Nothing here knows a component, input or target by name: inputs and targets come from the
generator's interface, heads from the recipe, layers from the model's modules.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..contracts import Batch, Categorical, Classes, Generator, Image
from ..recipe import Recipe
from .model import DigitModel
from .batches import make_rng, stream_seed, train_batches
from .build import build
from .train import make_optimizer

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

#: Samples drawn for data statistics and activation probes: enough for stable figures, fast on a CPU.
SAMPLE = 2048
#: Samples of training the short run sees (at the recipe's batch size), and its step bounds.
SHORT_RUN_SAMPLES, SHORT_RUN_STEPS = (20_000, (60, 600))
#: The one-batch overfit: batch size and step budget; when the recipe's optimizer fails, a sane
#: one (Adam at 1e-3, with twice the steps) tells a bad learning rate from a broken model.
OVERFIT_BATCH, OVERFIT_STEPS, SANE_ADAM_LR = 32, 150, 1e-3
#: A unit is dead when it outputs 0 on every probe sample (and every position, for conv maps).
DEAD_WARNING, DEAD_ERROR = 0.4, 0.5
#: Over the short run the loss must fall by at least this fraction (healthy recipes fall far more).
LOSS_FALL = 0.2
#: The recipe key of the learning rate, which most fixes touch.
LR_KEY = "train.optimizer.lr"


@dataclass
class Finding:
    """One thing a check found: what was measured, why it matters, what to change."""

    check: str
    severity: Severity
    title: str
    measured: str
    why: str = ""
    fix: str = ""
    keys: list[str] = field(default_factory=list)  # recipe keys the fix touches, e.g. "train.optimizer.lr"
    figures: dict[str, Any] = field(default_factory=dict)  # the measured numbers, for scripts

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_safe(getattr(self, k)) for k in ("check", "severity", "title", "measured", "why", "fix", "keys", "figures")}


def _json_safe(value: Any) -> Any:
    """NaN and inf become None: JSON has no spelling for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class Report:
    """Every finding of a diagnosis, and how long it took."""

    recipe: str
    findings: list[Finding]
    seconds: float
    checks: list[str]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def healthy(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}
        return {"recipe": self.recipe, "healthy": self.healthy, "seconds": round(self.seconds, 2),
                "checks": self.checks, "counts": counts, "findings": [f.to_dict() for f in self.findings]}  # fmt: skip


class Probe:
    """What the checks share: recipe, generator, model at init, and batches drawn on demand."""

    def __init__(self, recipe: Recipe, generator: Generator, model: DigitModel, device: torch.device) -> None:
        self.recipe, self.generator, self.model, self.device = recipe, generator, model, device
        self.interface = recipe.interface()
        self.batch_size = recipe.data.section.batch_size

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> Probe:
        """Build the recipe on the CPU exactly as ``digitsum run`` would (same seed, same init)."""
        cpu_recipe = replace(recipe, train=recipe.train.model_copy(update={"device": "cpu"}))
        built = build(cpu_recipe)
        built.generator.size("train")  # loads the data: a missing data set is a user error here, not in a check
        return cls(cpu_recipe, built.generator, built.model, built.device)

    @cached_property
    def sample(self) -> Batch:
        """``SAMPLE`` training samples at random positions, drawn with a fixed stream."""
        n = self.generator.size("train")
        order = torch.randperm(n, generator=make_rng(torch.device("cpu"), stream_seed(self.recipe.seed, "doctor")))
        index = order[: min(SAMPLE, n)].to(self.device)
        return self.generator.draw("train", index, make_rng(self.device, stream_seed(self.recipe.seed, "doctor", 1)))

    def train_batches(self, steps: int) -> list[Batch]:
        """The first ``steps`` training batches of the run (epochs repeat when the split is small)."""
        batches: list[Batch] = []
        epoch = 1
        while len(batches) < steps:
            before = len(batches)
            for batch in train_batches(self.generator, self.batch_size, self.recipe.seed, epoch, self.device):
                batches.append(batch)
                if len(batches) == steps:
                    break
            if len(batches) == before:
                break  # an empty split: nothing to draw
            epoch += 1
        return batches

    def target_of(self, head: str) -> str:
        return self.model.bindings[head].target

    def weight_of(self, head: str) -> float:
        return self.model.bindings[head].weight

    def classes_of(self, head: str) -> int | None:
        spec = self.interface.targets.get(self.target_of(head))
        return spec.classes if isinstance(spec, Classes) else None

    def trained_heads(self) -> list[str]:
        return [name for name in self.model.heads if self.weight_of(name) > 0]

    def head_param(self, head: str, name: str) -> bool:
        """Whether the head's component has a parameter called ``name`` (to name the recipe key)."""
        return name in type(self.recipe.heads[head].params).model_fields

    def data_param(self, name: str) -> bool:
        return name in type(self.recipe.data.params).model_fields


def fresh_copy(model: DigitModel) -> DigitModel:
    """A copy to train, so that checks leave the model they were given untouched."""
    twin = copy.deepcopy(model)
    twin.train()
    return twin


def _slice(batch: Batch, n: int) -> Batch:
    return {k: v[:n] for k, v in batch.items()}


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e-3 or abs(x) >= 1e4 else f"{x:.4f}".rstrip("0").rstrip(".")


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


# -- data sanity ------------------------------------------------------------------------------


def check_data(probe: Probe) -> list[Finding]:
    """Input ranges and statistics, label ranges against head sizes, class balance."""
    findings: list[Finding] = []
    batch = probe.sample
    for name, spec in probe.interface.inputs.items():
        x = batch[name]
        if isinstance(spec, Image):
            findings += _image_stats(probe, name, x.float())
        elif isinstance(spec, Categorical):
            findings += _range_finding("input", name, x, spec.classes, "the fusion one-hots it with that many classes")
    with torch.no_grad():
        outputs = probe.model(_slice(batch, 64))
    for target, spec in probe.interface.targets.items():
        if not isinstance(spec, Classes):
            continue
        y = batch[target]
        findings += _range_finding("target", target, y, spec.classes, "the loss indexes the head's outputs with it")
        for head in (h for h in probe.model.heads if probe.target_of(h) == target):
            width = outputs[head].shape[1] if outputs[head].dim() == 2 else None
            if width is not None and width < spec.classes:
                findings.append(Finding("data", "error", f"heads.{head} has {width} outputs for {spec.classes} classes",
                    f"target '{target}' has {spec.classes} classes; heads.{head} outputs {width} values per sample",
                    "labels above the head's size cannot be predicted", "bind the head to a target of its size",
                    [f"heads.{head}.target"], {"outputs": width, "classes": spec.classes}))  # fmt: skip
        if y.numel():
            findings.append(_balance(target, y, spec.classes))
    return findings


def _image_stats(probe: Probe, name: str, x: Tensor) -> list[Finding]:
    lo, hi, mean, std = float(x.min()), float(x.max()), float(x.mean()), float(x.std())
    figures = {"min": lo, "max": hi, "mean": mean, "std": std}
    measured = f"input '{name}': min {_fmt(lo)}, max {_fmt(hi)}, mean {_fmt(mean)}, std {_fmt(std)} over {len(x)} samples"
    if not math.isfinite(mean + std):
        return [Finding("data", "error", f"input '{name}' holds NaN or inf", measured, "every loss becomes NaN", "", [], figures)]
    if abs(mean) > 0.5 or not 0.5 <= std <= 2.0:
        key = "data.normalize" if probe.data_param("normalize") else ""
        fix = f"set {key} = true" if key else "standardise this input in the generator"
        return [Finding("data", "warning", f"input '{name}' is not standardised", measured + " (standardised: mean 0, std 1)",
                        "unscaled inputs make the first layers' gradients and a good learning rate depend on the pixel scale",
                        fix, [key] if key else [], figures)]  # fmt: skip
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
    figures = {"majority_share": majority, "classes_seen": seen, "classes": classes, "samples": len(y)}
    measured = f"target '{target}': most frequent class {_pct(majority)} of {len(y)} samples (uniform {_pct(1 / classes)}), {seen} of {classes} classes seen"
    if seen <= 1 or majority > 0.5:
        return Finding("data", "warning", f"target '{target}' is dominated by one class", measured,
                       "a constant prediction scores well: accuracy says little, and the head may learn nothing else",
                       "check the generator's targets", [], figures)  # fmt: skip
    return Finding("data", "info", f"target '{target}' class balance", measured, figures=figures)


def check_pairing(probe: Probe) -> list[Finding]:
    """Targets must be a function of the inputs: draw the same samples twice, compare."""
    n = min(len(probe.sample[next(iter(probe.sample))]), SAMPLE)
    index = torch.arange(n, device=probe.device) % probe.generator.size("train")
    draw = lambda s: probe.generator.draw("train", index, make_rng(probe.device, stream_seed(probe.recipe.seed, "pairing", s)))  # noqa: E731
    a, a_again, b = draw(0), draw(0), draw(1)
    findings: list[Finding] = []
    if any(not torch.equal(a[k], a_again[k]) for k in a):
        findings.append(Finding("pairing", "warning", "batches are not reproducible from their random stream",
            "the same samples drawn twice with the same stream differ",
            "the generator draws randomness it was not given: runs cannot be replayed and pairings cannot be checked",
            "draw every random value from the rng passed to draw()"))  # fmt: skip
        return findings
    same_inputs = torch.ones(n, dtype=torch.bool, device=probe.device)
    for name in probe.interface.inputs:
        same_inputs &= (a[name] == b[name]).reshape(n, -1).all(dim=1)
    checked = int(same_inputs.sum())
    if not checked:
        return [Finding("pairing", "info", "pairing not checked", f"no sample of {n} drawn twice got identical inputs")]
    mismatched = torch.zeros(n, dtype=torch.bool, device=probe.device)
    for name in probe.interface.targets:
        mismatched |= (a[name] != b[name]).reshape(n, -1).any(dim=1)
    bad = int((mismatched & same_inputs).sum())
    figures = {"samples_with_same_inputs": checked, "with_different_targets": bad}
    measured = f"{checked} samples drawn twice got identical inputs; {bad} of them got different targets"
    if bad:
        return [Finding("pairing", "error", "targets are not a function of the inputs", measured,
                        "mispaired targets cannot be learned: the loss stays at chance",
                        "make the generator compute targets from the inputs it returns", [], figures)]  # fmt: skip
    return [Finding("pairing", "info", "inputs and targets are paired", measured, figures=figures)]


# -- loss at initialisation, double softmax, loss weights ------------------------------------


def check_loss_at_init(probe: Probe) -> list[Finding]:
    """Each head's loss before training against ln(classes), the loss of a uniform guess."""
    findings: list[Finding] = []
    batch = _slice(probe.sample, 512)
    with torch.no_grad():
        outputs = probe.model(batch)
        losses = probe.model.losses(outputs, batch)
    for head, loss in losses.items():
        value, classes = float(loss), probe.classes_of(head)
        figures: dict[str, Any] = {"loss": value}
        if not math.isfinite(value):
            findings.append(Finding("loss_at_init", "error", f"heads.{head}: loss is {value} before training",
                f"loss at initialisation on {len(next(iter(batch.values())))} samples: {value}", "a NaN loss trains nothing",
                "check the inputs' range and the head's loss", [], figures))  # fmt: skip
            continue
        if classes is None:
            findings.append(Finding("loss_at_init", "info", f"heads.{head}: loss at init {_fmt(value)}", "no class target to compare with", figures=figures))
            continue
        expected = math.log(classes)
        figures.update(expected=expected, ratio=value / expected)
        measured = f"heads.{head}: {_fmt(value)} at initialisation; ln {classes} = {_fmt(expected)} (a uniform guess)"
        if value > 1.5 * expected:
            findings.append(Finding("loss_at_init", "warning", f"heads.{head} starts confidently wrong", measured,
                "outputs at init are far from uniform: large initial logits slow training down and hint at a scale problem",
                "standardise inputs, or scale down the head's initial weights", [], figures))  # fmt: skip
        else:
            findings.append(Finding("loss_at_init", "info", f"heads.{head} starts near ln {classes}", measured, figures=figures))
    return findings


def _is_probability(output: Tensor) -> bool:
    return output.dim() == 2 and output.shape[1] > 1 and bool(output.min() >= 0) and bool(((output.sum(1) - 1).abs() < 1e-4).all())


def _grad_norm(value: Tensor, params: Sequence[Tensor]) -> float:
    params = [p for p in params if p.requires_grad]
    if not params or not value.requires_grad:
        return 0.0
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.pow(2).sum() for g in grads if g is not None), torch.tensor(0.0))))


def check_double_softmax(probe: Probe) -> list[Finding]:
    """Outputs that are already probabilities, fed to a loss that applies log-softmax again."""
    findings: list[Finding] = []
    model, batch = probe.model, _slice(probe.sample, 256)
    outputs = model(batch)
    for head, output in outputs.items():
        classes = probe.classes_of(head)
        if classes is None or not _is_probability(output.detach()):
            continue
        target = batch[probe.target_of(head)]
        loss_fn = model.heads[head].loss
        floor = float(loss_fn(F.one_hot(target, classes).to(output.dtype), target))  # a perfect, certain prediction
        start = float(loss_fn(output.detach(), target))
        if floor < 0.05 * math.log(classes):
            findings.append(Finding("double_softmax", "info", f"heads.{head} outputs probabilities and its loss takes them as such",
                                    f"loss of a perfect prediction: {_fmt(floor)}", figures={"floor": floor}))  # fmt: skip
            continue
        # what the same outputs would give if the loss took their log (= cross-entropy on the logits)
        as_logits = F.nll_loss(output.clamp_min(1e-12).log(), target)
        head_params, body_params = list(model.heads[head].parameters()), list(model.backbone.parameters())
        loss = loss_fn(output, target)
        g_head, g_head_ok = _grad_norm(loss, head_params), _grad_norm(as_logits, head_params)
        g_body, g_body_ok = _grad_norm(loss, body_params), _grad_norm(as_logits, body_params)
        ratio = g_head_ok / g_head if g_head > 0 else float("nan")
        figures = {"loss_at_init": start, "loss_floor": floor, "ln_classes": math.log(classes),
                   "grad_norm_head": g_head, "grad_norm_head_with_logits": g_head_ok,
                   "grad_norm_backbone": g_body, "grad_norm_backbone_with_logits": g_body_ok, "shrink": ratio}  # fmt: skip
        key = f"heads.{head}.output" if probe.head_param(head, "output") else ""
        fix = f'set {key} = "logits"' if key else f"make heads.{head} return logits: its loss applies softmax itself"
        findings.append(Finding("double_softmax", "error", f"heads.{head}: softmax applied twice (probabilities into a log-softmax loss)",
            f"outputs are non-negative and every row sums to 1; the lowest loss this head can reach is {_fmt(floor)} "
            f"(a perfect, certain prediction) against {_fmt(start)} now (ln {classes} = {_fmt(math.log(classes))}); "
            f"gradients reaching the head are {ratio:.1f}x smaller than with logits "
            f"({_fmt(g_head)} vs {_fmt(g_head_ok)}; backbone {_fmt(g_body)} vs {_fmt(g_body_ok)})",
            "the loss treats probabilities as logits and applies softmax again: its floor is ln(1 + (K-1)/e) "
            "instead of 0, and the gradients shrink, so the head barely learns", fix, [key] if key else [], figures))  # fmt: skip
    model.zero_grad(set_to_none=True)
    return findings


def check_loss_weights(probe: Probe) -> list[Finding]:
    """Heads whose loss weight is zero, heads no gradient reaches, targets no trained head reads."""
    findings: list[Finding] = []
    model, batch = probe.model, _slice(probe.sample, 128)
    outputs = model(batch)
    losses = model.losses(outputs, batch)
    total = model.total_loss(losses)
    total = total if isinstance(total, Tensor) else torch.tensor(float(total))
    measured = getattr(probe.interface, "measured", frozenset())
    for head in model.heads:
        weight, params = probe.weight_of(head), list(model.heads[head].parameters())
        if params:
            norm = _grad_norm(total, params)
        else:  # a head without parameters (it reads the backbone's features as they are): its loss's gradient at the backbone
            norm = _grad_norm(weight * losses[head], list(model.backbone.parameters()))
        figures = {"weight": weight, "grad_norm": norm}
        if weight == 0 and probe.target_of(head) in measured:
            continue  # the generator marks its target measured only: weight 0 is required, not a mistake
        if weight == 0:
            findings.append(Finding("loss_weights", "error", f"heads.{head} is never trained: its loss weight is 0",
                f"heads.{head}.weight = 0; gradient reaching its parameters from the total loss: {_fmt(norm)}",
                f"its loss is computed and reported but not back-propagated: heads.{head} stays at chance whatever else is fixed",
                f"set heads.{head}.weight = 1.0, or remove the head", [f"heads.{head}.weight"], figures))  # fmt: skip
        elif norm == 0:
            findings.append(Finding("loss_weights", "error", f"no gradient reaches heads.{head}",
                f"heads.{head}.weight = {weight}; gradient reaching its parameters: 0", "the head cannot learn",
                "check that the head's loss depends on its output (no detach, no integer ops)", [], figures))  # fmt: skip
    trained_targets = {probe.target_of(h) for h in probe.trained_heads()}
    for target in probe.interface.targets:
        if target not in trained_targets and not any(probe.target_of(h) == target for h in model.heads):
            findings.append(Finding("loss_weights", "info", f"target '{target}' is not predicted",
                                    f"the generator makes target '{target}' and no head is bound to it",
                                    fix=f'add [heads.<name>] with target = "{target}" to learn it'))  # fmt: skip
    model.zero_grad(set_to_none=True)
    return findings


# -- a short run: dead ReLUs, gradient norms, loss trend; one-batch overfit ------------------


class ReluProbe:
    """Records which units of every ``nn.ReLU`` ever fire on a probe batch."""

    def __init__(self, model: nn.Module) -> None:
        self.labels = _relu_labels(model)
        self.fired: dict[str, Tensor] = {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            alive = (output > 0).transpose(0, 1).reshape(output.shape[1], -1).any(dim=1) if output.dim() > 1 else (output > 0)
            self.fired[name] = self.fired[name] | alive if name in self.fired else alive

        return hook

    @torch.no_grad()
    def dead_fractions(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        self.fired.clear()
        model(batch)
        return {self.labels[name]: 1.0 - float(alive.float().mean()) for name, alive in self.fired.items()}

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _relu_labels(model: nn.Module) -> dict[str, str]:
    """Name each ReLU after the layer feeding it when it follows one in a Sequential."""
    labels = {}
    for path, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for i, (name, child) in enumerate(children):
                if isinstance(child, nn.ReLU) and i > 0:
                    prev_name, prev = children[i - 1]
                    size = getattr(prev, "out_channels", None) or getattr(prev, "out_features", None)
                    what = f"{type(prev).__name__}, {size} {'channels' if hasattr(prev, 'out_channels') else 'units'}"
                    labels[f"{path}.{name}" if path else name] = f"{path}.{prev_name} ({what})" if path else f"{prev_name} ({what})"
    for path, module in model.named_modules():
        if isinstance(module, nn.ReLU):
            labels.setdefault(path, path)
    return labels


def _layer_params(model: nn.Module) -> dict[str, list[Tensor]]:
    """Trainable parameters grouped by the module that owns them."""
    layers: dict[str, list[Tensor]] = {}
    for path, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            layers[path] = own
    return layers


def short_run_steps(batch_size: int) -> int:
    lo, hi = SHORT_RUN_STEPS
    return max(lo, min(hi, SHORT_RUN_SAMPLES // batch_size))


def check_short_run(probe: Probe) -> list[Finding]:
    """Train a copy for a few hundred steps at the recipe's peak lr: dead ReLUs, gradient norms, loss trend."""
    recipe = probe.recipe
    steps = short_run_steps(probe.batch_size)
    model = fresh_copy(probe.model)
    optimizer = make_optimizer(recipe, model)  # constant at the recipe's lr: the peak any schedule reaches
    relus, probe_batch = ReluProbe(model), _slice(probe.sample, 1024)
    dead_before = relus.dead_fractions(model, probe_batch)
    layers = _layer_params(model)
    trained = {name for name, params in layers.items() if not _only_in_untrained_heads(probe, name)}
    norms, totals = [], []
    for batch in probe.train_batches(steps):
        loss = model.total_loss(model.losses(model(batch), batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norms.append(torch.stack([_norm_of_grads(layers[name]) for name in layers]))
        totals.append(loss.detach())
        optimizer.step()
    dead_after = relus.dead_fractions(model, probe_batch)
    relus.close()
    if not totals:
        return []
    lr = recipe.optimizer.params.lr
    name = f"{len(totals)} steps of {recipe.optimizer.section.type} at lr {_fmt(lr)}"
    losses = torch.stack(totals)
    # against the loss at the first step, not the first steps' mean: a diverging run's spike
    # would make a loss stuck at chance look like it fell
    loss_falls = bool(losses[-max(1, len(losses) // 10):].mean() < (1 - LOSS_FALL) * losses[0])
    findings = _dead_relu_findings(dead_before, dead_after, name, lr, loss_falls)
    findings += _gradient_findings(dict(zip(layers, torch.stack(norms).T)), trained, name)
    return findings + _trend_findings(losses, name)


def _only_in_untrained_heads(probe: Probe, layer: str) -> bool:
    return any(layer == f"heads.{h}" or layer.startswith(f"heads.{h}.") for h in probe.model.heads if probe.weight_of(h) == 0)


def _norm_of_grads(params: list[Tensor]) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return torch.sqrt(sum(g.pow(2).sum() for g in grads)) if grads else torch.zeros((), device=params[0].device)


def _dead_relu_findings(before: dict[str, float], after: dict[str, float], run: str, lr: float, loss_falls: bool) -> list[Finding]:
    """Units killed by training are an error when they stall it (the loss does not fall); a
    network that keeps learning with many dead units (a wide one, say) gets a warning."""
    if not after:
        return [Finding("dead_relu", "info", "no nn.ReLU modules to watch", "the model has no nn.ReLU modules")]
    rows = "; ".join(f"{layer} {_pct(before[layer])} -> {_pct(after[layer])}" for layer in after)
    figures = {"dead_before": before, "dead_after": after, "lr": lr}
    measured = f"units that never fire on 1024 samples, at init -> after {run}: {rows}"
    killed = {layer: d for layer, d in after.items() if d - before[layer] >= 0.1}
    worst = max(after.values())
    if killed and max(killed.values()) >= DEAD_ERROR and not loss_falls:
        return [Finding("dead_relu", "error", f"training at lr {_fmt(lr)} kills ReLUs: up to {_pct(max(killed.values()))} of a layer's units dead",
            measured, "a dead unit outputs 0 for every input and gets no gradient: it never recovers, and the layers "
            "before it stop learning", f"lower {LR_KEY} (e.g. {_fmt(lr / 10)})", [LR_KEY], figures)]  # fmt: skip
    if worst >= DEAD_WARNING:
        return [Finding("dead_relu", "warning", f"up to {_pct(worst)} of a layer's ReLU units are dead (the loss still falls)"
                        if loss_falls else f"up to {_pct(worst)} of a layer's ReLU units are dead", measured,
                        "dead units waste capacity and pass no gradient", f"lower {LR_KEY}, or check the inputs' scale and the init",
                        [LR_KEY], figures)]  # fmt: skip
    return [Finding("dead_relu", "info", f"ReLUs alive (at most {_pct(worst)} of a layer dead)", measured, figures=figures)]


def _gradient_findings(norms: dict[str, Tensor], trained: set[str], run: str) -> list[Finding]:
    median = {name: float(n.median()) for name, n in norms.items()}
    late = {name: float(n[-max(1, len(n) // 10):].mean()) for name, n in norms.items()}
    figures = {"median": median, "last_10pct": late}
    rows = "; ".join(f"{name or 'model'} {_fmt(median[name])}" for name in norms)
    measured = f"median gradient norm per layer over {run}: {rows}"
    if not all(math.isfinite(v) for v in median.values()):
        return [Finding("grad_norm", "error", "gradients became NaN or inf", measured, "a non-finite step ruins every weight",
                        f"lower {LR_KEY}; check the inputs and the loss", [LR_KEY], figures)]  # fmt: skip
    top = max(median[n] for n in trained) if trained else 0.0
    silent = [n for n in norms if n in trained and (late[n] == 0.0 or (top > 0 and late[n] < 1e-4 * top))]
    if silent:
        return [Finding("grad_norm", "warning", f"gradients vanish in {', '.join(silent)}",
            measured + "; late in the run: " + ", ".join(f"{n} {_fmt(late[n])}" for n in silent),
            "layers without gradient stop learning (dead units upstream, or a saturated output)",
            f"lower {LR_KEY}; look at the dead-ReLU and double-softmax findings", [LR_KEY], figures)]  # fmt: skip
    if top > 1e3:
        return [Finding("grad_norm", "warning", "gradients explode", measured, "huge steps make training unstable",
                        f"lower {LR_KEY}, or standardise inputs", [LR_KEY], figures)]  # fmt: skip
    return [Finding("grad_norm", "info", "gradient norms in range", measured, figures=figures)]


def _trend_findings(totals: Tensor, run: str) -> list[Finding]:
    window = max(1, len(totals) // 10)
    first, last = float(totals[:window].mean()), float(totals[-window:].mean())
    figures = {"first": first, "last": last, "steps": len(totals)}
    measured = f"total loss over {run}: {_fmt(first)} (first {window} steps) -> {_fmt(last)} (last {window})"
    if not math.isfinite(last):
        return [Finding("loss_trend", "error", "the loss became NaN or inf", measured, "nothing trains after a NaN",
                        f"lower {LR_KEY}", [LR_KEY], figures)]  # fmt: skip
    if last > first * (1 - LOSS_FALL):
        title = f"the loss hardly falls ({_pct((first - last) / first)} lower)" if last < first else "the loss does not fall"
        return [Finding("loss_trend", "warning", title, measured,
                        f"a model that learns lowers its training loss by far more than {_pct(LOSS_FALL)} in a few hundred steps",
                        "see the other findings: they say why", [], figures)]  # fmt: skip
    return [Finding("loss_trend", "info", f"the loss falls ({_pct((first - last) / first)} lower)", measured, figures=figures)]


def _overfit(probe: Probe, batch: Batch, optimizer_of: Callable[[nn.Module], torch.optim.Optimizer],
             steps: int = OVERFIT_STEPS) -> tuple[int | None, dict[str, float], float, float]:  # fmt: skip
    """Train a fresh copy on one batch; return the step at which every trained head predicts it all."""
    model = fresh_copy(probe.model)
    optimizer = optimizer_of(model)
    heads, first = probe.trained_heads(), None
    for step in range(1, steps + 1):
        outputs = model(batch)
        loss = model.total_loss(model.losses(outputs, batch))
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == steps:
            with torch.no_grad():
                outputs = model(batch)
                fit = {h: float((model.heads[h].predict(outputs[h]) == batch[probe.target_of(h)]).float().mean()) for h in heads}
                last = float(model.total_loss(model.losses(outputs, batch)))
            if all(v >= 0.99 for v in fit.values()):
                return step, fit, first, last
    return None, fit, first, last


def check_overfit(probe: Probe) -> list[Finding]:
    """A model that works fits one small batch exactly within a few dozen steps."""
    heads = probe.trained_heads()
    if not heads:
        return []
    batch = _slice(probe.sample, OVERFIT_BATCH)
    recipe = probe.recipe
    step, fit, first, last = _overfit(probe, batch, lambda m: make_optimizer(recipe, m))
    fits = ", ".join(f"{h} {_pct(v)}" for h, v in fit.items())
    lr = recipe.optimizer.params.lr
    what = f"{recipe.optimizer.section.type} at lr {_fmt(lr)}"
    figures: dict[str, Any] = {"steps": step, "fit": fit, "loss_first": first, "loss_last": last}
    if step is not None:
        return [Finding("overfit", "info", f"fits one batch of {OVERFIT_BATCH} in {step} steps",
                        f"{what}: predictions matching targets {fits}; loss {_fmt(first)} -> {_fmt(last)}", figures=figures)]  # fmt: skip
    measured = f"after {OVERFIT_STEPS} steps of {what} on one batch of {OVERFIT_BATCH}: predictions matching targets {fits}; loss {_fmt(first)} -> {_fmt(last)}"
    sane_step, sane_fit, _, sane_last = _overfit(probe, batch, lambda m: torch.optim.Adam(m.parameters(), lr=SANE_ADAM_LR), 2 * OVERFIT_STEPS)
    figures.update(sane_steps=sane_step, sane_fit=sane_fit)
    sane_fits = ", ".join(f"{h} {_pct(v)}" for h, v in sane_fit.items())
    if sane_step is not None:
        return [Finding("overfit", "error", f"cannot fit one batch at lr {_fmt(lr)}; Adam at {SANE_ADAM_LR:g} can",
            measured + f"; Adam at lr {SANE_ADAM_LR:g} fits it in {sane_step} steps",
            "a model that cannot memorise 32 samples cannot learn the task: here the optimizer settings are to blame",
            f"{'lower' if lr > SANE_ADAM_LR else 'raise'} {LR_KEY} (Adam at {SANE_ADAM_LR:g} works)", [LR_KEY], figures)]  # fmt: skip
    return [Finding("overfit", "error", f"cannot fit one batch of {OVERFIT_BATCH}, even with Adam at lr {SANE_ADAM_LR:g}",
        measured + f"; {2 * OVERFIT_STEPS} steps of Adam at lr {SANE_ADAM_LR:g}: {sane_fits}, loss -> {_fmt(sane_last)}",
        "a model that cannot memorise 32 samples is broken: loss, outputs, wiring or targets",
        "fix the error-level findings above first", [], figures)]  # fmt: skip


# -- running the checks -----------------------------------------------------------------------

#: Every check, in the order they run and are shown; the preflight runs the fast ones.
CHECKS: dict[str, Callable[[Probe], list[Finding]]] = {
    "data": check_data,
    "pairing": check_pairing,
    "loss_at_init": check_loss_at_init,
    "double_softmax": check_double_softmax,
    "loss_weights": check_loss_weights,
    "short_run": check_short_run,
    "overfit": check_overfit,
}
PREFLIGHT = ("loss_at_init", "double_softmax", "loss_weights")


def _run_check(name: str, probe: Probe) -> list[Finding]:
    """One check; a check that crashes on a broken model is itself a finding, not a traceback."""
    from ..errors import UserError

    try:
        return CHECKS[name](probe)
    except UserError:
        raise
    except Exception as e:  # the model or a plugin failed under the check: that is the diagnosis
        return [Finding(name, "error", f"the {name} check could not run: {type(e).__name__}", str(e).strip().splitlines()[0] if str(e).strip() else repr(e),
                        "the model, its loss or the data fail on a plain training step", "fix the error above; `digitsum run` would fail the same way")]  # fmt: skip


def diagnose(probe: Probe, checks: Sequence[str] = tuple(CHECKS)) -> Report:
    """Run ``checks`` on ``probe`` without disturbing the global random state or the model."""
    started = time.perf_counter()
    findings: list[Finding] = []
    devices = [probe.device] if probe.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        was_training = probe.model.training
        probe.model.train()
        for name in checks:
            findings += _run_check(name, probe)
        probe.model.train(was_training)
        probe.model.zero_grad(set_to_none=True)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: order[f.severity])  # stable: within a severity, check order
    return Report(probe.recipe.name, findings, time.perf_counter() - started, list(checks))


def doctor(recipe: Recipe, checks: Sequence[str] = tuple(CHECKS)) -> Report:
    """Build ``recipe`` on the CPU and run the checks: what ``digitsum doctor`` does.

    One thread: on these small models and batches, several threads mostly wait for each other,
    and on a shared machine they can be many times slower (see docs/doctor.md).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return diagnose(Probe.from_recipe(recipe), checks)
    finally:
        torch.set_num_threads(threads)


# -- output for people ------------------------------------------------------------------------

STYLE = {"error": "bold red", "warning": "yellow", "info": "green"}


def render_report(report: Report, console: Any) -> None:
    """Print a report on a rich console: problems in full, healthy measurements in one line each."""
    from rich.markup import escape

    console.print(f"[bold]digitsum doctor[/]: {escape(report.recipe)} · checks: {', '.join(report.checks)}")
    for f in report.findings:
        label, tag = f"[{STYLE[f.severity]}]{f.severity:<7}[/]", f"[{f.check}]"
        if f.severity == "info":
            console.print(f"{label} {escape(tag)} {escape(f.title)}: [dim]{escape(f.measured)}[/]", soft_wrap=True)
            continue
        console.print(f"{label} {escape(tag)} [bold]{escape(f.title)}[/]", soft_wrap=True)
        console.print(f"        measured: {escape(f.measured)}", soft_wrap=True, highlight=False)
        if f.why:
            console.print(f"        why: {escape(f.why)}", soft_wrap=True, highlight=False)
        if f.fix:
            console.print(f"        fix: [bold]{escape(f.fix)}[/]", soft_wrap=True, highlight=False)
    counts = {s: sum(x.severity == s for x in report.findings) for s in SEVERITIES}
    verdict = "[bold red]unhealthy[/]" if report.errors else "[bold green]healthy[/]"
    console.print(f"{verdict}: {counts['error']} errors, {counts['warning']} warnings, {counts['info']} fine · {report.seconds:.1f} s")
