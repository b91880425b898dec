"""The sidecar process (digitsum/sidecar.py): calls in order, answers, errors relayed, a dying or
interrupted child, nothing imported beyond the target's module, a child warmed up ahead."""

from __future__ import annotations

import os
import signal
import sys
import textwrap

import pytest

from digitsum import sidecar as sidecars
from digitsum.errors import UserError
from digitsum.recipe import logger_types
from digitsum.sidecar import LOGGER_TARGETS, Sidecar, SidecarError, warm_up, warm_up_loggers

TARGET = '''
import os, sys
from digitsum.errors import UserError

class Tally:
    def __init__(self, start):
        self.total = start
        print("made", flush=True)  # must not reach the answers

    def add(self, n):
        self.total += n
        print("added", n)
        return self.total

    def refuse(self, why):
        raise UserError(why)

    def crash(self):
        return {}["missing"]

    def die(self, code):
        os._exit(code)

    def imported(self, module):
        return module in sys.modules

    def pid(self):
        return os.getpid()
'''


@pytest.fixture
def target(tmp_path, monkeypatch) -> str:
    (tmp_path / "tally_target.py").write_text(textwrap.dedent(TARGET))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    return "tally_target:Tally"


def test_calls_run_in_order_and_answer(target, capfd):
    sidecar = Sidecar(target, "tally", start=10)
    answers = [sidecar.call("add", n) for n in (1, 2, 3)]
    assert [a.result(timeout=30) for a in answers] == [11, 13, 16]
    sidecar.close()
    assert "made" in capfd.readouterr().err  # what the object prints goes to standard error


def test_the_child_imports_only_the_targets_module(target):
    sidecar = Sidecar(target, "tally", start=0)
    assert sidecar.call("imported", "digitsum.errors").result(timeout=30)
    assert not sidecar.call("imported", "torch").result(timeout=30)
    sidecar.close()


def test_a_user_error_comes_back_as_the_same_user_error_and_later_calls_are_skipped(target):
    sidecar = Sidecar(target, "tally", start=0)
    refused = sidecar.call("refuse", "log.tally: the store is gone")
    later = sidecar.call("add", 1)
    with pytest.raises(UserError, match="^log.tally: the store is gone$"):
        refused.result(timeout=30)
    with pytest.raises(UserError, match="the store is gone"):
        later.result(timeout=30)  # skipped: it would fail the same way
    with pytest.raises(UserError, match="the store is gone"):
        sidecar.check()  # raised once ...
    sidecar.check()  # ... then gone
    sidecar.close()


def test_a_bug_in_the_child_comes_back_with_its_traceback(target):
    sidecar = Sidecar(target, "tally", start=0)
    sidecar.call("crash").exception(timeout=30)
    with pytest.raises(SidecarError, match=r"(?s)tally: KeyError: 'missing'.*Traceback.*in crash"):
        sidecar.close()


def test_a_child_that_dies_fails_every_unanswered_call(target):
    sidecar = Sidecar(target, "tally", start=0)
    sidecar.call("die", 3)
    after = sidecar.call("add", 1)
    with pytest.raises(SidecarError, match=r"tally: its process ended \(exit code 3\)"):
        after.result(timeout=30)
    with pytest.raises(SidecarError, match="exit code 3"):
        sidecar.close()


def test_a_failed_constructor_is_the_first_error(target):
    sidecar = Sidecar(target, "tally")  # start missing
    with pytest.raises(SidecarError, match="TypeError"):
        sidecar.made.result(timeout=30)
    with pytest.raises(SidecarError, match="TypeError"):
        sidecar.call("add", 1).result(timeout=30)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_leaves_the_child_to_answer_the_last_calls(target):
    """Ctrl-C reaches every process of the terminal; the run stops with a checkpoint and still
    needs its sidecar for the last calls."""
    sidecar = Sidecar(target, "tally", start=0)
    os.kill(sidecar.call("pid").result(timeout=30), signal.SIGINT)
    assert sidecar.call("add", 5).result(timeout=30) == 5
    sidecar.close()


@pytest.mark.parametrize("kind", sorted(LOGGER_TARGETS))
def test_a_loggers_sidecar_runs_without_torch(kind):
    """A logger's sidecar imports its module alone: importing torch there would cost the run
    the second the sidecar is meant to save."""
    import subprocess

    pytest.importorskip(kind)
    module = LOGGER_TARGETS[kind].partition(":")[0]
    code = f"import sys, {module}; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_a_call_after_close_fails_at_once_and_a_second_close_returns(target):
    """A logger's on_exception may follow its own on_end (a later callback failed): its last
    call must fail, not leave close() waiting for an answer that never comes."""
    sidecar = Sidecar(target, "tally", start=0)
    assert sidecar.call("add", 1).result(timeout=30) == 1
    sidecar.close()
    late = sidecar.call("add", 1)
    with pytest.raises(SidecarError, match="tally: its process has ended"):
        late.result(timeout=5)
    sidecar.close()  # returns: nothing pending


def test_a_warmed_up_child_is_taken_over_by_the_first_sidecar_of_its_module(target):
    warm_up(target)
    warm = sidecars._warm["tally_target"]
    first = Sidecar(target, "tally", start=1)
    assert first.call("pid").result(timeout=30) == warm.pid and "tally_target" not in sidecars._warm
    assert first.call("add", 2).result(timeout=30) == 3
    first.close()
    second = Sidecar(target, "tally", start=0)  # none warm any more: a child of its own
    assert second.call("pid").result(timeout=30) != warm.pid
    second.close()


def test_a_warmed_up_module_that_does_not_import_fails_where_the_object_is_made():
    warm_up("no_such_module_for_digitsum:Thing")
    sidecar = Sidecar("no_such_module_for_digitsum:Thing", "broken")
    with pytest.raises(SidecarError, match="ModuleNotFoundError"):
        sidecar.made.result(timeout=30)
    with pytest.raises(SidecarError, match="ModuleNotFoundError"):
        sidecar.close()


@pytest.mark.parametrize("document, warmed", [
    ({"log": {"mlflow": True}}, ["mlflow"]),
    ({"log": {"tracking": {"type": "mlflow", "experiment": "x"}}}, ["mlflow"]),
    ({"log": {"mlflow": False}}, []),
    ({"log": {"tensorboard": True, "csv": {}}}, ["tensorboard"]),
    ({"log": {"csv": {}, "jsonl": True}}, []),
    ({"log": "not a table"}, []),
    ({}, []),
])  # fmt: skip
def test_the_sidecars_of_the_built_in_loggers_a_recipe_names_are_warmed_up(document, warmed, monkeypatch):
    started = []
    monkeypatch.setattr(sidecars, "warm_up", started.append)
    warm_up_loggers(logger_types(document).values())
    assert started == [LOGGER_TARGETS[kind] for kind in warmed]
