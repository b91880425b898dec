"""Reading a run directory back safely, and resuming its training."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..callbacks import Callback
from ..errors import UserError
from ..files import parse_json, read_bytes, read_json, read_text
from ..recipe import MACHINE_LOCAL_KEYS, Overrides, Recipe, legacy_train, load_recipe, upgrade_resolved
from .checkpoint import check_format, describe_differences, load_checkpoint, recipe_differences
from .rundir import keep_foreign, remove_temporary_files, run_status
from .train import Trainer


@dataclass
class SavedRun:
    """A run directory's resolved recipe and its checkpoint (``None`` before the first one)."""

    run_dir: Path
    recipe: Recipe
    checkpoint: dict[str, Any] | None


def open_run(run_dir: Path, overrides: Overrides = ()) -> SavedRun:
    """Read a run directory's recipe.toml and checkpoint.pt safely; refuse a run directory of
    another format, and a checkpoint whose recipe differs from recipe.toml. ``overrides``
    (``--set``) may change what :func:`resumable` allows only."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        if os.path.lexists(run_dir):
            raise UserError(f"{run_dir} is a file, not a run directory (the folder a run wrote: runs/<recipe>/<time>/)")
        raise UserError(f"run directory not found: {run_dir}")
    recipe_path, checkpoint_path = run_dir / "recipe.toml", run_dir / "checkpoint.pt"
    if not recipe_path.is_file():
        inside = sorted((p.parent for p in run_dir.glob("*/recipe.toml")), key=lambda p: (p.stat().st_mtime, str(p)))
        inside = inside or sorted((p.parent for p in run_dir.glob("*/*/recipe.toml")), key=lambda p: (p.stat().st_mtime, str(p)))
        hint = f"; the latest run directory under it is {inside[-1]}" if inside else ""
        raise UserError(f"{run_dir} is not a run directory: it has no recipe.toml{hint}")
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path.exists() else None
    if checkpoint is None:
        _check_summary_format(run_dir / "summary.json")
    recipe = load_recipe(recipe_path, require_loggers=False)  # format first: a newer run's recipe may not validate here
    if checkpoint is not None:
        saved, current = checkpoint["recipe"], recipe.to_dict()
        if legacy_train(saved.get("train")) or _differences(current, saved):
            # A checkpoint of an older digitsum may spell [train] the old way, or lack a key added
            # since (with its default, it trains as it did): read it as recipe.toml is read, with
            # every default written, before comparing.
            try:
                saved = load_recipe(upgrade_resolved(saved), require_loggers=False, label=f"{checkpoint_path} (its recipe)").to_dict()
            except UserError as e:
                raise UserError(f"{checkpoint_path} holds a recipe this digitsum cannot read: {e.message}") from None
        if _differences(current, saved):
            raise UserError(
                f"{checkpoint_path} was written by a different recipe than {recipe_path}: "
                + describe_differences(current, saved)
            )
    if overrides:
        recipe = _overridden(recipe, recipe_path, overrides)
    return SavedRun(run_dir, recipe, checkpoint)


def resumable(key: str) -> bool:
    """Whether a resumed run may take a different value for this dotted key: where and on what it
    runs (:data:`MACHINE_LOCAL_KEYS`), and its loggers (``log.*``), which only observe what is
    computed, and whose library, server or folder belongs to the machine."""
    return key in MACHINE_LOCAL_KEYS or key == "log" or key.startswith("log.")


def _differences(recipe: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    """What differs between two resolved recipes that a resumed run may not change."""
    return [key for key in recipe_differences(recipe, saved) if not resumable(key)]


def _overridden(recipe: Recipe, path: Path, overrides: Overrides) -> Recipe:
    """The run's recipe with ``overrides`` applied; a UserError listing what they change besides
    the machine-local keys and the loggers."""
    changed = load_recipe(path, overrides, require_loggers=False)
    ours, theirs = recipe.to_dict(), changed.to_dict()
    refused = _differences(theirs, ours)
    if refused:
        shown = describe_differences(ours, theirs, refused, show="{key} ({ours} -> {theirs})")
        raise UserError(
            f"--resume continues the run's recorded recipe: --set (from Python: overrides) may change only "
            f"{', '.join(sorted(MACHINE_LOCAL_KEYS))} and log.*, but these differ from {path}: {shown}"
        )
    return changed


def _check_summary_format(path: Path) -> None:
    try:
        summary = parse_json(read_text(path))
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        raise UserError(f"{path} is not valid JSON: the run directory is damaged") from None
    check_format(summary.get("format") if isinstance(summary, dict) else None, path)


def _progress_without_checkpoint(run_dir: Path) -> str | None:
    """What in a run directory without checkpoint.pt says the run got past its start (a run
    stopped before its first checkpoint starts over; one whose checkpoint was deleted must not,
    silently), or None."""
    if run_status(run_dir) == "finished":
        return "its summary.json says the run finished"
    summary = read_json(run_dir / "summary.json")
    position = summary.get("position") if isinstance(summary, dict) else None
    # a stop is checkpointed, and so is every epoch: a run that failed in its first epoch has none
    if isinstance(position, dict) and ("stopped" in summary or (isinstance(position.get("epoch"), int) and position["epoch"] > 0)):
        return f"its summary.json says the run stopped at step {position.get('step')} ({position.get('epoch')} epochs done)"
    try:
        if read_bytes(run_dir / "metrics.jsonl").strip():
            return "its metrics.jsonl records finished epochs"
    except OSError:
        pass
    return None


def resume_trainer(run_dir: Path, callbacks: Sequence[Callback] | Callable[[Recipe], Sequence[Callback]] = (),
                   writes: bool = True, overrides: Overrides = ()) -> Trainer:  # fmt: skip
    """A Trainer at the place a run directory's checkpoint left off (the start, without one),
    with ``overrides`` of the keys :func:`resumable` allows.

    ``callbacks``: a list, or a function of the run's recipe giving one (its loggers depend on
    it). ``writes=False``: a torchrun rank other than 0, which reads the run directory only.
    """
    saved = open_run(run_dir, overrides)
    if callable(callbacks):
        callbacks = callbacks(saved.recipe)
    # the checkpoint gives the model: [init]'s weights are loaded only when there is none yet
    trainer = Trainer(saved.recipe, saved.run_dir if writes else None, callbacks, initialise=saved.checkpoint is None)
    if saved.checkpoint is not None:
        trainer.load_state_dict(saved.checkpoint, saved.run_dir / "checkpoint.pt")
        if trainer.finished and run_status(saved.run_dir) == "finished":  # else only its summary is missing
            raise UserError(
                f"{run_dir} has finished all {trainer.epochs} epochs: nothing to resume "
                f"(digitsum eval {run_dir} evaluates it)"
            )
    else:
        if progress := _progress_without_checkpoint(saved.run_dir):
            raise UserError(f"{run_dir / 'checkpoint.pt'} is missing, though {progress}: the run cannot continue where it "
                            f"stopped. Start it over with: digitsum run {run_dir / 'recipe.toml'} --out {run_dir} --force")  # fmt: skip
        trainer.resumed = True  # keep recipe.toml as it is; metrics.jsonl starts over
    if writes:
        remove_temporary_files(saved.run_dir)
        keep_foreign(saved.run_dir)  # what the user put beside the run since stays theirs
    return trainer
