"""Running a recipe: the one code path behind every run (docs/architecture.md, "One path to
train"). The CLI and the API present the :class:`Outcome`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..recipe import Overrides, Recipe
from . import distributed
from ..callbacks import Callback
from .interrupt import Interruption, stop_on_signals
from .component_errors import ComponentError
from .rundir import prepare_run_dir, run_dir_for, unmake, withdraw
from .train import Trainer
from .watch import Warner, Watch, doctor_command


@dataclass
class Outcome:
    """How a run ended: the trainer (model, history, run directory), its summary, the watch's
    verdict and the signal that interrupted it, if any."""

    trainer: Trainer
    summary: dict[str, Any]
    watch: Watch
    interruption: Interruption

    @property
    def run_dir(self) -> Path | None:
        return self.trainer.run_dir

    @property
    def warnings(self) -> list[str]:
        """What the preflight and the watch warned of, in order (printed too unless the run was
        silent: ``progress=False``)."""
        return [text for callback in self.trainer.callbacks if isinstance(callback, Warner) for text in callback.warnings]

    @property
    def failure(self) -> str | None:
        """Why the watch stopped the run as failed (a NaN loss), or None."""
        return self.watch.failure

    @property
    def interrupted(self) -> bool:
        """Stopped by Ctrl-C or SIGTERM before the last epoch: ``resume`` continues it."""
        return bool(self.interruption.signum) and not self.trainer.finished


#: Makes the checks before the first epoch from the console and the doctor hint: the doctor's
#: ``Preflight`` (``digitsum.diagnosis.preflight``), given by the caller so that the training
#: core imports no doctor.
PreflightFactory = Callable[[Any, str], Warner]


def default_callbacks(console: Any, hint: str, *, progress: bool = True, preflight: PreflightFactory | None = None) -> tuple[Watch, list[Callback]]:
    """What every run reports and checks: progress (when ``progress``), the preflight (when
    given), the watch (returned too, to read its verdict) and the run directory's pictures.

    ``console`` is a rich console for progress and warnings; None keeps warnings in the
    callbacks' ``warnings`` lists only.
    """
    from .pictures import Pictures
    from .report import ConsoleReporter

    shown = console if progress else None
    watch = Watch(shown, hint)
    callbacks: list[Callback] = [ConsoleReporter(console)] if progress else []
    if preflight:
        callbacks.append(preflight(shown, hint))
    return watch, [*callbacks, watch, Pictures()]


def recipe_loggers(recipe: Recipe, make: bool = True) -> list[Callback]:
    """The loggers a recipe names (``[log.<name>]``), built from their parameters; a UserError
    (exit 2), before anything trains, for one whose library is not installed. ``make=False``
    checks only: the ranks other than 0 of a torchrun run, which log nothing, make none (a
    logger may start work when it is made). They come after the default callbacks, so that a
    logger sees the pictures written when a run ends."""
    for name, choice in recipe.log.items():
        reason = choice.cls.unavailable()
        if reason:
            raise UserError(f"log.{name}: logger '{choice.section.type}' {reason}")
    return [choice.cls(choice.params) for choice in recipe.log.values()] if make else []


def start(
    recipe: Recipe,
    out: str | Path | None = None,
    *,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    console: Any = None,
    progress: bool = True,
    preflight: PreflightFactory | None = None,
) -> Outcome:
    """Train ``recipe`` into a new run directory: ``out`` exactly (empty, new, or a run to
    replace with ``force``), or ``runs/<recipe>/<timestamp>/``.

    The data are loaded and the model built before anything is written: a bad data folder
    or a broken component leaves no run directory behind.
    """
    main_rank = distributed.current().is_main
    run_dir = run_dir_for(recipe.name, out, force) if main_rank else None
    try:
        _check_init_outside(recipe, run_dir)
        watch, defaults = default_callbacks(_console(console, progress), _hint(run_dir), progress=progress, preflight=preflight)
        trainer = _trainer(lambda: Trainer(recipe, run_dir, [*defaults, *recipe_loggers(recipe, main_rank), *callbacks]))
    except BaseException:
        if out is None and run_dir is not None:
            unmake(run_dir)  # nothing was written into it: no folder left behind
        raise
    if main_rank:
        trainer.check_users_files()  # before --force removes the run it replaces
        prepare_run_dir(run_dir)
    return _fit(trainer, watch)


def _check_init_outside(recipe: Recipe, run_dir: Path | None) -> None:
    """Refuse ``init.weights`` inside the run directory this run writes (and, with ``--force``,
    first empties): its weights would be gone once read, and the run's record could never be
    replayed (its ``init_sha256`` names a file that no longer exists)."""
    init = recipe.init
    if init is None or not init.is_path or run_dir is None:
        return
    source, folder = Path(init.weights).resolve(), run_dir.resolve()
    if source == folder or folder in source.parents:
        raise UserError(f"init.weights = {init.weights!r} ({init.where}) is in the run directory {run_dir} this run writes: "
                        "its weights would be replaced; copy them elsewhere first, or choose another --out")


def resume(run_dir: str | Path, *, callbacks: Sequence[Callback] = (), console: Any = None, progress: bool = True,
           overrides: Overrides = ()) -> Outcome:  # fmt: skip
    """Continue an interrupted (or failed) run from its last checkpoint, exactly where it stopped;
    ``overrides`` change machine-local keys and loggers only (:func:`.resume.resumable`)."""
    from .resume import resume_trainer

    run_dir = Path(run_dir)
    main_rank = distributed.current().is_main
    shown = _console(console, progress)
    watch, defaults = default_callbacks(shown, _hint(run_dir), progress=progress)
    trainer = _trainer(lambda: resume_trainer(run_dir, lambda recipe: [*defaults, *recipe_loggers(recipe, main_rank), *callbacks], writes=main_rank,
                                                      overrides=overrides))  # fmt: skip
    if main_rank and shown is not None:
        shown.print(f"resuming {run_dir} at epoch {trainer.epochs_done + 1} step {trainer.step}", highlight=False)
    return _fit(trainer, watch)


def _before_training(trainer: Trainer, error: UserError) -> bool:
    """Whether a new run failed on a setting before its first step: not a component's bug (that
    run records its failure), not a resumed run (its folder holds what it trained)."""
    return not isinstance(error, ComponentError) and not trainer.resumed and trainer.epochs_done == 0 and trainer.step == 0


def _console(console: Any, progress: bool) -> Any:
    if console is None and progress:
        from ..terminal import Terminal

        return Terminal()
    return console


def _hint(run_dir: Path | None) -> str:
    """The doctor command a warning points at: the run's own resolved recipe."""
    return doctor_command(run_dir / "recipe.toml") if run_dir is not None else "digitsum doctor RECIPE"


def _trainer(make) -> Trainer:
    """Make a trainer; a failure leaves no process group behind under torchrun."""
    try:
        return make()
    except BaseException:
        distributed.stop()
        raise


def _fit(trainer: Trainer, watch: Watch) -> Outcome:
    """Train with Ctrl-C and SIGTERM turned into a checkpointed stop; errors say how to resume."""
    run_dir = trainer.run_dir
    try:
        with stop_on_signals(trainer) as interruption:
            summary = trainer.fit()
    except UserError as e:
        if run_dir is not None and (run_dir / "checkpoint.pt").exists():
            e.message += f"\nthe last checkpoint is intact; resume with: digitsum run --resume {run_dir}"
        elif run_dir is not None and _before_training(trainer, e):
            withdraw(run_dir)  # a setting refused as the run started (a logger's store): nothing to keep or resume
        elif run_dir is not None and (run_dir / "summary.json").exists():
            e.message += f"\n{run_dir / 'summary.json'} records the failure"
        raise
    finally:
        distributed.stop()
    return Outcome(trainer, summary, watch, interruption)
