"""Built-in loggers: metrics.jsonl (always on), a CSV file, TensorBoard and MLflow.

Each is a callback built from a ``[log.<name>]`` table of a recipe. The libraries of
TensorBoard and MLflow are imported inside the hooks, never here: listing loggers, or loading
a recipe that names one, imports neither (a missing one is reported by ``Logger.unavailable``).
"""

from __future__ import annotations

import csv
import io
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ..contracts import Logger, Params
from ..engine.rundir import MetricsLog, write_text
from ..sidecar import LOGGER_TARGETS, Sidecar

if TYPE_CHECKING:
    from ..engine.train import Trainer

SPLITS = ("train", "val", "test")
#: Figures of the training split besides the heads' metrics, as metrics.jsonl records them.
EPOCH_FIGURES = ("lr", "samples_per_s", "seconds")
#: The pictures the Pictures callback writes into every run directory at its end.
PICTURES = ("curves.png", "samples.png")


def scalars(trainer: Trainer, train: dict, test: dict) -> dict[str, float]:
    """One epoch's figures under the names TensorBoard and MLflow show: ``test/digit/accuracy``,
    ``train/sum/loss``, ``val/...`` (a run holding a validation split out), ..., and
    ``train/lr``, ``train/samples_per_s``, ``train/seconds``."""
    val = trainer.history[-1].get("val", {}) if trainer.history else {}
    values = {f"{split}/{head}/{metric}": float(value)
              for split, heads in zip(SPLITS, (train, val, test)) for head, metrics in heads.items()
              for metric, value in metrics.items()}  # fmt: skip
    values.update({f"train/{k}": float(trainer.epoch_record[k]) for k in EPOCH_FIGURES if k in trainer.epoch_record})
    return values


def flat_recipe(doc: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A resolved recipe as dotted keys and text values: ``{"train.optimizer.lr": "0.004", ...}``."""
    import json

    flat: dict[str, str] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(flat_recipe(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return flat


class Jsonl(Logger):
    """metrics.jsonl in the run directory: one JSON line per epoch and split (always on)."""

    contract = 1
    # The trainer itself writes metrics.jsonl for every run: it is part of the run directory
    # (Run.metrics, `--resume` and `compare` read it), so there is nothing to switch on or off
    # here; naming it in a recipe ([log.jsonl]) changes nothing.


class Csv(Logger):
    """metrics.csv in the run directory: a row per epoch and split, a column per figure (head.metric, lr, ...)."""

    contract = 1

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None:
        # made again from metrics.jsonl each epoch: a resumed run's file is right without any state
        records = MetricsLog(trainer.run_dir / "metrics.jsonl").records()
        rows, columns = [], {"epoch": None, "split": None}
        for record in records:
            row = {k: v for k, v in record.items() if k != "heads"}
            for head, metrics in (record.get("heads") or {}).items():
                row.update({f"{head}.{metric}": value for metric, value in metrics.items()})
            columns.update(dict.fromkeys(row))
            rows.append(row)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(trainer.run_dir / "metrics.csv", text.getvalue())


class TensorBoard(Logger):
    """TensorBoard event files in the run directory: per epoch each split's metrics, lr and samples/s; the pictures; the recipe."""

    contract = 1
    requires = ("tensorboard",)
    install = 'pip install "digitsum[tensorboard]"'

    class Params(Params):
        images: bool = Field(True, description="add the run's pictures (curves.png, samples.png) as images when it ends")

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        # TensorBoard's import and every event's writing run in a process of their own
        # (components/tensorboard_events.py), beside the run's start-up and training, as MLflow's do
        self.events = Sidecar(LOGGER_TARGETS["tensorboard"], "log.tensorboard")

    def on_start(self, trainer: Trainer) -> None:
        # The run directory is the event folder, so `tensorboard --logdir runs` names each run by
        # its directory. A resumed run writes a new event file there, whose purge step makes
        # TensorBoard drop what an interrupted run had logged past its last checkpoint: steps
        # (epochs) continue, one run.
        purge = trainer.epochs_done + 1 if trainer.resumed else None
        self.events.call("open", str(trainer.run_dir), purge)
        if not trainer.resumed:
            recipe = (trainer.run_dir / "recipe.toml").read_text(encoding="utf-8")
            # four spaces: a code block in TensorBoard's markdown
            self.events.call("text", "recipe", "\n".join("    " + line for line in recipe.splitlines()), 0)

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None:
        self.events.check()  # an event file that cannot be written stops the run now, not after its last epoch
        self.events.call("scalars", scalars(trainer, train, test), epoch, time.time())

    def on_end(self, trainer: Trainer, summary: dict) -> None:
        if self.params.images:
            for name in PICTURES:
                path = trainer.run_dir / name
                if path.exists():
                    self.events.call("png", Path(name).stem, str(path), trainer.epochs_done)
        self._close()

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        self.events.call("close")
        self.events.close()


class MLflow(Logger):
    """An MLflow run: the resolved recipe as params, each epoch's figures as metrics, the run directory as artifacts."""

    contract = 1
    requires = ("mlflow",)
    install = 'pip install "digitsum[mlflow]"'

    class Params(Params):
        tracking_uri: str | None = Field(
            None,
            description="where MLflow keeps runs: a database URL, a folder or a server; default: MLflow's own "
            "($MLFLOW_TRACKING_URI, else mlflow.db and mlruns/ in the working folder)",
        )
        experiment: str = Field("digitsum", min_length=1, description="the MLflow experiment the run belongs to")
        run_name: str | None = Field(None, description="the MLflow run's name; default: the recipe and the run directory's name")
        artifacts: bool = Field(True, description="copy the run directory's files to the MLflow run when training ends")

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        # Importing MLflow and opening its store take seconds of Python work, and each call to
        # a store is a database transaction: all of it runs in a process of its own, overlapping
        # the run's start-up (`digitsum run` starts that process before it imports torch:
        # sidecar.warm_up_loggers); training waits only at the end, for the last calls.
        self.store = Sidecar(LOGGER_TARGETS["mlflow"], "log.mlflow",
                             experiment=params.experiment, tracking_uri=params.tracking_uri)  # fmt: skip
        self.resumed: dict[str, str] | None = None  # the MLflow run a resumed run goes on with
        self.started: Future | None = None  # answers the run's id and store (see state_dict)
        self.key: str | None = None  # names the MLflow run before the store has answered (state_dict)

    def on_start(self, trainer: Trainer) -> None:
        import uuid

        name = self.params.run_name or f"{trainer.recipe.name} {trainer.run_dir.name}"
        self.key = (self.resumed or {}).get("run_key") or uuid.uuid4().hex
        tags = {"digitsum.run_dir": str(trainer.run_dir.resolve()), "digitsum.recipe": trainer.recipe.name,
                "digitsum.run_key": self.key}  # fmt: skip
        self.started = self.store.call("start", name, tags, flat_recipe(trainer.recipe.to_dict()), self.resumed)

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None:
        # an unusable store (it fails as it opens) stops the run at its first epoch's end, not
        # after its last: the store opens while the run starts, so this rarely waits
        self.store.made.exception()
        self.store.check()
        self.store.call("metrics", epoch, scalars(trainer, train, test), int(time.time() * 1000))

    def on_end(self, trainer: Trainer, summary: dict) -> None:
        artifacts = str(trainer.run_dir) if self.params.artifacts else None
        self.store.call("end", "FINISHED" if trainer.finished else "KILLED", artifacts)
        self.store.close()

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        self.store.call("end", "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED", None)
        self.store.close()

    def state_dict(self) -> dict[str, Any]:
        # A checkpoint names the MLflow run, and never waits for it: the store works at the
        # lowest priority beside training, and the first epoch's checkpoint would otherwise wait
        # for it to create the run (half a second of a two-epoch run). Until the store has
        # answered, the run's key names it: a resume finds the MLflow run by that tag.
        if self.started is not None and self.started.done() and self.started.exception() is None:
            return self.started.result()
        if self.resumed:
            return dict(self.resumed)
        return {"run_key": self.key} if self.key else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.resumed = dict(state) if state.get("run_id") or state.get("run_key") else None
