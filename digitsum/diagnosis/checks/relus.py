"""Dead ReLU units: which units of every ``nn.ReLU`` never fire on a probe batch, at
initialisation and after the short run, told apart from units silent on an input that is the
same for every sample; and what the doctor makes of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ...contracts import Batch
from ..emulate import reinitialised
from ..findings import LR_KEY, SEE_FIXES, SUSPECTS_LR, Change, Finding, fmt, pct

#: Dead units (output 0 on every probe sample and position). A network that does not learn with a
#: layer DEAD_ERROR dead at init or killed by training gets an error; one that learns is never
#: warned (healthy networks reach 34-81 %, docs/doctor.md): from DEAD_WARNING on, it is an info.
DEAD_WARNING, DEAD_ERROR = 0.8, 0.5

#: A unit's input is "the same for every sample" when it varies over the samples by less than
#: this, relative to its largest magnitude (identical samples give identical values up to rounding).
SAME_INPUT = 1e-5


class ReluProbe:
    """Records which units of every ``nn.ReLU`` ever fire on a probe batch, and which of those
    that never fire get the same input for every sample (``blind``: what the layer reads carries
    nothing, or the model never reads it; no initialisation is to blame)."""

    def __init__(self, model: nn.Module) -> None:
        self.labels, self.feeds = _relu_labels(model)
        self.fired: dict[str, Tensor] = {}
        self.varies: dict[str, Tensor] = {}
        self.blind: dict[str, float] = {}
        relus = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
        # a pre-hook: an in-place ReLU has overwritten its input by the time a forward hook runs
        self.handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in relus]

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: Any) -> None:
            x = args[0].detach()
            x = x if x.dim() > 1 else x[:, None]  # [B, units, positions...], reduced in place of copies
            high, low = x.amax(dim=0), x.amin(dim=0)  # over the samples, at each unit and position
            flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731  [units, positions]
            alive = flat(high).amax(dim=1) > 0
            varies = flat(high - low).amax(dim=1) > SAME_INPUT * max(float(high.abs().amax()), float(low.abs().amax()), 1e-12)
            self.fired[name] = self.fired[name] | alive if name in self.fired else alive
            self.varies[name] = self.varies[name] | varies if name in self.varies else varies

        return hook

    @torch.no_grad()
    def dead_fractions(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        """Per ReLU layer, the share of its units that never fire on ``batch`` although their
        input varies over its samples; :attr:`blind` gets the share that never fire on an input
        that is the same for every sample."""
        self.fired.clear()
        self.varies.clear()
        model(batch)
        self.blind = {self.labels[n]: float((~alive & ~self.varies[n]).float().mean()) for n, alive in self.fired.items()}
        return {self.labels[n]: float((~alive & self.varies[n]).float().mean()) for n, alive in self.fired.items()}

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _feeding_layer(before: list[tuple[str, nn.Module]]) -> tuple[str, nn.Module] | None:
    """The layer whose units a ReLU reads: the last one before it with channels or features,
    past those in between that have neither (a max-pool changes no unit's death); None if
    another ReLU or nothing comes first."""
    for name, child in reversed(before):
        if isinstance(child, nn.ReLU):
            return None
        if hasattr(child, "out_channels") or hasattr(child, "out_features"):
            return name, child
    return None


def _relu_labels(model: nn.Module) -> tuple[dict[str, str], dict[str, str]]:
    """Name each ReLU after the layer feeding it (:func:`_feeding_layer`) when it has one in
    its Sequential; and map each label to that layer's module path."""
    labels, feeds = {}, {}
    for path, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for i, (name, child) in enumerate(children):
                feeding = _feeding_layer(children[:i]) if isinstance(child, nn.ReLU) else None
                if feeding is None:
                    continue
                prev_name, prev = feeding
                size = getattr(prev, "out_channels", None) or getattr(prev, "out_features", None)
                what = f"{type(prev).__name__}, {size} {'channels' if hasattr(prev, 'out_channels') else 'units'}"
                where = f"{path}.{prev_name}" if path else prev_name
                labels[f"{path}.{name}" if path else name] = f"{where} ({what})"
                feeds[f"{where} ({what})"] = where
    for path, module in model.named_modules():
        if isinstance(module, nn.ReLU):
            labels.setdefault(path, path)
    return labels, feeds


def dead_relu_findings(before: dict[str, float], after: dict[str, float], run: str, lr: float, learning: bool,
                       feeds: dict[str, str] | None = None, blind: dict[str, float] | None = None) -> list[Finding]:  # fmt: skip
    """Dead at initialisation (a layer ≥ DEAD_ERROR dead before any step) is told apart from
    killed by training (≥ 10 points more dead after the run); either is an error when learning
    stalls, and proposes the change that would undo it (re-initialisation; a lower lr). Units
    silent on an input that is the same for every sample (``blind``, :class:`ReluProbe`) are not
    dead ones: a layer DEAD_ERROR blind is named for what it reads, and ``input_use`` says why."""
    if not after:
        return [Finding("dead_relu", "info", "no nn.ReLU modules to watch", "the model has no nn.ReLU modules")]
    feeds, blind = feeds or {}, blind or {}
    rows = "; ".join(f"{layer} {pct(before.get(layer, 0.0))} -> {pct(after[layer])}" for layer in after)
    figures = {"dead_before": before, "dead_after": after, "lr": lr, "same_input": blind}
    measured = f"units that never fire on 1024 samples although their input varies, at init -> after {run}: {rows}"
    prefix = []
    if same := {layer: share for layer, share in blind.items() if share >= DEAD_ERROR}:
        same_rows = ", ".join(f"{layer} {pct(share)}" for layer, share in same.items())
        prefix = [Finding("dead_relu", "info", f"layers see the same input for every sample: {same_rows} of their units silent",
            f"{measured}; silent on an input identical across the 1024 samples: {same_rows}",
            "these units are not dead by initialisation or training: what the layer reads is the same for every sample "
            "(a constant input, or one the model never reads)", "see the input_use findings: they name the input", [], figures)]  # fmt: skip
    at_init = {layer: d for layer, d in before.items() if d >= DEAD_ERROR}
    killed = {layer: d for layer, d in after.items() if d - before.get(layer, 0.0) >= 0.1 and d >= DEAD_ERROR}
    worst = max(after.values())
    # layers blind to the samples explain a stall upstream of any dead unit: units that die
    # downstream of them (a network left with a sliver of its input) are not the cause to fix
    severity = "info" if same else "error"
    if at_init and not learning:
        modules = [feeds[layer] for layer in at_init if layer in feeds]
        rows = ", ".join(f"{layer} {pct(d)}" for layer, d in at_init.items())
        return prefix + [Finding("dead_relu", severity, f"units are dead at initialisation: {rows}", measured,
            "a unit that never fires before the first step gets no gradient and never recovers: no learning rate helps; "
            "the layer's initialisation (a large negative bias, say) or its inputs' scale kill it",
            f"initialise {', '.join(modules) or 'these layers'} with its default initialisation (no constant bias)", [], figures,
            candidates=[Change(f"{', '.join(modules)} re-initialised (default init)", emulate=reinitialised(modules),
                               code=f"the initialisation of {', '.join(modules)}")] if modules else [])]  # fmt: skip
    if killed and not learning:
        lower = lr / 10
        return prefix + [Finding("dead_relu", severity, f"training at lr {fmt(lr)} kills ReLUs: up to {pct(max(killed.values()))} of a layer's units dead",
            measured, "alive at initialisation, dead after training: a dead unit outputs 0 for every input and gets no gradient, "
            "it never recovers, and the layers before it stop learning", SEE_FIXES, [LR_KEY], {**figures, SUSPECTS_LR: True},
            candidates=[Change(f"{LR_KEY} = {fmt(lower)}", {LR_KEY: lower})])]  # fmt: skip
    if worst >= DEAD_WARNING:  # every head learns here (or the errors above would have fired)
        return prefix + [Finding("dead_relu", "info", f"up to {pct(worst)} of a layer's ReLU units are dead; every head learns (capacity unused)",
                        measured, figures=figures)]  # fmt: skip
    return prefix + [Finding("dead_relu", "info", f"ReLUs alive enough (at most {pct(worst)} of a layer dead)", measured, figures=figures)]
