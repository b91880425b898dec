"""The checks that train a real, tiny run on tiny MNIST data: a Logger's (the run interrupted and
resumed) and a recipe's (every head must learn within a small budget)."""

import contextlib
import math
import re
import tempfile
from pathlib import Path

from ...callbacks import Callback
from ...contracts import Logger
from ...diagnosis import PREFLIGHT, Finding, Probe, diagnose, fresh_copy
from ...engine.progress import fell
from ...engine.rundir import unclaimed
from ...engine.runner import resume, start
from ...engine.watch import doctor_command
from ...recipe import load_recipe
from ..fixtures import tiny_overrides, write_tiny_mnist
from ._common import ConformanceError, common_checks, reporting_crashes, weights_only_problem

#: check_recipe trains, by default, one epoch of this many tiny samples in batches of this size
#: (64 steps): enough for every head of the built-in and example recipes to show it learns.
RECIPE_CHECK_SAMPLES, RECIPE_CHECK_BATCH = 2048, 32
#: check_recipe wants, by default, each head's test loss after that epoch at least this share of
#: its untrained value lower. Measured with the budget above (seeds 0-4): every head of the
#: built-in recipes, the example plugin's and a scaffolded plugin's falls 14.4 % or more (the
#: slowest: a sum head, whose loss falls 5.1 % from learning the sums' frequencies alone); with
#: a learning rate of 1e-9, or softmax fed to cross-entropy (the notebook, Adam at 0.01), 2.2 % at most.
MIN_LOSS_FALL = 0.05


class StopPartWay(Callback):
    """Stops a run after its second step, leaving a checkpoint part-way to resume from."""

    def on_step(self, trainer, epoch, step, loss) -> None:
        if step == 1:
            trainer.request_stop("conformance check: stopped part-way, to be resumed")


@reporting_crashes("logger")
def check_logger(cls: type, params=None, *, workdir: str | Path | None = None) -> Path:
    """Check a Logger against its contract by logging a real, tiny run that is interrupted and
    resumed; returns the run directory, for the caller to read back what the logger wrote.

    Checks Params, ``requires``, ``install``, and that the logger's hooks and ``state_dict``
    survive a run of ``original`` on tiny data stopped part-way and resumed (docs/plugins.md).
    ``workdir`` is the working folder (by default a new temporary folder, which is kept); the
    run goes into ``workdir/run``. A logger whose library is not installed cannot be checked
    (the error says what to install).
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
        if left := unclaimed(run_dir):  # written by the logger, nothing else writes there in this run (a resume would take it for a user's)
            problems.append(f"it wrote {', '.join(sorted(left))} into the run directory without naming "
                            f"{'it' if len(left) == 1 else 'them'} in `writes` (names or glob patterns): --force would "
                            f"leave {'it' if len(left) == 1 else 'them'} behind as a user's; e.g. writes = {tuple(sorted(left))!r}")  # fmt: skip
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


class Untrained(Callback):
    """The test metrics of the model as initialised, before its first step, and a probe of that
    model for the preflight to measure why a head did not learn (run only then: :meth:`causes`)."""

    def __init__(self) -> None:
        self.test: dict[str, dict[str, float]] = {}
        self.probe: Probe | None = None

    def on_start(self, trainer) -> None:
        self.test = trainer.evaluate("test")
        self.probe = Probe(trainer.recipe, trainer.generator, fresh_copy(trainer.model), trainer.device)

    def causes(self) -> list[Finding]:
        """The preflight's warnings and errors on the untrained model: what `digitsum run` would
        have warned about (a double softmax, a head no gradient reaches, ...)."""
        report = diagnose(self.probe, PREFLIGHT, verify=False)
        return [f for f in report.findings if f.severity != "info"]


def _about(finding: Finding, head: str) -> bool:
    """Whether a finding is about ``head``: the doctor's per-head findings name it in their title."""
    return re.search(rf"(?<![\w.-])heads\.{re.escape(head)}(?![\w-])", finding.title) is not None


def check_recipe(path: str | Path, workdir: str | Path, overrides=(), *, steps: int = RECIPE_CHECK_SAMPLES // RECIPE_CHECK_BATCH,
                 min_fall: float = MIN_LOSS_FALL) -> dict:  # fmt: skip
    """Train a recipe for one epoch on tiny MNIST data on the CPU; fail unless every head learns.

    One epoch of ``steps`` batches of :data:`RECIPE_CHECK_BATCH` learnable tiny images (fewer
    steps for a generator that uses several images per sample). Raises ConformanceError, every
    problem listed, when a loss is not finite, a head has weight 0 (unless its target is
    measured only), or a head's test loss does not fall at least ``min_fall`` below the untrained
    model's (docs/plugins.md); a head that did not learn is told what the preflight of ``digitsum
    run`` finds about it on the untrained model (a double softmax, say). ``overrides`` (``--set``
    style) apply after the tiny settings; the run directory and the data go under ``workdir``.
    Returns the run's summary.
    """
    workdir = Path(workdir)
    root = write_tiny_mnist(workdir / "mnist", n_train=steps * RECIPE_CHECK_BATCH)
    recipe = load_recipe(path, [*tiny_overrides(root, RECIPE_CHECK_BATCH), *overrides])
    untrained = Untrained()
    outcome = start(recipe, workdir / "run", callbacks=[untrained], progress=False)
    if outcome.failure:  # the watch stopped the run: a NaN or infinite loss
        raise ConformanceError(f"recipe {path}", [outcome.failure])
    summary = outcome.summary
    metrics = summary["metrics"]
    losses = {f"{split} {head}": m["loss"] for split in ("train", "test") for head, m in metrics.get(split, {}).items()}
    if not losses or not all(math.isfinite(v) for v in losses.values()):
        raise ConformanceError(f"recipe {path}", [f"training gave losses {losses}"])
    trainer, epochs = outcome.trainer, summary["epochs"]
    ran = (f"{epochs * trainer.steps_per_epoch} steps of {trainer.batch_size} "
           f"({epochs} epoch{'s' * (epochs != 1)} of {steps * RECIPE_CHECK_BATCH} tiny training images)")  # fmt: skip
    problems = []
    causes: list[Finding] | None = None  # measured once, when a head did not learn
    measured = getattr(recipe.interface(), "measured", frozenset())
    for name, choice in recipe.heads.items():
        if choice.section.weight == 0 and choice.section.target in measured:
            continue  # measured only, by the generator's design: it reports, it is not trained
        if choice.section.weight == 0:
            problems.append(f"heads.{name} has weight 0: it is never trained (give it a weight > 0)")
            continue
        before, after, metric = untrained.test[name]["loss"], metrics["test"][name]["loss"], choice.cls.primary_metric
        if not fell(before, after, min_fall):
            causes = untrained.causes() if causes is None else causes
            why = "".join(f"; the preflight finds {f.title}" + (f" ({f.fix})" if f.fix else "") for f in causes if _about(f, name))
            problems.append(
                f"heads.{name} did not learn: test loss {before:.4f} untrained, {after:.4f} after {ran} "
                f"({'fell' if after < before else 'rose'} {abs(before - after) / (abs(before) or 1):.1%}, "
                f"needs to fall {min_fall:.0%}); {metric} "
                f"{untrained.test[name][metric]:.3f} untrained, {metrics['test'][name][metric]:.3f} after{why}"
            )
    if problems:
        problems.append(f"`{doctor_command(path, overrides)}` measures why")
        raise ConformanceError(f"recipe {path}", problems)
    return summary
