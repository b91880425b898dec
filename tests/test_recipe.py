from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import assume, given

from digitsum.catalog import find_recipe, recipe_names
from digitsum.comparison import plan_variants
from digitsum.errors import RecipeError, UserError, did_you_mean
from digitsum.recipe import TrainSection, load_recipe, parse_override, recipe_document
from digitsum.registry import fusions

from .conftest import RECIPES
from .test_properties import SETTINGS, recipe_documents

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
[train.optimizer]
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
    assert recipe.optimizer.section.type == "adam" and recipe.optimizer.params.lr == 1e-3
    assert recipe.schedule.section.type == "onecycle" and recipe.schedule.params.momentum is None  # no momentum cycling by default
    assert recipe.log == {}


def test_all_errors_are_reported_at_once_with_file_line_key_and_suggestion(tmp_path):
    text = BASE.replace("hidden = [16]", "hiden = [16]").replace("lr = 1e-3", "lr = -1").replace(
        'target = "sum"', 'target = "summ"'
    )
    found = problems(write(tmp_path, text))
    assert len(found) == 3, found
    path = tmp_path / "r.toml"
    assert any(f"{path}:10 backbone.hiden: unknown key — did you mean 'hidden'?" in p for p in found)
    assert any(f"{path}:22 train.optimizer.lr: input should be greater than 0 (got -1) [optimizer 'adam']" in p for p in found)
    assert any("heads.sum.target" in p and "did you mean 'sum'" in p for p in found)


def test_unknown_component_suggests_closest(tmp_path):
    found = problems(write(tmp_path, BASE.replace('type = "concat"', 'type = "conact"')))
    assert found == [f"{tmp_path / 'r.toml'}:9 backbone.type: unknown fusion 'conact' — did you mean 'concat'? (valid: {', '.join(fusions.names())})"]


def test_invalid_toml_names_the_line(tmp_path):
    found = problems(write(tmp_path, BASE + "\nlr = = 3\n"))
    assert len(found) == 1 and f"{tmp_path / 'r.toml'}:24" in found[0] and "invalid TOML" in found[0], found


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
        (('name = "t"', 'name = "../evil"'), "name: must be 1-64 ASCII letters"),
        (("[train]", "[trian]"), "trian: unknown key — did you mean 'train'?"),
        (("hidden = [16]", "hidden = [0]"), "backbone.hidden: every size must be from 1 to 4096"),
        (("lr = 1e-3", "lr = 1e-3\nmomentum = 0.9"), "train.optimizer.momentum: unknown key — valid: betas, eps, lr, type, weight_decay [optimizer 'adam']"),
        (("[train.optimizer]", '[train.optimizer]\ntype = "adan"'), "train.optimizer.type: unknown optimizer 'adan' — did you mean 'adam'"),
        (("lr = 1e-3", 'lr = 1e-3\n[train.schedule]\ntype = "onecycle"\nwarmup = 1.5'), "train.schedule.warmup: input should be less than 1"),
        (("epochs = 1", 'epochs = 1\ndevice = "gpu"'), "train.device: must be auto, cpu, cuda, cuda:N or mps"),
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


def test_a_bad_head_name_is_reported_with_the_other_problems(tmp_path):
    text = 'name = "r"\nseed = "1"\ndata = 3\n[backbone]\ntype = "concat"\n[heads."my.head"]\ntype = "regres"\ntarget = "digit"\n'
    found = problems(write(tmp_path, text))
    assert [p.split(" ", 2)[1] for p in found] == ["seed:", "data:", "heads.'my.head':"], found

def test_missing_sections_are_reported(tmp_path):
    found = problems(write(tmp_path, 'name = "x"\n'))
    assert {p.split(" ")[1] for p in found} == {"data:", "backbone:", "heads:"}


def test_extends_merges_child_wins_and_type_change_replaces_table(tmp_path):
    write(tmp_path, BASE, "base.toml")
    child = write(tmp_path, 'extends = "base.toml"\nname = "child"\n[train.optimizer]\nlr = 0.01\n[heads.digit]\nweight = 2.0\n', "child.toml")
    recipe = load_recipe(child)
    assert recipe.name == "child"
    assert recipe.optimizer.params.lr == 0.01 and recipe.train.epochs == 1  # merged
    assert recipe.heads["digit"].section.weight == 2.0 and recipe.heads["digit"].section.target == "digit"
    assert recipe.backbone.params.hidden == [16]


def test_errors_in_a_parent_point_at_the_parent(tmp_path):
    write(tmp_path, BASE.replace("lr = 1e-3", "lr = 0"), "base.toml")
    child = write(tmp_path, 'extends = "base.toml"\n', "child.toml")
    found = problems(child)
    assert found == [f"{tmp_path / 'base.toml'}:22 train.optimizer.lr: input should be greater than 0 (got 0) [optimizer 'adam']"]


def test_extends_cycle_and_missing_parent(tmp_path):
    write(tmp_path, 'extends = "b.toml"\n', "a.toml")
    write(tmp_path, 'extends = "a.toml"\n', "b.toml")
    found = problems(tmp_path / "a.toml")
    assert any("extends itself in a cycle" in p for p in found)
    found = problems(write(tmp_path, 'extends = "missing.toml"\n', "c.toml"))
    assert found[0] == (
        f"{tmp_path / 'c.toml'}:1 extends: parent recipe 'missing.toml' not found: no such file in {tmp_path}, "
        "and no built-in or plugin recipe has that name — " + did_you_mean("missing", recipe_names(), "recipes")
    )


def test_overrides_parse_as_toml_else_string(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE), ["train.epochs=2", "backbone.hidden=[8, 4]", "train.optimizer.type=sgd"])
    assert recipe.train.epochs == 2 and recipe.backbone.params.hidden == [8, 4]
    assert recipe.optimizer.section.type == "sgd"
    assert recipe.optimizer.params.lr == 2e-3  # another type: the file's table (lr = 1e-3) is replaced whole
    assert parse_override("a.b = 1e-3") == (("a", "b"), 0.001)


def test_override_of_unknown_key_is_an_error_naming_the_set(tmp_path):
    found = problems(write(tmp_path, BASE), ["train.epoks=2"])
    valid = ", ".join(sorted([*TrainSection.model_fields, "optimizer", "schedule"]))  # every [train] key, however many there are
    assert found == [f"--set train.epoks=2 train.epoks: unknown key — did you mean 'epochs'? (valid: {valid})"]


@pytest.mark.parametrize("given, hint", [("64,32", "[64, 32]"), ("64", "[64]"), ('"8, 4"', "[8, 4]"), ("wide", None)])
def test_a_list_given_without_brackets_shows_it_in_brackets(tmp_path, given, hint):
    (found,) = problems(write(tmp_path, BASE), [f"backbone.hidden={given}"])
    assert "backbone.hidden: input should be a valid array" in found
    assert (f"a list is written in brackets: {hint}" in found) if hint else "brackets" not in found

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


# -- resolution: a path, else a name -------------------------------------------------------------


def test_extends_by_name_finds_the_built_in_from_any_folder(tmp_path):
    child = write(tmp_path, 'extends = "original"\nname = "mine"\n[train]\nepochs = 1\n')
    recipe = load_recipe(child)
    assert recipe.name == "mine" and recipe.train.epochs == 1
    assert recipe.optimizer.section.type == "adamw" and list(recipe.heads) == ["digit", "sum"]  # from original


def test_extends_prefers_a_file_beside_the_child_to_a_name(tmp_path):
    write(tmp_path, BASE.replace('name = "t"', 'name = "local"'), "original.toml")
    child = write(tmp_path, 'extends = "original.toml"\n', "child.toml")
    assert load_recipe(child).optimizer.section.type == "adam"  # BASE's, not the built-in's adamw
    assert load_recipe(child).name == "local"


def test_problems_of_a_recipe_loaded_by_name_point_into_its_file(tmp_path):
    # two_images has no `digit` target: the problem is in original.toml's [heads.digit]
    found = problems("original", ["data.type=two_images"])
    path = find_recipe("original").path
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith('target = "digit"'))
    assert any(p.startswith(f"{path}:{line} heads.digit.target: dataset generator 'two_images' has no target 'digit'") for p in found), found


@pytest.mark.parametrize("source", ["orignal", "orignal.toml"])
def test_an_unknown_name_suggests_the_closest(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as e:
        load_recipe(source)
    assert e.value.message.startswith(
        f"recipe '{source}' not found: no such file, and no built-in or plugin recipe has that name — did you mean 'original'"  # the closest first
    )


def test_a_missing_path_with_folders_is_just_a_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"recipe not found: no such file: .*/nope/x\.toml$"):
        load_recipe(tmp_path / "nope" / "x.toml")


def test_a_missing_path_named_like_a_shipped_recipe_points_to_its_name(tmp_path, monkeypatch):
    """The docs' ``recipes/film.toml`` outside a checkout: the name works anywhere."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"no such file: recipes/film\.toml — a recipe named 'film' ships with digitsum"):
        load_recipe("recipes/film.toml")


def test_a_run_directory_given_as_a_recipe_says_what_would_fit(tmp_path):
    run = tmp_path / "runs" / "o2"
    run.mkdir(parents=True)
    (run / "recipe.toml").write_text(BASE)
    with pytest.raises(UserError) as e:
        load_recipe(run)
    assert f"{run} is a run directory; its recipe is {run / 'recipe.toml'}" in e.value.message
    assert f"digitsum run --resume {run}" in e.value.message and f"digitsum eval {run}" in e.value.message


def test_a_file_in_the_working_folder_beats_a_built_in_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "original").write_text(BASE)  # a file literally called `original`
    assert load_recipe("original").name == "t"


def test_a_folder_does_not_shadow_a_built_in_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "original").mkdir()
    assert load_recipe("original").name == "original"
    (tmp_path / "somewhere").mkdir()
    with pytest.raises(UserError, match="somewhere is a folder; give a recipe .toml file or a recipe name"):
        load_recipe("somewhere")


@pytest.mark.parametrize("bad", [3, "", ["original"]])
def test_extends_must_name_a_recipe(tmp_path, bad):
    text = f"extends = {bad!r}\n".replace("'", '"') if not isinstance(bad, int) else f"extends = {bad}\n"
    found = problems(write(tmp_path, text + BASE))
    assert any("extends: must be a recipe name or a path to a recipe" in p for p in found), found


# -- recipes and overrides as Python data ------------------------------------------------------------


def base_dict() -> dict:
    return tomllib.loads(BASE)


def test_a_dict_source_loads_like_the_file():
    assert load_recipe(base_dict()).to_dict() == load_recipe(base_dict()).to_dict()
    assert load_recipe(base_dict()).name == "t"
    doc = base_dict()
    del doc["name"]
    assert load_recipe(doc).name == "recipe"  # no file name to default to


def test_a_dict_source_is_not_changed_and_extends_by_name():
    doc = {"extends": "original", "name": "api", "train": {"epochs": 1}, "heads": {"sum": False}}
    recipe = load_recipe(doc)
    assert recipe.name == "api" and recipe.train.epochs == 1 and list(recipe.heads) == ["digit"]
    assert doc == {"extends": "original", "name": "api", "train": {"epochs": 1}, "heads": {"sum": False}}


def test_a_dict_sources_problems_are_labelled_dict():
    doc = base_dict()
    doc["train"]["optimizer"]["lr"] = -1
    doc["backbone"]["hiden"] = [3]
    doc["heads"]["digit"][3] = "x"
    found = problems(doc)
    assert "<dict> train.optimizer.lr: input should be greater than 0 (got -1) [optimizer 'adam']" in found
    assert any(p.startswith("<dict> backbone.hiden: unknown key — did you mean 'hidden'?") for p in found)
    assert "<dict> heads.digit: has a key that is not a string: 3" in found
    with pytest.raises(RecipeError) as e:
        load_recipe(doc)
    assert e.value.message.startswith("<dict>: 3 problems")


def test_dict_overrides_take_python_values(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE), {"train.epochs": 2, "backbone.hidden": [8, 4], "train.optimizer.type": "sgd",
                                                 "heads.sum": False})  # fmt: skip
    assert recipe.train.epochs == 2 and recipe.backbone.params.hidden == [8, 4] and recipe.optimizer.section.type == "sgd"
    assert list(recipe.heads) == ["digit"]
    assert load_recipe(write(tmp_path, BASE), {"train": {"optimizer": {"lr": 0.5}}}).optimizer.params.lr == 0.5  # a table merges


def test_dict_overrides_take_a_notebooks_values_paths_and_numpy(tmp_path):
    # was: "input should be a valid integer (got np.int64(2))", "a valid string (got PosixPath(...))"
    import numpy as np

    recipe = load_recipe(write(tmp_path, BASE), {"train.epochs": np.int64(2), "data.root": tmp_path / "mnist",
                                                 "backbone.hidden": np.array([8, 4]), "train": {"optimizer": {"lr": np.float64(0.5)}}})  # fmt: skip
    assert recipe.train.epochs == 2 and type(recipe.train.epochs) is int
    assert recipe.data.section.root == str(tmp_path / "mnist") and recipe.backbone.params.hidden == [8, 4]
    assert recipe.optimizer.params.lr == 0.5


def test_dict_override_problems_name_the_key(tmp_path):
    found = problems(write(tmp_path, BASE), {"train.epochs": "three", "train..x": 1, "train.epoks": 2})
    assert "overrides['train..x'] expected a dotted key of letters, digits, '_' and '-', e.g. 'train.epochs'" in found
    assert any(p.startswith("overrides['train.epochs'] train.epochs: input should be a valid integer") for p in found), found
    assert any(p.startswith("overrides['train.epoks'] train.epoks: unknown key — did you mean 'epochs'?") for p in found), found
    assert len(found) == 3


def test_recipe_document_merges_without_validating(tmp_path):
    doc = recipe_document("two-images", ["train.epochs=1"])
    assert doc["train"]["epochs"] == 1 and list(doc["heads"]) == ["digit_a", "digit_b", "sum"]
    assert doc["backbone"] == {"type": "concat", "conv_channels": [6, 12], "hidden": [120, 60]}  # no defaults added
    with pytest.raises(RecipeError, match="parent recipe 'nope' not found"):
        recipe_document({"extends": "nope"})


# -- removing inherited heads ---------------------------------------------------------------------


def test_a_child_removes_an_inherited_head(tmp_path):
    write(tmp_path, BASE, "base.toml")
    child = write(tmp_path, 'extends = "base.toml"\n[heads]\nsum = false\n', "child.toml")
    assert list(load_recipe(child).heads) == ["digit"]
    assert "sum" not in load_recipe(child).to_toml()


@pytest.mark.parametrize("overrides", [["heads.digit=false"], {"heads.digit": False}], ids=["set", "dict"])
def test_an_override_removes_a_head(tmp_path, overrides):
    assert list(load_recipe(write(tmp_path, BASE), overrides).heads) == ["sum"]


def test_removing_every_head_points_at_the_removals(tmp_path):
    write(tmp_path, BASE, "base.toml")
    child = write(tmp_path, 'extends = "base.toml"\n[heads]\ndigit = false\nsum = false\n', "child.toml")
    assert problems(child) == [f"{child}:4 heads: needs at least one [heads.<name>] table; "
                               f"removed: heads.digit ({child}:3), heads.sum ({child}:4)"]  # fmt: skip
    (found,) = problems(tmp_path / "base.toml", ["heads.digit=false", "heads.sum=false"])
    assert found.startswith("--set heads.sum=false heads: needs at least one") and "heads.digit (--set heads.digit=false)" in found

def test_removing_a_head_that_is_not_there_suggests_one(tmp_path):
    found = problems(write(tmp_path, BASE), ["heads.dgit=false"])
    assert found == ["--set heads.dgit=false heads.dgit: there is no inherited head 'dgit' to remove — did you mean 'digit'? (valid: digit, sum)"]
    found = problems(write(tmp_path, BASE.replace("[heads.sum]", "[heads]\nmine = false\n\n[heads.sum]"), "own.toml"))
    assert found == [f"{tmp_path / 'own.toml'}:17 heads.mine: there is no inherited head 'mine' to remove — nothing is inherited here"]


@pytest.mark.parametrize("key", ["data", "backbone", "train", "heads", "train.optimizer", "train.schedule"])
def test_only_heads_and_loggers_can_be_removed(tmp_path, key):
    found = problems(write(tmp_path, BASE), [f"{key}=false"])
    assert f"--set {key}=false {key}: cannot be removed: `= false` removes only a head or a logger (heads.<name> = false, " \
           "log.<name> = false); every other table is needed, or has defaults" in found  # fmt: skip


def test_removing_a_table_in_a_file_names_the_line(tmp_path):
    write(tmp_path, BASE, "base.toml")
    child = write(tmp_path, 'extends = "base.toml"\nbackbone = false\n', "child.toml")
    found = problems(child)
    assert found[0].startswith(f"{child}:2 backbone: cannot be removed")


def test_removing_every_head_leaves_none(tmp_path):
    found = problems(write(tmp_path, BASE), {"heads.digit": False, "heads.sum": False})
    assert any("heads: needs at least one [heads.<name>] table" in p for p in found), found


def test_a_false_value_that_is_not_a_table_is_a_plain_value(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE), ["data.download=false", "train.compile=false"])
    assert recipe.data.section.download is False


def test_new_heads_go_where_the_child_writes_them(tmp_path):
    write(tmp_path, BASE, "base.toml")
    child = write(tmp_path, 'extends = "base.toml"\n[heads.first]\ntarget = "digit"\n[heads.sum]\nweight = 2.0\n[heads.last]\ntarget = "sum"\n', "c.toml")
    assert list(load_recipe(child).heads) == ["digit", "first", "sum", "last"]
    assert list(load_recipe(write(tmp_path, BASE), ["heads.extra.target=sum"]).heads) == ["digit", "sum", "extra"]
    assert list(load_recipe("two-images").heads) == ["digit_a", "digit_b", "sum"]


# -- overrides together, and where each came from -----------------------------------------------------


def test_a_type_change_among_overrides_keeps_the_other_overrides(tmp_path):
    path = write(tmp_path, BASE)
    for order in (["heads.digit.hidden=8", "heads.digit.type=regress"], ["heads.digit.type=regress", "heads.digit.hidden=8"]):
        recipe = load_recipe(path, ["heads.digit.target=digit", *order])
        head = recipe.heads["digit"]
        assert head.section.type == "regress" and head.params.hidden == 8 and head.section.target == "digit", order
    # the file's table is still replaced: its classify-only keys do not reach the regress head
    found = problems(write(tmp_path, BASE.replace('type = "classify"', 'type = "classify"\nlabel_smoothing = 0.1'), "s.toml"),
                     ["heads.digit.type=regress"])  # fmt: skip
    assert len(found) == 1 and found[0].startswith("--set heads.digit.type=regress heads.digit.target: is required but missing — ")
    assert "dropping the keys it had: label_smoothing, target" in found[0]


def test_compare_grid_type_with_a_set_target():
    variants = plan_variants(["original"], ["heads.x.type=classify,regress"], ["heads.x.target=sum"])
    assert [(v.recipe.heads["x"].section.type, v.recipe.heads["x"].section.target) for v in variants] == [
        ("classify", "sum"), ("regress", "sum"),
    ]  # fmt: skip


def test_grid_values_are_labelled_as_grid_values():
    with pytest.raises(RecipeError) as e:
        plan_variants(["original"], ["train.optimizer.lr=0,1"], ["train.epochs=1"])
    assert [p.render() for p in e.value.problems] == [
        "--grid train.optimizer.lr=0 train.optimizer.lr: input should be greater than 0 (got 0) [optimizer 'adamw']"
    ]


def test_an_override_through_a_value_is_not_a_table(tmp_path):
    found = problems(write(tmp_path, BASE), ["train.epochs.x=1"])
    assert found == ["--set train.epochs.x=1 train.epochs.x: 'train.epochs' is not a table"]


@SETTINGS
@given(doc=recipe_documents())
def test_a_dict_and_its_toml_file_load_alike(tmp_path, doc):
    """Any document: as a dict and written to a file, the same recipe or the same problems."""
    assume("extends" not in doc)  # resolved from different folders (the working folder, the file's)
    doc.setdefault("name", "r")  # a file's name defaults to its stem, a dict's to "recipe"
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(doc))
    doc = tomllib.loads(path.read_text())  # the same data in the file's key order (tomli_w may reorder)
    outcomes = []
    for source in (doc, path):
        try:
            outcomes.append(repr(load_recipe(source).to_dict()))
        except RecipeError as e:
            outcomes.append(sorted((p.key, p.message) for p in e.problems))
    assert outcomes[0] == outcomes[1]


# -- resource limits and names (issue 26): refused before anything recurses or allocates ---------

DEEP = 2000  # far past the limit and past Python's recursion limit


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("x = " + "[" * DEEP + "]" * DEEP, "r.toml:"),  # nested arrays
        ("x = " + "{a = " * DEEP + "1" + "}" * DEEP, "r.toml:"),  # nested inline tables
        ("[" + ".".join(["t"] * DEEP) + "]\nx = 1", "t.t.t.t"),  # a long table header
        (".".join(["k"] * DEEP) + " = 1", "k.k.k.k"),  # a long dotted key
    ],
    ids=["arrays", "inline-tables", "header", "dotted-key"],
)
def test_deep_nesting_is_a_recipe_error_not_a_recursion_error(tmp_path, cli, extra, expected):
    path = write(tmp_path, extra + "\n" + BASE) if not extra.startswith("[") else write(tmp_path, BASE + "\n" + extra)
    with pytest.raises(RecipeError, match="nested more than 32 levels deep") as e:
        load_recipe(path)
    assert expected in str(e.value)
    result = cli("show", path)
    assert result.code == 2 and "Traceback" not in result.err and "nested more than 32" in result.err


def test_a_nesting_within_the_limit_is_accepted(tmp_path):
    momentum = "[" * 20 + "0.9" + "]" * 20
    with pytest.raises(RecipeError) as e:  # accepted by the reader, refused by the schedule's own check
        load_recipe(write(tmp_path, BASE + f"\n[train.schedule]\nmomentum = {momentum}\n"))
    assert "nested" not in str(e.value)


def test_a_long_key_is_refused_and_not_echoed_whole(tmp_path):
    path = write(tmp_path, BASE.replace("seed = 3", "seed = 3\n" + "z" * 100_000 + " = 1"))
    with pytest.raises(RecipeError, match="a key must be 1-128 printable characters") as e:
        load_recipe(path)
    assert "r.toml:3" in str(e.value) and len(str(e.value)) < 400


def test_a_recipe_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    from digitsum.recipe import document

    def never(*args):
        raise AssertionError("a recipe over the limit was parsed")

    monkeypatch.setattr(document, "bracket_problem", never)
    monkeypatch.setattr(document, "parse_toml", never)
    path = tmp_path / "big.toml"
    with path.open("w") as f:
        f.write(BASE + "\n# ")
        f.truncate(50 << 20)  # 50 MB (sparse: a NUL-filled comment)
    with pytest.raises(UserError, match="larger than 1 MiB"):
        load_recipe(path)


def test_a_long_extends_chain_is_refused_naming_it(tmp_path):
    (tmp_path / "c0.toml").write_text(BASE)
    for i in range(1, 40):
        (tmp_path / f"c{i}.toml").write_text(f'extends = "c{i - 1}.toml"\n')
    load_recipe(tmp_path / "c31.toml")  # 32 files: the limit
    with pytest.raises(RecipeError, match="chain of extends is longer than 32 files") as e:
        load_recipe(tmp_path / "c32.toml")
    assert "c32.toml -> " in str(e.value) and " -> ... -> " in str(e.value) and "c0.toml" in str(e.value)
    with pytest.raises(RecipeError, match="longer than 32 files"):
        load_recipe(tmp_path / "c39.toml")


@pytest.mark.parametrize("name", ["a.b", "", "\x1b[31mred", "a b", "x" * 65, "ü"])
@pytest.mark.parametrize("table", ["heads", "log"])
def test_names_of_heads_and_loggers_are_identifiers(tmp_path, cli, name, table):
    quoted = name.replace("\x1b", "\\u001b")
    body = 'target = "sum"' if table == "heads" else 'type = "csv"'
    path = write(tmp_path, BASE + f'\n[{table}."{quoted}"]\n{body}\n')
    what = "a head's" if table == "heads" else "a logger's"
    with pytest.raises(RecipeError, match=f"{what} name must be 1-64 ASCII letters, digits, '_' or '-'") as e:
        load_recipe(path)
    assert f" {table}." in str(e.value) and "\x1b" not in str(e.value)
    for command in ("show", "run"):
        result = cli(command, path, "--out", tmp_path / "out") if command == "run" else cli(command, path)
        assert result.code == 2 and f"{what} name" in result.err and "\x1b" not in result.err
    assert not (tmp_path / "out").exists()


def test_names_from_a_dict_or_an_override_meet_the_same_rule():
    with pytest.raises(RecipeError, match="a head's name must be"):
        load_recipe({"extends": "original", "heads": {"a.b": {"target": "sum"}}})
    with pytest.raises(RecipeError, match="a logger's name must be"):
        load_recipe("original", {"log": {"": True}})


def test_set_extends_is_refused_not_ignored():
    for overrides in (["extends=film"], {"extends": "film"}, ["extends.x=1"]):
        with pytest.raises(RecipeError, match="extends: cannot be overridden") as e:
            load_recipe("original", overrides)
        assert "digitsum run NAME" in str(e.value)
    with pytest.raises(RecipeError, match="--grid extends=film extends: cannot be overridden"):
        load_recipe("original", grid=["extends=film"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("x=" + "[" * DEEP + "]" * DEEP, "nested more than 32 levels deep"),
        ("train.optimizer.x=" + "{a=" * 40 + "1" + "}" * 40, "nested more than 32 levels deep"),
        (".".join(["a"] * 40) + "=1", "nested more than 32 levels deep"),
        ("z" * 300 + "=1", "a key must be 1-128 printable characters"),
    ],
    ids=["deep-value", "deep-inline-table", "long-path", "long-key"],
)
def test_overrides_meet_the_same_limits(override, expected):
    with pytest.raises(RecipeError, match=expected) as e:
        load_recipe("original", [override])
    assert len(str(e.value)) < 600  # the override is not echoed whole


def test_a_cyclic_python_document_is_refused():
    cyclic: dict = {"extends": "original"}
    cyclic["train"] = cyclic
    with pytest.raises(RecipeError, match="nested more than 32 levels deep"):
        load_recipe(cyclic)
    with pytest.raises(RecipeError, match="overrides\\['x'\\] x.train.train"):
        load_recipe("original", {"x": cyclic})


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ('[head.digit]\ntarget = "digit"\n', 5, "head"),  # a misspelt table, only implied by its sub-table's header
        ("[train.optimiser.x]\nlr = 1\n", 5, "train.optimiser"),  # nested, implied too
        ("[backbone]\nextra.deep = 1\n", 6, "backbone.extra"),  # a dotted key implies its table
        ("\n\nunknown = 1\n", 7, "unknown"),
    ],
)
def test_unknown_tables_and_keys_carry_their_line(tmp_path, text, line, key):
    path = write(tmp_path, 'extends = "original"\nname = "k2"\n\n\n' + text)
    found = problems(path)
    assert any(p.startswith(f"{path}:{line} {key}: unknown key") for p in found), found


def test_a_recipe_rebuilt_from_its_dict_names_itself_not_dict():
    import digitsum

    with pytest.raises(RecipeError) as e:
        digitsum.load_recipe(digitsum.load_recipe("original"), {"train.epochs": 0})
    assert str(e.value).startswith("recipe 'original': 1 problem") and "<dict>" not in str(e.value)
    with pytest.raises(RecipeError) as e:
        load_recipe({"extends": "original", "train": {"epochs": 0}}, label="mine")
    assert e.value.problems[0].where == "mine"


def test_a_type_override_that_drops_a_required_key_says_so(tmp_path):
    path = write(tmp_path, BASE.replace('[heads.sum]\ntarget = "sum"', '[heads.sum]\ntype = "regress"\ntarget = "sum"\nweight = 2.0'))
    found = problems(path, ["heads.sum.type=classify"])
    assert len(found) == 1, found
    assert found[0].startswith("--set heads.sum.type=classify heads.sum.target: is required but missing — ")
    assert "replaced [heads.sum] whole, dropping the keys it had: target, weight" in found[0]
    assert "keep target with --set heads.sum.target=sum" in found[0]
    # the same through a dict of overrides, and when the type change comes from a child recipe
    found = problems(path, {"heads.sum.type": "classify"})
    assert "keep target with overrides['heads.sum.target'] = 'sum'" in found[0], found
    child = write(tmp_path, 'extends = "r.toml"\n\n[heads.sum]\ntype = "classify"\n', "child.toml")
    found = problems(child)
    assert found[0].startswith(f"{child}:3 heads.sum.target: is required but missing — {child}:4 changed heads.sum.type"), found
    assert 'keep target by writing target = "sum" in [heads.sum] too' in found[0]


def test_a_dropped_key_given_again_is_not_blamed_on_the_type_change(tmp_path):
    path = write(tmp_path, BASE.replace('[heads.sum]\ntarget = "sum"', '[heads.sum]\ntype = "regress"\ntarget = "sum"'))
    found = problems(path, ["heads.sum.type=classify", "heads.sum.target=summ"])
    assert len(found) == 1 and "did you mean 'sum'" in found[0] and "replaced" not in found[0], found
    load_recipe(path, ["heads.sum.type=classify", "heads.sum.target=sum"])  # kept: nothing to say


@pytest.mark.parametrize("bulk", [{"description": "x" * 2_000_000}, {"heads": {"sum": {"type": "classify", "target": "sum", "note": ["y" * 1000] * 1100}}}])
def test_a_python_document_meets_the_size_limit_of_a_file(bulk):
    # its run's recipe.toml would be over 1 MiB, a file no load_run, eval or resume could read back
    with pytest.raises(RecipeError, match="more than 1 MiB of text"):
        load_recipe({"extends": "original", "name": "big", **bulk})
    load_recipe({"extends": "original", "name": "small", "description": "x" * 1000})  # a long description is fine


@pytest.mark.parametrize("name", recipe_names())
def test_a_resolved_recipe_writes_short_arrays_on_one_line_and_reads_back_the_same(name):
    recipe = load_recipe(name)
    text = recipe.to_toml()
    assert load_recipe(tomllib.loads(text)).to_dict() == recipe.to_dict()
    assert not any(line.rstrip().endswith("= [") for line in text.splitlines()), text  # every array here is short


def test_toml_text_joins_only_what_reads_back_the_same():
    from digitsum.recipe import toml_text

    doc = {"a": [6, 12], "b": ["x, y", "z]"], "t": {"c": [0.85, 0.95], "d": list(range(60)), "e": [True, "q"]}}
    text = toml_text(doc)
    assert tomllib.loads(text) == doc
    assert "a = [6, 12]\n" in text and 'e = [true, "q"]\n' in text and "c = [0.85, 0.95]\n" in text
    assert "b = [\n" in text and "d = [\n" in text  # a bracket inside a string, an array too long for a line


def test_a_table_missing_a_fixed_key_still_has_its_type_checked():
    with pytest.raises(RecipeError) as caught:
        load_recipe("original", ['heads.digit={type="clasify"}'])
    said = {p.key: p.message for p in caught.value.problems}
    assert "is required but missing" in said["heads.digit.target"] and "did you mean 'classify'" in said["heads.digit.type"]


def test_a_recipe_saved_with_a_byte_order_mark_reads_as_without(tmp_path):
    path = tmp_path / "windows.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'extends = "original"\nseed = 4\n')
    assert load_recipe(path).seed == 4


def test_a_bad_value_beside_an_array_field_is_the_only_problem_reported(tmp_path):
    # was: a second, false problem: "train.schedule.momentum: input should be a valid array (got [0.85, 0.95])"
    text = BASE.replace("lr = 1e-3", 'lr = 1e-3\n[train.schedule]\ntype = "onecycle"\nwarmup = 1.5\nmomentum = [0.85, 0.95]')
    found = problems(write(tmp_path, text))
    assert len(found) == 1 and "train.schedule.warmup: input should be less than 1" in found[0], found


def test_a_recipe_with_very_many_problems_lists_the_first_fifty_and_keeps_them_all(tmp_path):
    text = BASE + "".join(f"unknown{i} = 1\n" for i in range(200))
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, text))
    assert len(e.value.problems) == 200
    lines = e.value.message.splitlines()
    assert len(lines) == 52 and lines[-1].strip() == "... and 150 more (the whole list: RecipeError.problems)"


@pytest.mark.parametrize("fixed, own", [("data.batch_size=12.5", "data.normalize=1"), ("heads.sum.weight=-1", "heads.sum.label_smoothing=5"),
                                        ("data.val=-1", "data.normalize=1")])  # fmt: skip
def test_a_wrong_fixed_key_hides_no_wrong_parameter_of_the_same_component(tmp_path, fixed, own):
    # was: only the fixed key (batch_size, weight, val) reported; fixing it revealed the other
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, BASE), [fixed, own])
    assert [p.key for p in e.value.problems] == [fixed.split("=")[0], own.split("=")[0]]


@pytest.mark.parametrize("given, meant", [("epochs", "train.epochs"), ("batch_size", "data.batch_size"), ("lr", "train.optimizer.lr")])
def test_a_tables_key_written_at_the_top_is_pointed_to_its_table(tmp_path, given, meant):
    # was: "unknown key — valid: backbone, data, ..." with no word of train.epochs
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, BASE), [f"{given}=2"])
    [problem] = e.value.problems
    assert problem.message.startswith(f"unknown key — did you mean '{meant}'?")


def test_a_value_that_fits_no_member_of_a_union_is_one_problem_at_its_key():
    # was: two problems, at train.compile.bool and train.compile."literal['reduce-overhead','max-autot...
    with pytest.raises(RecipeError) as caught:
        load_recipe(RECIPES / "original.toml", ["train.compile=maybe"])
    assert len(caught.value.problems) == 1
    (problem,) = caught.value.problems
    assert problem.key == "train.compile"
    assert problem.message == "input should be a valid boolean or 'reduce-overhead' or 'max-autotune' (got \"maybe\")"


def test_a_parent_that_is_not_toml_is_one_problem_not_three_missing_tables(tmp_path):
    # was: its TOML error, then data, backbone and heads "required but missing" in the child
    (tmp_path / "notes.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    child = tmp_path / "child.toml"
    child.write_text('extends = "notes.txt"\n')
    with pytest.raises(RecipeError) as caught:
        load_recipe(child)
    assert [(p.key, p.message.split(":")[0]) for p in caught.value.problems] == [
        ("", "invalid TOML"), ("extends", f"the parent {tmp_path / 'notes.txt'} cannot be read (above)")]


def test_an_integer_too_long_for_python_to_write_is_a_user_error_not_a_valueerror():
    # Python refuses to write ints over 4300 digits in decimal: the message describes it instead
    with pytest.raises(UserError, match="got an integer of about 5001 digits"):
        load_recipe({"extends": "original", "seed": 10**5000})
