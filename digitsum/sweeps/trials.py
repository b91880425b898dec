"""Running a sweep's trials: one trial (a run directory, ``<sweep>/trial-0003/``), the worker
processes asking the study for trials, and the recovery of trials a killed process left running."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import write_json
from .space import Space
from .storage import lock, open_storage, require_optuna

#: Exit codes of a worker that was interrupted (130 its own, -2 SIGINT, -15 SIGTERM).
_INTERRUPTED = (130, -2, -15)


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
    label: str = "<dict>"  # what the base recipe's problems name: "sweep of recipes/original.toml"


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
        recipe = load_recipe(plan.base, overrides, grid_flag="--param", label=plan.label)
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
    # a signal after the trial's last step (its evaluation, its pictures): the trial is whole, and
    # the worker stops there all the same (a short trial is mostly outside its steps)
    goes_on = not outcome.interruption.signum
    if outcome.failure or not report.values:
        reason = outcome.failure or "no epoch completed"
        return finish("failed", fail, f"failed ({reason}) [{shown}]", reason=reason, epochs=epochs) and goes_on
    value = report.values[-1]
    if report.pruned_after is not None:
        return finish("pruned", optuna.trial.TrialState.PRUNED, f"pruned after epoch {report.pruned_after}, val {objective} {value:.4f} [{shown}]",
                      pruned_after_epoch=report.pruned_after, value=value, test=test) and goes_on  # fmt: skip
    return finish("complete", value, f"val {objective} {value:.4f}, test {_fmt(test)} [{shown}]", value=value, test=test, epochs=epochs) and goes_on


def write_trial(run_dir: Path, record: dict[str, Any]) -> None:
    """``trial.json`` in a trial's run directory (none when the run failed before making it)."""
    if run_dir.is_dir():
        write_json(run_dir / "trial.json", record)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def make_study(optuna: Any, plan: Plan, storage: Any, worker: int = 0) -> Any:
    """The study as a worker uses it: the pruner and the sampler are not stored with a study,
    each worker makes its own.

    The sampler's seed is a function of the recipe's seed, the worker's number and the trials
    the study holds when the worker starts: one worker asks for the same trials each time the
    same sweep is run (or continued from the same point); two workers never draw the same
    random trials. Several workers finish trials in the order their machine allows, so what
    TPE learns from, and asks next, may differ between two such sweeps."""
    from ..seeding import stream_seed  # imports torch: only once a worker runs

    pruners = optuna.pruners
    chosen = pruners.MedianPruner(n_startup_trials=plan.prune_startup) if plan.pruner == "median" else pruners.NopPruner()
    study = optuna.load_study(study_name=plan.study, storage=storage, pruner=chosen)
    seed = stream_seed(plan.base.get("seed", 0), "sweep", worker, len(study.get_trials(deepcopy=False)))
    # TPE once a third of the trials (at least 2, at most Optuna's 10) sampled the space at random
    study.sampler = optuna.samplers.TPESampler(n_startup_trials=min(10, max(2, plan.trials // 3)), seed=seed % 2**32)
    return study


def work(plan: Plan, parent: int | None = None, worker: int = 0) -> bool:
    """One worker: ask the study for trials and run them until it holds ``trials`` of them.
    True when a trial was interrupted (Ctrl-C, SIGTERM): the worker stops there. A worker
    process passes its ``parent``'s id: when that process is gone (killed, so it could not pass
    the signal on), the worker asks for no further trial, rather than run the study alone."""
    optuna = require_optuna()
    study = make_study(optuna, plan, open_storage(plan.storage), worker)
    states = optuna.trial.TrialState
    while True:
        if parent is not None and os.getppid() != parent:
            print("note: the sweep that started this worker is gone: it starts no further trial", file=sys.stderr, flush=True)
            return False
        with lock(Path(plan.sweep_dir)):
            # the trials that count: done, pruned, running, or failed by themselves (one failed
            # because its process was interrupted or killed is run again instead)
            counted = [t for t in study.get_trials(deepcopy=False) if t.state in (states.COMPLETE, states.PRUNED, states.RUNNING)
                       or (t.state == states.FAIL and not t.user_attrs.get("interrupted"))]  # fmt: skip
            if len(counted) >= plan.trials:
                return False
            trial = study.ask()
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
        if not run_trial(study, trial, plan, optuna):
            return True  # interrupted: stop asking


def _worker_main(plan: Plan, worker: int) -> None:
    """A worker process's entry: one worker, its errors as one line (exit 2) rather than a traceback."""
    try:
        if work(plan, parent=os.getppid(), worker=worker):
            sys.exit(130)  # interrupted: the parent says how to continue
    except UserError as e:
        print(f"error: {e.message}", file=sys.stderr, flush=True)
        sys.exit(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        sys.exit(130)


def run_workers(plan: Plan, workers: int) -> bool:
    """Run ``workers`` worker processes on the study until they end; True when interrupted.

    Ctrl-C reaches the workers too (one process group): each stops its trial with a checkpoint
    and marks it interrupted; SIGTERM sent to this process alone is passed on to them.
    """
    import multiprocessing
    import signal

    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch state
    workers = min(workers, plan.trials)  # a worker beyond the study's trials would find none to run
    processes = [context.Process(target=_worker_main, args=(plan, i), name=f"digitsum-sweep-{i}") for i in range(workers)]
    # A spawned worker starts as `python -c ...`, which puts the working folder first on sys.path:
    # a threading.py or pickle.py there would run as code in it. PYTHONSAFEPATH keeps it off.
    safe_path = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        for process in processes:
            process.start()
    finally:
        if safe_path is None:
            del os.environ["PYTHONSAFEPATH"]
        else:
            os.environ["PYTHONSAFEPATH"] = safe_path

    def forward(signum: int, frame: Any) -> None:
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, forward)
    interrupted = False
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        interrupted = True
        for process in processes:
            process.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    codes = [p.exitcode for p in processes]
    interrupted = interrupted or any(c in _INTERRUPTED for c in codes)
    failed = [c for c in codes if c != 0 and c not in _INTERRUPTED]
    if failed and not interrupted:
        raise UserError(f"{len(failed)} of {workers} sweep workers failed (exit codes {', '.join(map(str, failed))}): "
                        "their errors are above; run the sweep again to continue the study")  # fmt: skip
    return interrupted


def _alive(pid: Any) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)  # signal 0: sends nothing, only asks
    except (TypeError, ProcessLookupError):  # no pid recorded, or no such process
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def recover(study: Any, optuna: Any, unnamed_are_ours: bool = False) -> list[str]:
    """Trials this machine was running when its processes died (killed, power cut) are marked
    failed-by-interruption; every such trial not yet retried is queued to run again with its
    values. Returns what was done, as notes.

    A worker names itself (host, pid) on a trial just after asking for it, inside the sweep
    folder's lock. A worker killed between the two leaves a running trial with no name. With
    ``unnamed_are_ours`` (the caller holds that lock and the study is the folder's own journal,
    so no other worker can be in that window now) such a trial is taken as one of ours, gone."""
    states = optuna.trial.TrialState
    storage = study._storage  # Optuna's own way to change a trial that no live process holds
    host, notes = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        unnamed = "host" not in trial.user_attrs or pid is None
        if (trial.user_attrs.get("host") == host and not _alive(pid)) or (unnamed and unnamed_are_ours):
            storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            storage.set_trial_state_values(trial._trial_id, states.FAIL)
            by = "a worker killed before it named itself" if unnamed else f"process {pid}, which is gone"
            notes.append(f"trial {trial.number} was left running by {by}: marked failed")
            run_dir = trial.user_attrs.get("run_dir")
            if run_dir:  # its run directory says so too (it is run again in a new one)
                write_trial(Path(run_dir), {"study": study.study_name, "trial": trial.number, "params": dict(trial.params),
                                            "state": "interrupted", "reason": f"its process ({pid}) was gone when the sweep started again"})  # fmt: skip
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for trial in trials:
        if trial.state == states.FAIL and trial.user_attrs.get("interrupted") and trial.number not in retried:
            study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
            notes.append(f"trial {trial.number} was interrupted: queued to run again with its values")
    return notes
