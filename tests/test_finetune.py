"""Fine-tuning from weights: a recipe's ``[init]`` (docs/recipes.md#init-starting-from-weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from digitsum.callbacks import Callback
from digitsum.engine.checkpoint import load_checkpoint
from digitsum.engine.resume import resume_trainer
from digitsum.engine.train import Trainer
from digitsum.errors import RecipeError, UserError
from digitsum.recipe import load_recipe
from digitsum.weights import load_weights, sha256_of, write_tensors

from .conftest import RECIPES
from .runs import StopAt, tiny_args

#: original with a narrower second hidden layer and one more head: some tensors of original's
#: weights fit, some have other shapes, some are new and some of the source's are unused.
PARTIAL = ["backbone.hidden=[120, 30]", "heads.sum=false", 'heads.twice.target="sum"']


def recipe_file(folder: Path, weights: str, freeze_epochs: int = 0, parent: str = "original") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.toml"
    path.write_text(f'extends = "{parent}"\nname = "tuned"\n\n[init]\nweights = "{weights}"\nfreeze_epochs = {freeze_epochs}\n')
    return path


def model_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.fixture(scope="module")
def source_tensors(tiny_run) -> dict[str, torch.Tensor]:
    """The trained tiny run's model tensors (original's shapes)."""
    return load_checkpoint(tiny_run.run_dir / "checkpoint.pt")["model"]


# -- loading -------------------------------------------------------------------------------------


def test_loads_every_tensor_of_a_run_directory(tiny_run, tiny_data, source_tensors, tmp_path):
    recipe = load_recipe(recipe_file(tmp_path / "r", str(tiny_run.run_dir)), tiny_args(tiny_data, 1))
    trainer = Trainer(recipe, tmp_path / "run")
    tensors = model_tensors(trainer)
    assert tensors.keys() == source_tensors.keys()
    assert all(same(tensors[k], source_tensors[k]) for k in tensors)
    fresh = model_tensors(Trainer(load_recipe(RECIPES / "original.toml", tiny_args(tiny_data, 1)), None))
    assert not all(same(tensors[k], fresh[k]) for k in tensors)  # a random initialisation differs
    report = trainer.init
    assert report.kind == "run" and report.loaded == list(source_tensors) and not report.skipped and not report.new
    assert report.sha256 == sha256_of(tiny_run.run_dir / "checkpoint.pt")


def test_loads_a_safetensors_file_relative_to_the_recipe_file(tiny_data, source_tensors, tmp_path, monkeypatch):
    (tmp_path / "r").mkdir()
    write_tensors(tmp_path / "r" / "w.safetensors", source_tensors, {})
    path = recipe_file(tmp_path / "r", "w.safetensors")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the recipe's folder, not the working folder
    recipe = load_recipe(path, tiny_args(tiny_data, 1))
    assert recipe.init.weights == str(tmp_path / "r" / "w.safetensors") and recipe.init.is_path
    trainer = Trainer(recipe, tmp_path / "run")
    tensors = model_tensors(trainer)
    assert all(same(tensors[k], source_tensors[k]) for k in source_tensors)
    assert trainer.init.kind == "file" and trainer.init.sha256 == sha256_of(tmp_path / "r" / "w.safetensors")
    # the resolved recipe names the file absolutely: replayed from the run directory, it finds it
    trainer.fit()
    again = load_recipe(tmp_path / "run" / "recipe.toml")
    assert again.init.weights == recipe.init.weights


def test_a_replay_whose_weights_file_changed_since_says_it_will_not_replay_the_run(tiny_data, source_tensors, tmp_path):
    weights = tmp_path / "w.safetensors"
    write_tensors(weights, source_tensors, {})
    Trainer(load_recipe(recipe_file(tmp_path / "r", str(weights)), tiny_args(tiny_data, 1)), tmp_path / "run").fit()
    resolved = tmp_path / "run" / "recipe.toml"  # its [provenance] records the sha256 of the weights it started from

    def replay_notes(*overrides: str) -> list[str]:
        return [n for n in Trainer(load_recipe(resolved, list(overrides)), None).notes if "not the weights" in n]

    assert replay_notes() == []  # the same file: a replay
    write_tensors(weights, {k: v + 1 if v.is_floating_point() else v for k, v in source_tensors.items()}, {})
    [note] = replay_notes()
    assert f"sha256 {sha256_of(weights)[:12]}" not in note and "[provenance] init_sha256" in note and "will not replay" in note
    assert replay_notes(f"init.weights={str(weights)!r}") == []  # weights the user chose: no run to replay


def test_a_shipped_recipe_name_loads_its_verified_weights(tiny_data, tmp_path):
    recipe = load_recipe(recipe_file(tmp_path / "r", "original"), tiny_args(tiny_data, 1))
    assert not recipe.init.is_path and recipe.init.weights == "original"
    trainer = Trainer(recipe, tmp_path / "run")
    expected, record, _ = load_weights("original")
    tensors = model_tensors(trainer)
    assert all(same(tensors[k], expected[k]) for k in expected) and trainer.init.loaded == list(tensors)
    assert trainer.init.kind == "recipe" and trainer.init.sha256 == record.sha256


def test_every_parameter_frozen_is_refused(tiny_data, tmp_path):
    recipe = load_recipe(recipe_file(tmp_path / "r", "original", freeze_epochs=1), tiny_args(tiny_data, 1))
    with pytest.raises(UserError, match="init.freeze_epochs = 1.*nothing to train"):
        Trainer(recipe, tmp_path / "run")


def test_a_partial_match_reports_loaded_skipped_and_new(cli, tiny_run, tiny_data, tmp_path):
    path = recipe_file(tmp_path / "r", str(tiny_run.run_dir))
    sets = [a for s in [*tiny_args(tiny_data, 1), *PARTIAL] for a in ("--set", s)]
    result = cli("run", path, "--out", tmp_path / "run", *sets)
    assert result.code == 0, result.err
    output = " ".join(result.out.split())  # rich wraps long lines
    assert "backbone.mlp.2.weight [60, 120] -> [30, 120]" in output
    assert "init: 2 newly initialised (not in the source): heads.twice.linear.weight, heads.twice.linear.bias" in output
    report = json.loads((tmp_path / "run" / "init.json").read_text())
    assert report["skipped"] == {"backbone.mlp.2.weight": [[60, 120], [30, 120]], "backbone.mlp.2.bias": [[60], [30]],
                                 "heads.digit.linear.weight": [[10, 60], [10, 30]]}  # fmt: skip
    assert report["new"] == ["heads.twice.linear.weight", "heads.twice.linear.bias"]
    assert report["unused"] == ["heads.sum.linear.weight", "heads.sum.linear.bias"]
    assert "backbone.cnn.layers.0.weight" in report["loaded"] and "heads.digit.linear.bias" in report["loaded"]
    recipe_text = (tmp_path / "run" / "recipe.toml").read_text()
    assert f'init_sha256 = "{sha256_of(tiny_run.run_dir / "checkpoint.pt")}"' in recipe_text
    from digitsum.engine.rundir import create_run_dir

    create_run_dir("x", tmp_path / "run", force=True)  # the run's file: --force removes it with the run
    assert not (tmp_path / "run" / "init.json").exists()


def test_nothing_matching_is_refused_with_both_lists(cli, tiny_data, tmp_path):
    (tmp_path / "r").mkdir()
    write_tensors(tmp_path / "r" / "other.safetensors", {"encoder.weight": torch.zeros(3, 3)}, {})
    path = recipe_file(tmp_path / "r", "other.safetensors")
    result = cli("run", path, "--out", tmp_path / "run", *[a for s in tiny_args(tiny_data, 1) for a in ("--set", s)])
    assert result.code == 2
    assert "init.weights = " in result.err and f"{path}:5" in result.err and "no tensor of the source fits" in result.err
    assert "the source's: encoder.weight" in result.err and "the model's: backbone.cnn.layers.0.weight" in result.err
    assert "Traceback" not in result.err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("change, says", [
    (lambda t: t.fill_(float("nan")), "tensors holding NaN or inf: backbone.mlp.0.weight"),
    (lambda t: t.to(torch.int64), "integer tensors where the model's are floating point: backbone.mlp.0.weight"),
], ids=["nan", "int64"])  # fmt: skip
def test_weights_no_training_could_have_saved_are_refused_before_the_run(cli, tiny_data, source_tensors, tmp_path, change, says):
    # was: NaN loaded (the run failed at its first step, leaving a run directory), integers
    # converted silently (the preflight then blamed the built-in head's code)
    (tmp_path / "r").mkdir()
    tensors = {k: v.clone() for k, v in source_tensors.items()}
    tensors["backbone.mlp.0.weight"] = change(tensors["backbone.mlp.0.weight"])
    write_tensors(tmp_path / "r" / "odd.safetensors", tensors, {})
    result = cli("run", recipe_file(tmp_path / "r", "odd.safetensors"), "--out", tmp_path / "run",
                 *[a for s in tiny_args(tiny_data, 1) for a in ("--set", s)])  # fmt: skip
    assert result.code == 2 and says in result.err and "Traceback" not in result.err
    assert not (tmp_path / "run").exists()


# -- a bad source ----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["missing.safetensors", "garbage.safetensors", "runs/none", "orignal", "film-x"])
def test_a_bad_source_names_the_recipe_key_and_file(source, tiny_data, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    path = recipe_file(tmp_path / "r", source)
    recipe = load_recipe(path, tiny_args(tiny_data, 1))
    with pytest.raises(UserError) as e:
        Trainer(recipe, tmp_path / "run")
    assert e.value.message.startswith(f"init.weights = '{recipe.init.weights}' ({path}:5): ")
    assert not (tmp_path / "run").exists()


def test_a_tampered_weights_file_is_refused_through_load_weights(tiny_data, tmp_path, monkeypatch):
    import digitsum.weights as weights

    monkeypatch.setattr(weights, "sha256_of", lambda path: "0" * 64)  # what a changed file hashes to
    recipe = load_recipe(recipe_file(tmp_path / "r", "original"), tiny_args(tiny_data, 1))
    with pytest.raises(UserError, match=r"^init.weights = 'original' .*does not match its record"):
        Trainer(recipe, tmp_path / "run")


def test_the_init_table_is_validated_strictly(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('extends = "original"\n\n[init]\nweight = "original"\nfreeze_epochs = true\n')
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    text = str(e.value)
    assert f"{path}:4 init.weight: unknown key — did you mean 'weights'?" in text
    assert f"{path}:5 init.freeze_epochs: input should be a valid integer" in text
    assert "init.weights: is required but missing" in text


# -- freezing and resuming -----------------------------------------------------------------------------


class Snapshots(Callback):
    """The model's parameters at the start of the run and at the end of each epoch."""

    def __init__(self) -> None:
        self.taken: dict[str, dict[str, torch.Tensor]] = {}

    def take(self, trainer, when: str) -> None:
        self.taken[when] = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}

    def on_start(self, trainer) -> None:
        self.take(trainer, "start")

    def on_epoch_end(self, trainer, epoch, train, test) -> None:
        self.take(trainer, f"epoch {epoch}")


def test_freeze_epochs_keeps_the_loaded_parameters_then_trains_them(tiny_run, tiny_data, tmp_path):
    # adamw with weight decay: a frozen parameter would still shrink if the optimizer touched it
    recipe = load_recipe(recipe_file(tmp_path / "r", str(tiny_run.run_dir), freeze_epochs=1),
                         tiny_args(tiny_data, 2, 64, *PARTIAL))  # fmt: skip
    assert recipe.optimizer.section.type == "adamw" and recipe.optimizer.params.weight_decay > 0
    snapshots = Snapshots()
    trainer = Trainer(recipe, tmp_path / "run", [snapshots])
    trainer.fit()
    frozen = trainer.init.frozen
    assert "backbone.cnn.layers.0.weight" in frozen and "backbone.mlp.2.weight" not in frozen
    start, first, second = snapshots.taken["start"], snapshots.taken["epoch 1"], snapshots.taken["epoch 2"]
    assert all(same(first[k], start[k]) for k in frozen)
    trained = [k for k in start if k not in frozen]
    assert trained and all(not same(first[k], start[k]) for k in trained)
    assert all(not same(second[k], first[k]) for k in frozen)
    assert all(p.requires_grad for p in trainer.model.parameters())


def test_resume_continues_from_the_checkpoint_without_the_source(tiny_run, tiny_data, source_tensors, tmp_path):
    (tmp_path / "r").mkdir()
    write_tensors(tmp_path / "r" / "w.safetensors", source_tensors, {})
    recipe = load_recipe(recipe_file(tmp_path / "r", "w.safetensors", freeze_epochs=1), tiny_args(tiny_data, 2, 64, *PARTIAL))
    run_dir = tmp_path / "run"
    Trainer(recipe, run_dir, [StopAt(1, 3)]).fit()  # stopped in the frozen epoch
    stopped = load_checkpoint(run_dir / "checkpoint.pt")
    (tmp_path / "r" / "w.safetensors").write_bytes(b"changed since")  # reloading it would fail
    snapshots = Snapshots()
    trainer = resume_trainer(run_dir, [snapshots])
    assert trainer.init is not None and trainer.init.frozen == stopped["init"]["frozen"]
    assert all(same(v, stopped["model"][k]) for k, v in model_tensors(trainer).items())  # the checkpoint's model
    trainer.fit()
    assert trainer.finished
    # still frozen for the rest of epoch 1 after the resume, trained in epoch 2
    assert all(same(snapshots.taken["epoch 1"][k], source_tensors[k]) for k in trainer.init.frozen)
    assert not all(same(snapshots.taken["epoch 2"][k], source_tensors[k]) for k in trainer.init.frozen)
    assert json.loads((run_dir / "init.json").read_text())["frozen"] == trainer.init.frozen

