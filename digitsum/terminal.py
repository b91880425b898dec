"""The console digitsum prints to: a reader that goes away does not stop the work."""

from __future__ import annotations

import os
import sys

from rich.console import Console


class Terminal(Console):
    """A rich console that, once its reader is gone (``digitsum run original | head -3``), goes
    quiet instead of exiting: rich's default raises ``SystemExit`` from inside the training loop,
    which ended the run as failed. What is not printed is in the run's folder."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        # Standard output points at the null device: later prints, and Python's flush at exit,
        # find no closed pipe to complain about.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
