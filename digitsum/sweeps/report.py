"""What a sweep hands back and leaves behind: the :class:`SweepResult`, ``best.toml`` (the best
trial's recipe), ``sweep.json`` and the figures (``history.png``, ``importances.png``)."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from ..files import write_json, write_text
from .storage import open_storage, redact


@dataclass(frozen=True)
class TrialRow:
    """One trial as the sweep's table shows it."""

    number: int
    state: str  # complete, pruned, failed, interrupted, running, waiting
    value: float | None  # the objective on the val split (last reported, for a pruned trial)
    test: float | None  # the same metric on the test split: reported, never used to choose
    epochs: int | None
    params: dict[str, Any]
    run_dir: str | None
    baseline: bool = False  # the recipe as it is (its own values of the swept keys)


@dataclass
class SweepResult:
    """How a sweep stands when :func:`~digitsum.sweeps.sweep` returns (``storage``: its URL with
    any password hidden, as it is shown and written)."""

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
        return dict(Counter(row.state for row in self.trials))

    def ranked(self) -> list[TrialRow]:
        """Completed trials, best first (by the val metric alone)."""
        done = [r for r in self.trials if r.state == "complete" and r.value is not None]
        return sorted(done, key=lambda r: r.value, reverse=self.direction == "maximize")


def _row(trial: Any) -> TrialRow:
    state = "failed" if trial.state.name == "FAIL" else trial.state.name.lower()
    if state == "failed" and trial.user_attrs.get("interrupted"):
        state = "interrupted"
    value = trial.value if state == "complete" else None
    if state == "pruned" and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    attrs = trial.user_attrs
    return TrialRow(trial.number, state, value, attrs.get("test"), attrs.get("epochs"), dict(trial.params),
                    attrs.get("run_dir"), bool(attrs.get("baseline")))  # fmt: skip


def read_result(optuna: Any, study_name: str, url: str, sweep_dir: Path, head: str, metric: str, direction: str,
                notes: list[str], interrupted: bool) -> SweepResult:  # fmt: skip
    """The study as it stands, its best trial chosen on the val metric."""
    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    rows = [_row(t) for t in study.get_trials(deepcopy=False)]
    found = SweepResult(sweep_dir, study_name, redact(url), f"{head}.{metric}", direction, rows, None, None, [], notes, interrupted)
    found.best = next(iter(found.ranked()), None)
    return found


def write_outputs(result: SweepResult, optuna: Any, storage: Any, base: Any, own_val: int, label: str = "<dict>") -> None:
    """best.toml, sweep.json and the plots, from the study as it stands (``label``: what the
    problems of ``base``, the recipe swept, would name)."""
    from ..engine.figures import save_figure
    from ..recipe import load_recipe

    sweep_dir, best = result.sweep_dir, result.best
    if best is not None:
        overrides = {**best.params, "data.val": own_val, "name": f"{base.name}-best",
                     "description": f"trial {best.number} of sweep {result.study}: val {result.metric} {best.value:.4f}"}  # fmt: skip
        recipe = load_recipe(base.to_dict(), overrides, grid_flag="--param", label=label)
        header = (f"# The best trial ({best.number}) of the sweep {result.study!r} ({result.storage}):\n"
                  f"# val {result.metric} {best.value:.4f}" + (f", test {best.test:.4f}" if best.test is not None else "") + ".\n"
                  f"# data.val is the recipe's own ({own_val}): the sweep held samples out, this recipe trains on them.\n"
                  f"# digitsum run {sweep_dir / 'best.toml'} --set train.epochs=N\n")  # fmt: skip
        result.best_recipe = sweep_dir / "best.toml"
        write_text(result.best_recipe, header + recipe.to_toml())
    study = optuna.load_study(study_name=result.study, storage=storage)
    for name, figure in (("history.png", _history_figure(result)), ("importances.png", _importance_figure(result, study, optuna))):
        if figure is not None:
            save_figure(figure, sweep_dir / name)
            result.plots.append(sweep_dir / name)
    write_json(sweep_dir / "sweep.json", {
        "study": result.study, "storage": result.storage, "metric": f"val {result.metric}", "direction": result.direction,
        "counts": result.counts(), "best": best.__dict__ if best else None,
        "best_recipe": str(result.best_recipe) if result.best_recipe else None,
        "trials": [row.__dict__ for row in result.trials], "notes": result.notes,
    })  # fmt: skip


def _figure(result: SweepResult, height: float, title: str) -> tuple[Any, Any]:
    """A figure 7 inches wide and ``height`` high, and its axes, titled for the sweep."""
    from ..engine.figures import new_figure

    figure = new_figure(figsize=(7, height))
    ax = figure.subplots()
    ax.set_title(f"sweep {result.study}: {title}")
    return figure, ax


def _history_figure(result: SweepResult) -> Any:
    """The val metric of every trial by trial number (pruned ones at their last report), and the best so far."""
    shown = [r for r in result.trials if r.value is not None]
    if not shown:
        return None
    figure, ax = _figure(result, 4, "optimisation history")
    for state, color, marker in (("complete", "tab:blue", "o"), ("pruned", "tab:gray", "x")):
        rows = [r for r in shown if r.state == state]
        ax.scatter([r.number for r in rows], [r.value for r in rows], label=f"{state} ({len(rows)})", marker=marker, color=color)
    done = sorted((r for r in shown if r.state == "complete"), key=lambda r: r.number)
    if done:
        best = accumulate((r.value for r in done), max if result.direction == "maximize" else min)
        ax.step([r.number for r in done], list(best), where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"val {result.metric}")
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    return figure


def _importance_figure(result: SweepResult, study: Any, optuna: Any) -> Any:
    """Optuna's parameter importances (its default evaluator) as a bar chart; None, with a note,
    when the finished trials cannot say (fewer than two, or values that never varied)."""
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
    figure, ax = _figure(result, 1 + 0.5 * len(names), "parameter importances")
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel(f"importance for val {result.metric}")
    figure.tight_layout()
    return figure
