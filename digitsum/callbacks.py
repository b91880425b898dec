"""The callback base: how anything that watches or reports a run hooks into training.

The progress display, the preflight and watch checks, the pictures of a run directory and a
user's own hooks are all callbacks; the training loop (``engine/train.py``) knows nothing of
them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from .engine.train import Trainer


class Callback:
    """Hooks into a training run; override what you need (the hooks: docs/api.md#callbacks).

    If training raises anything (a component's bug, a full disk, Ctrl-C pressed twice),
    ``on_exception`` is called instead of ``on_end``, on every callback, so that a callback can
    close what it opened; then the exception goes on. Callbacks run on rank 0 only in a
    data-parallel (torchrun) run. A callback ends a run with ``trainer.request_stop(reason)``
    (``failed=True`` when the model is no longer good).
    """

    #: The names of the files (or folders) it writes into the run directory: ``metrics.csv``, or
    #: a glob pattern, ``events.out.tfevents.*``. What appears there under such a name during one
    #: of its hooks is the run's (``--force`` removes it with the run); anything else stays the
    #: user's. A run into a folder where one of them is a user's file (there before the run took
    #: the folder) is refused before it starts, rather than replace it.
    writes: tuple[str, ...] = ()

    def on_start(self, trainer: Trainer) -> None:
        """Training is about to start (or continue, in a resumed run)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Epoch ``epoch`` (counted from 1) starts, at ``trainer.step`` (0 unless resumed part-way)."""

    def on_step(self, trainer: Trainer, epoch: int, step: int, loss: Tensor) -> None:
        """Training step ``step`` (counted from 0) of ``epoch`` is done; ``loss`` is the weighted
        total, a detached tensor on the device (``float(loss)`` waits for the device: now and then only)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None:
        """Epoch ``epoch`` is trained and evaluated: per-head train (running) and test metrics.

        ``test`` is empty after an epoch that ``train.eval_every`` leaves unevaluated (the last
        epoch always is); ``trainer.history[-1]`` holds ``"val"`` and ``"test"`` only when evaluated.
        """

    def on_end(self, trainer: Trainer, summary: dict) -> None:
        """Training ended normally (finished, or stopped by a request); ``summary`` is summary.json."""

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        """Training raised ``error``: release what this callback holds. The error is raised again afterwards."""

    def state_dict(self) -> dict[str, Any]:
        """What this callback needs to carry on after a resume (plain data: numbers, strings,
        lists, dicts, tensors); saved in every checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state_dict` returned, when a run is resumed."""


def callback_keys(callbacks: list[Callback]) -> list[str]:
    """A stable key per callback for checkpoints: its class name, numbered when repeated."""
    keys, seen = [], {}
    for callback in callbacks:
        name = type(callback).__qualname__
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys
