from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from digitsum.errors import RecipeError, UserError
from digitsum.recipe import TrainSection, load_recipe, parse_override
from digitsum.registry import fusions

from .conftest import RECIPES

BASE = """\
name = "t"
seed = 3

[data]
type = "single_digit"
batch_size = 32

[backbone]
type = "concat"
hidden = [16]

[heads.digit]
type = "classify"
target = "digit"

[heads.sum]
target = "sum"

[train]
epochs = 1
lr = 1e-3
"""


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, overrides=()) -> list[str]:
    with pytest.raises(RecipeError) as e:
        load_recipe(path, overrides)
    return [p.render() for p in e.value.problems]


def test_valid_recipe_fills_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE))
    assert recipe.name == "t" and recipe.seed == 3
    assert recipe.backbone.params.hidden == [16]
    assert recipe.backbone.params.conv_channels == [6, 12]  # default
    assert recipe.heads["sum"].section.type == "classify"  # default head type
    assert recipe.train.optimizer == "adam"


def test_all_errors_are_reported_at_once_with_file_line_key_and_suggestion(tmp_path):
    text = BASE.replace("hidden = [16]", "hiden = [16]").replace("lr = 1e-3", "lr = -1").replace(
        'target = "sum"', 'target = "summ"'
    )
    found = problems(write(tmp_path, text))
    assert len(found) == 3, found
    path = tmp_path / "r.toml"
    assert any(f"{path}:10 backbone.hiden: unknown key — did you mean 'hidden'?" in p for p in found)
    assert any(f"{path}:21 train.lr: input should be greater than 0 (got -1)" in p for p in found)
    assert any("heads.sum.target" in p and "did you mean 'sum'" in p for p in found)


def test_unknown_component_suggests_closest(tmp_path):
    found = problems(write(tmp_path, BASE.replace('type = "concat"', 'type = "conact"')))
    assert found == [f"{tmp_path / 'r.toml'}:9 backbone.type: unknown fusion 'conact' — did you mean 'concat'? (valid: {', '.join(fusions.names())})"]


def test_invalid_toml_names_the_line(tmp_path):
    found = problems(write(tmp_path, BASE + "\nlr = = 3\n"))
    assert len(found) == 1 and f"{tmp_path / 'r.toml'}:23" in found[0] and "invalid TOML" in found[0], found


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="recipe not found"):
        load_recipe(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "edit,expected",
    [
        (("batch_size = 32", "batch_size = 0"), "data.batch_size: input should be greater than or equal to 1 (got 0)"),
        (("epochs = 1", "epochs = 1000000"), "train.epochs: input should be less than or equal to 1000"),
        (("epochs = 1", 'epochs = "three"'), "train.epochs: input should be a valid integer"),
        (("seed = 3", "seed = -1"), "seed: must be an integer"),
        (('name = "t"', 'name = "../evil"'), "name: must be 1-64 letters"),
        (("[train]", "[trian]"), "trian: unknown key — did you mean 'train'?"),
        (("hidden = [16]", "hidden = [0]"), "backbone.hidden: every size must be from 1 to 4096"),
        (("lr = 1e-3", 'device = "gpu"'), "train.device: must be auto, cpu, cuda, cuda:N or mps"),
        (('target = "digit"', 'target = "digit"\nweight = -2'), "heads.digit.weight: input should be greater than or equal to 0"),
        (('[heads.sum]\ntarget = "sum"', '[heads.sum]\ntype = "clasify"\ntarget = "sum"'), "unknown head 'clasify' — did you mean 'classify'?"),
        (('[heads.sum]\ntarget = "sum"', "[heads.sum]\n"), "heads.sum.target: is required but missing"),
    ],
)
def test_bad_values_name_the_key(tmp_path, edit, expected):
    old, new = edit
    assert old in BASE
    found = problems(write(tmp_path, BASE.replace(old, new)))
    assert any(expected in p for p in found), found


def test_missing_sections_are_reported(tmp_path):
    found = problems(write(tmp_path, 'name = "x"\n'))
    assert {p.split(" ")[1] for p in found} == {"data:", "backbone:", "heads:"}


def test_extends_merges_child_wins_and_type_change_replaces_table(tmp_path):
    write(tmp_path, BASE, "base.toml")
    child = write(tmp_path, 'extends = "base.toml"\nname = "child"\n[train]\nlr = 0.01\n[heads.digit]\nweight = 2.0\n', "child.toml")
    recipe = load_recipe(child)
    assert recipe.name == "child"
    assert recipe.train.lr == 0.01 and recipe.train.epochs == 1  # merged
    assert recipe.heads["digit"].section.weight == 2.0 and recipe.heads["digit"].section.target == "digit"
    assert recipe.backbone.params.hidden == [16]


def test_errors_in_a_parent_point_at_the_parent(tmp_path):
    write(tmp_path, BASE.replace("lr = 1e-3", "lr = 0"), "base.toml")
    child = write(tmp_path, 'extends = "base.toml"\n', "child.toml")
    found = problems(child)
    assert found == [f"{tmp_path / 'base.toml'}:21 train.lr: input should be greater than 0 (got 0)"]


def test_extends_cycle_and_missing_parent(tmp_path):
    write(tmp_path, 'extends = "b.toml"\n', "a.toml")
    write(tmp_path, 'extends = "a.toml"\n', "b.toml")
    found = problems(tmp_path / "a.toml")
    assert any("extends itself in a cycle" in p for p in found)
    found = problems(write(tmp_path, 'extends = "missing.toml"\n', "c.toml"))
    assert any("parent recipe not found" in p and "missing.toml" in p for p in found)


def test_overrides_parse_as_toml_else_string(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE), ["train.epochs=2", "backbone.hidden=[8, 4]", "train.optimizer=sgd"])
    assert recipe.train.epochs == 2 and recipe.backbone.params.hidden == [8, 4]
    assert recipe.train.optimizer == "sgd"
    assert parse_override("a.b = 1e-3") == (("a", "b"), 0.001)


def test_override_of_unknown_key_is_an_error_naming_the_set(tmp_path):
    found = problems(write(tmp_path, BASE), ["train.epoks=2"])
    valid = ", ".join(sorted(TrainSection.model_fields))  # every [train] key, however many there are
    assert found == [f"--set train.epoks=2 train.epoks: unknown key — did you mean 'epochs'? (valid: {valid})"]


@pytest.mark.parametrize("bad", ["noequals", "=3", "a..b=1", "train.epochs.x=1"])
def test_malformed_overrides_are_errors(tmp_path, bad):
    found = problems(write(tmp_path, BASE), [bad])
    assert found and all("--set" in p for p in found)


def test_override_changing_type_replaces_the_component_table(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE), ["heads.digit.type=classify", "backbone.type=concat"])
    assert recipe.backbone.params.hidden == [16]  # same type: table kept


def test_wiring_head_bound_to_a_missing_target(tmp_path):
    found = problems(write(tmp_path, BASE), ["heads.extra.target=product"])
    assert any("heads.extra.target" in p and "has no target 'product'" in p and "valid: digit, sum" in p for p in found)


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE), ["train.epochs=2"])
    resolved = write(tmp_path, recipe.to_toml({"digitsum": "x"}), "resolved.toml")
    doc = tomllib.loads(resolved.read_text())
    assert doc["backbone"]["conv_channels"] == [6, 12] and doc["provenance"]["digitsum"] == "x"
    again = load_recipe(resolved)
    assert again.to_dict() == recipe.to_dict()


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_is_valid(path):
    assert load_recipe(path).name
