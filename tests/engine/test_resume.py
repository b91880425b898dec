"""Exact resume: a run stopped anywhere and continued ends exactly like one never stopped."""

from __future__ import annotations

import json

import pytest
import torch

from digitsum.engine.checkpoint import load_checkpoint
from digitsum.engine.component_errors import ComponentError
from digitsum.engine.resume import resume_trainer

from ..runs import CrashAt, StopAt, outcome, train

# tiny data: 512 training samples in batches of 64 = 8 steps per epoch; 3 epochs


@pytest.fixture(scope="module")
def reference(tiny_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    trainer = train(tiny_root, run_dir, epochs=3)
    return run_dir, trainer.model.state_dict()


@pytest.mark.parametrize("epoch,step", [(1, 0), (2, 3), (2, 7), (3, 6)], ids=["first-step", "mid-epoch", "epoch-end", "last-epoch"])
def test_stop_and_resume_equals_uninterrupted_run(tiny_root, tmp_path, reference, epoch, step):
    reference_dir, reference_weights = reference
    stopped = train(tiny_root, tmp_path, callbacks=[StopAt(epoch, step)], epochs=3)
    assert not stopped.finished
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped"] == "interrupted by test"
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == ((epoch, 0) if step == 7 else (epoch - 1, step + 1))

    resumed = resume_trainer(tmp_path)
    resumed.fit()
    assert outcome(tmp_path) == outcome(reference_dir)  # summary.json and metrics.jsonl, to the last digit
    for name, tensor in resumed.model.state_dict().items():
        assert torch.equal(tensor, reference_weights[name]), name


def test_crash_resumes_from_the_periodic_checkpoint(tiny_root, tmp_path, reference):
    # checkpoint every 3 steps: a crash at epoch 2 step 5 (global step 14) resumes from step 12
    with pytest.raises(ComponentError, match="killed"):  # the test's callback plays the crash: named as a component
        train(tiny_root, tmp_path, "train.checkpoint_every=3", callbacks=[CrashAt(2, 5)], epochs=3)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 4)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # epoch 1 only

    resume_trainer(tmp_path).fit()
    summary, metrics = outcome(tmp_path)
    reference_summary, reference_metrics = outcome(reference[0])
    assert summary == reference_summary
    assert metrics == reference_metrics  # no line logged twice
    assert [(r["epoch"], r["split"]) for r in metrics] == [(e, s) for e in (1, 2, 3) for s in ("train", "test")]


def test_epochs_logged_after_the_checkpoint_are_logged_once(tiny_root, tmp_path, reference):
    # killed between logging epoch 2 and writing its checkpoint: the checkpoint says epoch 1
    train(tiny_root, tmp_path, callbacks=[StopAt(2, 2)], epochs=3)
    metrics = tmp_path / "metrics.jsonl"
    # a whole record, bytes that are no UTF-8 text (a disk's garbage), a torn one
    metrics.write_bytes(metrics.read_bytes() + b'{"epoch": 2, "split": "train", "heads": {}}\n\xff\xfe\n{"epoch": 2, "spl')
    resume_trainer(tmp_path).fit()
    assert outcome(tmp_path) == outcome(reference[0])


def test_resume_without_a_checkpoint_starts_over(tiny_root, tmp_path, reference):
    with pytest.raises(ComponentError):
        train(tiny_root, tmp_path, callbacks=[CrashAt(1, 2)], epochs=3)
    assert not (tmp_path / "checkpoint.pt").exists() and (tmp_path / "recipe.toml").exists()
    resume_trainer(tmp_path).fit()
    assert outcome(tmp_path) == outcome(reference[0])


def test_global_rng_is_restored(tiny_root, tmp_path):
    # anything drawing from torch's global RNG during training (dropout) continues its stream
    train(tiny_root, tmp_path, callbacks=[StopAt(1, 3)], epochs=2)
    expected = torch.get_rng_state()
    torch.manual_seed(12345)
    resume_trainer(tmp_path)
    assert torch.equal(torch.get_rng_state(), expected)


def test_checkpoint_every_n_steps_writes_mid_epoch_checkpoints(tiny_root, tmp_path):
    seen = []

    class Watch(StopAt):
        def on_step(self, trainer, epoch, step, loss):
            path = trainer.run_dir / "checkpoint.pt"
            if path.exists():
                state = load_checkpoint(path)
                seen.append((state["epoch"], state["step"]))

    train(tiny_root, tmp_path, "train.checkpoint_every=5", callbacks=[Watch(0, 0)], epochs=2)
    # 8 steps an epoch: global steps 5, 10 and 15 are mid-epoch, 8 is epoch 1's end (1, 0)
    assert sorted(set(seen)) == [(0, 5), (1, 0), (1, 2), (1, 7)]


def test_a_checkpoint_without_a_key_added_since_resumes_with_its_default(tiny_root, tmp_path, reference):
    # a run of an older digitsum: its recipe.toml and checkpoint lack data.shift (added with
    # default 0, which draws exactly what the older code drew)
    import tomli_w
    import tomllib

    from digitsum.engine.checkpoint import save_checkpoint

    train(tiny_root, tmp_path, callbacks=[StopAt(2, 3)], epochs=3)
    doc = tomllib.loads((tmp_path / "recipe.toml").read_text())
    del doc["data"]["shift"]
    (tmp_path / "recipe.toml").write_text(tomli_w.dumps(doc))
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    del state["recipe"]["data"]["shift"]
    save_checkpoint(tmp_path / "checkpoint.pt", state)

    resume_trainer(tmp_path).fit()
    assert outcome(tmp_path) == outcome(reference[0])


def test_a_checkpoint_of_another_recipe_is_still_refused(tiny_root, tmp_path):
    from digitsum.engine.checkpoint import save_checkpoint
    from digitsum.errors import UserError

    train(tiny_root, tmp_path, callbacks=[StopAt(1, 3)], epochs=3)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    state["recipe"]["data"]["shift"] = 2
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(UserError, match="different recipe.*data.shift is 0 in the recipe but 2 in the checkpoint"):
        resume_trainer(tmp_path)


def test_a_checkpoint_whose_recipe_cannot_be_read_names_the_checkpoint(tiny_root, tmp_path):
    from digitsum.engine.checkpoint import save_checkpoint
    from digitsum.errors import UserError

    train(tiny_root, tmp_path, callbacks=[StopAt(1, 3)], epochs=3)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    state["recipe"]["data"]["shift"] = "two"
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(UserError) as caught:
        resume_trainer(tmp_path)
    message = str(caught.value)
    assert "holds a recipe this digitsum cannot read" in message and "data.shift" in message
    assert "<dict>" not in message and message.count("checkpoint.pt") >= 2  # the problem's label names it too
