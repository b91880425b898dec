from __future__ import annotations

import json
import subprocess
import sys
import tomllib

from digitsum.recipe import load_recipe

from .conftest import RECIPES, TINY, run_subprocess


def test_help_does_not_import_torch():
    code = "import sys; from digitsum.cli import app; sys.argv=['digitsum','--help']\n" \
           "try:\n app()\nexcept SystemExit: pass\nprint('torch' in sys.modules)"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")
    assert "run" in out and "list" in out


def test_version_does_not_import_torch():
    code = "import sys; from digitsum.cli import app; sys.argv=['digitsum','--version']\n" \
           "try:\n app()\nexcept SystemExit: pass\nprint('torch' in sys.modules)"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("digitsum ") and out.strip().endswith("False")


def test_version(cli):
    result = cli("--version")
    assert result.code == 0 and result.out.startswith("digitsum ")


def test_list_json_shows_builtins_with_params(cli):
    result = cli("list", "--json")
    assert result.code == 0
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.out)}
    concat = rows[("fusions", "concat")]
    assert concat["origin"] == "built-in" and concat["distribution"] == "digitsum"
    assert {p["name"]: p["default"] for p in concat["params"]}["hidden"] == [120, 60]
    single = rows[("datasets", "single_digit")]  # its interface at the default numbers=10
    assert single["inputs"] == {"image": "Image(1, 28, 28)", "number": "Categorical(10)"}
    assert single["targets"] == {"digit": "Classes(10)", "sum": "Classes(19)"}


def test_list_one_kind_as_tables(cli):
    result = cli("list", "heads")
    assert result.code == 0 and "classify" in result.out and "concat" not in result.out


def test_show_prints_resolved_recipe(cli):
    result = cli("show", RECIPES / "original.toml", "--set", "train.epochs=1")
    assert result.code == 0
    assert "epochs = 1" in result.out and "conv_channels = [" in result.out


def test_show_origin_says_where_each_value_came_from(cli, tmp_path):
    child = tmp_path / "child.toml"
    child.write_text('extends = "original"\nname = "child"\n\n[train]\nepochs = 4\n')
    result = cli("show", child, "--set", "train.optimizer.lr=0.01", "--origin")
    assert result.code == 0, result.err
    lines = {line.split(" = ")[0]: line.rsplit("  # ", 1)[1] for line in result.out.splitlines() if " = " in line}
    assert lines["name"] == f"{child}:2" and lines["epochs"] == f"{child}:5"  # the recipe's own lines
    assert lines["lr"] == "--set train.optimizer.lr=0.01"
    parent = (RECIPES / "original.toml").read_text().splitlines()
    assert lines["conv_channels"].endswith(f"original.toml:{1 + [x.split(' = ')[0] for x in parent].index('conv_channels')}")  # the parent's
    assert lines["label_smoothing"] == lines["eps"] == "default"
    # the comments change nothing: the text reads back as the recipe shown without them
    assert load_recipe(tomllib.loads(result.out)).to_dict() == load_recipe(child, ["train.optimizer.lr=0.01"]).to_dict()


def test_bad_recipe_exits_2_without_traceback(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\ntype = "single_digt"\n')
    result = cli("run", bad)
    assert result.code == 2
    assert "Traceback" not in result.err
    assert "did you mean 'single_digit'" in result.err and "backbone" in result.err


def test_bad_override_exits_2(cli):
    result = cli("show", RECIPES / "original.toml", "--set", "train.optimizer.lr")
    assert result.code == 2 and "expected KEY=VALUE" in result.err


def test_missing_data_names_the_four_files(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITSUM_DATA", str(tmp_path / "empty"))
    result = cli("run", RECIPES / "original.toml", "--set", "data.download=false", "--out", tmp_path / "run")
    assert result.code == 2 and "Traceback" not in result.err
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in result.err


def test_existing_output_folder_is_refused(cli, tiny_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("run", RECIPES / "original.toml", *TINY, "--out", out)
    assert result.code == 2 and "already exists" in result.err
    assert (out / "keep.txt").read_text() == "mine"


def test_run_end_to_end_in_a_subprocess(tiny_root, tmp_path):
    out = tmp_path / "run"
    result = run_subprocess("run", RECIPES / "original.toml", *TINY, "--out", out, env={"DIGITSUM_DATA": str(tiny_root)})
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"] == "original" and summary["epochs"] == 1
    assert "digit" in result.stdout and "accuracy" in result.stdout


def test_default_run_dir_is_under_runs_recipe_timestamp(tiny_root, tmp_path):
    result = run_subprocess("run", RECIPES / "original.toml", *TINY, env={"DIGITSUM_DATA": str(tiny_root)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs" / "original").iterdir()
    assert (run_dir / "summary.json").is_file()


def test_the_commands_call_the_public_api(cli, tmp_path):
    """list --json is digitsum.list_components; cp is digitsum.copy_recipe; a kind that is not
    a component has no Markdown reference."""
    import digitsum

    assert json.loads(cli("list", "heads", "--json").out) == digitsum.list_components("head")
    written = digitsum.copy_recipe("original", f"{tmp_path}/configs/")  # a trailing slash: a folder
    assert written == tmp_path / "configs" / "original.toml" and digitsum.load_recipe(written).name == "original"
    refused = cli("list", "recipe", "--markdown")
    assert refused.code == 2 and "list recipes without it" in refused.err


def test_sweep_settings_are_one_validated_object():
    import pytest

    import digitsum

    settings = digitsum.SweepSettings(workers=2, overrides=["train.epochs=1"])
    assert settings.workers == 2 and settings.pruner == "median" and settings.prune_startup == 5
    for bad, message in [({"workers": 0}, "--workers 0"), ({"pruner": "medain"}, "median"), ({"prune_startup": -1}, "--prune-startup")]:
        with pytest.raises(digitsum.UserError, match=message):
            digitsum.SweepSettings(**bad)


def _path_options() -> list[tuple[str, str]]:
    """(command, option) for every option of every command that takes a path."""
    import typing
    from pathlib import Path

    import typer.main

    from digitsum.cli import app

    group = typer.main.get_command(app)
    found = []
    for name, command in group.commands.items():
        hints = typing.get_type_hints(command.callback)
        for param in command.params:
            hint = hints.get(param.name)
            if param.param_type_name == "option" and (hint is Path or Path in typing.get_args(hint)):
                found.append((name, param.opts[0]))
    return found


def test_every_path_option_refuses_an_empty_path(cli, tmp_path, monkeypatch):
    # `--out "$UNSET"` would otherwise mean the working folder: a run written into it
    options = _path_options()
    assert ("run", "--out") in options and len(options) >= 5
    monkeypatch.chdir(tmp_path)
    for command, option in options:
        result = cli(command, option, "")
        assert result.code == 2, (command, option, result.err)
        assert "is empty" in result.err and "Traceback" not in result.err
    assert list(tmp_path.iterdir()) == []


def test_list_recipes_says_which_seeds_its_figures_are_from():
    from digitsum.listing import metrics_text

    one = {"metrics": {"seed": 3, "epochs": 2, "seconds": 13.1, "test": {"sum": {"accuracy": 0.0897}}}}
    assert metrics_text(one).splitlines() == ["sum accuracy 0.0897", "seed 3, 2 epochs, 13 s"]
    five = {"metrics": {"seeds": [0, 1, 2, 3, 4], "epochs": 8, "seconds": 51, "test": {"sum": {"accuracy": {"mean": 0.99, "min": 0.989, "seeds": [0.99] * 5}}}}}
    assert metrics_text(five).splitlines() == ["sum accuracy 0.9900 (0.9890)", "mean (min) of 5 seeds, 8 epochs, 51 s"]


def test_plugins_counts_the_builtins_and_names_a_plugins_parts(cli):
    from digitsum.registry import fusions

    out = cli("plugins").out
    assert f"{len(fusions.names())} fusions" in out  # digitsum's own row: counted, `digitsum list` names them
    assert "fusion concat" not in out and "recipe original" not in out
