"""One trial: a run directory (``<sweep>/trial-0003/``) trained through the one training path, its
val metric reported to Optuna after each epoch (pruned: it stops), its ``trial.json``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import write_json
from ..errors import UserError
from .space import Space


@dataclass
class Plan:
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


def pruning_callback(trial: Any, head: str, metric: str) -> Any:
    """A callback that reports the val ``head.metric`` to Optuna after each evaluated epoch and
    stops the run when Optuna prunes the trial (``values``, ``pruned_after`` say what it saw)."""
    from ..callbacks import Callback  # imports torch: only once a trial runs

    class ReportToOptuna(Callback):
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


def run_trial(study: Any, trial: Any, plan: Plan, optuna: Any) -> bool:
    """Train one trial into its run directory and tell Optuna how it went; False when it was
    interrupted (Ctrl-C, SIGTERM): the trial is marked failed-by-interruption, to be run again."""
    from ..engine import runner
    from ..recipe import load_recipe

    fail = optuna.trial.TrialState.FAIL
    values = {space.key: space.suggest(trial) for space in plan.spaces}
    run_dir = Path(plan.sweep_dir) / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    overrides = {**values, "train.threads": plan.threads} if plan.threads else dict(values)
    objective = f"{plan.head}.{plan.metric}"
    record = {"study": plan.study, "trial": trial.number, "params": values, "metric": f"val {objective}"}

    def finish(state: str, told: Any, line: str, interrupted: bool = False, **fields: Any) -> bool:
        """Tell Optuna (a value, or a state), write trial.json, say ``line``; False when interrupted."""
        if "reason" in fields:
            trial.set_user_attr("reason", fields["reason"])
        if interrupted:
            trial.set_user_attr("interrupted", True)
        study.tell(trial, told) if isinstance(told, float) else study.tell(trial, state=told)
        write_trial(run_dir, {**record, "state": state, **fields})
        if not plan.quiet:
            print(f"trial {trial.number}: {line}", flush=True)
        return not interrupted

    try:
        recipe = load_recipe(plan.base, overrides, grid_flag="--param")
        report = pruning_callback(trial, plan.head, plan.metric)
        outcome = runner.start(recipe, run_dir, force=True, callbacks=[report], progress=False)
    except BaseException as error:
        reason = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
        if finish("failed", fail, f"failed: {reason}", isinstance(error, KeyboardInterrupt), reason=reason):
            raise
        return False
    epochs = len(outcome.trainer.history)
    test = outcome.summary["metrics"].get("test", {}).get(plan.head, {}).get(plan.metric)
    trial.set_user_attr("epochs", epochs)
    if test is not None:
        trial.set_user_attr("test", float(test))
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    if outcome.interrupted:
        return finish("interrupted", fail, f"interrupted after {epochs} epochs; run the sweep again to continue", True, epochs=epochs)
    if outcome.failure or not report.values:
        reason = outcome.failure or "no epoch completed"
        return finish("failed", fail, f"failed ({reason}) [{shown}]", reason=reason, epochs=epochs)
    value = report.values[-1]
    if report.pruned_after is not None:
        return finish("pruned", optuna.trial.TrialState.PRUNED, f"pruned after epoch {report.pruned_after}, val {objective} {value:.4f} [{shown}]",
                      pruned_after_epoch=report.pruned_after, value=value, test=test)  # fmt: skip
    return finish("complete", value, f"val {objective} {value:.4f}, test {_fmt(test)} [{shown}]", value=value, test=test, epochs=epochs)


def write_trial(run_dir: Path, record: dict[str, Any]) -> None:
    """``trial.json`` in a trial's run directory (none when the run failed before making it)."""
    if run_dir.is_dir():
        write_json(run_dir / "trial.json", record)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
