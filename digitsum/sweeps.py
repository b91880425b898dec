"""Hyper-parameter sweeps on Optuna: ``digitsum sweep`` and :func:`digitsum.sweep`.

A sweep is an Optuna study. Each trial is a normal run directory (``<sweep>/trial-0003/``)
trained through the one training path (``engine.runner.start``), on the recipe with the
trial's values laid over it and a validation split held out of the training data
(``data.val``). The objective is a validation metric of a head, never a test metric: the test
figures of the trials are recorded and reported beside it, not used to choose. A callback
reports the validation metric to Optuna after each epoch, and a pruned trial stops there (its
``summary.json`` says so, as does its ``trial.json``).

The study lives in a storage that several processes can share: by default a journal file in
the sweep directory (``study.journal``), else any Optuna storage URL (``sqlite:///...``,
``postgresql://...``) or ``journal:PATH``. ``workers`` processes on one machine, and any number
of machines pointed at one storage, run one study together; starting again with the same
storage continues it: the trial count goes on, finished trials are not rerun, and trials of
this machine whose process is gone (killed) are marked failed and run again.

Optuna is imported when a sweep starts, never at import time; it is the extra
``pip install "digitsum[sweep]"``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError, did_you_mean

if TYPE_CHECKING:
    from .recipe import Overrides, Recipe

#: Samples held out as the validation split when the recipe holds none out (``data.val = 0``).
DEFAULT_VAL = 5000
#: The forms a ``--param`` space takes.
SPACE_KINDS = ("loguniform", "uniform", "int", "choice")
INSTALL = 'pip install "digitsum[sweep]"'
#: Metrics for which lower is better when ``direction`` is not given (else higher is better).
_LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "rmse")
#: Keys of the sweep's settings that may differ between machines sharing one study.
_LOCAL_KEYS = (("data", "root"), ("data", "download"), ("train", "device"), ("train", "threads"))


# -- search spaces ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """One ``--param KEY=SPACE``: the recipe key and the values a trial may give it.

    ``kind`` is ``loguniform`` or ``uniform`` (floats in ``[low, high]``), ``int`` (integers in
    ``[low, high]``, on a log scale when ``log``) or ``choice`` (one of ``choices``).
    """

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value of this key for an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.kind == "loguniform")

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this space can suggest."""
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and value != int(value):
            return False
        return float(self.low) <= value <= float(self.high)

    def examples(self) -> list[Any]:
        """Values checked against the recipe before a sweep starts: both ends, or every choice."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]

    def __str__(self) -> str:
        if self.kind == "choice":
            return f"{self.key}=choice:{','.join(map(str, self.choices))}"
        return f"{self.key}={self.kind}:{self.low}:{self.high}" + (":log" if self.log else "")


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: {what} {text!r} is not a finite number")
    return value


def _integer(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{where}: {what} {text!r} is not an integer") from None


def _choice_value(text: str) -> Any:
    """A choice as ``--set`` reads a value: TOML (numbers, booleans, quoted strings), else the text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_space(text: str) -> Space:
    """``"train.optimizer.lr=loguniform:1e-4:1e-2"`` -> a :class:`Space`; a UserError saying
    what is wrong (and what would fit) otherwise. The key is checked against a recipe by
    :func:`check_spaces`, not here."""
    from .recipe import MOVED_TRAIN_KEYS, _override_key

    where = f"--param {text!r}"
    key, sep, spec = text.partition("=")
    key = key.strip()
    path = _override_key(key) if key else None
    if not sep or path is None:
        raise UserError(f"{where}: expected KEY=SPACE, e.g. --param train.optimizer.lr=loguniform:1e-4:1e-2")
    if len(path) == 2 and path[0] == "train" and path[1] in MOVED_TRAIN_KEYS:
        raise UserError(f"{where}: `{path[1]}` belongs to the optimizer now: --param train.optimizer.{path[1]}={spec.strip()}")
    kind, _, rest = spec.strip().partition(":")
    if kind not in SPACE_KINDS:
        raise UserError(f"{where}: unknown space {kind!r} — {did_you_mean(kind, SPACE_KINDS, 'spaces')}: "
                        "loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH[:log], choice:A,B,C")  # fmt: skip
    key = ".".join(path)
    if kind == "choice":
        values = [v.strip() for v in rest.split(",")] if rest.strip() else []
        if not values or any(not v for v in values):
            raise UserError(f"{where}: choice needs values separated by commas, e.g. choice:concat,film,embedding")
        choices = tuple(_choice_value(v) for v in values)
        for value in choices:
            if not isinstance(value, (str, int, float, bool)):
                raise UserError(f"{where}: a choice must be a number, a boolean or a string (got {value!r})")
        if len(set(map(repr, choices))) != len(choices):
            raise UserError(f"{where}: a value is given twice")
        return Space(key, kind, choices=choices)
    parts = rest.split(":")
    log = False
    if kind == "int" and len(parts) == 3:
        if parts[2] != "log":
            raise UserError(f"{where}: the third part of int:LOW:HIGH:log can only be 'log' (got {parts[2]!r})")
        log, parts = True, parts[:2]
    if len(parts) != 2:
        form = "int:LOW:HIGH[:log]" if kind == "int" else f"{kind}:LOW:HIGH"
        raise UserError(f"{where}: expected {form}")
    if kind == "int":
        low, high = (_integer(p, name, where) for p, name in zip(parts, ("LOW", "HIGH")))
    else:
        low, high = (_number(p, name, where) for p, name in zip(parts, ("LOW", "HIGH")))
    if low >= high:
        raise UserError(f"{where}: LOW must be below HIGH (got {parts[0]} and {parts[1]})")
    if (kind == "loguniform" or log) and low <= 0:
        raise UserError(f"{where}: a log scale needs LOW > 0 (got {parts[0]})")
    return Space(key, kind, low, high, log)


def parse_spaces(texts: Sequence[str]) -> list[Space]:
    """Every ``--param``, each key once."""
    spaces = [parse_space(t) for t in texts]
    seen: set[str] = set()
    for space in spaces:
        if space.key in seen:
            raise UserError(f"--param {space.key} is given twice")
        seen.add(space.key)
    if not spaces:
        raise UserError("a sweep needs at least one --param KEY=SPACE, e.g. --param train.optimizer.lr=loguniform:1e-4:1e-2")
    return spaces


def check_spaces(recipe: Any, overrides: Any, spaces: Sequence[Space]) -> None:
    """Load the recipe with every end (or choice) of every space, as ``--param KEY=VALUE``: an
    unknown key or a value its component refuses is the recipe's own error (did-you-mean
    included), before any trial runs."""
    from .recipe import load_recipe

    for space in spaces:
        for value in space.examples():
            load_recipe(recipe, overrides, grid=[f"{space.key}={_toml_value(value)}"], grid_flag="--param")


def _toml_value(value: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


# -- the objective ------------------------------------------------------------------------------------


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
    if direction is None:
        direction = default_direction(name)
    else:
        words = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
        if direction not in words:
            raise UserError(f"--direction {direction!r}: max or min")
        direction = words[direction]
    return head, name, direction


def _head_metrics(recipe: Any, head: str) -> list[str]:
    """The metrics a head reports (``loss`` and those of ``Head.metrics``), measured on two samples."""
    import torch

    from .seeding import make_rng
    from .engine.build import build

    built = build(recipe, "cpu")
    batch = built.generator.draw("test", torch.arange(2), make_rng(torch.device("cpu"), 0))
    with torch.no_grad():
        outputs = built.model(batch)
        metrics = built.model.heads[head].metrics(outputs[head], batch[built.model.bindings[head].target])
    return ["loss", *metrics]


# -- storage ------------------------------------------------------------------------------------------


def _require_optuna() -> Any:
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise UserError(f"digitsum sweep needs optuna, which is not installed: {INSTALL}")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def default_storage(sweep_dir: Path) -> str:
    """The storage of a sweep given no ``--storage``: a journal file in its directory."""
    return f"journal:{Path(sweep_dir).resolve() / 'study.journal'}"


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``: ``journal:PATH`` (or a path ending ``.journal``) is a
    journal file several processes share (on one machine, or on shared storage); anything else
    is an RDB URL (``sqlite:///study.db``, ``postgresql://user:pass@host/db``)."""
    optuna = _require_optuna()
    if url.startswith("journal:") or url.endswith(".journal"):
        path = Path(url.removeprefix("journal:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        journal = optuna.storages.journal
        backend = getattr(journal, "JournalFileBackend", None)
        if backend is None:  # optuna < 4.0
            backend = optuna.storages.JournalFileStorage
        return optuna.storages.JournalStorage(backend(str(path)))
    if "://" not in url:
        raise UserError(f"--storage {url!r}: an Optuna storage URL (sqlite:///PATH, postgresql://...) or journal:PATH")
    try:
        return optuna.storages.RDBStorage(url)
    except ImportError as e:  # a database driver missing, e.g. psycopg2 for postgresql://
        raise UserError(f"--storage {url!r} needs a database driver that is not installed: {e}") from None
    except Exception as e:  # a database that cannot be reached: the user's setup, not a bug
        raise UserError(f"--storage {url!r}: cannot open the study's database: {type(e).__name__}: {e}") from None


# -- one trial ----------------------------------------------------------------------------------------


def _pruning_callback(trial: Any, head: str, metric: str) -> Any:
    from .callbacks import Callback

    class ReportToOptuna(Callback):
        """Reports the validation metric to Optuna after each epoch; stops a trial Optuna prunes."""

        def __init__(self) -> None:
            self.values: list[float] = []
            self.pruned_after: int | None = None

        def on_epoch_end(self, trainer: Any, epoch: int, train: dict, test: dict) -> None:
            if "val" not in trainer.history[-1]:
                return  # an epoch not evaluated (train.eval_every): nothing to report
            val = trainer.history[-1]["val"].get(head, {})
            if metric not in val:
                raise UserError(f"the sweep's metric {head}.{metric} is not among the val figures of head {head!r}: {', '.join(val)}")
            value = float(val[metric])
            self.values.append(value)
            trial.report(value, epoch)
            if epoch < trainer.epochs and trial.should_prune():
                self.pruned_after = epoch
                trainer.request_stop(f"pruned by the sweep after epoch {epoch}: val {head}.{metric} {value:.4f}")

    return ReportToOptuna()


@dataclass
class _Settings:
    """What every worker needs to run trials of one sweep (picklable: sent to worker processes)."""

    base: dict[str, Any]  # the resolved recipe the trials start from (val on, --set applied)
    spaces: list[Space]
    head: str
    metric: str
    storage: str
    study: str
    sweep_dir: str
    trials: int
    threads: int  # train.threads of each trial (0: the recipe's own)
    pruner: str = "median"
    prune_startup: int = 5
    quiet: bool = False


def _lock(sweep_dir: Path):
    """An exclusive lock on the sweep directory while a worker counts trials and asks for one, so
    that workers on one machine never start more than ``trials`` (a no-op where there is no flock)."""
    import contextlib

    try:
        import fcntl
    except ImportError:  # Windows
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def held():
        with open(sweep_dir / ".ask.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    return held()


def _counted(trial: Any, optuna: Any) -> bool:
    """Whether a trial counts towards ``trials``: done, pruned, running, or failed by itself (a
    trial failed because its process was interrupted or killed is run again instead)."""
    state = trial.state
    states = optuna.trial.TrialState
    if state in (states.COMPLETE, states.PRUNED, states.RUNNING):
        return True
    return state == states.FAIL and not trial.user_attrs.get("interrupted")


def _say(settings: _Settings, text: str) -> None:
    if not settings.quiet:
        print(text, flush=True)


def _work(settings: _Settings) -> bool:
    """One worker: ask the study for trials and run them until it holds ``trials`` of them.
    True when a trial was interrupted (Ctrl-C, SIGTERM): the worker stops there."""
    optuna = _require_optuna()
    study = _make_study(optuna, settings, open_storage(settings.storage))
    sweep_dir = Path(settings.sweep_dir)
    while True:
        with _lock(sweep_dir):
            if sum(_counted(t, optuna) for t in study.get_trials(deepcopy=False)) >= settings.trials:
                return False
            trial = study.ask()
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
        if not _run_trial(study, trial, settings, optuna):
            return True  # interrupted: stop asking


def _run_trial(study: Any, trial: Any, settings: _Settings, optuna: Any) -> bool:
    """Train one trial into its run directory and tell Optuna how it went; False when it was
    interrupted (Ctrl-C, SIGTERM): the trial is marked failed-by-interruption, to be run again."""
    from .engine import runner
    from .recipe import load_recipe

    states = optuna.trial.TrialState
    values = {space.key: space.suggest(trial) for space in settings.spaces}
    run_dir = Path(settings.sweep_dir) / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    overrides = dict(values)
    if settings.threads:
        overrides["train.threads"] = settings.threads
    record: dict[str, Any] = {"study": settings.study, "trial": trial.number, "params": values,
                              "metric": f"val {settings.head}.{settings.metric}"}  # fmt: skip
    try:
        recipe = load_recipe(settings.base, overrides, grid_flag="--param")
        report = _pruning_callback(trial, settings.head, settings.metric)
        outcome = runner.start(recipe, run_dir, force=True, callbacks=[report], progress=False, preflight=False)
    except BaseException as error:
        interrupted = isinstance(error, KeyboardInterrupt)
        reason = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
        trial.set_user_attr("reason", reason)
        if interrupted:
            trial.set_user_attr("interrupted", True)
        study.tell(trial, state=states.FAIL)
        _write_trial(run_dir, {**record, "state": "failed", "reason": reason})
        _say(settings, f"trial {trial.number}: failed: {reason}")
        if interrupted:
            return False
        raise
    history = outcome.trainer.history
    test = outcome.summary["metrics"].get("test", {}).get(settings.head, {}).get(settings.metric)
    trial.set_user_attr("epochs", len(history))
    if test is not None:
        trial.set_user_attr("test", float(test))
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    if outcome.interrupted:
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=states.FAIL)
        _write_trial(run_dir, {**record, "state": "interrupted", "epochs": len(history)})
        _say(settings, f"trial {trial.number}: interrupted after {len(history)} epochs; run the sweep again to continue")
        return False
    if outcome.failure or not report.values:
        reason = outcome.failure or "no epoch completed"
        trial.set_user_attr("reason", reason)
        study.tell(trial, state=states.FAIL)
        _write_trial(run_dir, {**record, "state": "failed", "reason": reason, "epochs": len(history)})
        _say(settings, f"trial {trial.number}: failed ({reason}) [{shown}]")
        return True
    value = report.values[-1]
    if report.pruned_after is not None:
        study.tell(trial, state=states.PRUNED)
        _write_trial(run_dir, {**record, "state": "pruned", "pruned_after_epoch": report.pruned_after, "value": value, "test": test})
        _say(settings, f"trial {trial.number}: pruned after epoch {report.pruned_after}, val {settings.head}.{settings.metric} {value:.4f} [{shown}]")
    else:
        study.tell(trial, value)
        _write_trial(run_dir, {**record, "state": "complete", "value": value, "test": test, "epochs": len(history)})
        _say(settings, f"trial {trial.number}: val {settings.head}.{settings.metric} {value:.4f}, test {_fmt(test)} [{shown}]")
    return True


def _write_trial(run_dir: Path, record: dict[str, Any]) -> None:
    if not run_dir.is_dir():
        return  # the run failed before writing anything
    from .engine.rundir import write_json

    write_json(run_dir / "trial.json", record)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _worker_main(settings: _Settings) -> None:
    """A worker process's entry: one worker, its errors as one line (exit 2) rather than a traceback."""
    import sys

    try:
        if _work(settings):
            sys.exit(130)  # interrupted: the parent says how to continue
    except UserError as e:
        print(f"error: {e.message}", file=sys.stderr, flush=True)
        sys.exit(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        sys.exit(130)


# -- the sweep ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRow:
    """One trial as the sweep's table shows it."""

    number: int
    state: str  # complete, pruned, failed, running, waiting
    value: float | None  # the objective on the val split (last reported, for a pruned trial)
    test: float | None  # the same metric on the test split: reported, never used to choose
    epochs: int | None
    params: dict[str, Any]
    run_dir: str | None
    baseline: bool = False  # the recipe as it is (its own values of the swept keys)


@dataclass
class SweepResult:
    """How a sweep stands when :func:`sweep` returns."""

    sweep_dir: Path
    study: str
    storage: str
    metric: str  # HEAD.METRIC on the val split
    direction: str
    trials: list[TrialRow]
    best: TrialRow | None
    best_recipe: Path | None
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    def counts(self) -> dict[str, int]:
        """Trials by state."""
        counts: dict[str, int] = {}
        for row in self.trials:
            counts[row.state] = counts.get(row.state, 0) + 1
        return counts

    def ranked(self) -> list[TrialRow]:
        """Completed trials, best first (by the val metric alone)."""
        done = [r for r in self.trials if r.state == "complete" and r.value is not None]
        return sorted(done, key=lambda r: r.value, reverse=self.direction == "maximize")


def _strip_local(doc: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    for table, key in _LOCAL_KEYS:
        doc.get(table, {}).pop(key, None)
    return doc


@dataclass(frozen=True)
class SweepSettings:
    """How a sweep runs: ``digitsum sweep``'s options and :func:`digitsum.sweep`'s keywords.

    - ``workers``: processes on this machine running trials of the study together;
    - ``storage``: an Optuna storage URL or ``journal:PATH`` (default: ``study.journal`` in
      the sweep directory); ``study``: its name (default: the recipe's name);
    - ``metric``: ``HEAD.METRIC`` on the val split (default: the first head's primary metric),
      ``direction``: ``max`` or ``min`` (default: min for losses and errors, else max);
    - ``overrides``: laid over the recipe for every trial, as ``--set``;
    - ``out``: the sweep directory (default ``sweeps/<study>``); trials are run directories in it;
    - ``val``: samples held out as the validation split (default: the recipe's ``data.val``,
      or :data:`DEFAULT_VAL` when it has none);
    - ``pruner``: ``median`` (a trial whose val metric after an epoch is worse than the median
      of earlier trials at that epoch stops there, once ``prune_startup`` trials are done) or ``none``;
    - ``quiet``: no progress display for the trials.

    Values that cannot work are a UserError when the settings are made.
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
        if self.workers < 1:
            raise UserError(f"--workers {self.workers}: at least 1")
        if self.pruner not in ("median", "none"):
            raise UserError(f"--pruner {self.pruner!r}: {did_you_mean(self.pruner, ('median', 'none'), 'pruners')}")
        if self.prune_startup < 0:
            raise UserError(f"--prune-startup {self.prune_startup}: 0 or more")


def sweep(recipe: Recipe | str | Path | Mapping[str, Any], params: Sequence[str], trials: int,
          settings: SweepSettings = SweepSettings()) -> SweepResult:  # fmt: skip
    """Search hyper-parameters of a recipe with Optuna (``digitsum sweep``); see docs/sweeps.md.

    - ``params``: ``"KEY=SPACE"`` strings, SPACE one of ``loguniform:LOW:HIGH``,
      ``uniform:LOW:HIGH``, ``int:LOW:HIGH[:log]``, ``choice:A,B,C``;
    - ``trials``: how many trials the study holds when the sweep ends (counting those of
      earlier starts and of other workers: done, pruned, or failed by themselves);
    - ``settings``: the rest, :class:`SweepSettings`.

    Writes, in the sweep directory: the trials' run directories, ``best.toml`` (the best trial's
    recipe, with the recipe's own ``data.val``: ``digitsum run best.toml`` trains it on the
    whole training split), ``history.png``, ``importances.png`` and ``sweep.json``.
    """
    optuna = _require_optuna()
    from .recipe import Recipe, load_recipe

    if isinstance(recipe, Recipe):
        recipe = recipe.to_dict()
    spaces = parse_spaces(params)
    if trials < 1:
        raise UserError(f"--trials {trials}: at least 1")
    loaded = load_recipe(recipe, settings.overrides)
    own_val = loaded.data.section.val
    held_out = settings.val if settings.val is not None else (own_val or DEFAULT_VAL)
    if held_out < 1:
        raise UserError(f"--val {held_out}: a sweep chooses on a validation split; hold out at least one sample")
    base_recipe = load_recipe(loaded.to_dict(), {"data.val": held_out})
    check_spaces(base_recipe.to_dict(), (), spaces)
    head, metric_name, direction = _objective(base_recipe, settings.metric, settings.direction)
    _check_val(base_recipe)

    study_name = settings.study or loaded.name
    sweep_dir = Path(settings.out) if settings.out is not None else Path("sweeps") / study_name
    url = settings.storage or default_storage(sweep_dir)
    opened = open_storage(url)  # first: a storage that cannot be opened leaves no sweep directory behind
    sweep_dir.mkdir(parents=True, exist_ok=True)
    settings_attr = {"recipe": _strip_local(base_recipe.to_dict()), "params": [str(s) for s in spaces],
                     "metric": f"{head}.{metric_name}"}  # fmt: skip
    made = optuna.create_study(storage=opened, study_name=study_name, direction=direction, load_if_exists=True)
    if made.direction.name.lower() != direction:
        raise UserError(f"study {study_name!r} in {url} {made.direction.name.lower()}s its metric; this sweep would {direction} it: "
                        "give the same --direction, or another --study")  # fmt: skip
    earlier = made.user_attrs.get("digitsum")
    if earlier is None:
        made.set_user_attr("digitsum", settings_attr)
    elif earlier != settings_attr:
        differ = []
        if earlier.get("params") != settings_attr["params"]:
            differ.append(f"params ({' '.join(earlier.get('params', []))})")
        if earlier.get("metric") != settings_attr["metric"]:
            differ.append(f"metric ({earlier.get('metric')})")
        if earlier.get("recipe") != settings_attr["recipe"]:
            differ.append("recipe (the recipe, --set or --val)")
        raise UserError(f"study {study_name!r} in {url} was started with another {' and another '.join(differ)}: "
                        "continue it with the same recipe, --set, --val and --param, or start another with --study NAME")  # fmt: skip
    notes = _recover(made, optuna)
    notes += _enqueue_baseline(made, base_recipe.to_dict(), spaces)

    threads = 0
    if settings.workers > 1 and base_recipe.train.threads == 0:
        threads = max(1, (os.cpu_count() or 1) // settings.workers)  # one share of the cores per worker, not all of them each
    work = _Settings(base_recipe.to_dict(), spaces, head, metric_name, url, study_name, str(sweep_dir.resolve()),
                     trials, threads, settings.pruner, settings.prune_startup, settings.quiet)  # fmt: skip
    interrupted = False
    try:
        if settings.workers == 1:
            interrupted = _work(work)
        else:
            interrupted = _run_workers(work, settings.workers)
    except KeyboardInterrupt:
        interrupted = True
    result = _result(optuna, study_name, url, sweep_dir, head, metric_name, direction, notes, interrupted)
    _write_outputs(result, optuna, opened, base_recipe, own_val)
    return result


def _check_val(recipe: Any) -> None:
    """The recipe's generator gives the validation split (a UserError before any trial otherwise)."""
    from .engine.build import build
    from .engine.train import check_val_split

    check_val_split(recipe, build(recipe, "cpu").generator)


def _make_study(optuna: Any, settings: _Settings, storage: Any) -> Any:
    """The study as a worker uses it: the pruner and the sampler are not stored with a study,
    each worker makes its own."""
    if settings.pruner == "median":
        chosen = optuna.pruners.MedianPruner(n_startup_trials=settings.prune_startup, n_warmup_steps=0)
    else:
        chosen = optuna.pruners.NopPruner()
    # TPE once a third of the trials (at least 2, at most Optuna's 10) sampled the space at random
    sampler = optuna.samplers.TPESampler(n_startup_trials=min(10, max(2, settings.trials // 3)))
    return optuna.load_study(study_name=settings.study, storage=storage, pruner=chosen, sampler=sampler)


def _alive(pid: Any) -> bool:
    """Whether a process with this id runs on this machine."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _recover(study: Any, optuna: Any) -> list[str]:
    """Trials this machine was running when its processes died (killed, power cut) are marked
    failed-by-interruption; every such trial not yet retried is queued to run again with its
    values. Returns what was done, as notes."""
    states = optuna.trial.TrialState
    storage = study._storage  # Optuna's own way to change a trial that no live process holds
    host, notes = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") == host and not _alive(pid):
            storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            storage.set_trial_state_values(trial._trial_id, states.FAIL)
            notes.append(f"trial {trial.number} was left running by process {pid}, which is gone: marked failed")
            run_dir = trial.user_attrs.get("run_dir")
            if run_dir:  # its run directory says so too (it is run again in a new one)
                _write_trial(Path(run_dir), {"study": study.study_name, "trial": trial.number, "params": dict(trial.params),
                                             "state": "interrupted", "reason": f"its process ({pid}) was gone when the sweep started again"})  # fmt: skip
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for trial in trials:
        if trial.state == states.FAIL and trial.user_attrs.get("interrupted") and trial.number not in retried:
            study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
            notes.append(f"trial {trial.number} was interrupted: queued to run again with its values")
    return notes


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


def _run_workers(settings: _Settings, workers: int) -> bool:
    """Run ``workers`` worker processes on the study until they end; True when interrupted.

    Ctrl-C reaches the workers too (one process group): each stops its trial with a checkpoint
    and marks it interrupted; SIGTERM sent to this process alone is passed on to them.
    """
    import multiprocessing
    import signal

    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch state
    processes = [context.Process(target=_worker_main, args=(settings,), name=f"digitsum-sweep-{i}") for i in range(workers)]
    for process in processes:
        process.start()

    def forward(signum: int, frame: Any) -> None:
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, forward)
    interrupted = False
    try:
        for process in processes:
            try:
                process.join()
            except KeyboardInterrupt:
                interrupted = True
                for other in processes:
                    other.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    codes = [p.exitcode for p in processes]
    interrupted = interrupted or any(c in (130, -2, -15) for c in codes)
    failed = [c for c in codes if c not in (0, 130, -2, -15)]
    if failed and not interrupted:
        raise UserError(f"{len(failed)} of {workers} sweep workers failed (exit codes {', '.join(map(str, failed))}): "
                        "their errors are above; run the sweep again to continue the study")  # fmt: skip
    return interrupted


_STATE_NAMES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def _row(trial: Any) -> TrialRow:
    state = _STATE_NAMES.get(trial.state.name, trial.state.name.lower())
    if state == "failed" and trial.user_attrs.get("interrupted"):
        state = "interrupted"
    value = trial.value if state == "complete" else None
    if state == "pruned" and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    return TrialRow(trial.number, state, value, trial.user_attrs.get("test"), trial.user_attrs.get("epochs"),
                    dict(trial.params), trial.user_attrs.get("run_dir"), bool(trial.user_attrs.get("baseline")))  # fmt: skip


def _result(optuna: Any, study_name: str, url: str, sweep_dir: Path, head: str, metric: str, direction: str,
            notes: list[str], interrupted: bool) -> SweepResult:  # fmt: skip
    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    rows = [_row(t) for t in study.get_trials(deepcopy=False)]
    result = SweepResult(sweep_dir, study_name, url, f"{head}.{metric}", direction, rows, None, None, [], notes, interrupted)
    ranked = result.ranked()
    result.best = ranked[0] if ranked else None
    return result


def _write_outputs(result: SweepResult, optuna: Any, storage: Any, base: Any, own_val: int) -> None:
    """best.toml, sweep.json and the plots, from the study as it stands."""
    from .engine.figures import save_figure
    from .engine.rundir import write_json, write_text
    from .recipe import load_recipe

    sweep_dir = result.sweep_dir
    best = result.best
    if best is not None:
        overrides = {**best.params, "data.val": own_val, "name": f"{base.name}-best",
                     "description": f"trial {best.number} of sweep {result.study}: val {result.metric} {best.value:.4f}"}  # fmt: skip
        recipe = load_recipe(base.to_dict(), overrides, grid_flag="--param")
        header = (f"# The best trial ({best.number}) of the sweep {result.study!r} ({result.storage}):\n"
                  f"# val {result.metric} {best.value:.4f}" + (f", test {best.test:.4f}" if best.test is not None else "") + ".\n"
                  f"# data.val is the recipe's own ({own_val}): the sweep held samples out, this recipe trains on them.\n"
                  f"# digitsum run {sweep_dir / 'best.toml'} --set train.epochs=N\n")  # fmt: skip
        result.best_recipe = sweep_dir / "best.toml"
        write_text(result.best_recipe, header + recipe.to_toml())
    study = optuna.load_study(study_name=result.study, storage=storage)
    figures = {"history.png": _history_figure(result), "importances.png": _importance_figure(study, optuna, result)}
    for name, figure in figures.items():
        if figure is not None:
            save_figure(figure, sweep_dir / name)
            result.plots.append(sweep_dir / name)
    write_json(sweep_dir / "sweep.json", {
        "study": result.study, "storage": result.storage, "metric": f"val {result.metric}", "direction": result.direction,
        "counts": result.counts(), "best": best.__dict__ if best else None,
        "best_recipe": str(result.best_recipe) if result.best_recipe else None,
        "trials": [row.__dict__ for row in result.trials], "notes": result.notes,
    })  # fmt: skip


def _history_figure(result: SweepResult) -> Any:
    """The val metric of every trial by trial number (pruned ones at their last report), and the best so far."""
    from .engine.figures import new_figure

    shown = [r for r in result.trials if r.value is not None]
    if not shown:
        return None
    figure = new_figure(figsize=(7, 4))
    ax = figure.subplots()
    for state, style in (("complete", dict(marker="o", color="tab:blue")), ("pruned", dict(marker="x", color="tab:gray"))):
        rows = [r for r in shown if r.state == state]
        ax.scatter([r.number for r in rows], [r.value for r in rows], label=f"{state} ({len(rows)})", **style)
    done = sorted((r for r in shown if r.state == "complete"), key=lambda r: r.number)
    better = max if result.direction == "maximize" else min
    best, xs, ys = None, [], []
    for row in done:
        best = row.value if best is None else better(best, row.value)
        xs.append(row.number)
        ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"val {result.metric}")
    ax.set_title(f"sweep {result.study}: optimisation history")
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    return figure


def _importance_figure(study: Any, optuna: Any, result: SweepResult) -> Any:
    """Optuna's parameter importances (its default evaluator) as a bar chart; None, with a note,
    when the finished trials cannot say (fewer than two, or values that never varied)."""
    from .engine.figures import new_figure

    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:  # Optuna warns of too few trials: a note, not noise
            warnings.simplefilter("always")
            importances = optuna.importance.get_param_importances(study)
        result.notes.extend(f"parameter importances: {w.message}" for w in caught)
    except Exception as e:  # too few trials, one value only, an evaluator's library missing
        result.notes.append(f"no parameter importances: {' '.join(str(e).split()) or type(e).__name__}")
        return None
    if not importances:
        result.notes.append("no parameter importances: no finished trial varied a parameter")
        return None
    names = list(importances)[::-1]
    figure = new_figure(figsize=(7, 1 + 0.5 * len(names)))
    ax = figure.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel(f"importance for val {result.metric}")
    ax.set_title(f"sweep {result.study}: parameter importances")
    figure.tight_layout()
    return figure
