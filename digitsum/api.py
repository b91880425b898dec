"""digitsum as a library: the functions a script or a notebook calls.

The command line is a thin layer over these (``digitsum run`` is :func:`train`, ``digitsum
eval`` is :meth:`Run.evaluate`, ``digitsum predict`` is :meth:`Run.predict`...), so a run
started from Python is the same run, with the same checks, files and Ctrl-C handling::

    import digitsum

    run = digitsum.train("original", overrides={"train.epochs": 1})
    run.curves()                                   # inline in a notebook
    again = digitsum.load_run(run.run_dir)
    again.predict(image="seven.png", number=3)
    digitsum.doctor("notebook").findings

Everything here imports torch only when called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import torch

    from .engine.build import Built
    from .engine.callbacks import Callback
    from .engine.doctor import Report
    from .engine.run import Run
    from .engine.sweep import SweepResult
    from .recipe import Recipe

#: What names a recipe: a path to a TOML file, a built-in or plugin recipe name, a recipe
#: document as a dict, or a loaded Recipe.
RecipeLike = Union["Recipe", str, Path, Mapping[str, Any]]
#: Overrides: ``["train.epochs=1", ...]`` as on the command line, or ``{"train.epochs": 1}``.
Overrides = Union[Sequence[str], Mapping[str, Any]]


def load_recipe(source: RecipeLike, overrides: Overrides = ()) -> Recipe:
    """Read, merge, override and validate a recipe: every problem in one
    :class:`~digitsum.errors.RecipeError`.

    ``source`` is a path, a built-in or plugin recipe name (``"original"``), a dict holding a
    recipe document, or a Recipe (then re-validated with the overrides applied).
    """
    from . import recipe as recipes

    if isinstance(source, recipes.Recipe):
        if not overrides:
            return source
        source = source.to_dict()
    return recipes.load_recipe(source, overrides)


def train(
    recipe: RecipeLike,
    out: str | Path | None = None,
    *,
    overrides: Overrides = (),
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    preflight: bool = True,
    force: bool = False,
) -> Run:
    """Train a recipe exactly as ``digitsum run`` does and return the trained :class:`Run`.

    - ``out``: the run directory (new or empty; ``force`` replaces a run there); default
      ``runs/<recipe>/<timestamp>/`` under the current folder;
    - ``progress``: a progress bar per epoch and a table at the end; warnings of the preflight
      and the watch are printed too (with ``progress=False`` they are kept, silent);
    - ``callbacks``: your own :class:`~digitsum.engine.callbacks.Callback` objects, called after
      the built-in ones;
    - ``preflight``: the quick checks before the first epoch.

    Ctrl-C (a notebook's "interrupt") stops after the current step and keeps a checkpoint:
    the returned run's ``status`` is ``"stopped"``, and :func:`resume` continues it. Under
    torchrun, ranks other than 0 return None.
    """
    from .engine import runner

    loaded = load_recipe(recipe, overrides)
    outcome = runner.start(loaded, out, force=force, callbacks=callbacks, progress=progress, preflight=preflight)
    return _as_run(outcome)


def resume(run_dir: str | Path, *, progress: bool = True, callbacks: Sequence[Callback] = ()) -> Run:
    """Continue an interrupted run from its last checkpoint, exactly where it stopped
    (``digitsum run --resume``); return the trained :class:`Run`."""
    from .engine import runner

    return _as_run(runner.resume(run_dir, callbacks=callbacks, progress=progress))


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """A run directory read back: recipe, metrics, summary, and the model from its last
    checkpoint in eval mode on ``device``; ready to ``evaluate``, ``predict``, plot."""
    from .engine.run import load_run as load

    return load(run_dir, device)


def doctor(recipe: RecipeLike, overrides: Overrides = (), *, tune: bool = False) -> Report:
    """Diagnose a recipe (``digitsum doctor``): measured checks on a few batches, on the CPU.

    The :class:`~digitsum.engine.doctor.Report` holds the findings as data (``report.findings``,
    ``report.healthy``, ``report.to_dict()``) and the recipe changes verified to restore
    learning (``report.repair``: dotted keys to values). ``tune=True`` (what ``--repair`` does
    on a recipe that learns) also tries settings reset to their defaults and keeps those that
    raise held-out skill.
    """
    from .engine.doctor import doctor as diagnose

    return diagnose(load_recipe(recipe, overrides), tune=tune)


def build(recipe: RecipeLike, device: str | torch.device | None = None, overrides: Overrides = ()) -> Built:
    """A recipe's generator and freshly initialised model (the one ``train`` would start from),
    without training or writing anything."""
    from .engine.build import build as make

    return make(load_recipe(recipe, overrides), device)


def sweep(
    recipe: RecipeLike,
    params: Sequence[str],
    trials: int,
    *,
    workers: int = 1,
    storage: str | None = None,
    study: str | None = None,
    metric: str | None = None,
    direction: str | None = None,
    overrides: Overrides = (),
    out: str | Path | None = None,
    val: int | None = None,
    pruner: str = "median",
    prune_startup: int = 5,
    quiet: bool = False,
) -> SweepResult:
    """Search a recipe's hyper-parameters with Optuna, as ``digitsum sweep`` does (docs/sweeps.md).

    ``params`` are ``"KEY=SPACE"`` strings (``"train.optimizer.lr=loguniform:1e-4:1e-2"``,
    ``"backbone.type=choice:concat,film"``, ``"data.batch_size=int:32:512:log"``). Trials are
    chosen on a validation split held out of the training data (``val`` samples, default the
    recipe's ``data.val`` or 5000), never on the test split; each is a run directory under
    ``out`` (default ``sweeps/<study>``). The study is kept in ``storage`` (default a journal
    file in the sweep directory; any Optuna URL), so calling this again continues it, and
    ``workers`` processes (or other machines on one storage) share it. Needs
    ``pip install "digitsum[sweep]"``. Returns the trials, the best one and the files written
    (``best.toml``, plots): see :class:`~digitsum.engine.sweep.SweepResult`.
    """
    from .engine.sweep import sweep as search

    return search(recipe, params, trials, workers=workers, storage=storage, study=study, metric=metric,
                  direction=direction, overrides=overrides, out=out, val=val, pruner=pruner,
                  prune_startup=prune_startup, quiet=quiet)  # fmt: skip


def _as_run(outcome) -> Run | None:
    from .engine.run import Run

    trainer = outcome.trainer
    if trainer.run_dir is None:
        return None
    return Run(trainer.run_dir, trainer.recipe, trainer.model, trainer.generator, trainer.device,
               list(trainer.history), outcome.summary)  # fmt: skip
