"""Loggers: [log.<name>] tables, a missing library, and what csv, TensorBoard and MLflow wrote,
read back with their own readers — across an interrupted and resumed run."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from digitsum.contracts import Logger
from digitsum.engine.runner import recipe_loggers, resume, start
from digitsum.errors import RecipeError, UserError, install_command
from digitsum.recipe import load_recipe
from digitsum.registry import loggers

from .conftest import RECIPES
from .runs import StopAt, tiny_args

SPLITS = ("train", "test")


def problems(overrides) -> list[str]:
    with pytest.raises(RecipeError) as e:
        load_recipe(RECIPES / "original.toml", overrides)
    return [p.render() for p in e.value.problems]


# -- recipe tables ------------------------------------------------------------------------------------


def test_logger_tables_name_the_logger_or_give_a_type(tmp_path):
    recipe = load_recipe(RECIPES / "original.toml", ["log.csv=true", 'log.second.type="csv"', "log.jsonl={}"])
    assert {name: c.section.type for name, c in recipe.log.items()} == {"csv": "csv", "second": "csv", "jsonl": "jsonl"}
    assert recipe.to_dict()["log"] == {"csv": {}, "second": {"type": "csv"}, "jsonl": {}}  # `type` only where it is not the name
    assert recipe_loggers(recipe)[0].__class__.__name__ == "Csv"
    again = tmp_path / "resolved.toml"
    again.write_text(recipe.to_toml())
    assert load_recipe(again).to_dict() == recipe.to_dict()


def test_a_child_removes_an_inherited_logger(tmp_path):
    (tmp_path / "base.toml").write_text('extends = "original"\n[log.csv]\n[log.jsonl]\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n[log]\ncsv = false\n')
    assert list(load_recipe(child).log) == ["jsonl"]
    assert problems(["log.cvs=false"]) == [
        "--set log.cvs=false log.cvs: there is no inherited logger 'cvs' to remove — nothing is inherited here"
    ]


def test_an_unknown_logger_or_parameter_is_an_error():
    found = problems(["log.tensorbord=true", "log.csv.every=2", "log=3"])
    assert found == ["--set log=3 log: must be a table of loggers, [log.<name>] (got 3)"]
    found = problems(["log.tensorbord=true", "log.csv.every=2"])
    assert any(p.startswith("--set log.tensorbord=true log.tensorbord.type: unknown logger 'tensorbord' — did you mean 'tensorboard'?")
               for p in found), found  # fmt: skip
    assert any("log.csv.every: unknown key" in p and "[logger 'csv']" in p for p in found), found


@pytest.fixture
def missing_library_logger():
    @loggers.register("needs_missing")
    class NeedsMissing(Logger):
        """A logger whose library is not installed."""

        requires = ("digitsum_surely_not_installed",)
        install = 'pip install "digitsum[missing]"'

    yield NeedsMissing
    loggers.remove("needs_missing")


def test_a_logger_whose_library_is_missing_is_refused_before_training(missing_library_logger, cli, tiny_data, tmp_path):
    message = "logger 'needs_missing' needs digitsum_surely_not_installed, which is not installed: pip install \"digitsum[missing]\""
    assert problems(["log.needs_missing=true"]) == [f"--set log.needs_missing=true log.needs_missing: {message}"]
    result = cli("run", "original", "--set", "log.needs_missing=true", "--out", tmp_path / "run")
    assert result.code == 2 and message in result.err and "Traceback" not in result.err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    # a run read back (eval, predict) needs none of its loggers; a run started or resumed does
    recipe = load_recipe(RECIPES / "original.toml", ["log.needs_missing=true"], require_loggers=False)
    with pytest.raises(UserError, match="log.needs_missing: " + message.replace("[", r"\[").replace("]", r"\]")):
        recipe_loggers(recipe)


@pytest.mark.parametrize("where", ["wheel", "wheel-beside-another-pyproject", "checkout", "inside-the-checkout"])
def test_the_install_command_of_an_extra_keeps_a_checkout_a_checkout(monkeypatch, tmp_path, where):
    # `pip install "digitsum[onnx]"` in an environment holding an editable checkout would replace
    # it by a released digitsum: the command names the checkout instead
    from digitsum import errors

    root = tmp_path / "my checkout"
    (root / "digitsum").mkdir(parents=True)
    if where != "wheel":  # site-packages holding another project's stray pyproject.toml is still no checkout
        (root / "pyproject.toml").write_text(f'[project]\nname = "{"other" if "another" in where else "digitsum"}"\n')
    monkeypatch.setattr(errors, "__file__", str(root / "digitsum" / "errors.py"))
    monkeypatch.chdir(root if where == "inside-the-checkout" else tmp_path)
    expected = {"wheel": 'pip install "digitsum[onnx]"', "wheel-beside-another-pyproject": 'pip install "digitsum[onnx]"',
                "checkout": f'pip install -e "{root}[onnx]"',
                "inside-the-checkout": 'pip install -e ".[onnx]"'}  # fmt: skip
    assert install_command("onnx") == expected[where]


def test_the_missing_extra_is_named_for_tensorboard_and_mlflow(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("tensorboard", "mlflow") else real(name, *a))
    found = problems(["log.tensorboard=true", "log.mlflow=true"])
    assert found == [
        "--set log.tensorboard=true log.tensorboard: logger 'tensorboard' needs tensorboard, which is not installed: "
        'pip install "digitsum[tensorboard]"',
        "--set log.mlflow=true log.mlflow: logger 'mlflow' needs mlflow, which is not installed: pip install \"digitsum[mlflow]\"",
    ]  # fmt: skip


# -- a logged run, interrupted in its second epoch and resumed ----------------------------------------------


@pytest.fixture(scope="module")
def logged_run(tiny_root, tmp_path_factory, mlflow_uri) -> Path:
    """``original`` for two tiny epochs with the csv, TensorBoard and MLflow loggers, stopped in
    the second epoch and resumed: one run directory, one TensorBoard run, one MLflow run."""
    pytest.importorskip("tensorboard")
    run_dir = tmp_path_factory.mktemp("logged") / "run"
    loggers_on = ["log.csv=true", "log.tensorboard=true", f"log.mlflow.tracking_uri='{mlflow_uri}'", "log.mlflow.experiment='tests'"]
    recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 2, 64, *loggers_on))
    stopped = start(recipe, run_dir, callbacks=[StopAt(2, 2)], progress=False, preflight=False)
    assert not stopped.trainer.finished and stopped.trainer.epochs_done == 1
    assert resume(run_dir, progress=False).trainer.finished
    return run_dir


def jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def expected_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard and MLflow should hold, from metrics.jsonl: tag -> [(epoch, value)]."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in jsonl(run_dir):
        for head, metrics in record["heads"].items():
            for metric, value in metrics.items():
                expected.setdefault(f"{record['split']}/{head}/{metric}", []).append((record["epoch"], value))
        for key in ("lr", "samples_per_s", "seconds"):
            if key in record:
                expected.setdefault(f"train/{key}", []).append((record["epoch"], record[key]))
    return expected


def test_csv_has_a_row_per_epoch_and_split(logged_run):
    import csv

    rows = list(csv.DictReader((logged_run / "metrics.csv").open()))
    assert [(r["epoch"], r["split"]) for r in rows] == [("1", "train"), ("1", "test"), ("2", "train"), ("2", "test")]
    for row, record in zip(rows, jsonl(logged_run)):
        assert float(row["digit.accuracy"]) == record["heads"]["digit"]["accuracy"]
        assert row["lr"] == (str(record["lr"]) if "lr" in record else "")


def test_tensorboard_shows_one_run_whose_epochs_continue(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list(logged_run.glob("events.out.tfevents.*"))) == 2  # one per process: started, resumed
    events = EventAccumulator(str(logged_run), size_guidance={"images": 0, "scalars": 0, "tensors": 0}).Reload()
    tags = events.Tags()
    for tag, points in expected_scalars(logged_run).items():
        found = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in found] == [1, 2], tag  # epochs 1 and 2, once each: one run
        assert [v for _, v in found] == pytest.approx([v for _, v in points], rel=1e-6), tag
    assert {"curves", "samples"} <= set(tags["images"])
    image = events.Images("curves")[-1]
    assert image.step == 2 and image.width > 100 and image.height > 100
    assert png_pixels(image.encoded_image_string) == png_pixels((logged_run / "curves.png").read_bytes())  # the very picture of the run
    (text,) = events.Tensors("recipe/text_summary")
    assert b'name = "original"' in text.tensor_proto.string_val[0] and b"[train.optimizer]" in text.tensor_proto.string_val[0]


def png_pixels(data: bytes) -> tuple[tuple[int, int], str, bytes]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size, image.mode, image.tobytes()


def test_mlflow_keeps_one_run_with_params_metrics_and_artifacts(logged_run, mlflow_uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`digitsum.run_dir` = '{logged_run.resolve()}'")
    assert len(runs) == 1  # the resumed run went on in the same MLflow run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == f"original {logged_run.name}"
    params = run.data.params
    assert params["train.optimizer.type"] == "adamw" and float(params["train.optimizer.lr"]) == 0.004
    assert params["train.schedule.momentum"] == "[0.85, 0.95]" and params["heads.sum.target"] == "sum"
    for tag, points in expected_scalars(logged_run).items():
        history = client.get_metric_history(run.info.run_id, tag)
        assert sorted((m.step, m.value) for m in history) == points, tag  # each epoch once, the very values
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"recipe.toml", "metrics.jsonl", "summary.json", "checkpoint.pt", "curves.png", "metrics.csv"} <= artifacts


def test_digitsum_run_logs_to_mlflow(cli, tiny_root, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    sets = tiny_args(tiny_root, 1, 64, f"log.mlflow.tracking_uri='{mlflow_uri}'", "log.mlflow.experiment='tests'")
    result = cli("run", "original", *[a for s in sets for a in ("--set", s)], "--out", run_dir)
    assert result.code == 0, result.err
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("tests")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`digitsum.run_dir` = '{run_dir.resolve()}'")
    assert run.info.status == "FINISHED" and "test/sum/accuracy" in run.data.metrics


@pytest.mark.parametrize("store", ["nosuchscheme://nowhere", "sqlite:///{tmp}/notes.txt"])  # the second: a file that is no database
def test_an_mlflow_store_that_fails_stops_the_run_before_it_trains(tiny_root, tmp_path, store):
    """A store that cannot be used stops the run as it starts, with a user error that names
    the logger and the store (a database driver's error was a bug in the logger, exit 1)."""
    pytest.importorskip("mlflow")
    (tmp_path / "notes.txt").write_text("my notes")
    uri = store.format(tmp=tmp_path)
    recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 3, 64, f"log.mlflow.tracking_uri='{uri}'"))
    with pytest.raises(UserError, match=f"log.mlflow: MLflow cannot use the tracking store '{re.escape(uri)}'") as refused:
        start(recipe, tmp_path / "run", progress=False, preflight=False)
    assert type(refused.value) is UserError  # not a ComponentError: the URI is the user's
    # nothing trained: the run directory is taken back, so the same --out works once the URI is
    # mended (was: a "failed" run left there, and a rerun told to --resume or --force it)
    assert not (tmp_path / "run").exists() and "records the failure" not in refused.value.message
    assert (tmp_path / "notes.txt").read_text() == "my notes"


def test_an_mlflow_artifact_folder_behind_a_file_is_refused_as_the_run_starts(tiny_root, tmp_path, monkeypatch):
    # was: the whole run trained, then a NotADirectoryError "bug in the logger's code" (exit 1) at its end
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns").write_text("my notes")
    recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1, 64, f"log.mlflow.tracking_uri='sqlite:///{tmp_path}/m.db'",
                                                             f"log.mlflow.experiment='{tmp_path.name}'"))  # fmt: skip
    with pytest.raises(UserError, match=f"and {tmp_path / 'mlruns'} is a file, not a folder: move it away"):
        start(recipe, tmp_path / "run", progress=False, preflight=False)
    assert (tmp_path / "mlruns").read_text() == "my notes" and not (tmp_path / "run").exists()


def test_an_unreachable_mlflow_server_is_refused_at_once(tiny_root, tmp_path):
    """MLflow retries a server for minutes; a run refuses one that accepts no connection as it starts."""
    pytest.importorskip("mlflow")
    with socket.socket() as free:  # a port nothing listens on once closed
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1, 64, f"log.mlflow.tracking_uri='http://127.0.0.1:{port}'"))
    with pytest.raises(UserError, match=f"log.mlflow: cannot reach the MLflow tracking server 'http://127.0.0.1:{port}'"):
        start(recipe, tmp_path / "run", progress=False, preflight=False)


def test_a_checkpoint_naming_the_mlflow_run_by_its_key_alone_resumes_the_same_mlflow_run(tiny_root, tmp_path, mlflow_uri):
    """A checkpoint of an earlier digitsum may name its MLflow run by the key only (taken before
    the store had answered); a resume finds the run by that tag."""
    import torch
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 2, 64, f"log.mlflow.tracking_uri='{mlflow_uri}'", "log.mlflow.experiment='tests'"))
    assert not start(recipe, run_dir, callbacks=[StopAt(1, 2)], progress=False, preflight=False).trainer.finished
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    (name,) = [n for n, s in state["callbacks"].items() if "run_key" in s]
    kept = state["callbacks"][name] = {"run_key": state["callbacks"][name]["run_key"]}
    torch.save(state, run_dir / "checkpoint.pt")

    assert resume(run_dir, progress=False).trainer.finished
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("tests")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`digitsum.run_dir` = '{run_dir.resolve()}'")
    assert run.info.status == "FINISHED" and run.data.tags["digitsum.run_key"] == kept["run_key"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test/sum/accuracy")] == [1, 2]


# -- a logger that fails: the loggers after it still get that hook (their epoch, their close) ------------


class _Hooked(Logger):
    """Remembers its on_epoch_end and on_end calls; the subclass named Fails raises in ``fails_in``."""

    calls: list[str] = []
    fails_in = ""

    def _fails(self, hook):
        _Hooked.calls.append(f"{type(self).__name__}.{hook}")
        return type(self).__name__ == "Fails" and hook == self.fails_in

    def on_epoch_end(self, trainer, epoch, train, test):
        if self._fails("on_epoch_end"):
            raise OSError("the share went away")

    def on_end(self, trainer, summary):
        if self._fails("on_end"):
            raise OSError("the share went away")


@pytest.mark.parametrize("hook, calls", [
    ("on_end", ["Fails.on_epoch_end", "Records.on_epoch_end", "Fails.on_end", "Records.on_end"]),
    ("on_epoch_end", ["Fails.on_epoch_end", "Records.on_epoch_end"]),  # the next logger records the epoch all the same
])  # fmt: skip
def test_a_logger_raising_is_named_and_the_loggers_after_it_still_get_the_hook(cli, tiny_data, tmp_path, hook, calls):
    from .conftest import registered

    fails = type("Fails", (_Hooked,), {"__doc__": "Raises in one hook.", "fails_in": hook})
    records = type("Records", (_Hooked,), {"__doc__": "Records fine."})
    _Hooked.calls = []
    with registered(loggers, "fails", fails), registered(loggers, "records", records):
        result = cli("run", RECIPES / "original.toml", "--set", "train.epochs=1", "--set", "log.fails={}",
                     "--set", "log.records={}", "--out", tmp_path / "run")  # fmt: skip
    assert result.code == 1 and "Traceback" not in result.err, result.err
    assert "logger 'fails' from local" in result.err and f"raised OSError in {hook}()" in result.err
    assert _Hooked.calls == calls
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "fails" in summary["failed"] and summary["epochs"] == 1  # and `--resume` ends it again
