"""Device choice and the hardware switches of [train], as far as a CPU-only machine can test them."""

from __future__ import annotations

import pytest
import torch

from digitsum.engine import accel
from digitsum.engine.accel import Acceleration, plan
from digitsum.engine.build import pick_device
from digitsum.engine.train import Trainer
from digitsum.errors import UserError
from digitsum.recipe import TrainSection, load_recipe

from ..conftest import RECIPES, TINY

GPU_SWITCHES = {  # used on CUDA only: ignored on the CPU, with a note
    "train.compile=true": "train.compile",
}


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cuda", [False, True])
def test_auto_picks_cuda_only_when_available(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert pick_device("auto").type == ("cuda" if cuda else "cpu")


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_explicit_cuda_without_cuda_exits_2_naming_the_key(cli, tiny_data, monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = cli("run", RECIPES / "original.toml", *TINY, "--set", f"train.device='{device}'")
    assert result.code == 2
    assert f"train.device = '{device}'" in result.err and "CUDA is not available" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("override, key", GPU_SWITCHES.items())
def test_gpu_switch_is_ignored_on_cpu_with_a_note(override, key):
    train = TrainSection.model_validate(dict([override.removeprefix("train.").replace("'", "").split("=")]))
    acc = plan(train, torch.device("cpu"))
    assert acc.autocast_dtype is None and not acc.channels_last and not acc.compile
    assert len(acc.notes) == 1 and key in acc.notes[0] and "ignored on cpu" in acc.notes[0]


def test_channels_last_is_used_on_cpu_without_a_note():
    acc = plan(TrainSection(channels_last=True), torch.device("cpu"))
    assert acc.channels_last and acc.notes == []


def test_channels_last_trains_the_same_as_contiguous(tiny_data, tmp_path):
    # a memory layout, not a different computation: the same losses to float tolerance
    histories = []
    for flag in ("false", "true"):
        trainer = Trainer(load_recipe(RECIPES / "original.toml", ["train.epochs=1", "data.batch_size=64", f"train.channels_last={flag}"]), tmp_path / flag)
        trainer.fit()
        histories.append(trainer.history[-1]["test"]["sum"]["loss"])
    assert histories[0] == pytest.approx(histories[1], rel=1e-3)


def test_default_switches_need_no_note():
    assert plan(TrainSection(), torch.device("cpu")).notes == []


def test_run_with_every_gpu_switch_on_cpu_trains_and_prints_the_notes(cli, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(accel, "cpu_has_bf16", lambda: False)  # a CPU without bf16 ignores bf16 too
    switches = [arg for override in [*GPU_SWITCHES, "train.precision='bf16'"] for arg in ("--set", override)]
    result = cli("run", RECIPES / "original.toml", *TINY, *switches, "--set", "train.device='cpu'", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    for key in [*GPU_SWITCHES.values(), "train.precision"]:
        assert f"note: {key}" in result.out
    resolved = load_recipe(tmp_path / "run" / "recipe.toml").train
    assert (resolved.precision, resolved.compile) == ("bf16", True)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_is_used_on_a_cpu_with_bf16_instructions_and_ignored_with_a_note_elsewhere(monkeypatch, native):
    monkeypatch.setattr(accel, "cpu_has_bf16", lambda: native)
    acc = plan(TrainSection(precision="bf16"), torch.device("cpu"))
    if native:
        assert acc.autocast_dtype == torch.bfloat16 and acc.notes == []
    else:
        assert acc.autocast_dtype is None
        assert len(acc.notes) == 1 and "train.precision" in acc.notes[0] and "no bf16 instructions" in acc.notes[0]


def test_bf16_is_ignored_on_mps_with_a_note():
    acc = plan(TrainSection(precision="bf16"), torch.device("mps"))
    assert acc.autocast_dtype is None and len(acc.notes) == 1 and "ignored on mps" in acc.notes[0]


def test_bf16_training_on_the_cpu_keeps_float32_weights_and_trains_as_fp32_does(tiny_data, tmp_path, monkeypatch):
    # where the CPU lacks bf16 instructions oneDNN emulates them: slower, the same arithmetic
    monkeypatch.setattr(accel, "cpu_has_bf16", lambda: True)
    losses = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(load_recipe(RECIPES / "original.toml", ["train.epochs=1", "data.batch_size=64", f"train.precision='{precision}'"]), tmp_path / precision)
        trainer.fit()
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters()), "autocast keeps the weights in float32"
        losses[precision] = trainer.history[-1]["test"]["sum"]["loss"]
    assert trainer.accel.autocast_dtype == torch.bfloat16
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=5e-2)  # bf16 keeps 8 bits of mantissa


def test_unknown_precision_is_a_recipe_error(tiny_data):
    with pytest.raises(UserError, match=r"train.precision.*'fp32' or 'bf16'"):
        load_recipe(RECIPES / "original.toml", ["train.precision='fp16'"])


def test_threads_setting_sets_torch_threads(tiny_data, tmp_path, threads_restored):
    Trainer(load_recipe(RECIPES / "original.toml", ["train.threads=1"]), tmp_path)
    assert torch.get_num_threads() == 1


def test_channels_last_applies_to_images_only():
    acc = Acceleration(torch.device("cpu"), channels_last=True)
    batch = acc.prepare_batch({"image": torch.rand(4, 3, 8, 8), "number": torch.arange(4)})
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch["number"], torch.arange(4))
    model = acc.prepare_model(torch.nn.Conv2d(3, 4, 3))
    assert model.weight.is_contiguous(memory_format=torch.channels_last)


def test_autocast_runs_forward_in_the_chosen_precision():
    layer = torch.nn.Linear(4, 2)
    with Acceleration(torch.device("cpu"), autocast_dtype=torch.bfloat16).autocast():
        assert layer(torch.rand(3, 4)).dtype == torch.bfloat16
    with Acceleration(torch.device("cpu")).autocast():
        assert layer(torch.rand(3, 4)).dtype == torch.float32


def test_default_threads_are_the_usable_cores(tiny_data, tmp_path, threads_restored, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(1)  # whatever the process had, 0 means one per usable core
    trainer = Trainer(load_recipe(RECIPES / "original.toml", ["train.threads=0"]), tmp_path)
    assert trainer.threads == torch.get_num_threads() == accel.usable_cores()
    assert not any("thread" in note for note in trainer.notes)
    # an explicit count is taken as it is
    assert Trainer(load_recipe(RECIPES / "original.toml", ["train.threads=2"]), tmp_path).threads == 2


def test_a_resume_keeps_the_thread_count_it_trained_with(tiny_data, tmp_path, threads_restored, monkeypatch):
    """A checkpoint moved to a machine with more cores resumes with the count it trained with."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(accel, "usable_cores", lambda: 1)
    first = Trainer(load_recipe(RECIPES / "original.toml", ["train.threads=0"]), tmp_path)
    state = first.state_dict()
    assert state["threads"] == 1
    monkeypatch.setattr(accel, "usable_cores", lambda: 2)  # resumed elsewhere
    again = Trainer(load_recipe(RECIPES / "original.toml", ["train.threads=0"]), tmp_path)
    assert again.threads == 2
    again.load_state_dict(state)
    assert again.threads == torch.get_num_threads() == 1


@pytest.mark.parametrize("value, mode", [(True, None), ("reduce-overhead", "reduce-overhead"), ("max-autotune", "max-autotune")])
def test_compile_mode_reaches_torch_compile_on_cuda(monkeypatch, value, mode):
    # no GPU here: CUDA and triton are faked, torch.compile recorded
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    acc = plan(TrainSection(compile=value), torch.device("cuda"))
    assert acc.compile and acc.compile_mode == mode and acc.notes == []
    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **options: calls.append(options) or module)
    model = torch.nn.Linear(2, 2)
    assert acc.compiled(model) is model
    assert calls == [{"mode": mode} if mode else {}]


def test_unknown_compile_mode_is_a_recipe_error(tiny_data):
    with pytest.raises(UserError, match="train.compile"):
        load_recipe(RECIPES / "original.toml", ["train.compile='fastest'"])
