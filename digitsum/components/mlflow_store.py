"""The MLflow logger's side that talks to MLflow: it runs in a sidecar process (digitsum/sidecar.py).

Importing MLflow and opening its store take seconds of Python work; here they overlap the run's
start-up on another core instead of slowing it. This module imports MLflow, at once (so that a
sidecar warmed up before the run imports torch imports it then: ``digitsum.sidecar.warm_up``),
and digitsum's errors only, never torch; every method takes and returns JSON values. Only a
sidecar imports it, once the run has checked that MLflow is installed.
"""

from __future__ import annotations

import time
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

try:  # the default store's backend (SQLite through SQLAlchemy and Alembic: 385 modules, 0.6 s),
    # imported with the rest while the run starts, not when the store opens beside training
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
except ImportError:  # another MLflow layout: imported when a store needs it
    pass

from ..errors import UserError

#: The tag naming an MLflow run by the key its digitsum run keeps in its checkpoints.
RUN_KEY = "digitsum.run_key"


class MLflowStore:
    """One MLflow run in a tracking store: made (MLflow imported, the store opened) as soon as
    the sidecar starts, then started, given metrics per epoch, and ended."""

    def __init__(self, experiment: str, tracking_uri: str | None) -> None:
        self.experiment = experiment
        self._opened: tuple[str, Any] | None = None
        self.client = self._client_for(tracking_uri or mlflow.get_tracking_uri())
        self.run_id: str | None = None

    def _client_for(self, uri: str) -> Any:
        """A client of the store at ``uri``, opened once (the first one's, when the store is the same)."""
        if self._opened is None or self._opened[0] != uri:
            try:
                client = MlflowClient(uri)
                client.get_experiment_by_name(self.experiment)  # opens the store (creates it if new)
            except MlflowException as e:  # a URI MLflow does not know, a store it cannot open: the user's to fix
                detail = " ".join(str(e.message if hasattr(e, "message") else e).split())
                raise UserError(f"log.mlflow: MLflow cannot use the tracking store {uri!r}: {detail[:300]} "
                                "(set log.mlflow.tracking_uri, or $MLFLOW_TRACKING_URI)") from None  # fmt: skip
            self._opened = (uri, client)
        return self._opened[1]

    def start(self, name: str, tags: dict[str, str], params: dict[str, str], resumed: dict[str, str] | None) -> dict[str, str]:
        """Create the MLflow run, or go on with a resumed one; returns the run's id, store and
        key (``tags["digitsum.run_key"]``), which the run's checkpoints keep.

        ``resumed``: what a checkpoint kept: what :meth:`start` returned, or only the key where
        the checkpoint was taken before the store had answered; the run is then found by its
        key, and made anew if it never reached the store.
        """
        key = tags.get(RUN_KEY)
        if resumed and resumed.get("run_id"):
            # the store the run began in, even from another working folder or $MLFLOW_TRACKING_URI
            self.client = self._client_for(resumed["tracking_uri"])
            self.run_id = resumed["run_id"]
        elif resumed:
            self.run_id = self._run_with_key(resumed["run_key"])
        if self.run_id is not None:
            self.client.update_run(self.run_id, status="RUNNING")
            return {"run_id": self.run_id, "tracking_uri": self._opened[0], "run_key": key}
        self.run_id = self.client.create_run(self._experiment_id(), run_name=name, tags=tags).info.run_id
        listed = [Param(k, v[:6000]) for k, v in params.items()]
        for first in range(0, len(listed), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=listed[first : first + 100])
        return {"run_id": self.run_id, "tracking_uri": self._opened[0], "run_key": key}

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment)
        return experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)

    def _run_with_key(self, key: str) -> str | None:
        """The id of the run tagged with ``key`` in this store's experiment, or None."""
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return None
        found = self.client.search_runs([experiment.experiment_id], filter_string=f"tags.`{RUN_KEY}` = '{key}'", max_results=1)
        return found[0].info.run_id if found else None

    def metrics(self, epoch: int, figures: dict[str, float], wall_ms: int) -> None:
        """One epoch's figures, at step ``epoch``."""
        self.client.log_batch(self.run_id, metrics=[Metric(tag, value, wall_ms, epoch) for tag, value in figures.items()])

    def end(self, status: str, artifacts: str | None) -> None:
        """Copy the folder ``artifacts`` (the run directory) to the run, if given, and end it with ``status``."""
        if self.run_id is None:  # the run never started (its start failed, or training did)
            return
        if artifacts:
            self.client.log_artifacts(self.run_id, artifacts)
        self.client.set_terminated(self.run_id, status=status, end_time=int(time.time() * 1000))
