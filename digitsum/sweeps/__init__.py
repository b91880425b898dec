"""Hyper-parameter sweeps on Optuna: ``digitsum sweep`` and :func:`digitsum.sweep` (docs/sweeps.md).

A sweep is an Optuna study whose trials are normal run directories (``<sweep>/trial-0003/``),
trained through the one training path on the recipe with the trial's values laid over it and a
validation split held out (``data.val``). The objective is a val metric of a head, never a test
metric; a trial Optuna prunes after an epoch stops there. The study lives in a storage that
workers and machines share (by default ``study.journal`` in the sweep directory); starting again
continues it, running again the trials of this machine that a killed process left behind.

By job: ``space`` (``KEY=SPACE``), ``storage`` (storages, the lock, a folder's study), ``trial``,
``workers`` (processes, signals, crash recovery), ``report`` (results, files) and ``study``
(:func:`sweep`). Optuna is imported when a sweep starts, never at import time (the extra
``pip install "digitsum[sweep]"``).
"""

from .report import SweepResult, TrialRow
from .space import Space, parse_space, parse_spaces
from .storage import open_storage, redact
from .study import DEFAULT_VAL, default_direction, sweep

__all__ = ["DEFAULT_VAL", "Space", "SweepResult", "TrialRow", "default_direction", "open_storage", "parse_space", "parse_spaces", "redact", "sweep"]
