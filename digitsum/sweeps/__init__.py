"""Hyper-parameter sweeps on Optuna: ``digitsum sweep`` and :func:`digitsum.sweep` (docs/sweeps.md).

Optuna is imported when a sweep starts, never at import time (the extra ``pip install "digitsum[sweep]"``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..discovery import component_name_problem
from ..errors import UserError, did_you_mean
from ..files import file_in_the_way, is_plain
from ..recipe import MACHINE_LOCAL_KEYS
from .report import SweepResult, TrialRow, read_result, write_outputs
from .space import Space, check_spaces, parse_space, parse_spaces
from .storage import DEFAULT, check_claim, claim, default_storage, lock, open_storage, redact, require_optuna, storage_access
from .trials import Plan, recover, run_workers, work

__all__ = ["DEFAULT_VAL", "Space", "SweepResult", "TrialRow", "default_direction", "open_storage", "parse_space", "parse_spaces", "redact", "sweep"]

if TYPE_CHECKING:
    from ..recipe import Overrides, Recipe

#: Samples held out as the validation split when the recipe holds none out (``data.val = 0``).
DEFAULT_VAL = 5000
#: Metrics for which lower is better when ``direction`` is not given (else higher is better).
_LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "rmse")


@dataclass(frozen=True)
class SweepSettings:
    """How a sweep runs: ``digitsum sweep``'s options and :func:`digitsum.sweep`'s keywords (docs/api.md#sweeps,
    docs/sweeps.md). Values that cannot work are a UserError when the settings are made.

    Attributes:
        workers: processes on this machine running trials of the study together, at most one
            per CPU core this process may use (each is a Python process with torch and its own
            trial: more only take turns on the cores and multiply the memory).
        storage: an Optuna storage URL or journal:PATH (default: study.journal in the sweep directory).
        study: the study's name (default: the recipe's name).
        metric: HEAD.METRIC on the val split (default: the first head's primary metric).
        direction: max or min (default: min for losses and errors, else max).
        overrides: laid over the recipe for every trial, as --set.
        out: the sweep directory (default sweeps/<study>); trials are run directories in it.
        val: samples held out as the validation split (default: the recipe's data.val, else DEFAULT_VAL).
        pruner: "median" (a trial worse after an epoch than earlier trials' median there stops) or "none".
        prune_startup: trials done before the median pruner stops any.
        quiet: no progress display for the trials.
    """

    workers: int = 1
    storage: str | None = None
    study: str | None = None
    metric: str | None = None
    direction: str | None = None
    overrides: Overrides = ()
    out: str | Path | None = None
    val: int | None = None
    pruner: str = "median"
    prune_startup: int = 5
    quiet: bool = False

    def __post_init__(self) -> None:
        for name, value in (("workers", self.workers), ("prune_startup", self.prune_startup), ("val", self.val)):
            if not is_plain(value, int) and not (name == "val" and value is None):
                raise UserError(f"{name}: a whole number, not {type(value).__name__}")
        if self.workers < 1:
            raise UserError(f"--workers {self.workers}: at least 1")
        if self.workers > 1:
            from ..engine.accel import usable_cores  # imports torch: not for the default settings

            if self.workers > usable_cores():
                raise UserError(f"--workers {self.workers}: at most {usable_cores()}, the CPU cores this process may use "
                                "(each worker is a process training its own trials)")  # fmt: skip
        if self.pruner not in ("median", "none"):
            raise UserError(f"--pruner {self.pruner!r}: {did_you_mean(self.pruner, ('median', 'none'), 'pruners')}")
        if self.prune_startup < 0:
            raise UserError(f"--prune-startup {self.prune_startup}: 0 or more")


#: The most trials one sweep may ask for: a billion filled the disk with run directories (about
#: 450 KB each) and never ended.
MAX_TRIALS = 10_000


def sweep(recipe: Recipe | str | Path | Mapping[str, Any], params: Sequence[str], trials: int,
          settings: SweepSettings = SweepSettings()) -> SweepResult:  # fmt: skip
    """The sweep behind :func:`digitsum.sweep` and ``digitsum sweep`` (docs/sweeps.md): ``params``
    are ``"KEY=SPACE"`` strings, ``trials`` how many trials the study holds when the sweep ends.
    Writes the trials' run directories, ``best.toml``, the figures and ``sweep.json`` in the sweep
    directory."""
    optuna = require_optuna()
    from ..engine.accel import usable_cores
    from ..engine.build import build
    from ..engine.train import check_val_split
    from ..recipe import Recipe, load_recipe

    if isinstance(recipe, Recipe):
        recipe = recipe.to_dict()
    spaces = parse_spaces(params)
    if settings.study is not None and (problem := component_name_problem(settings.study, "a study name")):
        raise UserError(f"--study {settings.study!r}: {problem} (it names the folder sweeps/<study>)")
    if not 1 <= trials <= MAX_TRIALS:
        raise UserError(f"--trials {trials}: from 1 to {MAX_TRIALS:,} (each trial is a run directory of its own)")
    if settings.out is not None and (blocked := file_in_the_way(Path(settings.out))) is not None:
        where = "it" if blocked == Path(settings.out) else f"{blocked}, a folder above it,"
        raise UserError(f"--out {settings.out}: {where} is a file; a sweep writes its trials into a folder: choose another --out")
    loaded = load_recipe(recipe, settings.overrides)
    label = f"sweep of {_source_label(recipe, loaded.name)}"  # the recipe each problem below belongs to, not <dict>
    own_val = loaded.data.section.val
    held_out = settings.val if settings.val is not None else (own_val or DEFAULT_VAL)
    if held_out < 1:
        raise UserError(f"--val {held_out}: a sweep chooses on a validation split; hold out at least one sample")
    base_recipe = load_recipe(loaded.to_dict(), {"data.val": held_out}, label=label)
    head, metric_name, direction = _objective(base_recipe, settings.metric, settings.direction)
    check_spaces(base_recipe.to_dict(), (), spaces, label=label, head=head)
    try:  # a UserError before any trial
        check_val_split(base_recipe, build(base_recipe, "cpu").generator)
    except UserError as e:
        if settings.val is not None:
            raise
        whence = "the recipe's data.val" if own_val else "the sweep's default when the recipe holds none out"
        raise UserError(f"{e.message} — {held_out} is {whence}; give --val N, the number of samples to hold out") from None

    study_name = settings.study or loaded.name
    sweep_dir = Path(settings.out) if settings.out is not None else Path("sweeps") / study_name
    url = settings.storage or default_storage(sweep_dir)
    stored = redact(settings.storage) if settings.storage else DEFAULT  # what the folder's marker records
    check_claim(sweep_dir, study_name, stored)  # before the storage opens its journal in a folder that may not be ours
    opened = open_storage(url)  # first: a storage that cannot be opened leaves no sweep directory behind
    sweep_dir.mkdir(parents=True, exist_ok=True)
    claim(sweep_dir, study_name, stored)  # one study per folder: another's trials and best.toml are not replaced
    settings_attr = {"recipe": _strip_local(base_recipe.to_dict()), "params": [str(s) for s in spaces],
                     "metric": f"{head}.{metric_name}"}  # fmt: skip
    with storage_access(url):
        made = optuna.create_study(storage=opened, study_name=study_name, direction=direction, load_if_exists=True)
    if made.direction.name.lower() != direction:
        raise UserError(f"study {study_name!r} in {redact(url)} {made.direction.name.lower()}s its metric; this sweep would {direction} it: "
                        "give the same --direction, or another --study")  # fmt: skip
    earlier = made.user_attrs.get("digitsum")
    if isinstance(earlier, dict) and isinstance(earlier.get("recipe"), dict):  # a study begun by an older digitsum kept more keys
        earlier = {**earlier, "recipe": _strip_local(earlier["recipe"])}
    if earlier is None:
        with storage_access(url):
            made.set_user_attr("digitsum", settings_attr)
    elif earlier != settings_attr:
        differ = []
        if earlier.get("params") != settings_attr["params"]:
            differ.append(f"params ({' '.join(earlier.get('params', []))})")
        if earlier.get("metric") != settings_attr["metric"]:
            differ.append(f"metric ({earlier.get('metric')})")
        if earlier.get("recipe") != settings_attr["recipe"]:
            differ.append("recipe (the recipe, --set or --val)")
        raise UserError(f"study {study_name!r} in {redact(url)} was started with another {' and another '.join(differ)}: "
                        "continue it with the same recipe, --set, --val and --param, or start another with --study NAME")  # fmt: skip
    with lock(sweep_dir):  # no worker of this folder is between asking for a trial and naming itself
        notes = recover(made, optuna, unnamed_are_ours=settings.storage is None)
    notes += _enqueue_baseline(made, base_recipe.to_dict(), spaces)

    threads = 0
    if settings.workers > 1 and base_recipe.train.threads == 0:
        threads = max(1, usable_cores() // settings.workers)  # one share of the cores per worker, not all of them each
    plan = Plan(base_recipe.to_dict(), spaces, head, metric_name, url, study_name, str(sweep_dir.resolve()),
                trials, threads, settings.pruner, settings.prune_startup, settings.quiet, label)  # fmt: skip
    try:
        interrupted = work(plan) if settings.workers == 1 else run_workers(plan, settings.workers)
    except KeyboardInterrupt:
        interrupted = True
    result = read_result(optuna, study_name, url, sweep_dir, head, metric_name, direction, notes, interrupted)
    write_outputs(result, optuna, opened, base_recipe, own_val, label)
    return result


def _source_label(recipe: str | os.PathLike[str] | Mapping[str, Any], name: str) -> str:
    """The recipe a sweep was given, as its problems name it: its file, else its name."""
    from ..catalog import resolve_recipe

    return str(resolve_recipe(recipe)) if isinstance(recipe, (str, os.PathLike)) else f"recipe {name!r}"


def default_direction(metric: str) -> str:
    """``minimize`` for losses and errors, ``maximize`` for everything else (accuracies)."""
    return "minimize" if any(metric.endswith(word) for word in _LOWER_IS_BETTER) else "maximize"


def _objective(recipe: Any, metric: str | None, direction: str | None) -> tuple[str, str, str]:
    """The head, metric and direction of a ``HEAD.METRIC`` (default: the first head's primary
    metric), checked against the recipe's heads and the metrics the head reports."""
    heads = recipe.heads
    if metric is None:
        head = next(iter(heads))
        name = heads[head].cls.primary_metric
    else:
        head, sep, name = metric.partition(".")
        if not sep or not name:
            raise UserError(f"--metric {metric!r}: expected HEAD.METRIC, e.g. {next(iter(heads))}.accuracy")
        if head not in heads:
            raise UserError(f"--metric {metric!r}: no head {head!r} — {did_you_mean(head, heads, 'heads')}")
        known = _head_metrics(recipe, head)
        if name not in known:
            raise UserError(f"--metric {metric!r}: head {head!r} reports no {name!r} — {did_you_mean(name, known, 'metrics')}")
    words = {None: default_direction(name), "max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
    if direction not in words:
        raise UserError(f"--direction {direction!r}: max or min")
    return head, name, words[direction]


def _head_metrics(recipe: Any, head: str) -> list[str]:
    """The metrics a head reports (``loss`` and those of ``Head.metrics``), measured on two samples."""
    import torch

    from ..engine.build import build
    from ..seeding import make_rng

    built = build(recipe, "cpu")
    batch = built.generator.draw("test", torch.arange(2), make_rng(torch.device("cpu"), 0))
    with torch.no_grad():
        outputs = built.model(batch)
        metrics = built.model.heads[head].metrics(outputs[head], batch[built.model.bindings[head].target])
    return ["loss", *metrics]


def _enqueue_baseline(study: Any, recipe: dict[str, Any], spaces: Sequence[Space]) -> list[str]:
    """A new study's first trial is the recipe as it is: its own value of every swept key, when
    each lies in its space. The sweep then finds a recipe at least as good, on the val split, as
    the one it started from — or says that it found none better. Returns what was done, as notes."""
    if study.get_trials(deepcopy=False):
        return []  # a study that goes on: its baseline (if any) is queued or done already
    values, outside = {}, []
    for space in spaces:
        value: Any = recipe
        for part in space.key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None or not space.contains(value):
            outside.append(f"{space.key} = {value!r}")
        else:
            values[space.key] = value
    if outside:
        return [f"no baseline trial: the recipe's own {', '.join(outside)} lie outside the searched space"]
    study.enqueue_trial(values, user_attrs={"baseline": True})
    return [f"trial 0 is the recipe as it is ({', '.join(f'{k} = {v}' for k, v in values.items())}): the baseline"]


def _strip_local(doc: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    for table, key in (k.split(".") for k in MACHINE_LOCAL_KEYS):  # may differ between machines sharing one study
        doc.get(table, {}).pop(key, None)
    return doc
