"""Shipped recipes: entry points, resolution by name, `digitsum list recipes`, `digitsum cp`."""

from __future__ import annotations

import importlib
import json
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from digitsum import catalog, plugin_report, registry
from digitsum.catalog import copy_recipe, find_recipe, recipe_entries, resolve_recipe, settings_digest
from digitsum.errors import UserError
from digitsum.listing import describe_recipes
from digitsum.recipe import load_recipe, recipe_document

from .conftest import RECIPES, REPO, fake_distribution

BUILTINS = sorted(ep.name for ep in metadata.entry_points(group="digitsum.recipes") if ep.dist.name == "digitsum")
PLUGIN_RECIPE = """\
name = "{name}"
description = "{description}"
extends = "original"

[train]
epochs = 1
"""


def test_the_built_ins_are_declared_by_entry_point():
    assert {"original", "notebook", "film", "two-images"} <= set(BUILTINS)
    # every file in the package's recipe folder is declared, and nothing else is
    assert sorted(p.stem for p in (REPO / "digitsum" / "recipes").glob("*.toml")) == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_every_built_in_loads_by_name(name):
    entry = find_recipe(name)
    assert entry.builtin and entry.origin == "built-in" and entry.path == (REPO / "digitsum" / "recipes" / f"{name}.toml")
    assert load_recipe(name).name == name
    assert (RECIPES / f"{name}.toml").resolve() == entry.path.resolve()  # the top-level `recipes` link


@pytest.mark.parametrize("name", BUILTINS)
def test_a_copied_built_in_loads_from_another_folder(name, tmp_path, monkeypatch):
    copied = copy_recipe(name, tmp_path / "elsewhere" / "mine.toml")
    assert copied.read_bytes() == find_recipe(name).path.read_bytes()  # as shipped, comments and all
    monkeypatch.chdir(tmp_path)
    assert load_recipe(copied).to_dict() == load_recipe(name).to_dict()
    parent = tomllib.loads(copied.read_text()).get("extends")
    assert parent is None or parent in BUILTINS, f"{name} extends {parent!r}: by path, a copy would not find it"


# -- plugin recipes, from fake distributions ------------------------------------------------------------


@pytest.fixture
def install(tmp_path, monkeypatch):
    """Install fake distributions shipping recipes for this test (and forget them after)."""
    monkeypatch.setattr(registry, "_SCAN", None)

    def install(dist: str, recipes: dict[str, str], package: str | None = None, entry_points: dict[str, str] | None = None,
                version: str = "1.0") -> Path:  # fmt: skip
        package = package or dist.replace("-", "_")
        modules = {f"{package}/__init__.py": ""}
        modules |= {f"{package}/recipes/{name}.toml": text for name, text in recipes.items()}
        eps = entry_points if entry_points is not None else {name: f"{package}.recipes" for name in recipes}
        site = fake_distribution(tmp_path / dist, dist, version, {"digitsum.recipes": eps}, modules)
        monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        registry._SCAN = None
        return site

    return install


def plugin_recipe(name: str, description: str = "a plugin's recipe") -> str:
    return PLUGIN_RECIPE.format(name=name, description=description)


def test_a_plugin_recipe_resolves_by_name(install):
    install("digitsum-fake", {"tiny": plugin_recipe("tiny")})
    entry = find_recipe("tiny")
    assert entry.origin == "digitsum-fake 1.0" and entry.qualified_name == "digitsum-fake:tiny"
    recipe = load_recipe("tiny")
    assert recipe.name == "tiny" and recipe.train.epochs == 1 and recipe.optimizer.section.type == "adamw"  # extends original
    assert load_recipe("digitsum-fake:tiny").to_dict() == recipe.to_dict()


def test_a_stem_after_the_colon_names_another_file(install):
    install("digitsum-fake", {"big_one": plugin_recipe("big")}, entry_points={"big": "digitsum_fake.recipes:big_one"})
    assert find_recipe("big").path.name == "big_one.toml" and load_recipe("big").name == "big"


def test_a_built_in_name_beats_a_plugins_and_the_qualified_form_picks(install):
    install("digitsum-fake", {"original": plugin_recipe("original", "the plugin's original")})
    assert find_recipe("original").builtin
    assert find_recipe("digitsum-fake:original").origin == "digitsum-fake 1.0"
    assert load_recipe("digitsum-fake:original").train.epochs == 1


def test_a_name_shipped_by_two_plugins_needs_the_qualified_form(install):
    install("digitsum-one", {"twin": plugin_recipe("twin")})
    install("digitsum-two", {"twin": plugin_recipe("twin")}, version="2.0")
    with pytest.raises(UserError) as e:
        load_recipe("twin")
    assert e.value.message == (
        "recipe 'twin' is shipped by more than one plugin: 'digitsum-one:twin' (digitsum-one 1.0), "
        "'digitsum-two:twin' (digitsum-two 2.0); name the one you want in the qualified form"
    )
    assert find_recipe("digitsum-two:twin").version == "2.0"


def test_a_denied_plugins_recipe_says_why(install, monkeypatch):
    install("digitsum-fake", {"tiny": plugin_recipe("tiny")})
    monkeypatch.setenv("DIGITSUM_PLUGINS_DENY", "digitsum-fake")
    registry._SCAN = None
    assert "tiny" not in [e.name for e in recipe_entries()]
    with pytest.raises(UserError, match=r"^recipe 'tiny' comes from plugin digitsum-fake 1.0, which is not loaded: disabled by DIGITSUM_PLUGINS_DENY$"):
        load_recipe("tiny")


def test_a_declared_recipe_without_its_file_fails_alone(install):
    install("digitsum-fake", {"tiny": plugin_recipe("tiny")}, entry_points={"tiny": "digitsum_fake.recipes", "gone": "digitsum_fake.recipes"})
    (entry,) = [e for e in recipe_entries() if e.name == "gone"]
    assert entry.path is None and entry.error.startswith("no gone.toml in ") and "package data" in entry.error
    with pytest.raises(UserError, match=r"recipe 'gone' from digitsum-fake 1.0 \(digitsum_fake.recipes\) cannot be used: no gone.toml"):
        load_recipe("gone")
    assert load_recipe("tiny").name == "tiny"
    rows = {r["name"]: r for r in describe_recipes()}
    assert rows["gone"]["error"] == entry.error and "error" not in rows["tiny"]
    failures = plugin_report.load_all()  # strict mode's list
    assert [str(f) for f in failures if "gone" in str(f)] == [f"digitsum-fake 1.0: recipe 'gone' (digitsum_fake.recipes): {entry.error}"]


def test_a_recipe_of_a_missing_package_is_reported(install):
    install("digitsum-fake", {}, entry_points={"ghost": "digitsum_no_such_package.recipes"})
    (entry,) = [e for e in recipe_entries() if e.name == "ghost"]
    assert entry.error == "package 'digitsum_no_such_package' is not installed"


@pytest.mark.parametrize("value", ["digitsum_fake:recipes/tiny.toml", "digitsum_fake.recipes:tiny.toml", "../x", "digitsum_fake.recipes:a:b"])
def test_a_malformed_recipe_entry_point_is_recorded_against_its_distribution(install, value):
    install("digitsum-fake", {"tiny": plugin_recipe("tiny")}, entry_points={"tiny": "digitsum_fake.recipes", "bad": value})
    (dist,) = [d for d in registry.plugin_distributions() if d.name == "digitsum-fake"]
    assert dist.problems == [
        f"entry point 'bad = {value}' in [digitsum.recipes]: the value must be 'package.folder' (holding <name>.toml) "
        "or 'package.folder:stem' (holding <stem>.toml)"
    ]
    assert [e.name for e in recipe_entries() if e.distribution == "digitsum-fake"] == ["tiny"]


def test_resolution_order_path_then_built_in_then_plugin(install, tmp_path, monkeypatch):
    install("digitsum-fake", {"tiny": plugin_recipe("tiny"), "film": plugin_recipe("film")})
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe("film") == find_recipe("film").path and find_recipe("film").builtin
    assert resolve_recipe("tiny").parent.parent.name == "digitsum_fake"
    (tmp_path / "tiny").write_text(plugin_recipe("local"))
    assert resolve_recipe("tiny") == Path("tiny")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "tiny").write_text("")
    assert resolve_recipe("tiny", tmp_path / "sub") == tmp_path / "sub" / "tiny"  # relative to a parent's folder


def test_show_takes_a_name_from_any_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("show", "two-images", "--set", "heads.sum=false")
    assert result.code == 0, result.err
    assert [line for line in result.out.splitlines() if line.startswith("[heads.")] == ["[heads.digit_a]", "[heads.digit_b]"]
    missing = cli("show", "two-image")
    assert missing.code == 2 and "did you mean 'two-images'?" in missing.err


# -- digitsum list recipes --------------------------------------------------------------------------------


@pytest.fixture
def metrics_table(tmp_path, monkeypatch):
    """A metrics table holding a record for `original` at its current settings and a stale one for `film`."""
    path = tmp_path / "metrics.json"
    record = {"seed": 0, "epochs": 8, "test": {"digit": {"accuracy": 0.5}, "sum": {"accuracy": 0.25}}, "seconds": 12.3,
              "measured": "2000-01-01", "machine": "test", "settings": settings_digest(recipe_document("original"))}  # fmt: skip
    path.write_text(json.dumps({"original": record, "film": {**record, "settings": "0" * 16}}))
    monkeypatch.setattr(catalog, "METRICS_FILE", path)
    return record


def test_list_recipes_json(cli, metrics_table):
    result = cli("list", "recipes", "--json")
    assert result.code == 0, result.err
    rows = {r["name"]: r for r in json.loads(result.out)}
    assert sorted(rows) == BUILTINS and all(r["kind"] == "recipes" for r in rows.values())
    original = rows["original"]
    assert original["origin"] == "built-in" and original["description"] == "The notebook's network, trained right."
    assert original["metrics"] == metrics_table
    assert rows["film"]["metrics"] is None and rows["film"]["metrics_stale"]
    assert rows["notebook"]["metrics"] is None and "metrics_stale" not in rows["notebook"]


def test_list_shows_recipes_among_the_kinds(cli):
    result = cli("list", "--json")
    kinds = {r["kind"] for r in json.loads(result.out)}
    assert kinds == {"datasets", "fusions", "heads", "optimizers", "schedules", "loggers", "recipes", "checks"}
    table = cli("list")
    assert table.code == 0 and "recipes" in table.out and "two-images" in table.out and "classify" in table.out


def test_list_recipes_table(cli, metrics_table, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = cli("list", "recipe")
    assert result.code == 0, result.err
    line = next(line for line in result.out.splitlines() if "│ original" in line)
    assert "built-in" in line and "The notebook's network, trained right." in line and "digit accuracy 0.5000" in line
    assert "sum accuracy 0.2500" in result.out and "8 epochs, 12 s" in result.out
    assert "— (recorded for other settings)" in next(line for line in result.out.splitlines() if "│ film" in line)
    assert "│ —" in next(line for line in result.out.splitlines() if "│ notebook" in line)
    assert "classify" not in result.out  # recipes only


def test_list_recipes_shows_mean_and_min_over_seeds(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    path = tmp_path / "metrics.json"
    digit = {"accuracy": {"mean": 0.99, "min": 0.985, "seeds": [0.985, 0.995]}}
    record = {"seeds": [0, 1], "epochs": 6, "test": {"digit": digit}, "seconds": 17.4, "measured": "2000-01-01",
              "machine": "test", "settings": settings_digest(recipe_document("original"))}  # fmt: skip
    path.write_text(json.dumps({"original": record}))
    monkeypatch.setattr(catalog, "METRICS_FILE", path)
    result = cli("list", "recipes")
    assert result.code == 0, result.err
    assert "digit accuracy 0.9900 (0.9850)" in result.out and "mean (min) of 2 seeds, 6 epochs, 17 s" in result.out


def test_list_shows_a_plugins_recipes(cli, install):
    install("digitsum-fake", {"tiny": plugin_recipe("tiny", "one epoch of original")})
    rows = {r["name"]: r for r in json.loads(cli("list", "recipes", "--json").out)}
    assert rows["tiny"]["origin"] == "digitsum-fake 1.0" and rows["tiny"]["description"] == "one epoch of original"
    assert rows["tiny"]["metrics"] is None


@pytest.mark.parametrize("args,message", [
    (["list", "recpes"], "unknown kind 'recpes' — did you mean 'recipes'? (valid: checks, datasets, fusions, heads, loggers, optimizers, recipes, schedules)"),
    (["list", "recipes", "--markdown"], "--markdown writes the components' reference"),
])  # fmt: skip
def test_list_errors(cli, args, message):
    result = cli(*args)
    assert result.code == 2 and message in result.err


def test_list_recipes_imports_no_torch(tmp_path):
    import subprocess
    import sys

    code = "import sys; sys.argv=['digitsum','list','recipes']\nfrom digitsum.cli import main\ntry:\n main()\nexcept SystemExit: pass\nprint('TORCH', 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert "original" in out and out.strip().endswith("TORCH False")


# -- digitsum cp -------------------------------------------------------------------------------------------


def test_cp_copies_the_shipped_text_and_it_runs_from_another_folder(cli, tmp_path, monkeypatch):
    dest = tmp_path / "mine.toml"
    result = cli("cp", "film", dest)
    assert result.code == 0, result.err
    assert dest.read_bytes() == find_recipe("film").path.read_bytes()
    assert f"copied recipe film to {dest}" in result.out.replace("\n", "") and not result.err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    shown = cli("show", dest, "--set", "train.epochs=1")
    assert shown.code == 0, shown.err
    assert 'type = "film"' in shown.out and "epochs = 1" in shown.out


def test_cp_overwrites_only_with_force_and_only_an_unedited_copy(cli, tmp_path):
    dest = tmp_path / "mine.toml"
    dest.write_text("keep me")
    refused = cli("cp", "original", dest)
    assert refused.code == 2 and f"{dest} already exists; give --force (from Python: force=True) to overwrite it" in refused.err.replace("\n", "")
    assert dest.read_text() == "keep me"
    forced = cli("cp", "original", dest, "--force")  # --force replaces what cp wrote, never a file of the user's
    assert forced.code == 2 and "no unedited copy of a recipe" in forced.err.replace("\n", "") and dest.read_text() == "keep me"
    dest.write_bytes(find_recipe("film").path.read_bytes())  # an unedited copy: nothing of the user's in it
    forced = cli("cp", "original", dest, "--force")
    assert forced.code == 0 and dest.read_bytes() == find_recipe("original").path.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, renamed


def test_cp_into_a_folder(cli, tmp_path):
    assert cli("cp", "two-images", tmp_path).code == 0
    assert (tmp_path / "two-images.toml").read_bytes() == find_recipe("two-images").path.read_bytes()
    assert cli("cp", "noisy", f"{tmp_path / 'new'}/").code == 0  # a trailing slash: a folder, created
    assert (tmp_path / "new" / "noisy.toml").is_file()
    (tmp_path / "film.toml").mkdir()
    result = cli("cp", "film", tmp_path)
    assert result.code == 2 and "film.toml is a folder" in result.err


def test_cp_of_an_unknown_name_suggests(cli, tmp_path):
    result = cli("cp", "orignal", tmp_path / "x.toml")
    assert result.code == 2 and "no built-in or plugin recipe is called 'orignal' — did you mean 'original'" in result.err
    assert not (tmp_path / "x.toml").exists()


def test_cp_of_a_plugin_recipe(cli, install, tmp_path):
    install("digitsum-fake", {"tiny": plugin_recipe("tiny")})
    assert cli("cp", "digitsum-fake:tiny", tmp_path).code == 0
    assert load_recipe(tmp_path / "tiny.toml").name == "tiny"


def test_cp_warns_when_the_copy_cannot_find_its_parent(cli, install, tmp_path):
    text = 'extends = "base.toml"\nname = "child"\n'  # a parent beside it in the plugin, by path
    install("digitsum-fake", {"child": text, "base": plugin_recipe("base")})
    result = cli("cp", "child", tmp_path / "child.toml")
    assert result.code == 0 and (tmp_path / "child.toml").read_text() == text
    assert "warning: the copy does not load from" in result.err and "parent recipe 'base.toml' not found" in result.err


def test_the_copy_api_refuses_an_unknown_name(tmp_path):
    with pytest.raises(UserError, match="no built-in or plugin recipe is called 'nope'"):
        copy_recipe("nope", tmp_path)


def test_the_shipped_metrics_table_is_well_formed():
    """Whatever benchmarks/record_recipes.py last wrote: records of built-ins, each complete;
    a metric is the mean and min over the seeds (or, in a record made before seeds were, one number)."""
    table = json.loads(catalog.METRICS_FILE.read_text())
    assert set(table) <= set(BUILTINS)
    for name, record in table.items():
        seeded = "seeds" in record
        assert set(record) == {"seeds" if seeded else "seed", "epochs", "test", "seconds", "measured", "machine", "settings"}, name
        assert record["test"] and all(len(metrics) == 1 for metrics in record["test"].values()), name  # the primary metric
        for metrics in record["test"].values():
            for value in metrics.values():
                if seeded:
                    assert len(value["seeds"]) == len(record["seeds"]) and min(value["seeds"]) == value["min"], name
                    assert value["min"] <= value["mean"] <= max(value["seeds"]), name
                    value = value["mean"]
                assert 0 <= value <= 1, name