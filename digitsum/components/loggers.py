"""Built-in loggers: metrics.jsonl (always on), a CSV file, TensorBoard and MLflow.

Each is a callback built from a ``[log.<name>]`` table of a recipe. The libraries of
TensorBoard and MLflow are imported inside the hooks, never here: listing loggers, or loading
a recipe that names one, imports neither (a missing one is reported by ``Logger.unavailable``).
"""

from __future__ import annotations

import csv
import importlib
import io
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ..contracts import Logger, Params
from ..engine.rundir import MetricsLog, write_text
from ..errors import UserError

if TYPE_CHECKING:
    from ..engine.train import Trainer

SPLITS = ("train", "val", "test")
#: Figures of the training split besides the heads' metrics, as metrics.jsonl records them.
EPOCH_FIGURES = ("lr", "samples_per_s", "seconds")
#: The pictures the Pictures callback writes into every run directory at its end.
PICTURES = ("curves.png", "samples.png")


class Background:
    """A logger's slow work (importing its library, talking to its store), done in order on one
    daemon thread so that training never waits for it. Started when the logger is made, it
    imports and opens while the run loads its data; the hooks only queue their calls.
    :meth:`wait` returns when everything queued is done, and raises the first error any of it
    raised (work queued after an error is skipped: it would fail the same way)."""

    def __init__(self, name: str) -> None:
        self._queue: queue.Queue[tuple[Callable[[], object] | None, threading.Event | None]] = queue.Queue()
        self._error: BaseException | None = None
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def submit(self, work: Callable[[], object]) -> None:
        self._queue.put((work, None))

    def wait(self) -> None:
        done = threading.Event()
        self._queue.put((None, done))
        done.wait()
        self.check()

    def check(self) -> None:
        """Raise the error the work raised so far, if any, without waiting."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _loop(self) -> None:
        while True:
            work, done = self._queue.get()
            if done is not None:
                done.set()
            elif self._error is None:
                try:
                    work()
                except Exception as e:  # raised again by wait(), in the hook that waits
                    self._error = e


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
        self.writer = None
        # importing it takes more than a second: done before training, in the background
        self._warm = Background("digitsum-tensorboard-import")
        self._warm.submit(lambda: importlib.import_module("torch.utils.tensorboard"))

    def on_start(self, trainer: Trainer) -> None:
        self._warm.wait()
        from torch.utils.tensorboard import SummaryWriter

        # The run directory is the event folder, so `tensorboard --logdir runs` names each run by
        # its directory. A resumed run writes a new event file there, whose purge step makes
        # TensorBoard drop what an interrupted run had logged past its last checkpoint: steps
        # (epochs) continue, one run.
        purge = trainer.epochs_done + 1 if trainer.resumed else None
        self.writer = SummaryWriter(log_dir=str(trainer.run_dir), purge_step=purge)
        if not trainer.resumed:
            recipe = (trainer.run_dir / "recipe.toml").read_text(encoding="utf-8")
            # four spaces: a code block in TensorBoard's markdown
            self.writer.add_text("recipe", "\n".join("    " + line for line in recipe.splitlines()), global_step=0)

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None:
        wall = time.time()
        for tag, value in scalars(trainer, train, test).items():
            self.writer.add_scalar(tag, value, global_step=epoch, walltime=wall)
        self.writer.flush()  # `tensorboard` shows each epoch as soon as it ends

    def on_end(self, trainer: Trainer, summary: dict) -> None:
        if self.params.images:
            import numpy as np
            from PIL import Image

            for name in PICTURES:
                path = trainer.run_dir / name
                if path.exists():
                    with Image.open(path) as image:
                        pixels = np.asarray(image.convert("RGB"))
                    self.writer.add_image(Path(name).stem, pixels, global_step=trainer.epochs_done, dataformats="HWC")
        self._close()

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


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
        self.client: Any = None
        self.run_id: str | None = None
        self.tracking_uri: str | None = None  # resolved when the run starts, kept for --resume
        # Importing MLflow and opening its store take seconds, and each call to a store is a
        # database transaction: all of it runs on a thread of its own, in order, from now on;
        # training waits only at the end (on_end), for what is still queued then.
        self._work = Background("digitsum-mlflow")
        self._opened: tuple[str, Any] | None = None
        self._work.submit(self._warm_up)
        self._started = threading.Event()  # the MLflow run exists: its id can be checkpointed

    def _client_for(self, uri: str) -> Any:
        """A client of the store at ``uri``, opened once (the warm-up's, when the store is the same)."""
        if self._opened is None or self._opened[0] != uri:
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient

            try:
                client = MlflowClient(uri)
                client.get_experiment_by_name(self.params.experiment)  # opens the store (creates it if new)
            except MlflowException as e:  # a URI MLflow does not know, a store it cannot open: the user's to fix
                detail = " ".join(str(e.message if hasattr(e, "message") else e).split())
                raise UserError(f"log.mlflow: MLflow cannot use the tracking store {uri!r}: {detail[:300]} "
                                "(set log.mlflow.tracking_uri, or $MLFLOW_TRACKING_URI)") from None  # fmt: skip
            self._opened = (uri, client)
        return self._opened[1]

    def _warm_up(self) -> None:
        import mlflow

        self._client_for(self.params.tracking_uri or mlflow.get_tracking_uri())

    def on_start(self, trainer: Trainer) -> None:
        name = self.params.run_name or f"{trainer.recipe.name} {trainer.run_dir.name}"
        tags = {"digitsum.run_dir": str(trainer.run_dir.resolve()), "digitsum.recipe": trainer.recipe.name}
        recipe = flat_recipe(trainer.recipe.to_dict())
        self._work.submit(lambda: self._start(name, tags, recipe))

    def _start(self, name: str, tags: dict[str, str], recipe: dict[str, str]) -> None:
        from mlflow.entities import Param

        try:
            import mlflow

            # resolved once, then kept in the checkpoint: a resumed run goes to the same store
            # even from another working folder or with another $MLFLOW_TRACKING_URI
            self.tracking_uri = self.tracking_uri or self.params.tracking_uri or mlflow.get_tracking_uri()
            self.client = self._client_for(self.tracking_uri)
            if self.run_id is not None:  # a resumed run: the same MLflow run goes on
                self.client.update_run(self.run_id, status="RUNNING")
                return
            experiment = self.client.get_experiment_by_name(self.params.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.params.experiment)
            self.run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        finally:
            self._started.set()
        params = [Param(k, v[:6000]) for k, v in recipe.items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None:
        self._work.check()  # a store that failed stops the run now, not after its last epoch
        now, figures = int(time.time() * 1000), scalars(trainer, train, test)

        def log() -> None:
            from mlflow.entities import Metric

            self.client.log_batch(self.run_id, metrics=[Metric(tag, value, now, epoch) for tag, value in figures.items()])

        self._work.submit(log)

    def on_end(self, trainer: Trainer, summary: dict) -> None:
        run_dir, status = str(trainer.run_dir), "FINISHED" if trainer.finished else "KILLED"

        def end() -> None:
            if self.params.artifacts:
                self.client.log_artifacts(self.run_id, run_dir)
            self.client.set_terminated(self.run_id, status=status)

        self._work.submit(end)
        self._work.wait()

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        self._work.submit(lambda: self.client.set_terminated(self.run_id, status=status) if self.run_id else None)
        self._work.wait()

    def state_dict(self) -> dict[str, Any]:
        while not self._started.wait(timeout=0.05):  # a checkpoint names the MLflow run: it must exist
            self._work.check()  # ... unless opening the store failed (then the start never comes)
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri} if self.run_id else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")
        self.tracking_uri = state.get("tracking_uri")
