"""The watch: a :class:`~digitsum.callbacks.Callback` that checks the loss during every run.

It only warns, except on a NaN/inf loss, where it stops the run as failed (the last good
checkpoint stays). Every warning points at ``digitsum doctor``, which measures why; the doctor's
own quick checks before the first epoch are ``digitsum.diagnosis.preflight``.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .progress import fell
from .batches import eval_batches
from ..callbacks import Callback
from .train import Trainer

#: The watch reads the loss about this many times an epoch (each read waits for the device).
READS_PER_EPOCH = 100
#: Within the first epoch: after EARLY_SHARE of it, a loss still above NEAR_CHANCE times a uniform
#: guess's loss that has also fallen less than EARLY_FALL since the first steps means the model is
#: learning almost nothing. (Both: a one-cycle warm-up starts slowly but does fall.)
EARLY_SHARE, NEAR_CHANCE, EARLY_FALL = 0.25, 0.9, 0.05
#: Between epochs: a training loss that fell less than MIN_EPOCH_FALL has stopped falling, while
#: it is still above STALLED_SHARE of the first epoch's; below, the run has learned and levels off
#: as its schedule ends (add-100: 230 in epoch 1, 1.16 then 1.38 in epochs 27 and 28 of 30).
MIN_EPOCH_FALL, STALLED_SHARE = 0.01, 0.5
#: Test accuracy within this many points of the best constant guess is "at chance".
CHANCE_MARGIN = 0.02


def doctor_command(recipe: Path | str, overrides: Sequence[str] = ()) -> str:
    """The ``digitsum doctor`` command line for a recipe and its overrides, for hints."""
    words = ["digitsum", "doctor", str(recipe)] + [w for o in overrides for w in ("--set", o)]
    return " ".join(shlex.quote(w) for w in words)


class Warner(Callback):
    """A callback that warns: printed on ``console`` (when given) with a pointer to the doctor, kept in ``warnings``."""

    def __init__(self, console: Any = None, hint: str = "digitsum doctor RECIPE") -> None:
        self.console, self.hint = console, hint
        self.warnings: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        if self.console is not None:
            from rich.markup import escape

            self.console.print(f"[yellow]warning:[/] {escape(text)} — run `{escape(self.hint)}` to see why",
                               highlight=False, soft_wrap=True)  # fmt: skip


class Watch(Warner):
    """During training: a NaN/inf loss stops the run as failed; a loss that stays near a uniform
    guess, a loss that stops falling, or test accuracy at chance after an epoch warn (once each)."""

    def __init__(self, console: Any = None, hint: str = "digitsum doctor RECIPE") -> None:
        super().__init__(console, hint)
        self.failure: str | None = None
        self.warned: set[str] = set()
        self.epoch_losses: list[float] = []

    def state_dict(self) -> dict[str, Any]:
        """What it warned about and the epoch losses so far: a resumed run neither warns twice
        nor forgets the loss it compares the next epoch with."""
        return {"warned": sorted(self.warned), "epoch_losses": list(self.epoch_losses)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warned = set(state.get("warned", ()))
        self.epoch_losses = [float(x) for x in state.get("epoch_losses", ())]

    def on_start(self, trainer: Trainer) -> None:
        self.every = max(1, trainer.steps_per_epoch // READS_PER_EPOCH)
        self.uniform = _uniform_guess_loss(trainer)
        self.chance: dict[str, float] | None = None

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.readings: list[float] = []
        self.bad: Tensor | None = None

    def on_step(self, trainer: Trainer, epoch: int, step: int, loss: Tensor) -> None:
        bad = ~torch.isfinite(loss.detach())
        self.bad = bad if self.bad is None else self.bad | bad  # stays on the device between reads
        last = step == trainer.steps_per_epoch - 1
        if step % self.every and not last:
            return
        any_bad, value = torch.stack([self.bad.float(), loss.detach().float()]).tolist()  # one read
        if any_bad:
            self._fail(trainer, epoch, step, value)
            return
        self.readings.append(value)
        self._check_early(trainer, epoch, step)

    def _fail(self, trainer: Trainer, epoch: int, step: int, value: float) -> None:
        kept = f"the checkpoint of epoch {epoch - 1} is kept" if epoch > 1 else "no checkpoint was written"
        word = "NaN" if math.isnan(value) else "inf" if math.isinf(value) else "NaN or inf"  # finite now: an earlier step
        self.failure = (f"the loss became {word} in epoch {epoch} by step {step + 1}: "
                        f"training stopped, {kept} in {trainer.run_dir}; run `{self.hint}` to see why")  # fmt: skip
        trainer.request_stop(f"non-finite loss in epoch {epoch}", failed=True)

    def _check_early(self, trainer: Trainer, epoch: int, step: int) -> None:
        """Still near a uniform guess's loss after a quarter of the first epoch."""
        if "near_chance" in self.warned or self.uniform is None or epoch > 1:
            return
        if step + 1 < max(EARLY_SHARE * trainer.steps_per_epoch, 10) or len(self.readings) < 5:
            return
        window = max(1, len(self.readings) // 5)
        first, recent = sum(self.readings[:window]) / window, sum(self.readings[-window:]) / window
        if recent >= NEAR_CHANCE * self.uniform and not fell(first, recent, EARLY_FALL):
            self.warned.add("near_chance")
            self.warn(f"after {step + 1} steps the loss is {recent:.4f} ({first:.4f} at the start), "
                      f"{100 * recent / self.uniform:.0f} % of a uniform guess's {self.uniform:.4f}: "
                      "the model is learning almost nothing")  # fmt: skip

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None:
        # The epoch's mean of the back-propagated loss: the model's own weighting of the heads'
        # mean losses (a weighted sum, so the mean of the per-step totals).
        loss = float(trainer.model.total_loss({name: values["loss"] for name, values in train.items()}))
        stalled = bool(self.epoch_losses) and not fell(self.epoch_losses[-1], loss, MIN_EPOCH_FALL) and not fell(self.epoch_losses[0], loss, STALLED_SHARE)
        if stalled and "flat" not in self.warned:
            self.warned.add("flat")
            self.warn(f"the training loss stopped falling: {self.epoch_losses[-1]:.4f} in epoch {epoch - 1}, {loss:.4f} in epoch {epoch}")
        self.epoch_losses.append(loss)
        self._check_chance(trainer, epoch, test)

    def _check_chance(self, trainer: Trainer, epoch: int, test: dict) -> None:
        if self.chance is None:
            self.chance = _best_constant_accuracy(trainer)
        at_chance = [f"{head} {100 * test[head]['accuracy']:.1f} % (best constant guess {100 * chance:.1f} %)"
                     for head, chance in self.chance.items()
                     if head in test and "accuracy" in test[head] and test[head]["accuracy"] <= chance + CHANCE_MARGIN]  # fmt: skip
        if at_chance and "chance" not in self.warned:
            self.warned.add("chance")
            self.warn(f"after epoch {epoch} test accuracy is at chance: {'; '.join(at_chance)}")


def _uniform_guess_loss(trainer: Trainer) -> float | None:
    """The weighted total loss of a uniform guess (sum of weight x ln classes, the classes each
    head declares it predicts); None when some trained head predicts no classes to compare with."""
    total = 0.0
    for name, binding in trainer.model.bindings.items():
        if binding.weight == 0:
            continue
        space = trainer.model.heads[name].prediction_space()
        if space.classes is None or space.length is not None:
            return None
        total += binding.weight * math.log(space.classes)
    return total or None


@torch.no_grad()
def _best_constant_accuracy(trainer: Trainer) -> dict[str, float]:
    """Per head whose primary metric is accuracy: the test accuracy of always guessing the most
    frequent right prediction(s) (:meth:`PredictionSpace.chance`; chance, for imbalanced targets
    such as a sum)."""
    model = trainer.model
    spaces = {name: head.prediction_space() for name, head in model.heads.items() if head.primary_metric == "accuracy"}
    spaces = {name: space for name, space in spaces.items() if space.classes is not None and space.length is None}
    expected: dict[str, list[Tensor]] = {name: [] for name in spaces}
    for batch in eval_batches(trainer.generator, "test", trainer.recipe.seed, trainer.device):
        for name, values in expected.items():
            values.append(spaces[name].expected(batch[model.bindings[name].target]))
    return {name: spaces[name].chance(torch.cat(values)) for name, values in expected.items() if values}
