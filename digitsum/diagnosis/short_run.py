"""The short run: a fresh copy of the probe's model trained for a few hundred steps and scored on
held-out samples before and after (:func:`short_run`, read as a :class:`RunTrace`): the one
yardstick of "it learns" for every check and every verified fix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..engine.model import DigitModel
from ..engine.progress import fell
from ..engine.train import make_optimizer, make_scheduler
from .probe import Probe, entropy_of, eval_outputs, fresh_copy, held_losses, learns, log_losses, scores, seeded

#: A head also learns when its held-out log-loss beats the best constant distribution's (the
#: targets' entropy) by this many nats: about 3 standard errors of a mean log-loss on 1000 samples.
NLL_MARGIN = 0.1
#: A run's steps grow without bound (RunTrace.step_growth) when their size at the end is above
#: STEP_GROWTH_FLOOR lrs and STEP_GROWTH times their size around the middle (measured in
#: docs/doctor.md, "Steps that grow without bound").
STEP_GROWTH_FLOOR, STEP_GROWTH = 1.0, 3.0
#: A head without class probabilities learns when its own held-out loss falls by this share.
HELD_LOSS_FALL = 0.2



def _flat(parameters: list[Tensor]) -> Tensor:
    """Every parameter's values in one new vector, outside autograd (reshape: a channels-last
    weight does not view)."""
    return torch.cat([p.detach().reshape(-1) for p in parameters])


@dataclass
class RunTrace:
    """What a short run measured."""

    steps: int
    losses: Tensor  # [steps] total loss before each step
    head_losses: dict[str, Tensor]  # per head, [steps]
    before: dict[str, float]  # held-out accuracy per head before training
    after: dict[str, float]  # and after
    chance: dict[str, float]
    model: DigitModel | None = None
    grad_norms: dict[str, Tensor] = field(default_factory=dict)  # per layer, [steps]
    nll: dict[str, float | None] = field(default_factory=dict)  # held-out log-loss per head after the run
    held_loss: dict[str, tuple[float, float]] = field(default_factory=dict)  # each head's own loss on held-out samples, before and after
    entropy: dict[str, float] = field(default_factory=dict)  # the best constant distribution's log-loss
    warmed: bool = False  # the lr rose through the recipe's warm-up before it was held at its peak
    step_sizes: Tensor = field(default_factory=lambda: torch.zeros(0))  # per step, RMS parameter change / lr

    def step_growth(self) -> tuple[float, float] | None:
        """(mid, end) when the optimizer's steps grow without bound: the mean step, in units of
        the lr, over the last tenth of the run is above STEP_GROWTH_FLOOR and STEP_GROWTH times
        the one around its middle (40-50 %); else None. It shows long before the loss does."""
        n = len(self.step_sizes)
        if n < 40 or not torch.isfinite(self.step_sizes).all():
            return None
        mid = float(self.step_sizes[int(0.4 * n) : int(0.5 * n)].mean())
        end = float(self.step_sizes[int(0.9 * n) :].mean())
        return (mid, end) if end > STEP_GROWTH_FLOOR and end > STEP_GROWTH * mid else None

    def learning(self) -> dict[str, bool]:
        """A head learns when its held-out accuracy, its held-out log-loss, or (without class
        probabilities) its own held-out loss beats the best constant guess by more than noise."""
        return {h: learns(self.after[h], self.chance[h]) or self._beats_entropy(h) or self._own_loss_fell(h) for h in self.after}

    def _own_loss_fell(self, head: str) -> bool:
        """For a head with no class probabilities only (a sum of 101 digits is right only once
        nearly every digit is, long after a short run): its own loss on held-out samples fell
        by HELD_LOSS_FALL of the way to 0, so what it learns carries over to unseen samples."""
        if self.nll.get(head) is not None or head not in self.held_loss:
            return False
        before, after = self.held_loss[head]
        return before > 0 and fell(before, after, HELD_LOSS_FALL)

    def _beats_entropy(self, head: str) -> bool:
        nll = self.nll.get(head)
        return nll is not None and head in self.entropy and nll < self.entropy[head] - NLL_MARGIN

    def probability_accuracy(self, head: str) -> float | None:
        """Held-out accuracy of the argmax of the head's ``probabilities`` (None without them)."""
        return self.nll.get(f"{head}:argmax")

    def skill(self, head: str) -> float:
        """How far the head got from the best constant guess towards perfect, on held-out samples:
        by log-loss when the head gives probabilities, else by accuracy. Comparable across changes."""
        nll = self.nll.get(head)
        if nll is not None and self.entropy.get(head, 0) > 0:
            return 1.0 - nll / self.entropy[head]
        chance = self.chance[head]
        return (self.after[head] - chance) / max(1e-6, 1 - chance)

    @property
    def finite(self) -> bool:
        return bool(torch.isfinite(self.losses).all()) if len(self.losses) else True


def layer_params(model: nn.Module) -> dict[str, list[Tensor]]:
    """Trainable parameters grouped by the module that owns them."""
    layers: dict[str, list[Tensor]] = {}
    for path, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            layers[path] = own
    return layers


def norm_of_grads(params: list[Tensor]) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return torch.sqrt(sum(g.pow(2).sum() for g in grads)) if grads else torch.zeros((), device=params[0].device)


def schedule_warms_up(probe: Probe, steps: int) -> bool:
    """Whether the recipe's schedule, compressed to ``steps``, starts below its peak lr: a
    warm-up (one-cycle's rise, a plugin's ramp) leads the network up to the peak."""
    optimizer = make_optimizer(probe.recipe, fresh_copy(probe.model))
    make_scheduler(probe.recipe, optimizer, steps)
    return any(group["lr"] < 0.5 * probe.recipe.optimizer.params.lr for group in optimizer.param_groups)


def short_run(probe: Probe, steps: int, *, optimizer_of: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
              grad_norms: bool = False, keep_model: bool = False, scheduled: bool = False,
              warmed: bool = False) -> RunTrace:  # fmt: skip
    """Train a fresh copy of the probe's model for ``steps`` batches of the run, at the recipe's
    optimizer and its peak lr held constant (a schedule reaches it at some point; if that rate
    kills the network, it does so then), and score every head on held-out samples before and after.
    ``scheduled``: the recipe's schedule instead, compressed to the ``steps`` of the run.
    ``warmed``: that compressed schedule while it rises, then its peak held to the end: the
    network meets the peak as the recipe's warm-up brings it there, and stays at it.

    The same batches, in the same order, and the same random draws inside the model (dropout),
    for every call on one probe and in every process: runs with one change each differ in that
    change only. Stops early on a non-finite loss.
    """
    with seeded(probe, "short_run"):  # dropout's masks: the same in every short run
        model = fresh_copy(probe.model)
        optimizer = optimizer_of(model) if optimizer_of else make_optimizer(probe.recipe, model)
        held_out = probe.held_out
        outputs = eval_outputs(model, held_out)  # one forward for every figure at the start
        before = scores(probe, model, held_out, outputs)
        loss_before = held_losses(model, held_out, outputs)
        scheduler = make_scheduler(probe.recipe, optimizer, steps) if scheduled or warmed else None
        highest = [group["lr"] for group in optimizer.param_groups]
        layers = layer_params(model) if grad_norms else {}
        totals: list[Tensor] = []
        per_head: dict[str, list[Tensor]] = {h: [] for h in model.heads}
        norms: list[Tensor] = []
        trained = [p for p in model.parameters() if p.requires_grad]
        sizes: list[Tensor] = []
        for batch in probe.train_batches(steps):
            losses = model.losses(model(batch), batch)
            loss = model.total_loss(losses)
            if not isinstance(loss, Tensor):
                loss = torch.tensor(float(loss))
            for h, value in losses.items():
                per_head[h].append(value.detach())
            totals.append(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
            if grad_norms:
                norms.append(torch.stack([norm_of_grads(layers[name]) for name in layers]))
            if not torch.isfinite(loss.detach()):
                break
            was, rate = _flat(trained) if trained else None, optimizer.param_groups[0]["lr"]
            optimizer.step()
            if was is not None:  # how far the step moved the weights: RMS per weight, in units of the lr
                moved = (_flat(trained) - was).float().pow(2).mean().sqrt()
                sizes.append(moved / rate if rate > 0 else torch.full_like(moved, float("nan")))
            if scheduler is not None:
                scheduler.step()
            if warmed:  # past the peak, hold it: no annealing to hide a rate that kills
                for i, group in enumerate(optimizer.param_groups):
                    highest[i] = group["lr"] = max(highest[i], group["lr"])
        outputs = eval_outputs(model, held_out)  # ... and at the end
        after = scores(probe, model, held_out, outputs)
        stacked = torch.stack(norms).T if norms else None
        return RunTrace(
            steps=len(totals),
            losses=torch.stack(totals) if totals else torch.zeros(0),
            head_losses={h: torch.stack(v) if v else torch.zeros(0) for h, v in per_head.items()},
            before=before, after=after, chance={h: probe.chance(h) for h in model.heads},
            model=model if keep_model else None,
            nll=log_losses(probe, model, held_out, outputs),
            held_loss={h: (loss_before[h], v) for h, v in held_losses(model, held_out, outputs).items()},
            entropy={h: entropy_of(probe.expected(h, held_out)) for h in model.heads},
            grad_norms={name: stacked[i] for i, name in enumerate(layers)} if stacked is not None else {},
            warmed=warmed,
            step_sizes=torch.stack(sizes).float().cpu() if sizes else torch.zeros(0),
        )  # fmt: skip
