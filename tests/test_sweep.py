"""`digitsum sweep`: search spaces, the objective on the val split, workers, resuming, pruning."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from digitsum.sweeps import Space, default_direction, open_storage, parse_space, parse_spaces
from digitsum.errors import RecipeError, UserError, install_command

from .conftest import RECIPES

optuna = pytest.importorskip("optuna")

ORIGINAL = str(RECIPES / "original.toml")
LR = "train.optimizer.lr=loguniform:1e-4:3e-2"


def _tiny(tiny_root, epochs: int = 2) -> dict:
    return {"train.epochs": epochs, "data.batch_size": 64, "data.root": str(tiny_root), "data.download": False, "train.device": "cpu"}


# -- spaces ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train.optimizer.lr=loguniform:1e-4:1e-2", Space("train.optimizer.lr", "loguniform", 1e-4, 1e-2)),
        ("train.optimizer.weight_decay=uniform:0:0.1", Space("train.optimizer.weight_decay", "uniform", 0.0, 0.1)),
        ("data.batch_size=int:32:512:log", Space("data.batch_size", "int", 32, 512, True)),
        ("train.epochs=int:1:4", Space("train.epochs", "int", 1, 4)),
        ("backbone.type=choice:concat,film,embedding", Space("backbone.type", "choice", choices=("concat", "film", "embedding"))),
        ("data.normalize=choice:true,false", Space("data.normalize", "choice", choices=(True, False))),
        ("data.batch_size = choice: 32, 64", Space("data.batch_size", "choice", choices=(32, 64))),
    ],
)
def test_spaces_parse(text, expected):
    assert parse_space(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("train.optimizer.lr", "expected KEY=SPACE"),
        ("=uniform:0:1", "expected KEY=SPACE"),
        ("train.optimizer.lr=loguniorm:1e-4:1e-2", "did you mean 'loguniform'"),
        ("train.optimizer.lr=normal:0:1", "unknown space 'normal'"),
        ("train.optimizer.lr=loguniform:1e-2:1e-4", "LOW must be below HIGH"),
        ("train.optimizer.lr=loguniform:0:1e-2", "a log scale needs LOW > 0"),
        ("train.optimizer.lr=uniform:a:1", "LOW 'a' is not a number"),
        ("train.optimizer.lr=uniform:0:inf", "not a finite number"),
        ("train.optimizer.lr=uniform:0:1:2", "expected uniform:LOW:HIGH"),
        ("data.batch_size=int:32:64.5", "HIGH '64.5' is not an integer"),
        ("data.batch_size=int:32:512:lin", "can only be 'log'"),
        ("data.batch_size=int:0:512:log", "a log scale needs LOW > 0"),
        ("backbone.type=choice:", "choice needs values"),
        ("backbone.type=choice:concat,,film", "choice needs values"),
        ("backbone.type=choice:film,film", "given twice"),
        ("train.lr=loguniform:1e-4:1e-2", "--param train.optimizer.lr=loguniform:1e-4:1e-2"),
    ],
)
def test_space_errors(text, message):
    with pytest.raises(UserError, match=None) as error:
        parse_space(text)
    assert message in error.value.message


def test_a_key_given_twice_or_none():
    with pytest.raises(UserError, match="given twice"):
        parse_spaces([LR, "train.optimizer.lr=uniform:0.1:0.2"])
    with pytest.raises(UserError, match="at least one --param"):
        parse_spaces([])


def test_default_direction():
    assert default_direction("accuracy") == "maximize"
    assert default_direction("rounded_accuracy") == "maximize"
    assert default_direction("loss") == "minimize"


def test_keys_and_values_are_checked_against_the_recipe(tiny_root, tmp_path):
    import digitsum

    with pytest.raises(RecipeError) as error:
        digitsum.sweep(ORIGINAL, ["train.optimizer.lrr=loguniform:1e-4:1e-2"], 2, out=tmp_path / "s", overrides=_tiny(tiny_root), val=100)
    text = str(error.value)
    assert "--param train.optimizer.lrr" in text and "did you mean 'lr'" in text
    with pytest.raises(RecipeError) as error:  # an end of the space the component refuses
        digitsum.sweep(ORIGINAL, ["train.optimizer.weight_decay=uniform:-1:0.1"], 2, out=tmp_path / "s", overrides=_tiny(tiny_root), val=100)
    assert "train.optimizer.weight_decay" in str(error.value)
    with pytest.raises(RecipeError, match="did you mean 'film'"):
        digitsum.sweep(ORIGINAL, ["backbone.type=choice:concat,flim"], 2, out=tmp_path / "s", overrides=_tiny(tiny_root), val=100)
    # from Python, the spaces as a dict too: a list is a choice (was refused: "expected KEY=SPACE")
    with pytest.raises(RecipeError) as error:
        digitsum.sweep(ORIGINAL, {"train.optimizer.lr": "loguniform:1e-4:1e-2", "backbone.type": ["concat", "flim"],
                                  "data.batch_size": [32, 0]}, 2, out=tmp_path / "s", overrides=_tiny(tiny_root), val=100)  # fmt: skip
    text = str(error.value)
    assert "--param backbone.type=choice:concat,flim" in text and "the choice flim is refused" in text
    assert "--param data.batch_size=choice:32,0" in text and "train.optimizer.lr" not in text
    assert not (tmp_path / "s").exists()  # nothing was started


@pytest.mark.parametrize(
    "param, expected",
    [
        ("train.optimizer.lrr=loguniform:3e-4:3e-2",  # every value meets it: said once, at the --param as typed
         "--param train.optimizer.lrr=loguniform:3e-4:3e-2 train.optimizer.lrr: unknown key — did you mean 'lr'?"),
        ("train.optimizer.weight_decay=uniform:-1:0.1",  # one end refused: which, as typed, and why
         "--param train.optimizer.weight_decay=uniform:-1:0.1 train.optimizer.weight_decay: the low end -1 is refused: "
         "input should be greater than or equal to 0"),
        ("data.batch_size=int:0:64", "--param data.batch_size=int:0:64 data.batch_size: the low end 0 is refused: "),
        ("backbone.type=choice:concat,flim", "--param backbone.type=choice:concat,flim backbone.type: the choice flim is refused: "),
        ("data.type=choice:single_digit,two_images",  # a problem elsewhere that the value causes says so
         "heads.digit.target: with --param data.type=choice:single_digit,two_images (the choice two_images): "),
        ("heads.digit=choice:false",  # the objective's head removed: found here, not after a trial trained
         "--param heads.digit=choice:false heads.digit: it removes head 'digit', whose metric the sweep optimises"),
    ],
)
def test_a_refused_param_is_named_as_typed_before_any_trial(cli, tmp_path, param, expected):
    out = tmp_path / "s"
    result = cli("sweep", ORIGINAL, "--param", param, "--trials", "3", "--out", out)
    assert result.code == 2 and "Traceback" not in result.err
    assert f"error: sweep of {ORIGINAL}: 1 problem" in result.err  # the recipe it applies to, not <dict>
    assert expected in result.err, result.err
    assert "<dict>" not in result.err and "0.0003" not in result.err and "-1.0 " not in result.err
    assert not out.exists()


def test_metric_and_direction_errors(tiny_root, tmp_path):
    import digitsum

    for metric, message in (("digt.accuracy", "did you mean 'digit'"), ("digit.acuracy", "did you mean 'accuracy'"), ("digit", "HEAD.METRIC")):
        with pytest.raises(UserError) as error:
            digitsum.sweep(ORIGINAL, [LR], 2, metric=metric, out=tmp_path / "s", overrides=_tiny(tiny_root), val=100)
        assert message in error.value.message
    with pytest.raises(UserError, match="max or min"):
        digitsum.sweep(ORIGINAL, [LR], 2, direction="up", out=tmp_path / "s", overrides=_tiny(tiny_root), val=100)
    with pytest.raises(UserError, match="leaves no training samples.* 5000 is the sweep's default .*; give --val N"):
        digitsum.sweep(ORIGINAL, [LR], 2, out=tmp_path / "s", overrides=_tiny(tiny_root))  # 5000 of 512
    with pytest.raises(UserError, match=r"data.val = 600 \(.*\) leaves no training samples: MNIST's training split has 512$"):
        digitsum.sweep(ORIGINAL, [LR], 2, out=tmp_path / "s", overrides=_tiny(tiny_root), val=600)  # given: nothing to add


def test_the_cli_refuses_the_old_key_and_a_missing_optuna(cli, tiny_data, monkeypatch):
    result = cli("sweep", ORIGINAL, "--param", "train.lr=loguniform:1e-4:1e-2", "--trials", "2")
    assert result.code == 2 and "train.optimizer.lr" in result.err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    result = cli("sweep", ORIGINAL, "--param", LR, "--trials", "2")
    assert result.code == 2
    assert install_command("sweep") in result.err and "Traceback" not in result.err


def test_help_imports_neither_torch_nor_optuna():
    code = ("import sys\nfrom digitsum.cli import app\n"
            "try:\n    app(['sweep', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'optuna') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--param" in out and "--workers" in out
    assert out.strip().splitlines()[-1] == "[]"


# -- sweeps ----------------------------------------------------------------------------------------


def _trials(storage: str, name: str = "original"):
    return optuna.load_study(study_name=name, storage=open_storage(storage)).get_trials(deepcopy=False)


def test_two_workers_run_four_trials_on_one_storage(tiny_root, tmp_path, monkeypatch):
    import digitsum

    # a working folder holding files named like standard modules: no worker imports them
    here = tmp_path / "work"
    here.mkdir()
    for module in ("threading", "pickle", "socket", "json"):
        (here / f"{module}.py").write_text(f"open({str(here / (module + '.ran'))!r}, 'w').close()\n")
    monkeypatch.chdir(here)
    out = tmp_path / "s"
    result = digitsum.sweep(ORIGINAL, [LR, "data.batch_size=choice:32,64"], 4, workers=2, out=out,
                            overrides=_tiny(tiny_root, epochs=1), val=100, quiet=True)  # fmt: skip
    trials = _trials(result.storage)
    assert len(trials) == 4 and sum(result.counts().values()) == 4
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # two processes shared the study
    assert len({t.params["train.optimizer.lr"] for t in trials}) == 4  # each worker samples its own values
    assert result.storage == f"journal:{out.resolve() / 'study.journal'}"
    for trial in trials:
        run_dir = out / f"trial-{trial.number:04d}"
        record = json.loads((run_dir / "trial.json").read_text())
        assert record["params"] == trial.params
        summary = json.loads((run_dir / "summary.json").read_text())
        assert "val" in summary["metrics"] and summary["recipe"] == "original"
        assert trial.user_attrs["test"] == summary["metrics"]["test"]["digit"]["accuracy"]
    # chosen on val alone: the best trial has the highest val figure, whatever its test figure
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert result.best.number == best.number and result.best.value == best.value
    assert sorted(p.name for p in result.plots) == ["history.png", "importances.png"]
    assert all(p.stat().st_size > 1000 for p in result.plots)
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["best"]["number"] == best.number and saved["metric"] == "val digit.accuracy"
    assert not list(here.glob("*.ran"))


def test_more_workers_than_cores_are_refused_before_anything_starts(cli, tmp_path):
    from digitsum.engine.accel import usable_cores

    out = tmp_path / "s"
    result = cli("sweep", ORIGINAL, "--param", LR, "--trials", "3", "--workers", str(usable_cores() + 1), "--out", out)
    assert result.code == 2 and "Traceback" not in result.err
    assert f"--workers {usable_cores() + 1}: at most {usable_cores()}, the CPU cores" in result.err
    assert not out.exists()


def test_a_worker_whose_sweep_is_gone_starts_no_trial(tiny_root, tmp_path, monkeypatch, capfd):
    """A sweep killed outright cannot pass the signal on to its workers: each, finding its
    parent gone, asks the study for no further trial instead of running it alone for ever."""
    import digitsum
    from digitsum import sweeps
    from digitsum.sweeps.trials import work

    not_my_parent = next(pid for pid in range(2, 10**6) if pid not in (os.getppid(), os.getpid()))
    monkeypatch.setattr(sweeps, "run_workers", lambda plan, workers: work(plan, parent=not_my_parent))
    out = tmp_path / "s"
    result = digitsum.sweep(ORIGINAL, [LR], 3, workers=2, out=out, overrides=_tiny(tiny_root, epochs=1), val=100, quiet=True)
    assert "the sweep that started this worker is gone: it starts no further trial" in capfd.readouterr().err
    assert set(result.counts()) <= {"waiting"} and not list(out.glob("trial-*"))  # the recipe as it is, enqueued, waits


def test_best_recipe_runs(tiny_root, tmp_path, cli):
    import digitsum

    out = tmp_path / "s"
    result = digitsum.sweep(ORIGINAL, [LR], 2, out=out, overrides=_tiny(tiny_root, epochs=1), val=100, quiet=True)
    text = result.best_recipe.read_text()
    recipe = digitsum.load_recipe(result.best_recipe)
    assert recipe.optimizer.params.lr == pytest.approx(result.best.params["train.optimizer.lr"])
    assert recipe.data.section.val == 0  # the recipe's own: trained on the whole training split
    assert text.startswith("# The best trial")
    run = cli("run", str(result.best_recipe), "--out", str(tmp_path / "best"), "--no-preflight")
    assert run.code == 0, run.err
    assert json.loads((tmp_path / "best" / "summary.json").read_text())["recipe"] == "original-best"


def test_the_first_trial_is_the_recipe_as_it_is(tiny_root, tmp_path, cli):
    """A new study starts from the recipe's own values (a baseline to beat); a study that goes
    on gets no second one; a recipe whose value lies outside a space gets none, and says so."""
    import digitsum

    overrides = _tiny(tiny_root, epochs=1)
    first = digitsum.sweep(ORIGINAL, [LR, "data.batch_size=choice:32,64"], 1, out=tmp_path / "a", overrides=overrides,
                           val=100, quiet=True, pruner="none")  # fmt: skip
    (trial,) = _trials(first.storage)
    assert trial.params == {"train.optimizer.lr": 4e-3, "data.batch_size": 64}  # original's lr, the overridden batch size
    assert first.trials[0].baseline and any("the baseline" in note for note in first.notes)
    again = digitsum.sweep(ORIGINAL, [LR, "data.batch_size=choice:32,64"], 2, out=tmp_path / "a", overrides=overrides,
                           val=100, quiet=True, pruner="none")  # fmt: skip
    assert [row.baseline for row in again.trials] == [True, False]

    outside = digitsum.sweep(ORIGINAL, ["train.optimizer.lr=loguniform:1e-2:3e-2"], 1, out=tmp_path / "b",
                             overrides=overrides, val=100, quiet=True)  # fmt: skip
    assert not outside.trials[0].baseline and 1e-2 <= outside.trials[0].params["train.optimizer.lr"] <= 3e-2
    assert any("no baseline trial" in note and "train.optimizer.lr = 0.004" in note for note in outside.notes)


def test_a_sweep_run_again_asks_for_the_same_trials(tiny_root, tmp_path):
    """One worker: same recipe, seed and spaces -> the same trials, in the same order."""
    import digitsum

    def asked(folder: str, seed: int = 0) -> list[dict]:
        overrides = {**_tiny(tiny_root, epochs=1), "seed": seed}
        result = digitsum.sweep(ORIGINAL, [LR], 3, out=tmp_path / folder, overrides=overrides, val=100, quiet=True, pruner="none")
        return [t.params for t in _trials(result.storage)]

    first = asked("a")
    assert asked("b") == first and len({p["train.optimizer.lr"] for p in first}) == 3
    assert asked("c", seed=1)[1:] != first[1:]  # the baseline aside, another seed samples elsewhere

def test_spaces_say_what_they_contain():
    assert Space("x", "loguniform", 1e-4, 1e-2).contains(1e-3) and not Space("x", "loguniform", 1e-4, 1e-2).contains(0.1)
    assert Space("x", "int", 32, 512).contains(64) and not Space("x", "int", 32, 512).contains(64.5)
    assert Space("x", "choice", choices=("a", "b")).contains("a") and not Space("x", "choice", choices=("a", "b")).contains("c")
    assert not Space("x", "uniform", 0, 1).contains(True) and not Space("x", "uniform", 0, 1).contains("0.5")


def test_an_interrupted_sweep_continues(tiny_root, tmp_path):
    """Started again with the same storage, a sweep goes on counting: finished trials are not
    run again, and a trial left running by a process that is gone is run again with its values."""
    import digitsum

    out = tmp_path / "s"
    overrides = _tiny(tiny_root, epochs=1)
    first = digitsum.sweep(ORIGINAL, [LR], 1, out=out, overrides=overrides, val=100, quiet=True, pruner="none")
    assert [t.number for t in first.trials] == [0]
    stamp = (out / "trial-0000" / "summary.json").stat().st_mtime_ns
    # a trial a killed worker left running: its process is gone
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    study = optuna.load_study(study_name="original", storage=open_storage(first.storage))
    killed = study.ask()
    killed.set_user_attr("host", socket.gethostname())
    killed.set_user_attr("pid", gone.pid)
    killed.set_user_attr("run_dir", str(out / "trial-0001"))
    (out / "trial-0001").mkdir()
    lr = killed.suggest_float("train.optimizer.lr", 1e-4, 3e-2, log=True)
    # and one whose worker was killed between asking for it and naming itself on it
    unnamed = study.ask()
    unnamed_lr = unnamed.suggest_float("train.optimizer.lr", 1e-4, 3e-2, log=True)

    again = digitsum.sweep(ORIGINAL, [LR], 3, out=out, overrides=overrides, val=100, quiet=True, pruner="none")
    states = {row.number: row.state for row in again.trials}
    assert states == {0: "complete", 1: "interrupted", 2: "interrupted", 3: "complete", 4: "complete"}
    assert any("trial 1 was left running by process" in note for note in again.notes)
    assert any("trial 2 was left running by a worker killed before it named itself" in note for note in again.notes)
    assert json.loads((out / "trial-0001" / "trial.json").read_text())["state"] == "interrupted"
    retries = {t.user_attrs["retry_of"]: t.params["train.optimizer.lr"] for t in _trials(again.storage)[3:]}
    assert retries == {1: lr, 2: unnamed_lr}
    assert (out / "trial-0000" / "summary.json").stat().st_mtime_ns == stamp  # not run again

    # the same study with other settings is refused
    with pytest.raises(UserError, match="was started with another params"):
        digitsum.sweep(ORIGINAL, ["train.optimizer.lr=loguniform:1e-3:3e-2"], 3, out=out, overrides=overrides, val=100, quiet=True)


def test_a_signal_after_a_trials_last_step_stops_the_sweep_there(tiny_root, tmp_path, monkeypatch):
    """Ctrl-C while a trial evaluates or draws its pictures (most of a short trial's time) was
    acknowledged, then forgotten: the next trial started, and the next."""
    import os
    import signal

    import digitsum
    from digitsum.callbacks import Callback
    from digitsum.engine import runner

    class SignalAtTheEnd(Callback):
        def on_end(self, trainer, summary):
            os.kill(os.getpid(), signal.SIGINT)  # handled as Ctrl-C is: the trial's steps are done

    start = runner.start
    monkeypatch.setattr(runner, "start", lambda *a, callbacks=(), **k: start(*a, callbacks=[*callbacks, SignalAtTheEnd()], **k))
    result = digitsum.sweep(ORIGINAL, [LR], 4, out=tmp_path / "s", overrides=_tiny(tiny_root, epochs=1), val=100, quiet=True,
                            pruner="none")  # fmt: skip
    assert [row.state for row in result.trials] == ["complete"] and result.interrupted


def test_a_sweep_of_more_trials_than_it_may_hold_is_refused(tiny_root, tmp_path, monkeypatch):
    import digitsum
    import digitsum.sweeps

    def work(*args, **kwargs):
        raise AssertionError("trials started")  # a billion of them filled the disk and never ended

    monkeypatch.setattr(digitsum.sweeps, "work", work)
    with pytest.raises(UserError, match="--trials 1000000000: from 1 to 10,000"):
        digitsum.sweep(ORIGINAL, [LR], 10**9, out=tmp_path / "s", overrides=_tiny(tiny_root, epochs=1), val=100, quiet=True)

def test_a_hopeless_trial_is_pruned(tiny_root, tmp_path):
    """With the median pruner, a trial whose val metric after an epoch is below the median of
    the trials before it stops there; its run directory says so."""
    import digitsum

    out = tmp_path / "s"
    storage = f"journal:{tmp_path / 'study.journal'}"
    study = optuna.create_study(study_name="original", storage=open_storage(storage), direction="maximize")
    study.enqueue_trial({"train.optimizer.lr": 1e-2})
    study.enqueue_trial({"train.optimizer.lr": 1e-7})  # far too small to learn anything in an epoch
    result = digitsum.sweep(ORIGINAL, ["train.optimizer.lr=loguniform:1e-7:3e-2"], 2, storage=storage, out=out,
                            overrides=_tiny(tiny_root, epochs=2), val=100, quiet=True, prune_startup=1)  # fmt: skip
    assert [row.state for row in result.trials] == ["complete", "pruned"]
    pruned = out / "trial-0001"
    summary = json.loads((pruned / "summary.json").read_text())
    assert summary["stopped"].startswith("pruned by the sweep after epoch 1")
    assert summary["epochs"] == 1
    assert json.loads((pruned / "trial.json").read_text())["state"] == "pruned"
    assert result.best.number == 0


#: The sweep command in a child process whose trial 1 holds at the end of its first epoch (and
#: says so in the file named by the first argument): the moment a sweep is killed in, reached
#: however fast or slow the machine, since trial 0 is done by then and trial 1 cannot end.
HELD_SWEEP = """
import sys, threading
from pathlib import Path
from digitsum.callbacks import Callback
from digitsum.cli import main
from digitsum.engine import runner

marker, start = Path(sys.argv[1]), runner.start

class Hold(Callback):
    def on_epoch_end(self, trainer, epoch, train, test):
        marker.write_text("held")
        threading.Event().wait()

def held_start(recipe, run_dir, **options):
    if Path(run_dir).name == "trial-0001":
        options["callbacks"] = [*options.get("callbacks", []), Hold()]
    return start(recipe, run_dir, **options)

runner.start = held_start
sys.argv = ["digitsum", *sys.argv[2:]]
main()
"""


def test_a_killed_sweep_continues_where_it_stopped(tiny_root, tmp_path):
    """SIGKILL to every process of a running sweep, then the same sweep again: the trials done
    stay done, the one cut off is run again, and the study ends with the trials asked for."""
    import os
    import signal
    import time

    import digitsum

    out, held = tmp_path / "s", tmp_path / "held"
    overrides = _tiny(tiny_root, epochs=2)
    args = [sys.executable, "-c", HELD_SWEEP, str(held), "sweep", ORIGINAL, "--param", LR, "--trials", "2", "--val", "100",
            "--pruner", "none", "--out", str(out), *(x for k, v in overrides.items() for x in ("--set", f"{k}={v!r}" if isinstance(v, str) else f"{k}={str(v).lower()}"))]  # fmt: skip
    process = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    storage = f"journal:{out.resolve() / 'study.journal'}"
    deadline = time.monotonic() + 600  # a bound on a hung child, not a measure of pace
    try:
        while not held.exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "trial 1 never reached the end of its first epoch"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = {t.number: t.state.name for t in _trials(storage)}
    assert before == {0: "COMPLETE", 1: "RUNNING"}

    result = digitsum.sweep(ORIGINAL, [LR], 2, out=out, overrides=overrides, val=100, quiet=True, pruner="none")
    done = [n for n, state in before.items() if state == "COMPLETE"]
    cut = [n for n, state in before.items() if state == "RUNNING"]
    rows = {row.number: row for row in result.trials}
    assert all(rows[n].state == "complete" for n in done)
    assert all(rows[n].state == "interrupted" for n in cut)
    retried = {t.user_attrs.get("retry_of") for t in _trials(storage)}
    assert set(cut) <= retried
    assert result.counts()["complete"] == 2  # the trials asked for, the cut-off ones not counted


def test_a_sweep_of_runs_evaluated_every_other_epoch_prunes_on_the_epochs_evaluated(tiny_root, tmp_path):
    """train.eval_every = 2: the val metric exists after epochs 2 and 4 only; the trials report
    those, and a hopeless one is pruned after epoch 2, not failed for a missing figure."""
    import digitsum

    out = tmp_path / "s"
    storage = f"journal:{tmp_path / 'study.journal'}"
    study = optuna.create_study(study_name="original", storage=open_storage(storage), direction="maximize")
    study.enqueue_trial({"train.optimizer.lr": 1e-2})
    study.enqueue_trial({"train.optimizer.lr": 1e-7})
    overrides = {**_tiny(tiny_root, epochs=4), "train.eval_every": 2}
    result = digitsum.sweep(ORIGINAL, ["train.optimizer.lr=loguniform:1e-7:3e-2"], 2, storage=storage, out=out,
                            overrides=overrides, val=100, quiet=True, prune_startup=1)  # fmt: skip
    assert [row.state for row in result.trials] == ["complete", "pruned"]
    assert json.loads((out / "trial-0001" / "summary.json").read_text())["stopped"].startswith("pruned by the sweep after epoch 2")
    assert result.trials[0].test is not None  # the best trial's test figure, from its last evaluation


# -- a folder's study, a storage's password ---------------------------------------------------------


def test_a_second_study_in_one_folder_is_refused(tiny_root, tmp_path, cli):
    """Another study's trials, best.toml and sweep.json are not replaced: a second study name in
    a sweep folder is refused (exit 2), the first one's files untouched; the first goes on."""
    import digitsum

    out = tmp_path / "s"
    overrides = _tiny(tiny_root, epochs=1)
    digitsum.sweep(ORIGINAL, [LR], 1, study="first", out=out, overrides=overrides, val=100, quiet=True, pruner="none")
    before = {p.name: p.stat().st_mtime_ns for p in (out / "best.toml", out / "sweep.json", out / "trial-0000" / "summary.json")}
    sets = [x for k, v in overrides.items() for x in ("--set", f"{k}={v!r}" if isinstance(v, str) else f"{k}={str(v).lower()}")]
    result = cli("sweep", ORIGINAL, "--param", LR, "--trials", "1", "--val", "100", "--study", "second", "--out", str(out), *sets)
    assert result.code == 2 and "Traceback" not in result.err
    assert "holds the sweep of study 'first'" in result.err and "--study first" in result.err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "best.toml", out / "sweep.json", out / "trial-0000" / "summary.json")} == before
    assert json.loads((out / "sweep.json").read_text())["study"] == "first"
    # the same study in another storage would number its trials from 0 again, over trial-0000/
    other = cli("sweep", ORIGINAL, "--param", LR, "--trials", "1", "--val", "100", "--study", "first", "--out", str(out),
                "--storage", f"journal:{tmp_path / 'other.journal'}", *sets)  # fmt: skip
    assert other.code == 2 and "kept in its own journal (no --storage)" in other.err, other.err
    assert not (tmp_path / "other.journal").exists()
    assert {p.name: p.stat().st_mtime_ns for p in (out / "best.toml", out / "sweep.json", out / "trial-0000" / "summary.json")} == before
    again = digitsum.sweep(ORIGINAL, [LR], 2, study="first", out=out, overrides=overrides, val=100, quiet=True, pruner="none")
    assert [row.number for row in again.trials] == [0, 1]


def test_a_folder_of_an_older_sweep_is_claimed_by_its_sweep_json(tmp_path):
    from digitsum.sweeps.storage import claim

    (tmp_path / "sweep.json").write_text(json.dumps({"study": "old"}))
    with pytest.raises(UserError, match="holds the sweep of study 'old'"):
        claim(tmp_path, "new")
    claim(tmp_path, "old")  # the same study goes on, and the folder is marked as its own
    with pytest.raises(UserError, match="holds the sweep of study 'old'"):
        claim(tmp_path, "new")


def test_a_storage_password_is_never_shown_or_written(tiny_root, tmp_path, monkeypatch):
    import digitsum
    from digitsum.sweeps import redact

    url = "postgresql://sweeper:s3cr3t@127.0.0.1:1/digitsum_sweeps"
    assert redact(url) == "postgresql://sweeper:***@127.0.0.1:1/digitsum_sweeps"
    assert redact("journal:/a/b.journal") == "journal:/a/b.journal" and redact("sqlite:///x.db") == "sqlite:///x.db"
    overrides = _tiny(tiny_root, epochs=1)
    with pytest.raises(UserError) as error:  # no driver, or no server: either way the URL is shown without it
        digitsum.sweep(ORIGINAL, [LR], 1, storage=url, out=tmp_path / "x", overrides=overrides, val=100, quiet=True)
    assert "s3cr3t" not in error.value.message and "sweeper:***@127.0.0.1" in error.value.message

    # a database that opens: best.toml, sweep.json and the result name it without its password
    journal = f"journal:{tmp_path / 'db.journal'}"

    class Database(optuna.storages.RDBStorage):  # the URL's database, played by a journal file
        def __new__(cls, given, **kwargs):
            return open_storage(journal)

    monkeypatch.setattr(optuna.storages, "RDBStorage", Database)
    out = tmp_path / "s"
    result = digitsum.sweep(ORIGINAL, [LR], 1, storage=url, out=out, overrides=overrides, val=100, quiet=True, pruner="none")
    assert result.storage == redact(url)
    for written in (out / "best.toml", out / "sweep.json"):
        text = written.read_text()
        assert "s3cr3t" not in text and "sweeper:***@127.0.0.1" in text
    with pytest.raises(UserError) as error:  # the study refusing other settings names the storage too
        digitsum.sweep(ORIGINAL, ["train.optimizer.lr=loguniform:1e-3:3e-2"], 1, storage=url, out=out, overrides=overrides, val=100)
    assert "s3cr3t" not in error.value.message and "sweeper:***@" in error.value.message


@pytest.mark.parametrize("storage, message", [
    ("sqlite:///:memory:", "a database in one process's memory"),
    ("sqlite://", "a database in one process's memory"),
    ("sqlite:///", "a database in one process's memory"),
    ("sqlite:///study.db?mode=memory&cache=shared", "a database in one process's memory"),
    ("sqlite:///file:{tmp}/ro.db?mode=ro&uri=true", "attempt to write a readonly database"),
    ("journal:{tmp}/missing.txt/study.journal", "--storage 'journal:"),
])  # fmt: skip
def test_a_storage_that_cannot_hold_the_study_is_a_clear_error(tiny_root, tmp_path, cli, storage, message):
    import sqlite3

    sqlite3.connect(tmp_path / "ro.db").close()
    (tmp_path / "missing.txt").write_text("a file where the journal's folder should be")
    storage = storage.format(tmp=tmp_path)
    result = cli("sweep", ORIGINAL, "--param", LR, "--trials", "1", "--val", "100", "--storage", storage,
                 "--out", str(tmp_path / "s"), "--set", "train.epochs=1", "--set", f"data.root={str(tiny_root)!r}")  # fmt: skip
    assert result.code == 2 and "Traceback" not in result.err
    assert message in " ".join(result.err.split()) and "CREATE TABLE" not in result.err
    assert not (tmp_path / "s").exists()  # nothing made before the storage was known to work
