"""The conformance check of a Logger: a real, tiny run, interrupted and resumed."""

import contextlib
import tempfile
from pathlib import Path

from ...contracts import Logger
from ...callbacks import Callback
from ...engine.runner import resume, start
from ...recipe import load_recipe
from ..fixtures import tiny_overrides, write_tiny_mnist
from ._common import common_checks, reporting_crashes, weights_only_problem


class StopPartWay(Callback):
    """Stops a run after its second step, leaving a checkpoint part-way to resume from."""

    def on_step(self, trainer, epoch, step, loss) -> None:
        if step == 1:
            trainer.request_stop("conformance check: stopped part-way, to be resumed")


@reporting_crashes("logger")
def check_logger(cls: type, params=None, *, workdir: str | Path | None = None) -> Path:
    """Check a Logger against its contract by logging a real, tiny run that is interrupted and
    resumed; returns the run directory, for the caller to read back what the logger wrote.

    Checks: Params; ``requires`` a tuple of module names and ``install`` a string; then, with
    ``workdir`` as the working folder (by default a new temporary folder, which is kept),
    ``original`` trains on tiny generated data (``workdir/mnist``) for one epoch of four steps
    with the logger into ``workdir/run``, stopped after the second step (a checkpoint
    part-way) and resumed with a new instance of it: no hook raises, and what ``state_dict``
    returns survives a checkpoint (it is read back with ``weights_only=True``) and is handed to
    the new instance's ``load_state_dict``. A logger whose library is not installed cannot be
    checked (the error says what to install).
    """
    problems, params = common_checks("logger", cls, Logger, params)
    if not (isinstance(cls.requires, tuple) and all(isinstance(m, str) for m in cls.requires)):
        problems.append(f"requires = {cls.requires!r}: a tuple of module names")
    if not isinstance(cls.install, str) or (cls.requires and not cls.install):
        problems.append("install must say what installs its required modules, e.g. 'pip install \"digitsum[tensorboard]\"'")
    reason = cls.unavailable()
    if reason:
        problems.fail(f"cannot be checked here: it {reason}")

    class Handed(cls):  # records what a resumed logger is given
        given = None

        def load_state_dict(self, state):
            type(self).given = state
            super().load_state_dict(state)

    Handed.__qualname__ = cls.__qualname__  # checkpoints key a callback's state by its class's name

    workdir = Path(workdir or tempfile.mkdtemp(prefix="digitsum-check-logger-")).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / "run"
    with contextlib.chdir(workdir):
        recipe = load_recipe("original", tiny_overrides(write_tiny_mnist(workdir / "mnist"), batch_size=128))
        logger = cls(params)
        start(recipe, run_dir, callbacks=[logger, StopPartWay()], progress=False)
        state = logger.state_dict()
        if not isinstance(state, dict):
            problems.append(f"state_dict() returned {type(state).__name__}, not a dict")
        else:
            problems += weights_only_problem("state_dict()", state)
        outcome = resume(run_dir, callbacks=[Handed(params)], progress=False)
        if not outcome.trainer.finished:
            problems.append("the resumed run did not finish")
        if isinstance(state, dict) and state and Handed.given is None:
            problems.append("the resumed logger was not given its state_dict")
    problems.raise_any()
    return run_dir
