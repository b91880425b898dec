"""The garbage collector during a command: paused while it starts, on while it trains, frozen at exit."""

from __future__ import annotations

import gc

import pytest

from digitsum import collector
from digitsum.callbacks import Callback
from digitsum.engine.train import Trainer
from digitsum.recipe import load_recipe

from .conftest import RECIPES


@pytest.fixture
def restored_collector(monkeypatch):
    monkeypatch.setattr(collector, "_paused", False)
    yield
    gc.enable()
    gc.unfreeze()


def test_pause_then_setup_done_freezes_what_exists_and_turns_the_collector_back_on(restored_collector):
    gc.unfreeze()
    collector.pause()
    assert not gc.isenabled()
    collector.setup_done()
    assert gc.isenabled() and gc.get_freeze_count() > 0
    frozen = gc.get_freeze_count()
    collector.setup_done()  # once only
    assert gc.get_freeze_count() == frozen


def test_setup_done_without_a_pause_changes_nothing(restored_collector):
    # a notebook: nothing paused, nothing frozen
    gc.unfreeze()
    collector.setup_done()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_paused_collector_is_on_while_training(tiny_data, tmp_path, restored_collector):
    seen = []

    class Watch(Callback):
        def on_step(self, trainer, epoch, step, loss):
            seen.append(gc.isenabled())

    trainer = Trainer(load_recipe(RECIPES / "original.toml", ["train.epochs=1", "data.batch_size=64"]), tmp_path, [Watch()])
    collector.pause()
    trainer.fit()
    assert seen and all(seen)


def test_a_paused_collector_is_on_while_the_doctor_checks(tiny_data, restored_collector):
    from digitsum.diagnosis import Probe

    collector.pause()
    Probe.from_recipe(load_recipe(RECIPES / "original.toml"))
    assert gc.isenabled()


def test_exiting_freezes_everything_and_leaves_the_collector_on(restored_collector):
    gc.unfreeze()
    collector.pause()
    collector.exiting()
    assert gc.isenabled() and gc.get_freeze_count() > 0


def test_the_in_process_command_line_leaves_the_collector_alone(cli, restored_collector):
    gc.unfreeze()
    assert cli("list", "recipes").code == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
