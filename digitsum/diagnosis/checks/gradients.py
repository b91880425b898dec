"""What each head's loss sends back: loss weights, the gradient reaching each head and the
backbone (a detach in a head or in the backbone's forward), parameters a component froze, and
tensors a loss trains that the model does not register."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..emulate import reinitialised, unfrozen
from ..findings import BROKEN_CODE, Change, Finding, fmt
from ..probe import Probe, slice_batch
from .loss import grad_norm


def _unregistered_leaves(loss: Tensor, registered: set[int]) -> list[Tensor]:
    """The leaf tensors requiring grad that ``loss``'s autograd graph reaches, but for those whose
    id is in ``registered`` (the model's parameters)."""
    found: dict[int, Tensor] = {}
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)  # an AccumulateGrad node: where a leaf's .grad is written
        if leaf is not None and id(leaf) not in registered:
            found[id(leaf)] = leaf
        stack.extend(child for child, _ in node.next_functions)
    return list(found.values())


def _hidden_containers(model: nn.Module) -> list[str]:
    """Attributes of the model's modules that are plain lists, tuples or dicts holding modules or
    tensors that require grad, or such a tensor itself (not an ``nn.Parameter``): torch registers
    none of them (``heads.sum.layers``, ``heads.sum.w``)."""
    names = []
    for prefix, module in model.named_modules():
        for attr, value in vars(module).items():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
            if not attr.startswith("_") and any(isinstance(v, nn.Module) or (isinstance(v, Tensor) and v.requires_grad) for v in items):
                names.append(f"{prefix}.{attr}" if prefix else attr)
    return names


def _frozen_parameters(model: nn.Module) -> list[Finding]:
    """A warning naming the model's parameters that do not require grad (set so by a component's
    code: the recipe freezes nothing before training starts), per component."""
    frozen: dict[str, list[str]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            frozen.setdefault(".".join(name.split(".")[:2]) if name.startswith("heads.") else "backbone", []).append(name)
    findings = []
    for part, names in frozen.items():
        module = model.get_submodule(part)
        every = len(names) == len(list(module.parameters()))
        count = sum(model.get_parameter(n).numel() for n in names)
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        code = (f"remove the requires_grad_(False) that {type(module).__name__} applies to them (freeze loaded weights "
                "with the recipe's init.freeze_epochs instead)")
        findings.append(Finding("loss_weights", "warning", f"{'every' if every else 'some'} parameter of {part} is frozen",
            f"{part} ({type(module).__module__}.{type(module).__name__}): {len(names)} parameters ({count:,} weights) have "
            f"requires_grad = False: {shown}",
            "the optimizer never changes a frozen parameter: unless it was loaded already trained (a pretrained part "
            "frozen on purpose), it keeps its random initial values and what follows learns from them",
            code, [], {"part": part, "frozen": names, "weights": count},
            candidates=[Change(f"{part}'s frozen parameters trained", emulate=unfrozen(names), code=code)]))  # fmt: skip
    return findings


def _reaches_features(model: nn.Module, head: str, features: Tensor, target: Tensor) -> bool:
    """Whether ``head``'s loss sends a gradient to the backbone's output ``features`` (a head that
    detaches its input sends none)."""
    if not features.requires_grad:
        return False
    module = model.heads[head]
    try:
        return grad_norm(module.loss(module(features), target), [features]) > 0
    except Exception:  # noqa: BLE001 - the head's own code: the checks that run it name its errors
        return False


def _zero_layers(backbone: nn.Module) -> list[str]:
    """The backbone's layers whose weight is all zeros, as ``backbone.<name>``."""
    return [f"backbone.{name}" for name, module in backbone.named_modules()
            if isinstance(getattr(module, "weight", None), Tensor) and module.weight.numel() and not module.weight.any()]  # fmt: skip


def _backbone_blocks(model: nn.Module, heads: list[str]) -> Finding:
    """The heads' losses reach the backbone's output but none of its weights: its own layers stop
    the gradient (layers initialised to zero: a ReLU after one outputs 0 and passes nothing back)."""
    cls = type(model.backbone)
    zeroed = _zero_layers(model.backbone)
    named = ", ".join(f"heads.{h}" for h in heads)
    measured = (f"{named}: the loss's gradient reaches the backbone's output ({cls.__module__}.{cls.__name__}) but "
                "none of its parameters (0)")  # fmt: skip
    if zeroed:
        measured += f"; layers whose weights are all zeros: {', '.join(zeroed)}"
        code = f"give {', '.join(zeroed)} their default initialisation, not zeros ({cls.__name__}.__init__)"
        candidates = [Change(f"{', '.join(zeroed)} re-initialised (default init)", emulate=reinitialised(zeroed), code=code)]
    else:  # units dead from the start (a large negative bias), say: a setting or a re-initialisation may mend them
        code, candidates = (f"find what in {cls.__name__}.forward stops the gradient before its weights: units that never "
                            "fire (a ReLU after a large negative bias) or a layer whose output is constant"), []  # fmt: skip
    figures = {"heads": heads, "zero_layers": zeroed, **({BROKEN_CODE: "backbone"} if zeroed else {})}
    return Finding("loss_weights", "error", "the backbone passes no gradient back to its weights: the backbone never trains",
        measured, "the heads pass the gradient on, and the backbone's own layers stop it: zero weights pass none to what "
        "is before them, and a ReLU after a zero layer (or one that never fires) outputs 0 and passes none either; its "
        "weights keep their initial values and the heads learn from constant features", code, [], figures,
        candidates=candidates)  # fmt: skip


#: A trained head whose loss weight is below this share of the largest trained head's is all but
#: silenced (1e-5 beside 1.0 left `original`'s sum at chance after 2 epochs).
TINY_WEIGHT = 1e-3


def check_loss_weights(probe: Probe) -> list[Finding]:
    """Zero loss weights, heads no gradient reaches, heads whose loss never reaches the backbone.

    A loss that never reaches the backbone: a detached input. A loss that trains tensors the
    model does not register (layers in a plain list). Also targets no trained head reads."""
    findings: list[Finding] = []
    model, batch = probe.model, slice_batch(probe.sample, 128)
    outputs = model(batch)
    losses = model.losses(outputs, batch)
    total = model.total_loss(losses)
    total = total if isinstance(total, Tensor) else torch.tensor(float(total))
    registered = {id(p) for p in model.parameters()}
    for head, loss in losses.items():
        hidden = _unregistered_leaves(loss, registered)
        if hidden:
            where = _hidden_containers(model) or [f"heads.{head} or the backbone"]
            findings.append(Finding("loss_weights", "error", f"heads.{head}'s loss trains tensors that are not parameters of the model",
                f"{len(hidden)} tensors ({sum(t.numel() for t in hidden):,} weights) get a gradient from heads.{head}'s loss "
                f"but are not among model.parameters(); held in: {', '.join(where)}",
                "the optimizer is built over model.parameters(): these weights never change, and no checkpoint or export saves them",
                f"hold them in nn.ModuleList / nn.ModuleDict (layers) or nn.Parameter (tensors), not a plain list or dict: {', '.join(where)}",
                [], {"tensors": len(hidden), "held_in": where}))  # fmt: skip
    findings += _frozen_parameters(model)
    body = [p for p in model.backbone.parameters() if p.requires_grad]
    backbone_cls = type(model.backbone)
    features = model.backbone(batch)
    if body and isinstance(features, Tensor) and features.is_floating_point() and not features.requires_grad:
        # the cut is in the backbone's own forward, not in the heads: one finding, not one per head
        findings.append(Finding("loss_weights", "error", "the backbone's output carries no gradient: the backbone never trains",
            f"backbone ({backbone_cls.__module__}.{backbone_cls.__name__}): its output does not require grad although "
            f"{sum(p.numel() for p in body):,} of its weights do",
            "no head's loss reaches the backbone's weights: they stay at their initial values, and the heads learn "
            "from random features only", f"remove the detach() / .data / torch.no_grad() from {backbone_cls.__name__}.forward",
            [], {"backbone_weights": sum(p.numel() for p in body), BROKEN_CODE: "backbone"}))  # fmt: skip
        body = []  # each head's "sends no gradient to the backbone" would repeat it
    measured = getattr(probe.interface, "measured", frozenset())
    blocked: list[str] = []
    top = max((probe.weight_of(h) for h in probe.trained_heads()), default=0.0)  # the largest trained head's weight
    for head in model.heads:
        weight, norm = probe.weight_of(head), grad_norm(total, list(model.heads[head].parameters()))
        figures = {"weight": weight, "grad_norm": norm}
        if weight == 0 and probe.target_of(head) in measured:
            continue  # the generator marks its target measured only: weight 0 is required, not a mistake
        if weight == 0:
            key = f"heads.{head}.weight"
            findings.append(Finding("loss_weights", "error", f"heads.{head} is never trained: its loss weight is 0",
                f"heads.{head}.weight = 0; gradient reaching its parameters from the total loss: {fmt(norm)}",
                f"its loss is computed and reported but not back-propagated: heads.{head} stays at chance whatever else is fixed",
                f"set {key} = 1.0, or remove the head", [key], figures, candidates=[Change(f"{key} = 1.0", {key: 1.0}, corrects=True)]))  # fmt: skip
            continue
        if weight < TINY_WEIGHT * top:  # (weight > 0 here)
            key = f"heads.{head}.weight"
            findings.append(Finding("loss_weights", "error", f"heads.{head} is all but untrained: its loss weight is {fmt(weight / top)} of the largest",
                f"{key} = {fmt(weight)}, the largest trained head's {fmt(top)}; gradient reaching its parameters from the total "
                f"loss: {fmt(norm)}", "its loss barely reaches the layers the heads share, and weight decay outweighs it on its own: "
                "the head learns little or nothing", f"set {key} = 1.0", [key], figures,
                candidates=[Change(f"{key} = 1.0", {key: 1.0}, corrects=True)]))  # fmt: skip
        if norm == 0 and list(model.heads[head].parameters()):
            findings.append(Finding("loss_weights", "error", f"no gradient reaches heads.{head}",
                f"heads.{head}.weight = {weight}; gradient reaching its parameters: 0", "the head cannot learn",
                "check that the head's loss depends on its output (no detach, no integer ops)", [], figures))  # fmt: skip
            continue
        to_body = grad_norm(losses[head], body) if body else float("nan")
        figures["grad_norm_backbone"] = to_body
        if body and to_body == 0 and _reaches_features(model, head, features, batch[probe.target_of(head)]):
            blocked.append(head)  # the head passes the gradient on; the backbone stops it before its weights
        elif body and to_body == 0:
            findings.append(Finding("loss_weights", "error", f"heads.{head}'s loss sends no gradient to the backbone",
                f"gradient of heads.{head}'s loss reaching backbone ({type(model.backbone).__name__}) parameters: 0 "
                f"(its own parameters: {fmt(norm)})",
                "the backbone never learns the features this head needs: its input is detached (or computed without "
                "autograd) inside the head", f"remove the detach() / no_grad() from heads.{head}'s forward "
                f"({type(model.heads[head]).__module__}.{type(model.heads[head]).__name__})", [], figures))  # fmt: skip
    if blocked:
        findings.append(_backbone_blocks(model, blocked))
    bound = {probe.target_of(h) for h in model.heads}
    for target in probe.interface.targets:
        if target not in bound:
            namesake = target in model.heads  # heads.sum bound to another target, 'sum' to none: a slip in the wiring
            if namesake:
                key = f"heads.{target}.target"
                findings.append(Finding("loss_weights", "warning", f"heads.{target} predicts target '{probe.target_of(target)}'; "
                    f"target '{target}' is predicted by no head",
                    f"{key} = {probe.target_of(target)!r}; the generator makes target '{target}' and no head is bound to it",
                    f"a head named after a target the data provide, bound to another one, is most often a slip: heads.{target} "
                    f"learns '{probe.target_of(target)}' and '{target}' is never learned",
                    f'set {key} = "{target}" (or rename the head if it should learn \'{probe.target_of(target)}\')', [key]))  # fmt: skip
                continue
            findings.append(Finding("loss_weights", "info", f"target '{target}' is not predicted",
                                    f"the generator makes target '{target}' and no head is bound to it",
                                    fix=f'add [heads.<name>] with target = "{target}" to learn it'))  # fmt: skip
    model.zero_grad(set_to_none=True)
    return findings
