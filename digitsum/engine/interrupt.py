"""Ctrl-C and SIGTERM during training: stop after the current step, keeping a checkpoint."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from .train import Trainer

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Interruption:
    """The signal that stopped a run, if any."""

    signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + (self.signum or 0)


@contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[Interruption]:
    """While training, the first SIGINT or SIGTERM asks the trainer to stop after the current
    step (it then checkpoints); a second one ends the process at once.

    Ending at once is safe because every file of a run is written atomically: a run killed
    mid-write keeps its previous checkpoint, and ``--resume`` sweeps up the temporary file.
    """
    interruption = Interruption()

    def handle(signum: int, frame: FrameType | None) -> None:
        interruption.signum = signum
        trainer.request_stop(f"interrupted by {interruption.name}")
        # the next signal gets the default action: the process ends without running Python
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_DFL)
        sys.stderr.write(f"\n{interruption.name}: stopping after this step (again to stop at once)\n")
        sys.stderr.flush()

    if threading.current_thread() is not threading.main_thread():
        yield interruption  # only the main thread may handle signals; training goes on as usual
        return
    previous = {s: signal.signal(s, handle) for s in STOP_SIGNALS}
    try:
        yield interruption
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
