"""Built-in loggers: metrics.jsonl (always on), a CSV file, TensorBoard and MLflow.

TensorBoard and MLflow run in the run's own process on their libraries' public APIs, imported
inside the hooks: listing loggers, or loading a recipe that names one, imports neither.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ..contracts import Logger, Params
from ..files import MetricsLog, file_in_the_way, write_csv
from ..errors import UserError, error_text

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
    flat: dict[str, str] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(flat_recipe(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return flat


class Jsonl(Logger):
    """metrics.jsonl in the run directory: one JSON line per epoch and split (always on)."""
    # The trainer itself writes metrics.jsonl for every run: it is part of the run directory
    # (Run.metrics, `--resume` and `compare` read it), so there is nothing to switch on or off
    # here; naming it in a recipe ([log.jsonl]) changes nothing.


class Csv(Logger):
    """metrics.csv in the run directory: a row per epoch and split, a column per figure (head.metric, lr, ...)."""

    writes = ("metrics.csv",)

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None:
        # made again from metrics.jsonl each epoch: a resumed run's file is right without any state
        rows = MetricsLog(trainer.run_dir / "metrics.jsonl").flat_records()
        write_csv(trainer.run_dir / "metrics.csv", list(dict.fromkeys(["epoch", "split", *(k for row in rows for k in row)])), rows)


class TensorBoard(Logger):
    """TensorBoard event files in the run directory: per epoch each split's metrics, lr and samples/s; the pictures; the recipe."""
    requires = ("tensorboard",)
    install = 'pip install "digitsum[tensorboard]"'
    writes = ("events.out.tfevents.*",)  # SummaryWriter's event files: one per start, named by time and host
    writer: Any = None  # a SummaryWriter, from on_start

    class Params(Params):
        images: bool = Field(True, description="add the run's pictures (curves.png, samples.png) as images when it ends")

    def on_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # The run directory is the event folder, so `tensorboard --logdir runs` names each run by
        # its directory. A resumed run writes a new event file there, whose purge step makes
        # TensorBoard drop what an interrupted run had logged past its last checkpoint: steps
        # (epochs) continue, one run.
        purge = trainer.epochs_done + 1 if trainer.resumed else None
        self.writer = SummaryWriter(str(trainer.run_dir), purge_step=purge)
        if not trainer.resumed:
            recipe = (trainer.run_dir / "recipe.toml").read_text(encoding="utf-8")
            # four spaces: a code block in TensorBoard's markdown
            self.writer.add_text("recipe", "\n".join("    " + line for line in recipe.splitlines()), 0)

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None:
        now = time.time()
        for tag, value in scalars(trainer, train, test).items():
            self.writer.add_scalar(tag, value, epoch, walltime=now)
        self.writer.flush()  # `tensorboard` shows each epoch as it ends

    def on_end(self, trainer: Trainer, summary: dict) -> None:
        if self.params.images:
            import numpy as np
            from PIL import Image

            for name in PICTURES:
                path = trainer.run_dir / name
                if path.exists():
                    with Image.open(path) as picture:  # uint8 pixels: added without any rounding
                        pixels = np.asarray(picture)
                    self.writer.add_image(name.removesuffix(".png"), pixels, trainer.epochs_done, dataformats="HWC")
        self._close()

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()


class MLflow(Logger):
    """An MLflow run: the resolved recipe as params, each epoch's figures as metrics, the run directory as artifacts."""
    requires = ("mlflow",)
    install = 'pip install "digitsum[mlflow]"'
    #: How long to wait for a tracking server to accept a connection before the run is refused.
    CONNECT_SECONDS = 10.0
    client: Any = None  # an MlflowClient of the store, from on_start
    uri: str | None = None  # the store's tracking URI
    run_id: str | None = None
    key: str | None = None  # the tag ``digitsum.run_key``: names the MLflow run in checkpoints
    resumed: dict[str, str] | None = None  # what a resumed run's checkpoint kept (state_dict)

    class Params(Params):
        tracking_uri: str | None = Field(
            None,
            description="where MLflow keeps runs: a database URL, a folder or a server; default: MLflow's own "
            "($MLFLOW_TRACKING_URI, else mlflow.db and mlruns/ in the working folder)",
        )
        experiment: str = Field("digitsum", min_length=1, description="the MLflow experiment the run belongs to")
        run_name: str | None = Field(None, description="the MLflow run's name; default: the recipe and the run directory's name")
        artifacts: bool = Field(True, description="copy the run directory's files to the MLflow run when training ends")

    def on_start(self, trainer: Trainer) -> None:
        import uuid

        from mlflow.entities import Param

        resumed = self.resumed or {}
        self.key = resumed.get("run_key") or uuid.uuid4().hex
        # a resumed run goes on in the store it began in, even from another working folder or $MLFLOW_TRACKING_URI
        self._open(resumed.get("tracking_uri") or self.params.tracking_uri)
        with self._store():
            # a checkpoint of an older digitsum may name the run by its key alone
            self.run_id = resumed.get("run_id") or (self._run_with_key(self.key) if resumed else None)
            if self.run_id is not None:
                self.client.update_run(self.run_id, status="RUNNING")
                return
            name = self.params.run_name or f"{trainer.recipe.name} {trainer.run_dir.name}"
            tags = {"digitsum.run_dir": str(trainer.run_dir.resolve()), "digitsum.recipe": trainer.recipe.name,
                    "digitsum.run_key": self.key}  # fmt: skip
            run = self.client.create_run(self._experiment_id(), run_name=name, tags=tags)
            self.run_id = run.info.run_id
            if self.params.artifacts:
                self._check_artifact_folder(run.info.artifact_uri)
            params = [Param(k, v[:6000]) for k, v in flat_recipe(trainer.recipe.to_dict()).items()]
            for first in range(0, len(params), 100):  # MLflow takes at most 100 params per call
                self.client.log_batch(self.run_id, params=params[first : first + 100])

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with self._store():
            self.client.log_batch(self.run_id, metrics=[Metric(tag, value, now, epoch) for tag, value in scalars(trainer, train, test).items()])

    def on_end(self, trainer: Trainer, summary: dict) -> None:
        with self._store():
            if self.params.artifacts:
                self.client.log_artifacts(self.run_id, str(trainer.run_dir))
            self._end("FINISHED" if trainer.finished else "KILLED")

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        if self.run_id is not None:  # the run started (the store answered)
            self._end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")

    def state_dict(self) -> dict[str, Any]:
        if self.run_id is not None:
            return {"run_id": self.run_id, "tracking_uri": self.uri, "run_key": self.key}
        return {"run_key": self.key} if self.key else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.resumed = dict(state) if state.get("run_id") or state.get("run_key") else None

    def _check_artifact_folder(self, uri: str) -> None:
        """Refuse, as the run starts, a local artifact folder a file is in the way of (a file
        ``mlruns`` in the working folder): its artifacts would fail when the run ends."""
        from urllib.parse import unquote, urlparse

        parsed = urlparse(uri)
        if parsed.scheme not in ("", "file"):
            return
        blocked = file_in_the_way(Path(unquote(parsed.path)))
        if blocked is not None:  # (on_exception ends the MLflow run as failed)
            raise UserError(f"log.mlflow: the run's artifacts go to {unquote(parsed.path)}, and {blocked} is a file, not a "
                            "folder: move it away, set log.mlflow.tracking_uri, or log.mlflow.artifacts = false")  # fmt: skip

    def _open(self, uri: str | None) -> None:
        """Open the store at ``uri`` (MLflow's default where None); a UserError if it cannot be used."""
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = uri or mlflow.get_tracking_uri()
        _reach(self.uri, self.CONNECT_SECONDS)
        try:
            self.client = MlflowClient(self.uri)
            self.client.get_experiment_by_name(self.params.experiment)  # opens the store (creates it if new)
        except Exception as e:  # noqa: BLE001 - MLflow's and its database drivers' (a file that is no database): the URI's fault
            raise UserError(f"log.mlflow: MLflow cannot use the tracking store {self.uri!r}: {error_text(e, 300)} "
                            "(set log.mlflow.tracking_uri, or $MLFLOW_TRACKING_URI)") from None  # fmt: skip

    @contextlib.contextmanager
    def _store(self, what: str = "the MLflow store failed", hint: str = "") -> Iterator[None]:
        """MLflow's errors (a store it cannot open, a server that went away) as a UserError naming the logger."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as e:
            detail = " ".join(str(getattr(e, "message", e)).split())
            raise UserError(f"log.mlflow: {what}: {detail[:300]} {hint}".rstrip()) from None

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.params.experiment)
        return experiment.experiment_id if experiment else self.client.create_experiment(self.params.experiment)

    def _run_with_key(self, key: str) -> str | None:
        """The id of the run tagged with ``key`` in the experiment, or None."""
        experiment = self.client.get_experiment_by_name(self.params.experiment)
        if experiment is None:
            return None
        found = self.client.search_runs([experiment.experiment_id], filter_string=f"tags.`digitsum.run_key` = '{key}'", max_results=1)
        return found[0].info.run_id if found else None

    def _end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status, end_time=int(time.time() * 1000))


def _reach(uri: str, seconds: float) -> None:
    """Refuse, within ``seconds``, a tracking server (an http(s) URI) that accepts no connection:
    MLflow itself would retry for minutes. Other stores (a folder, a database) are MLflow's to open."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=seconds).close()
    except OSError as e:
        raise UserError(f"log.mlflow: cannot reach the MLflow tracking server {uri!r}: {e.strerror or e} "
                        "(start it, or set log.mlflow.tracking_uri, or $MLFLOW_TRACKING_URI)") from None  # fmt: skip
