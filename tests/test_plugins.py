"""Plugin distributions end to end: each test installs plugins into a private folder and runs
`digitsum` in a subprocess with that folder on PYTHONPATH, as a user's shell would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EXAMPLE, RECIPES, TINY, fake_distribution, run_subprocess

BROKEN_SOURCES = {
    "exception": "raise RuntimeError('broken at import')\n",
    "syntax": "def broken(:\n",
    "missing-dependency": "import digitsum_no_such_dependency\n",
}


def digitsum(*args, site: Path | list[Path] | None = None, env: dict | None = None, **kwargs):
    sites = [site] if isinstance(site, Path) else (site or [])
    full_env = {"PYTHONPATH": os.pathsep.join(map(str, sites)), **(env or {})}
    return run_subprocess(*args, env=full_env, **kwargs)


def broken_site(root: Path, how: str = "exception") -> Path:
    return fake_distribution(
        root / f"broken-{how}", "digitsum-broken", "0.3",
        {"digitsum.fusions": {"boom": "broken_plugin:Boom"}},
        {"broken_plugin/__init__.py": BROKEN_SOURCES[how]},
    )  # fmt: skip


# -- the example plugin ------------------------------------------------------------------------------


def test_example_plugin_components_are_listed_with_their_origin(example_site):
    result = digitsum("list", "--json", site=example_site)
    assert result.returncode == 0, result.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    for key in [("datasets", "product_digit"), ("fusions", "bilinear"), ("heads", "ordinal"), ("optimizers", "lion")]:
        row = rows[key]
        assert row["distribution"] == "digitsum-example" and row["version"] == "0.1.0"
        assert row["origin"] == "digitsum-example 0.1.0" and "error" not in row
    assert rows[("datasets", "product_digit")]["targets"] == {"digit": "Classes(10)", "product": "Classes(82)"}
    assert rows[("fusions", "concat")]["origin"] == "built-in"


def test_example_plugin_recipe_trains_on_tiny_data(example_site, tiny_root, tmp_path):
    # by name: the recipe ships inside the installed package, declared in digitsum.recipes
    unused = fake_distribution(tmp_path / "unused", "digitsum-unused", "3.0", {"digitsum.heads": {"spare": "unused_missing:Spare"}})
    result = digitsum("run", "product", *TINY, "--out", tmp_path / "run", site=[example_site, unused],
                      env={"DIGITSUM_DATA": str(tiny_root)}, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["metrics"]["test"]) == {"digit", "product"}
    assert "abs_error" in summary["metrics"]["test"]["product"]
    saved = (tmp_path / "run" / "recipe.toml").read_text()
    assert 'plugins = "digitsum-example 0.1.0"' in saved, saved  # provenance: the plugins the recipe uses, no other


def test_example_plugin_recipe_is_listed_and_copied(example_site, tmp_path):
    listed = digitsum("list", "recipes", "--json", site=example_site)
    assert listed.returncode == 0, listed.stderr
    product = next(r for r in json.loads(listed.stdout) if r["name"] == "product")
    assert product["origin"] == "digitsum-example 0.1.0" and product["entry_point"] == "digitsum_example.recipes"
    assert Path(product["path"]) == example_site / "digitsum_example" / "recipes" / "product.toml"  # package data, installed
    assert product["description"].startswith("Predict the digit and digit x number")
    copied = digitsum("cp", "product", tmp_path / "mine.toml", site=example_site)
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "mine.toml").read_text() == (EXAMPLE / "digitsum_example" / "recipes" / "product.toml").read_text()
    report = {r["distribution"]: r for r in json.loads(digitsum("plugins", "--json", site=example_site).stdout)}
    assert [r["name"] for r in report["digitsum-example"]["recipes"]] == ["product"]
    assert {r["name"] for r in report["digitsum"]["recipes"]} >= {"original", "notebook"}


def test_example_plugin_ships_weights_for_its_recipe(example_site, tiny_root, tmp_path):
    # the wheel carries the record and the tensors (package data), declared in digitsum.weights
    folder = example_site / "digitsum_example" / "weights"
    record = json.loads((folder / "product.json").read_text())
    assert (folder / record["file"]).stat().st_size == record["bytes"]
    listed = digitsum("list", "recipes", "--json", site=example_site)
    product = next(r for r in json.loads(listed.stdout) if r["name"] == "product")
    assert product["weights"]["bytes"] == record["bytes"] and "error" not in product["weights"]
    assert product["weights"]["test"] == record["test"] and set(record["test"]) == {"digit", "product"}
    report = {r["distribution"]: r for r in json.loads(digitsum("plugins", "--json", site=example_site).stdout)}
    (weights,) = report["digitsum-example"]["weights"]
    assert weights["name"] == "product" and Path(weights["path"]) == folder / "product.json" and "error" not in weights
    evaluated = digitsum("eval", "product", "--json", site=example_site, env={"DIGITSUM_DATA": str(tiny_root)}, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr  # by name, no training: the shipped weights on the tiny data
    assert set(json.loads(evaluated.stdout)["heads"]) == {"digit", "product"}


def test_example_plugin_own_tests_pass(example_site, tmp_path):
    tests = shutil.copytree(EXAMPLE, tmp_path / "example", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tests, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(example_site)}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout


def test_plugins_command_shows_each_distribution(example_site, tmp_path):
    result = digitsum("plugins", "--json", site=[example_site, broken_site(tmp_path)])
    assert result.returncode == 0, result.stderr
    report = {r["distribution"]: r for r in json.loads(result.stdout)}
    assert report["digitsum"]["builtin"] and report["digitsum"]["status"] == "ok"
    example = report["digitsum-example"]
    assert example["status"] == "ok" and example["version"] == "0.1.0"
    assert {(c["kind"], c["name"]) for c in example["components"]} == {
        ("datasets", "product_digit"), ("fusions", "bilinear"), ("heads", "ordinal"), ("optimizers", "lion")
    }  # fmt: skip
    broken = report["digitsum-broken"]
    assert broken["status"] == "failed" and "broken at import" in broken["components"][0]["error"]
    table = digitsum("plugins", site=[example_site, broken_site(tmp_path / "again")])
    assert table.returncode == 0 and "digitsum-broken 0.3" in table.stdout and "broken at import" in table.stdout


# -- a broken plugin -----------------------------------------------------------------------------------


def test_broken_plugins_are_listed_as_failed_and_the_rest_works(tmp_path):
    reasons = {"exception": "RuntimeError: broken at import", "syntax": "SyntaxError",
               "missing-dependency": "No module named 'digitsum_no_such_dependency'"}  # fmt: skip
    sites = [
        fake_distribution(tmp_path / how, f"digitsum-broken-{how}", "0.3", {"digitsum.fusions": {f"boom_{i}": f"broken_{i}:Boom"}},
                          {f"broken_{i}/__init__.py": BROKEN_SOURCES[how]})  # fmt: skip
        for i, how in enumerate(reasons)
    ]
    result = digitsum("list", "--json", site=sites)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    for i, (how, reason) in enumerate(reasons.items()):
        row = rows[f"boom_{i}"]
        assert reason in row["error"] and row["distribution"] == f"digitsum-broken-{how}", row
    assert "error" not in rows["concat"]
    table = digitsum("list", "fusions", site=sites)
    assert table.returncode == 0 and table.stdout.count("failed to load") == 3 and "concat" in table.stdout


def test_broken_plugin_leaves_help_and_run_working(tmp_path, tiny_root):
    site = broken_site(tmp_path)
    help_ = digitsum("--help", site=site)
    assert help_.returncode == 0 and "plugins" in help_.stdout
    run = digitsum("run", RECIPES / "original.toml", *TINY, "--out", tmp_path / "run", site=site, env={"DIGITSUM_DATA": str(tiny_root)})
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run" / "summary.json").is_file()


def test_a_recipe_naming_the_broken_component_gets_its_reason(tmp_path):
    result = digitsum("show", RECIPES / "original.toml", "--set", "backbone.type=boom", site=broken_site(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "digitsum-broken 0.3" in result.stderr and "broken at import" in result.stderr


@pytest.mark.parametrize("switch", ["flag", "env"])
def test_strict_switch_makes_a_broken_plugin_fatal(tmp_path, switch):
    site = broken_site(tmp_path)
    args = ["--strict-plugins", "list"] if switch == "flag" else ["list"]
    env = {"DIGITSUM_STRICT_PLUGINS": "1"} if switch == "env" else {}
    result = digitsum(*args, site=site, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "digitsum-broken 0.3" in result.stderr and "broken at import" in result.stderr and "'boom'" in result.stderr


def test_strict_run_exits_2_before_training(tmp_path, tiny_root):
    result = digitsum("--strict-plugins", "run", RECIPES / "original.toml", *TINY, "--out", tmp_path / "run",
                      site=broken_site(tmp_path), env={"DIGITSUM_DATA": str(tiny_root)})  # fmt: skip
    assert result.returncode == 2 and "digitsum-broken 0.3" in result.stderr
    assert not (tmp_path / "run").exists()


def test_strict_passes_when_every_plugin_loads(example_site):
    result = digitsum("--strict-plugins", "list", "heads", site=example_site)
    assert result.returncode == 0, result.stderr
    assert "ordinal" in result.stdout


# -- allow and deny -------------------------------------------------------------------------------------


def test_deny_list_disables_a_distribution(tmp_path, example_site):
    site = [example_site, broken_site(tmp_path)]
    env = {"DIGITSUM_PLUGINS_DENY": "digitsum_broken", "DIGITSUM_STRICT_PLUGINS": "1"}
    listed = digitsum("list", "--json", site=site, env=env)
    assert listed.returncode == 0, listed.stderr
    names = {r["name"] for r in json.loads(listed.stdout)}
    assert "boom" not in names and {"bilinear", "concat"} <= names
    report = {r["distribution"]: r for r in json.loads(digitsum("plugins", "--json", site=site, env=env).stdout)}
    assert report["digitsum-broken"]["status"] == "disabled"
    assert "DIGITSUM_PLUGINS_DENY" in report["digitsum-broken"]["reason"]
    named = digitsum("show", RECIPES / "original.toml", "--set", "backbone.type=boom", site=site, env=env)
    assert named.returncode == 2 and "not loaded: disabled by DIGITSUM_PLUGINS_DENY" in named.stderr


def test_allow_list_loads_only_the_named_plugins_and_the_builtins(tmp_path, example_site):
    site = [example_site, broken_site(tmp_path)]
    result = digitsum("list", "--json", site=site, env={"DIGITSUM_PLUGINS_ALLOW": "digitsum-example"})
    names = {r["name"] for r in json.loads(result.stdout)}
    assert "boom" not in names and {"bilinear", "ordinal", "concat", "classify"} <= names


# -- names defined twice, broken metadata -----------------------------------------------------------------


def test_a_name_from_two_distributions_needs_the_qualified_form(tmp_path, example_site):
    twin = fake_distribution(tmp_path / "twin", "digitsum-twin", "2.0",
                             {"digitsum.fusions": {"bilinear": "digitsum_example.bilinear:Bilinear"}})  # fmt: skip
    site = [example_site, twin]
    recipe = EXAMPLE / "digitsum_example" / "recipes" / "product.toml"
    bare = digitsum("show", recipe, site=site)
    assert bare.returncode == 2
    assert "'digitsum-example:bilinear' (digitsum-example 0.1.0)" in bare.stderr
    assert "'digitsum-twin:bilinear' (digitsum-twin 2.0)" in bare.stderr
    qualified = digitsum("show", recipe, "--set", "backbone.type=digitsum-twin:bilinear", site=site)
    assert qualified.returncode == 0, qualified.stderr
    assert 'type = "digitsum-twin:bilinear"' in qualified.stdout


def test_a_resolved_recipe_names_a_plugins_component_by_its_distribution_and_keeps_meaning_it(tmp_path, example_site):
    recipe = EXAMPLE / "digitsum_example" / "recipes" / "product.toml"
    resolved = digitsum("show", recipe, site=example_site)
    assert resolved.returncode == 0 and 'type = "digitsum-example:bilinear"' in resolved.stdout, resolved.stderr
    saved = tmp_path / "recipe.toml"  # what a run directory keeps
    saved.write_text(resolved.stdout)
    # a plugin installed later with a namesake leaves it meaning the same class
    twin = fake_distribution(tmp_path / "twin", "digitsum-twin", "2.0", {"digitsum.fusions": {"bilinear": "twin_missing:Bilinear"}})
    assert digitsum("show", saved, site=[example_site, twin]).stdout == resolved.stdout
    # and without its plugin it says which distribution to install, never binding the namesake
    gone = digitsum("show", saved, site=twin)
    assert gone.returncode == 2 and "Traceback" not in gone.stderr, gone.stderr
    assert "comes from the distribution 'digitsum-example', which is not installed: pip install digitsum-example" in gone.stderr
    # a typo of an installed plugin's name is not a package to install
    typo = digitsum("show", RECIPES / "original.toml", "--set", "backbone.type=digitsum-exampel:bilinear", site=example_site)
    assert typo.returncode == 2 and "not installed: did you mean 'digitsum-example:bilinear'? (installed)" in typo.stderr, typo.stderr


def test_plugins_and_list_flag_a_name_two_distributions_define_before_a_recipe_trips_on_it(tmp_path, example_site):
    twin = fake_distribution(tmp_path / "twin", "digitsum-twin", "2.0",
                             {"digitsum.fusions": {"bilinear": "digitsum_example.bilinear:Bilinear",
                                                   "concat": "digitsum_example.bilinear:Bilinear"}})  # fmt: skip
    site = [example_site, twin]
    plugins = " ".join(digitsum("plugins", site=site, env={"COLUMNS": "300"}).stdout.split())
    assert ("digitsum-example 0.1.0: fusion 'bilinear' is also defined by digitsum-twin; "
            "name it 'digitsum-example:bilinear' (the bare name is refused)") in plugins
    assert "digitsum-twin 2.0: fusion 'bilinear' is also defined by digitsum-example;" in plugins
    assert ("digitsum-twin 2.0: fusion 'concat' is also defined by digitsum; the bare name 'concat' is the built-in one, "
            "this one is 'digitsum-twin:concat'") in plugins
    listed = digitsum("list", "fusions", "--json", site=site)
    notes = {(r["name"], r["distribution"]): r.get("namesakes") for r in json.loads(listed.stdout)}
    assert notes[("bilinear", "digitsum-twin")].startswith("also defined by digitsum-example; name it")
    assert notes[("concat", "digitsum")] == "also defined by digitsum-twin; the bare name 'concat' stays this built-in one"
    assert notes[("film", "digitsum")] is None
    table = " ".join(digitsum("list", "fusions", site=site, env={"COLUMNS": "300"}).stdout.replace("│", " ").split())
    assert "also defined by digitsum-twin; name it 'digitsum-example:bilinear'" in table
    # recipes too: a plugin shipping a recipe named like another plugin's
    (tmp_path / "twin" / "twin_recipes").mkdir()
    (tmp_path / "twin" / "twin_recipes" / "product.toml").write_text('extends = "original"\n')
    recipe_twin = fake_distribution(tmp_path / "recipe-twin", "digitsum-recipe-twin", "1.0",
                                    {"digitsum.recipes": {"product": "twin_recipes"}})  # fmt: skip
    recipes = " ".join(digitsum("list", "recipes", site=[*site, recipe_twin], env={"COLUMNS": "300"}).stdout.replace("│", " ").split())
    assert "also defined by digitsum-recipe-twin; name it 'digitsum-example:product'" in recipes


def test_malformed_entry_point_is_reported_not_fatal_unless_strict(tmp_path):
    site = fake_distribution(tmp_path / "bad", "digitsum-badmeta", "1.0",
                             {"digitsum.heads": {"no colon": "justamodule", "fine": "digitsum.components.heads.classify:Classify"}})  # fmt: skip
    report = {r["distribution"]: r for r in json.loads(digitsum("plugins", "--json", site=site).stdout)}
    bad = report["digitsum-badmeta"]
    assert bad["status"] == "failed" and "'no colon = justamodule'" in bad["problems"][0]
    assert digitsum("list", "heads", site=site).returncode == 0
    strict = digitsum("--strict-plugins", "list", site=site)
    assert strict.returncode == 2 and "digitsum-badmeta 1.0" in strict.stderr
    # was: exit 2 all the same when the user had denied the distribution (strict loads the allowed only)
    denied = digitsum("--strict-plugins", "list", "heads", site=site, env={"DIGITSUM_PLUGINS_DENY": "digitsum-badmeta"})
    assert denied.returncode == 0, denied.stderr


# -- hostile plugins: what a plugin's import does cannot end, corrupt or break digitsum ----------------

HOSTILE_SOURCES = {
    "exit": "raise SystemExit(0)\n",
    "odd-base": "class Odd(BaseException):\n    pass\nraise Odd('not an Exception')\n",
    "chatty": "import os\nprint('hello from a plugin')\nos.write(1, b'raw bytes\\n')\n"
              "from digitsum.components.fusions.concat import Concat as Chatty\n",
}


def hostile_sites(root: Path) -> list[Path]:
    sites = [
        fake_distribution(root / how, f"digitsum-{how}", "0.1", {"digitsum.fusions": {f"{how.replace('-', '_')}_fusion": f"hostile_{i}:Chatty"}},
                          {f"hostile_{i}/__init__.py": source})  # fmt: skip
        for i, (how, source) in enumerate(HOSTILE_SOURCES.items())
    ]
    # a namesake of a built-in component, under the built-in's own name
    sites.append(fake_distribution(root / "namesake", "digitsum-namesake", "0.1",
                                   {"digitsum.fusions": {"concat": "digitsum.components.fusions.film:Film"}}))  # fmt: skip
    return sites


def test_hostile_imports_are_failed_components_and_stdout_stays_json(tmp_path):
    sites = hostile_sites(tmp_path)
    listed = digitsum("list", "--json", site=sites)
    assert listed.returncode == 0, listed.stderr
    rows = {(r["distribution"], r["name"]): r for r in json.loads(listed.stdout)}  # nothing but JSON on stdout
    assert "SystemExit(0)" in rows[("digitsum-exit", "exit_fusion")]["error"]
    assert "Odd: not an Exception" in rows[("digitsum-odd-base", "odd_base_fusion")]["error"]
    assert "error" not in rows[("digitsum-chatty", "chatty_fusion")]
    assert "importing fusion 'chatty_fusion' from digitsum-chatty 0.1 printed" in listed.stderr
    assert "hello from a plugin" in listed.stderr and "raw bytes" in listed.stderr
    report = {r["distribution"]: r for r in json.loads(digitsum("plugins", "--json", site=sites).stdout)}
    assert report["digitsum-exit"]["status"] == report["digitsum-odd-base"]["status"] == "failed"
    table = digitsum("plugins", site=sites)
    assert table.returncode == 0 and "digitsum-exit 0.1: fusion 'exit_fusion' (hostile_0:Chatty) failed" in table.stdout


def test_a_recipe_naming_an_exiting_plugin_fails_with_exit_2(tmp_path, tiny_root):
    sites = hostile_sites(tmp_path)
    result = digitsum("run", RECIPES / "original.toml", *TINY, "--set", "backbone.type=exit_fusion", "--out", tmp_path / "run",
                      site=sites, env={"DIGITSUM_DATA": str(tiny_root)})  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "digitsum-exit 0.1" in result.stderr and "SystemExit(0)" in result.stderr
    strict = digitsum("--strict-plugins", "list", site=sites)
    assert strict.returncode == 2 and "digitsum-exit 0.1" in strict.stderr and "digitsum-odd-base 0.1" in strict.stderr


def test_built_in_recipes_run_beside_hostile_plugins_and_namesakes(tmp_path, tiny_root):
    sites = hostile_sites(tmp_path)
    run = digitsum("run", RECIPES / "original.toml", *TINY, "--out", tmp_path / "run", site=sites, env={"DIGITSUM_DATA": str(tiny_root)})
    assert run.returncode == 0, run.stderr
    assert "digitsum-namesake 0.1 also defines fusion 'concat'; the built-in one is used" in run.stderr
    assert "'digitsum-namesake:concat'" in run.stderr
    assert 'type = "concat"' in (tmp_path / "run" / "recipe.toml").read_text()
    qualified = digitsum("show", RECIPES / "original.toml", "--set", "backbone.type=digitsum-namesake:concat", site=sites)
    assert qualified.returncode == 0, qualified.stderr
    assert 'type = "digitsum-namesake:concat"' in qualified.stdout


def test_check_distribution_lists_every_broken_component_not_the_first(tmp_path):
    # was: it raised the first component's PluginError and left the others unchecked
    site = fake_distribution(tmp_path / "site", "digitsum-flaws", "1.0", {"digitsum.heads": {
        "gone": "flaws_missing:Head", "fine": "digitsum.components.heads.classify:Classify"}, "digitsum.fusions": {
        "absent": "digitsum.components.fusions.concat:NoSuchClass"}})  # fmt: skip
    code = "from digitsum.testing import check_distribution\ncheck_distribution('digitsum-flaws')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(site)})  # fmt: skip
    assert result.returncode == 1 and "ConformanceError: distribution digitsum-flaws breaks the digitsum contract" in result.stderr
    assert "- heads:gone: " in result.stderr and "- fusions:absent: " in result.stderr and "heads:fine" not in result.stderr
