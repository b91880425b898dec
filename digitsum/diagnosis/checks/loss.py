"""Loss checks: the loss at initialisation, a double softmax, what each head's output trains
(the floor is :mod:`.floor`'s; loss weights and the gradient each head sends back, :mod:`.gradients`'s)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...contract_checks import declared_classes, probabilities_problems
from ...contracts import Batch, Head
from ...errors import recipe_text
from ..emulate import logits_from_probabilities, loss_rescaled, without_backbone_noise, without_training_noise
from ..findings import Change, Finding, fmt
from ..probe import Probe, batch_len, evaluating, off_defaults, slice_batch


#: A class-logits head's loss at initialisation against the cross-entropy of its own logits: a weighting,
#: label smoothing or a focal term stay within this range; a constant factor (1e-4 x cross-entropy) does not.
SCALE_RANGE = (0.1, 10.0)
#: Features into the heads larger than this (RMS) at initialisation are the backbone's doing (its
#: own initialisation, or unscaled inputs): the built-in backbones give 0.04-0.1 on their recipes.
LARGE_FEATURES = 10.0


def check_loss_at_init(probe: Probe) -> list[Finding]:
    """Each head's loss before training (against ln(classes) for class-logits heads).

    ln(classes) is the loss of a uniform guess, for heads that declare class logits (a
    cross-entropy-like loss)."""
    findings: list[Finding] = []
    batch = slice_batch(probe.sample, 512)
    with torch.no_grad():
        outputs = probe.model(batch)
        losses = probe.model.losses(outputs, batch)
    # the heads whose losses sum over the batch share one fix, tried at once (one class's loss, most
    # often: averaging one head's leaves the other's steps as large as before)
    summed_heads: list[str] = []
    averaged: list[Change] = []
    for head, loss in losses.items():
        value, classes = float(loss), probe.classes_of(head)
        figures: dict = {"loss": value}
        if not math.isfinite(value):
            findings.append(Finding("loss_at_init", "error", f"heads.{head}: loss is {value} before training",
                f"loss at initialisation on {batch_len(batch)} samples: {value}", "a NaN loss trains nothing",
                "check the inputs' range and the head's loss", [], figures))  # fmt: skip
            continue
        if classes is None or not probe.logits_head(head, outputs[head]):
            findings.append(Finding("loss_at_init", "info", f"heads.{head}: loss at init {fmt(value)}",
                                    f"heads.{head}: {fmt(value)} at initialisation (output kind '{probe.output_kind(head)}': "
                                    "no uniform-guess loss to compare with)", figures=figures))  # fmt: skip
            continue
        expected = math.log(classes)
        figures.update(expected=expected, ratio=value / expected)
        measured = f"heads.{head}: {fmt(value)} at initialisation; ln {classes} = {fmt(expected)} (a uniform guess)"
        target = batch[probe.target_of(head)]
        readable = target.dim() == 1 and not target.is_floating_point() and target.numel() and 0 <= int(target.min()) and int(target.max()) < classes
        logits_loss = float(F.cross_entropy(outputs[head].float(), target)) if readable else None  # out-of-range labels: the data check's
        scale = value / logits_loss if logits_loss else None
        if scale is not None and not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1] and _constant_factor(probe, head, outputs[head], target, scale):
            cls, n = type(probe.model.heads[head]), batch_len(batch)
            # a factor of the batch's own size: a sum over the samples (reduction="sum"), not their mean
            summed = abs(scale - n) <= 0.01 * n
            title = (f"heads.{head}'s loss is summed over the batch, not averaged: {fmt(scale)} times the cross-entropy of its logits"
                     if summed else f"heads.{head}'s loss is {fmt(scale)} times the cross-entropy of its logits")  # fmt: skip
            findings.append(Finding("loss_at_init", "warning", title,
                f"{measured}; the cross-entropy of the same logits: {fmt(logits_loss)}" + (f", on a batch of {n}" if summed else ""),
                "a loss scaled by a constant scales every gradient of the head by it: plain SGD's steps shrink or grow as "
                "much (Adam's hardly change), and the loss reads as far from or near its floor when it is not"
                + ("; a sum also changes with the batch size" if summed else ""),
                (f"take the mean over the batch in {cls.__module__}.{cls.__name__}.loss() (reduction=\"mean\"), or scale the learning rate"
                 if summed else f"drop the factor from {cls.__module__}.{cls.__name__}.loss(), or scale the learning rate"),
                [], {**figures, "scale": scale, "summed": summed}, candidates=averaged if summed else [Change(
                    f"heads.{head}'s loss divided by {fmt(scale)}", emulate=loss_rescaled([head], 1 / scale),
                    code=f"{cls.__name__}.loss: without the factor {fmt(scale)}", corrects=True)]))  # fmt: skip
            if summed:
                summed_heads.append(head)
        elif value > 1.5 * expected and (logits_loss is None or logits_loss > 1.5 * expected):  # the logits themselves are far from uniform
            features = float(probe.model.backbone(batch).detach().float().pow(2).mean().sqrt())
            figures["features_rms"] = features
            backbone = type(probe.model.backbone)
            fix = (f"the features the heads read are {fmt(features)} RMS (PyTorch's default initialisation keeps them near or "
                   f"under 1; every built-in backbone gives 0.04-0.1): look at how {backbone.__module__}.{backbone.__name__} "
                   "initialises its layers (weights drawn with std 1, not scaled by their fan-in), or at unscaled inputs"
                   if features > LARGE_FEATURES else "standardise inputs, or scale down the head's initial weights")  # fmt: skip
            findings.append(Finding("loss_at_init", "warning", f"heads.{head} starts confidently wrong", measured
                + (f"; the cross-entropy of its logits: {fmt(logits_loss)}" if logits_loss is not None else "")
                + f"; the backbone's features: {fmt(features)} RMS",
                "outputs at init are far from uniform: large initial logits slow training down and hint at a scale problem",
                fix, [], figures))  # fmt: skip
        elif not 0.75 * expected <= value <= 1.5 * expected:
            # a loss of another shape (a robust loss; binary cross-entropies per class, K ln 2 at init), or one scaled within SCALE_RANGE
            side = "above" if value > expected else "below"
            findings.append(Finding("loss_at_init", "info", f"heads.{head} starts at {fmt(value)}, {side} ln {classes}: "
                                    "its loss is no plain cross-entropy of its logits", measured
                                    + (f"; the cross-entropy of its logits: {fmt(logits_loss)}" if logits_loss is not None else ""),
                                    figures=figures))  # fmt: skip
        else:
            findings.append(Finding("loss_at_init", "info", f"heads.{head} starts near ln {classes}", measured, figures=figures))
    if summed_heads:
        owners = ", ".join(sorted({type(probe.model.heads[h]).__name__ for h in summed_heads}))
        averaged.append(Change(" and ".join(f"heads.{h}'s" for h in summed_heads) + " loss averaged over the batch",
                               emulate=loss_rescaled(summed_heads, per_sample=True), code=f"{owners}.loss: the mean over the batch",
                               corrects=True))  # fmt: skip
    return findings


def _constant_factor(probe: Probe, head: str, output: Tensor, target: Tensor, scale: float) -> bool:
    """Whether the head's loss is ``scale`` times the cross-entropy on steeper logits too (4x):
    a constant factor, not a loss of another shape (nll_loss on raw logits, which goes below 0
    as they grow: the loss_floor check names that)."""
    steeper = output.float() * 4
    try:
        with torch.no_grad():
            again = float(probe.model.heads[head].loss(steeper, target)) / float(F.cross_entropy(steeper, target))
    except Exception:  # noqa: BLE001 - a loss that takes no such output: judged on the first figure alone
        return True
    return scale > 0 and again > 0 and 0.5 <= again / scale <= 2


def _is_probability(output: Tensor) -> bool:
    return output.dim() == 2 and output.shape[1] > 1 and bool(output.min() >= 0) and bool(((output.sum(1) - 1).abs() < 1e-4).all())


@dataclass(frozen=True)
class ProbabilityOutput:
    """A class-logits head's output that already holds probabilities, and what its loss makes of
    them: ``floor``, its loss on a perfect, certain prediction (the one-hot rows of the right
    classes), and ``uniform``, its loss on uniform rows. A log-loss of probabilities gives 0 and
    ln(classes)."""

    classes: int
    floor: float
    uniform: float

    @property
    def softmax_twice(self) -> bool:
        """The loss applies (log-)softmax to the probabilities again: a perfect prediction still
        costs ln(1 + (K-1)/e), not about 0, and the gradients shrink (the notebook's bug)."""
        return self.floor >= 0.05 * math.log(self.classes)

    @property
    def log_loss(self) -> bool:
        """The loss reads the probabilities as a log-loss does (0 for a perfect prediction, ln K
        for a uniform one); ``nll_loss`` on probabilities, not their log, gives -1 and -1/K."""
        tolerance = 0.05 * math.log(self.classes)
        return abs(self.floor) < tolerance and abs(self.uniform - math.log(self.classes)) < tolerance


def probability_output(head: Head, output: Tensor, target: Tensor) -> ProbabilityOutput | None:
    """Whether ``head``, declaring class logits, outputs probabilities over its classes instead
    (non-negative rows summing to 1), measured with its own loss against ``target``; None when it
    does not. The one test of a double softmax: the doctor's check and ``check_head`` share it."""
    space = head.prediction_space()
    classes = space.classes if space.length is None else None
    output = output.detach()
    if classes is None or getattr(head, "output_kind", "class_logits") != "class_logits" or not _is_probability(output) or output.shape[1] != classes:
        return None
    perfect = F.one_hot(space.expected(target), classes).to(output.dtype)
    with torch.no_grad():
        floor, uniform = float(head.loss(perfect, target)), float(head.loss(torch.full_like(perfect, 1 / classes), target))
    return ProbabilityOutput(classes, floor, uniform)


def grad_norm(value: Tensor, params: Sequence[Tensor]) -> float:
    params = [p for p in params if p.requires_grad]
    if not params or not isinstance(value, Tensor) or not value.requires_grad:
        return 0.0
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.pow(2).sum() for g in grads if g is not None), torch.tensor(0.0))))


def check_double_softmax(probe: Probe) -> list[Finding]:
    """Outputs that are already probabilities, fed to a loss that applies log-softmax again."""
    findings: list[Finding] = []
    model, batch = probe.model, slice_batch(probe.sample, 256)
    outputs = model(batch)
    for head, output in outputs.items():
        target = batch[probe.target_of(head)]  # what the loss takes; what it predicts is `expected`
        found = probability_output(model.heads[head], output, target)
        if found is None:
            continue
        classes, floor, expected, loss_fn = found.classes, found.floor, probe.expected(head, batch), model.heads[head].loss
        start = float(loss_fn(output.detach(), target))
        if found.log_loss:
            findings.append(Finding("double_softmax", "info", f"heads.{head} outputs probabilities and its loss takes them as such",
                                    f"loss of a perfect prediction: {fmt(floor)}", figures={"floor": floor}))  # fmt: skip
            continue
        # what the same outputs would give if the loss took their log (= cross-entropy on the logits)
        as_logits = F.nll_loss(output.clamp_min(1e-12).log(), expected)
        head_params, body_params = list(model.heads[head].parameters()), list(model.backbone.parameters())
        loss = loss_fn(output, target)
        g_head, g_head_ok = grad_norm(loss, head_params), grad_norm(as_logits, head_params)
        g_body, g_body_ok = grad_norm(loss, body_params), grad_norm(as_logits, body_params)
        ratio = g_head_ok / g_head if g_head > 0 else float("nan")
        figures = {"loss_at_init": start, "loss_floor": floor, "ln_classes": math.log(classes),
                   "grad_norm_head": g_head, "grad_norm_head_with_logits": g_head_ok,
                   "grad_norm_backbone": g_body, "grad_norm_backbone_with_logits": g_body_ok, "shrink": ratio}  # fmt: skip
        # The recipe key is the fix only where it asks for probabilities: a head whose `output`
        # already says "logits" (a plugin head that softmaxes whatever it is told) needs its code changed.
        asked = getattr(probe.recipe.heads[head].params, "output", None)
        # A loss that is no log-loss of the probabilities (nll_loss on them) is code either way.
        key = f"heads.{head}.output" if asked not in (None, "logits") and found.softmax_twice else ""
        code = (f"make heads.{head} return logits: its loss applies softmax itself" if found.softmax_twice else
                f"make heads.{head} return logits and train them with a cross-entropy (or give nll_loss the log of the probabilities)")  # fmt: skip
        fix = f'set {key} = "logits"' if key else code
        change = (Change(f'{key} = "logits"', {key: "logits"}, corrects=True) if key else
                  Change(f"heads.{head} returning logits", emulate=logits_from_probabilities(head), code=fix, corrects=True))  # fmt: skip
        if found.softmax_twice:
            title = f"heads.{head}: softmax applied twice (probabilities into a log-softmax loss)"
            why = ("the loss treats probabilities as logits and applies softmax again: its floor is ln(1 + (K-1)/e) "
                   "instead of 0, and the gradients shrink, so the head barely learns")  # fmt: skip
        else:  # nll_loss on the probabilities themselves, say: it scores -p, not -ln p
            title = f"heads.{head}: its loss does not read its probabilities as a log-loss (probabilities, not their log, into nll_loss?)"
            why = (f"a log-loss costs 0 for a perfect prediction and ln {classes} for a uniform one; this loss costs "
                   f"{fmt(floor)} and {fmt(found.uniform)}: its gradient does not grow as the right class's probability "
                   "falls, so the head barely learns")  # fmt: skip
        findings.append(Finding("double_softmax", "error", title,
            f"outputs are non-negative and every row sums to 1; the lowest loss this head can reach is {fmt(floor)} "
            f"(a perfect, certain prediction; a uniform one: {fmt(found.uniform)}) against {fmt(start)} now "
            f"(ln {classes} = {fmt(math.log(classes))}); gradients reaching the head are {ratio:.1f}x smaller than with logits "
            f"({fmt(g_head)} vs {fmt(g_head_ok)}; backbone {fmt(g_body)} vs {fmt(g_body_ok)})",
            why, fix, [key] if key else [], {**figures, "loss_uniform": found.uniform, "head": head}, candidates=[change]))  # fmt: skip
    model.zero_grad(set_to_none=True)
    return findings


#: A class-logits head whose forward leaves this share of its outputs without a gradient from
#: its input clamps its logits (a ReLU after the last layer: about half of them at initialisation).
CLAMPED_SHARE = 0.25
#: Training-mode noise of a head's outputs or the backbone's features (their change from pass to pass) above this
#: many times their spread over samples in eval mode drowns what they say. `original`'s sum head with dropout
#: before its layer: 0.9 gives 6.6x, 0.99 22x; dropout on concat's features: 0.9 9x, 0.95 13x (about sqrt(p / (1 - p))).
NOISE_RATIO = 10.0


def _outputs_without_gradient(module: nn.Module, features: Tensor) -> tuple[Tensor, Tensor]:
    """The head's eval-mode output on ``features`` and, per output, whether it has no gradient from
    its own sample's features (one backward pass per output column)."""
    features = features.detach().clone().requires_grad_(True)
    with evaluating(module), torch.enable_grad():
        output = module(features)
        dead = torch.zeros(output.shape, dtype=torch.bool)
        for column in range(output.shape[1]):
            [grad] = torch.autograd.grad(output[:, column].sum(), features, retain_graph=True, allow_unused=True)
            dead[:, column] = True if grad is None else grad.flatten(1).abs().sum(1) == 0
    return output.detach(), dead


def _moves_without_gradient(module: nn.Module, features: Tensor, output: Tensor, dead: Tensor) -> bool:
    """Whether most outputs without a gradient still change when the features do (by a tenth of
    their spread): the head cuts the gradient (a detach) rather than clamping its outputs."""
    generator = torch.Generator(device=features.device).manual_seed(0)
    nudged = features + 0.1 * features.std() * torch.randn(features.shape, generator=generator, device=features.device)
    with evaluating(module), torch.no_grad():
        moved = (module(nudged) - output).abs() > 1e-6 * (output.abs().max() + 1e-12)
    return bool(moved[dead].float().mean() >= 0.5) if dead.any() else False


def check_head_output(probe: Probe) -> list[Finding]:
    """Backbone features or class-logits outputs drowned in training-mode noise, or clamped logits.

    Measured at initialisation: training-mode noise against the spread over samples in eval mode
    (dropout 0.95 on the features, 0.99 in a head); outputs no gradient reaches (a ReLU or clamp
    after a head's last layer: a logit below 0 can never rise again)."""
    # 256 images' worth, 8 samples at least: a spread over samples needs several (add-100 packs 200 images in one)
    batch = slice_batch(probe.sample, max(8, probe.batch_of(256)))
    with torch.no_grad():
        features = probe.model.backbone(batch)  # in training mode, as the checks run
    if not isinstance(features, Tensor) or not features.is_floating_point():
        return []
    findings = _noisy_features(probe, batch, features) + _probabilities_broken(probe, features)
    logits_heads = [h for h in probe.model.heads if probe.logits_head(h)]  # others: judged through predict and metrics
    for head in logits_heads:
        module = probe.model.heads[head]
        cls = type(module)
        where = f"heads.{head} ({cls.__module__}.{cls.__name__})"
        with torch.no_grad():
            trained = module(features)
        if not probe.logits_head(head, trained) or _is_probability(trained):
            continue  # double_softmax reads probabilities
        output, dead = _outputs_without_gradient(module, features)
        share = float(dead.float().mean())
        figures = {"head": head, "no_gradient": share, "min": float(output.min())}
        if share >= CLAMPED_SHARE and _moves_without_gradient(module, features, output, dead):
            findings.append(Finding("head_output", "error", f"heads.{head} cuts the gradient off its input",
                f"{where} on {len(output)} samples at initialisation (eval mode): {100 * share:.0f} % of its outputs get no "
                "gradient from the features, yet change when the features do",
                "the head's loss trains the head's own last layers only: nothing reaches the backbone through it (a detach(), "
                ".data or torch.no_grad() in its forward)", f"let the gradient through {cls.__name__}.forward (remove the detach)",
                [], {**figures, "detached": True}))  # fmt: skip
            continue
        if share >= CLAMPED_SHARE:
            sign = "; every output is >= 0 (logits range over both signs)" if float(output.min()) >= 0 else ""
            findings.append(Finding("head_output", "error", f"heads.{head} clamps its logits: {100 * share:.0f} % of them get no gradient",
                f"{where} on {len(output)} samples at initialisation (eval mode): {100 * share:.0f} % of its outputs do not "
                f"depend on its input{sign}",
                "a logit with no gradient cannot move: where the right class's is clamped, the loss cannot raise it, and "
                "as training pushes the others down they die too, until every logit is stuck",
                f"return the last layer's output unclamped from {cls.__name__}.forward (no ReLU, clamp or abs after it)",
                [], figures))  # fmt: skip
            continue
        with torch.no_grad():
            again = module(features)
        noise, spread, ratio = _noise_ratio(trained, again, output)
        if ratio > NOISE_RATIO:
            code = f"lower the dropout (or other training-mode noise) in {cls.__name__}.forward"
            findings.append(Finding("head_output", "error", f"heads.{head}'s outputs are mostly noise in training mode",
                f"{where} on {len(output)} samples at initialisation: training-mode outputs vary from pass to pass by "
                f"{fmt(noise)} (RMS), {ratio:.1f}x their spread over samples ({fmt(spread)}, eval mode)",
                "the loss is computed on the noisy outputs: its gradient says little about the input, so the head barely "
                "learns (dropout p scales kept features by 1/(1-p): 100x at 0.99)", code, [], {**figures, "noise_ratio": ratio},
                candidates=[Change(f"heads.{head} without its training-mode noise", emulate=without_training_noise(head), code=code)]))  # fmt: skip
    return findings


def _noise_ratio(trained: Tensor, again: Tensor, clean: Tensor) -> tuple[float, float, float]:
    """Training-mode noise against the spread over samples: the RMS difference of two
    training-mode passes over the same input (``trained``, ``again``) over sqrt(2), one pass's own
    noise (dropout's), and the spread over samples of the eval-mode output ``clean``; and their
    ratio. Two passes, not training against eval mode: batch norm differs between the modes (by
    the batch's statistics or the running ones) without any noise."""
    noise = float((trained.float() - again.float()).pow(2).mean().sqrt()) / math.sqrt(2)
    spread = float(clean.float().std(0).mean())
    return noise, spread, noise / spread if spread > 0 else (float("inf") if noise > 0 else 0.0)


def _training_noise(backbone: nn.Module, batch: Batch, trained: Tensor) -> tuple[float, float, float]:
    """The backbone's training-mode noise on ``batch`` (``trained``: its features of one
    training-mode pass), their spread over samples and the ratio (:func:`_noise_ratio`)."""
    with torch.no_grad():
        again = backbone(batch)
        with evaluating(backbone):
            clean = backbone(batch)
    return _noise_ratio(trained, again, clean)


def _noisy_features(probe: Probe, batch: Batch, trained: Tensor) -> list[Finding]:
    """An error when the backbone's training-mode features on ``batch`` (``trained``) vary from
    pass to pass by over NOISE_RATIO times their spread over samples."""
    backbone = probe.model.backbone
    noise, spread, ratio = _training_noise(backbone, batch, trained)
    if ratio <= NOISE_RATIO:
        return []
    cls = type(backbone)
    measured = (f"backbone {probe.recipe.backbone.section.type} ({cls.__module__}.{cls.__name__}) on {batch_len(batch)} samples at "
                f"initialisation: training-mode features vary from pass to pass by {fmt(noise)} (RMS), {ratio:.1f}x their "
                f"spread over samples ({fmt(spread)}, eval mode)")  # fmt: skip
    why = ("every head is trained on the noisy features: the gradient says little about the input, so nothing learns fast "
           "(dropout p scales kept features by 1/(1-p): 20x at 0.95)")
    figures = {"noise_ratio": ratio, "backbone": True}
    settings = _quieting_settings(probe, batch)
    if settings:  # a setting of the recipe makes the noise: that setting is the fix
        figures["settings"] = settings
        return [Finding("head_output", "error", "the backbone's features are mostly noise in training mode", measured
            + "; reset to its default alone, " + ", ".join(f"{k} = {recipe_text(v)} gives {r:.1f}x" for k, (v, r) in settings.items()),
            why, "set " + " or ".join(f"{k} = {recipe_text(v)}" for k, (v, _) in settings.items()), sorted(settings), figures,
            candidates=[Change(f"{k} = {recipe_text(v)}", {k: v}) for k, (v, _) in settings.items()])]  # fmt: skip
    code = f"lower the dropout (or other training-mode noise) in {cls.__name__}.forward"
    return [Finding("head_output", "error", "the backbone's features are mostly noise in training mode", measured, why, code, [], figures,
                    candidates=[Change("the backbone without its training-mode noise", emulate=without_backbone_noise, code=code)])]


def _probabilities_broken(probe: Probe, features: Tensor) -> list[Finding]:
    """Heads whose ``probabilities`` break their contract on the probe's features (eval mode):
    rows of class probabilities, one per sample, each summing to 1 (the rule of
    ``digitsum.testing.check_head``). A softmax over the batch instead of the classes passes
    every loss check, and misreads every prediction that reads it."""
    findings = []
    for head, module in probe.model.heads.items():
        space = module.prediction_space()
        if space.top != 1 or space.length is not None:
            continue
        with evaluating(module), torch.no_grad():
            output = module(features)
            try:
                problems = probabilities_problems(module.probabilities(output), len(output), declared_classes(module))
            except Exception:  # noqa: BLE001 - a probabilities() that raises: the runs that call it say so
                continue
        if problems:
            cls = type(module)
            findings.append(Finding("head_output", "error", f"heads.{head}.probabilities() breaks its contract",
                f"heads.{head} ({cls.__module__}.{cls.__name__}) on {len(output)} samples at initialisation (eval mode): {'; '.join(problems)}",
                "probabilities() gives each sample's class probabilities: predict() and the argmax the doctor's checks read "
                "rely on it; computed over the wrong dimension (the batch), they read every sample wrongly",
                f"make {cls.__name__}.probabilities() return one row per sample that sums to 1 (a softmax over the classes, dim=1)",
                [], {"head": head, "problems": problems}))  # fmt: skip
    return findings


def _quieting_settings(probe: Probe, batch: Batch) -> dict[str, tuple[Any, float]]:
    """The backbone settings off their defaults whose reset alone brings its training-mode noise
    within NOISE_RATIO of the features' spread, each with its default and the ratio measured."""
    found: dict[str, tuple[Any, float]] = {}
    for name, default, value in off_defaults(probe.recipe.backbone.params):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        try:
            variant = probe.variant({f"backbone.{name}": default})
        except Exception:  # noqa: BLE001 - a reset the recipe refuses
            continue
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            _, _, ratio = _training_noise(variant.model.backbone, batch, variant.model.backbone(batch))
        if ratio <= NOISE_RATIO:
            found[f"backbone.{name}"] = (default, ratio)
    return found


def broken_heads(probe: Probe) -> dict[str, str]:
    """The heads whose own forward or loss the head checks (``double_softmax``, ``head_output``)
    find broken, with the finding's title: checks that would otherwise blame the data for such a
    head's stall ask here first. Measured once per probe, leaving the random state as it was."""
    if "broken_heads" not in probe.cache:
        with torch.random.fork_rng(devices=[]):
            found = check_double_softmax(probe) + check_head_output(probe)
        probe.cache["broken_heads"] = {f.figures["head"]: f.title for f in found if f.severity == "error" and "head" in f.figures}
    return probe.cache["broken_heads"]
