"""digitsum as a library: the functions a script or a notebook calls (docs/api.md).

The command line is a thin layer over these (``digitsum run`` is :func:`train`, ``digitsum
eval`` is :meth:`Run.evaluate`, ``digitsum predict`` is :meth:`Run.predict`...), so a run
started from Python is the same run, with the same checks, files and Ctrl-C handling.
Everything here imports torch only when called.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .errors import UserError
from .files import is_plain, path_arg

if TYPE_CHECKING:
    import torch

    from .callbacks import Callback
    from .comparison import Comparison
    from .diagnosis import Report
    from .engine.build import Built
    from .recipe import Recipe
    from .run import Run
    from .sweeps import SweepResult, SweepSettings

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

    return recipes.load_recipe(source, overrides)


def train(recipe: RecipeLike, out: str | Path | None = None, *, overrides: Overrides = (), progress: bool = True,
          callbacks: Sequence[Callback] = (), preflight: bool = True, force: bool = False) -> Run:  # fmt: skip
    """Train a recipe exactly as ``digitsum run`` does and return the trained :class:`Run`.

    - ``out``: the run directory (new or empty; ``force`` replaces a run there); default
      ``runs/<recipe>/<timestamp>/`` under the current folder;
    - ``progress``: a progress bar per epoch and a table at the end; warnings of the preflight
      and the watch are printed too (with ``progress=False`` they are only kept: ``run.warnings``);
    - ``callbacks``: your own :class:`~digitsum.callbacks.Callback` objects, called after
      the built-in ones;
    - ``preflight``: the quick checks before the first epoch.

    Ctrl-C (a notebook's "interrupt") stops after the current step and keeps a checkpoint:
    the returned run's ``status`` is ``"stopped"``, and :func:`resume` continues it. Under
    torchrun, ranks other than 0 return None.
    """
    from .diagnosis.preflight import Preflight
    from .engine import runner

    callbacks = _callbacks(callbacks)
    out = path_arg(out, "out", optional=True)
    outcome = runner.start(load_recipe(recipe, overrides), out, force=force, callbacks=callbacks, progress=progress,
                           preflight=Preflight if preflight else None)  # fmt: skip
    return _as_run(outcome)


def resume(run_dir: str | Path, *, progress: bool = True, callbacks: Sequence[Callback] = (), overrides: Overrides = ()) -> Run:
    """Continue an interrupted run from its last checkpoint, exactly where it stopped
    (``digitsum run --resume``); return the trained :class:`Run`. ``overrides`` may change
    where it runs (``train.device``, ``train.threads``, ``train.checkpoint_every``,
    ``data.root``, ``data.download``) and its loggers (``log.*``), nothing else."""
    from .engine import runner

    return _as_run(runner.resume(path_arg(run_dir, "run_dir"), callbacks=_callbacks(callbacks), progress=progress, overrides=overrides))


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """A run directory read back: recipe, metrics, summary, and the model from its last
    checkpoint in eval mode on ``device``; ready to ``evaluate``, ``predict``, plot."""
    from .run import load_run as load

    return load(path_arg(run_dir, "run_dir"), device)


def load(source: str | Path, device: str | torch.device = "cpu") -> Run:
    """A trained model ready to ``evaluate``, ``predict``, ``export``: a run directory, or a shipped
    recipe's name with pretrained weights (``digitsum.load("original")``; see ``digitsum list
    recipes``), verified against their record before use."""
    from .run import load as load_any

    return load_any(path_arg(source, "source"), device)


def doctor(recipe: RecipeLike, overrides: Overrides = (), *, tune: bool = False) -> Report:
    """Diagnose a recipe (``digitsum doctor``): measured checks on a few batches, on the CPU.

    The :class:`~digitsum.diagnosis.Report` holds the findings as data (``report.findings``,
    ``report.healthy``, ``report.to_dict()``) and the recipe changes verified to restore
    learning (``report.repair``: dotted keys to values). ``tune=True`` (what ``--repair`` does
    on a recipe that learns) also tries settings reset to their defaults and keeps those that
    raise held-out skill.
    """
    from .diagnosis import doctor as diagnose

    return diagnose(load_recipe(recipe, overrides), tune=tune)


def build(recipe: RecipeLike, device: str | torch.device | None = None, overrides: Overrides = ()) -> Built:
    """A recipe's generator and freshly initialised model (the one ``train`` would start from),
    without training or writing anything."""
    from .engine.build import build as make

    return make(load_recipe(recipe, overrides), device)


def sweep(recipe: RecipeLike, params: Sequence[str] | Mapping[str, Any], trials: int, *, settings: SweepSettings | None = None,
          **options: Any) -> SweepResult:  # fmt: skip
    """Search a recipe's hyper-parameters with Optuna, as ``digitsum sweep`` does (docs/sweeps.md).

    ``params`` are ``"KEY=SPACE"`` strings (``"train.optimizer.lr=loguniform:1e-4:1e-2"``,
    ``"backbone.type=choice:concat,film"``, ``"data.batch_size=int:32:512:log"``), or a dict of
    them (``{"train.optimizer.lr": "loguniform:1e-4:1e-2", "backbone.type": ["concat", "film"]}``:
    a list is a choice); the study ends holding ``trials`` trials. How it runs — ``workers``, ``storage``, ``study``,
    ``metric``, ``direction``, ``overrides``, ``out``, ``val``, ``pruner``, ``prune_startup``,
    ``quiet`` — is a :class:`~digitsum.sweeps.SweepSettings`, given as ``settings`` or as
    keywords (which win over ``settings``). Trials are chosen on a validation split held out
    of the training data, never on the test split; each is a run directory under the sweep
    directory, and calling this again with the same storage continues the study. Needs
    ``pip install "digitsum[sweep]"``. Returns the trials, the best one and the files written
    (``best.toml``, plots): see :class:`~digitsum.sweeps.SweepResult`.
    """
    from dataclasses import fields, replace

    from .errors import did_you_mean
    from .sweeps import SweepSettings, sweep as search

    if not is_plain(trials, int):
        raise UserError(f"trials: a whole number of trials, not {type(trials).__name__}")
    known = [f.name for f in fields(SweepSettings)]
    if unknown := [key for key in options if key not in known]:
        raise UserError(f"sweep() got the setting {unknown[0]!r}: {did_you_mean(unknown[0], known, 'sweep settings')}")
    return search(recipe, _spaces(params), trials, replace(settings or SweepSettings(), **options))


def compare(recipes: Sequence[str | Path], grid: Sequence[str] | Mapping[str, Any] = (), overrides: Overrides = (),
            out: str | Path | None = None, *, progress: bool = True) -> Comparison:  # fmt: skip
    """Train several recipes, or one over a grid of values, and compare them (``digitsum compare``).

    ``grid`` items are ``"KEY=V1,V2,..."``, or a dict ``{"KEY": [V1, V2, ...]}`` (one variant
    per value; several keys: every combination); ``overrides`` apply to every variant. Every
    variant is validated, and its data loaded, before the first trains; each is a run directory
    in ``out`` (default ``runs/compare/<timestamp>/``),
    which also gets ``compare.json``, ``compare.csv`` and ``compare.png``. Returns the
    :class:`~digitsum.comparison.Comparison`: a row per variant and head, the compare directory,
    and the interruption if Ctrl-C stopped it (the variants compared so far are kept).
    """
    from .comparison import check_data, plan_variants, run_compare
    from .engine.rundir import create_run_dir

    variants = plan_variants(_listed(recipes, "recipes"), grid if isinstance(grid, Mapping) else _listed(grid, "grid"), overrides)
    out = path_arg(out, "out", optional=True)
    if out is not None and Path(out).is_dir() and not Path(out).is_symlink() and any(Path(out).iterdir()):
        # never replaced, not even a compare's own folder: compare has no --force
        raise UserError(f"output folder {out} is not empty: a comparison writes its runs into a new or empty folder; choose another --out")
    for variant in variants:
        check_data(variant)
    out_dir = create_run_dir("compare", out)
    console = None
    if progress:
        from .terminal import Terminal

        console = Terminal()
        console.print(f"comparing {len(variants)} variants: {', '.join(v.label for v in variants)}")
    return run_compare(variants, out_dir, console=console, progress=progress)


def copy_recipe(name: str, dest: str | Path, *, force: bool = False) -> Path:
    """Copy a shipped recipe, comments and all, to ``dest`` (a file, or a folder: then
    ``dest/<name>.toml``) to edit it (``digitsum cp``); an existing file is replaced only with
    ``force``. Returns the path written."""
    from .catalog import copy_recipe as copy

    if not isinstance(name, str):
        raise UserError(f"name: a recipe's name (digitsum list recipes), not {type(name).__name__}")
    return copy(name, path_arg(dest, "dest"), force)


def list_components(kind: str | None = None) -> list[dict[str, Any]]:
    """What ``digitsum list --json`` prints: a dict per registered component (``kind``,
    ``name``, ``origin``, ``distribution``, ``version``, ``summary``, ``params``..., and
    ``namesakes`` when another distribution defines the same name), then per
    shipped recipe (with its recorded test metrics) and per doctor check. ``kind``: one kind
    (``heads``, ``recipes``, ``checks``..., any of their names); None for all."""
    from .listing import cached_components, describe_checks, describe_recipes, list_kind, mark_namesakes

    if kind is not None and not isinstance(kind, str):
        raise UserError(f"kind: a kind's name (heads, recipes, checks...) or None, not {type(kind).__name__}")
    wanted = list_kind(kind)
    rows = cached_components(wanted) if wanted not in ("recipes", "checks") else []
    recipes = describe_recipes() if wanted in (None, "recipes") else []
    return mark_namesakes(rows + recipes + (describe_checks() if wanted in (None, "checks") else []))


def _spaces(params: Any) -> list[Any]:
    """``sweep``'s params as ``KEY=SPACE`` text; a dict's list of values is a choice among them."""
    if not isinstance(params, Mapping):
        return _listed(params, "params")
    from .errors import recipe_text

    def text(value: Any) -> str:
        return value if isinstance(value, str) else recipe_text(value)

    def space_text(space: Any) -> str:
        if isinstance(space, str) or not isinstance(space, Sequence):
            return text(space)
        return "choice:" + ",".join(map(text, space))

    return [f"{key}={space_text(space)}" for key, space in params.items()]


def _listed(items: Any, what: str) -> list[Any]:
    """A list of ``items``, the argument ``what``; one string or path is a list of one
    (``compare("original")``, not the recipes 'o', 'r', 'i', ...)."""
    if isinstance(items, (str, os.PathLike)):
        return [items]
    if isinstance(items, (Mapping, bytes)) or not isinstance(items, Iterable):
        raise UserError(f"{what}: a list (or one item), not {type(items).__name__}")
    return list(items)


def _callbacks(callbacks: Any) -> list[Callback]:
    """``callbacks`` as a list, each a :class:`~digitsum.callbacks.Callback`, refused before
    anything is written (a number there failed mid-run, leaving a failed run directory)."""
    from .callbacks import Callback

    if callbacks is None:
        return []
    if not isinstance(callbacks, (Callback, Iterable)):
        raise UserError(f"callbacks: a list of digitsum.Callback objects, not {type(callbacks).__name__}")
    listed = [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
    for callback in listed:
        if not isinstance(callback, Callback):
            raise UserError(f"callbacks: {callback!r} ({type(callback).__name__}) is not a digitsum.Callback; "
                            "subclass digitsum.Callback and pass instances")  # fmt: skip
    return listed


def _as_run(outcome) -> Run | None:
    from .run import Run

    trainer = outcome.trainer
    if trainer.run_dir is None:
        return None
    run = Run(trainer.run_dir, trainer.recipe, trainer.model, trainer.generator, trainer.device,
              list(trainer.history), outcome.summary)  # fmt: skip
    signum = outcome.interruption.signum if outcome.interrupted else None
    # a signal.Signals (an int): it reads SIGINT, not 2
    run.failure, run.interrupted_by = outcome.failure, signal.Signals(signum) if signum else None
    run.warnings = tuple(outcome.warnings)
    return run
