from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from digitsum.comparison import parse_grid, plan_variants, split_values
from digitsum.engine.train import Trainer
from ..runs import fit
from digitsum.errors import UserError
from digitsum.recipe import load_recipe

from ..conftest import RECIPES, TINY

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_width: int = 200) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width >= min_width and image.height >= 100


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_trains_on_tiny_data(path, tiny_data, tmp_path):
    summary = Trainer(load_recipe(path, ["train.epochs=1", "data.batch_size=64"]), tmp_path).fit()
    assert summary["epochs"] == 1
    for head, values in summary["metrics"]["test"].items():
        assert all(math.isfinite(v) for v in values.values()), head


@pytest.mark.parametrize("name", ["original", "two-images", "regress-sum"])
def test_every_run_dir_gets_curves_and_samples_pictures(name, tiny_data, tmp_path):
    fit(load_recipe(RECIPES / f"{name}.toml", ["train.epochs=2", "data.batch_size=64"]), tmp_path)
    assert_png(tmp_path / "curves.png")
    assert_png(tmp_path / "samples.png")
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_command_line_draws_the_pictures_the_run_api_draws(cli, tiny_data, tmp_path):
    """`digitsum run`'s pictures are the very pictures a run read back draws."""
    from digitsum import load_run
    from digitsum.engine.figures import save_figure

    run_dir = tmp_path / "run"
    result = cli("run", str(RECIPES / "original.toml"), "--set", "train.epochs=1", "--set", "data.batch_size=64", "--out", run_dir)
    assert result.code == 0, result.err
    run = load_run(run_dir)
    save_figure(run.curves(), tmp_path / "curves.png")
    save_figure(run.samples(), tmp_path / "samples.png")
    for name in ("curves.png", "samples.png"):
        assert (run_dir / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_a_run_imports_matplotlib_only_where_it_draws():
    """The run's process imports the pictures callback at start-up; matplotlib is imported by
    the first figure drawn, not then."""
    import subprocess
    import sys

    code = "import sys, digitsum.engine.runner, digitsum.engine.pictures; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_split_values_keeps_brackets_and_quotes_whole():
    assert split_values("concat, film") == ["concat", "film"]
    assert split_values("[6,12],[8,16]") == ["[6,12]", "[8,16]"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]


@pytest.mark.parametrize("grid, message", [
    (["backbone.type"], "expected KEY=V1,V2"),
    (["=a,b"], "expected KEY=V1,V2"),
    (["backbone.type=concat,,film"], "empty value"),
    (["seed=1,2", "seed=3"], "given twice"),
    (["seed=1,1"], "the value '1' is given twice; each value makes one variant"),  # was: "give each recipe its own name"
])  # fmt: skip
def test_bad_grids_are_user_errors(grid, message):
    with pytest.raises(UserError) as e:
        parse_grid(grid)
    assert message in e.value.message


def test_one_variant_is_not_a_comparison():
    with pytest.raises(UserError) as e:
        plan_variants([RECIPES / "original.toml"])
    assert "at least two variants" in e.value.message


def test_every_variant_is_checked_before_any_trains(cli, tiny_data, tmp_path):
    out = tmp_path / "cmp"
    result = cli("compare", RECIPES / "original.toml", "--grid", "backbone.type=concat,flim", "--out", out)
    assert result.code == 2 and "Traceback" not in result.err
    assert "did you mean 'film'" in result.err
    assert not out.exists()  # nothing was trained, nothing written


def test_grid_crosses_recipes_and_values():
    variants = plan_variants([RECIPES / "original.toml", RECIPES / "film.toml"], ["seed=1,2"], ["train.epochs=1"])
    assert [v.label for v in variants] == ["original seed=1", "original seed=2", "film seed=1", "film seed=2"]
    assert {v.recipe.train.epochs for v in variants} == {1}
    assert [v.recipe.seed for v in variants] == [1, 2, 1, 2]


def test_compare_on_tiny_data_writes_table_json_csv_plot_and_run_dirs(cli, tiny_data, tmp_path):
    out = tmp_path / "cmp"
    result = cli("compare", RECIPES / "original.toml", RECIPES / "regress-sum.toml", *TINY, "--out", out)
    assert result.code == 0, result.err
    assert "comparison" in result.out and "rounded_accuracy" in result.out
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert [(r["variant"], r["head"], r["metric"]) for r in rows] == [
        ("original", "digit", "accuracy"), ("original", "sum", "accuracy"),
        ("regress-sum", "digit", "accuracy"), ("regress-sum", "sum", "rounded_accuracy"),
    ]  # fmt: skip
    for row in rows:
        assert 0 <= row["test"] <= 1 and 0 <= row["first_epoch"] <= 1 and row["seconds"] > 0
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert summary["metrics"]["test"][row["head"]][row["metric"]] == row["test"]
    with (out / "compare.csv").open() as f:
        assert [r["test"] for r in csv.DictReader(f)] == [str(r["test"]) for r in rows]
    assert_png(out / "compare.png")
    assert len([p for p in out.iterdir() if p.is_dir()]) == 2


def test_a_variant_whose_data_cannot_be_split_is_refused_before_any_variant_trains(cli, tiny_data, tmp_path):
    # was: the first variants trained, then the third failed as it started, leaving a partial compare
    out = tmp_path / "cmp"
    result = cli("compare", RECIPES / "original.toml", *TINY, "--grid", "data.val=0,100,100000", "--out", out)
    assert result.code == 2 and "Traceback" not in result.err
    assert "variant 'data.val=100000': data.val = 100000 (--grid data.val=100000) leaves no training samples" in result.err
    assert not out.exists()


def test_compare_into_a_folder_that_is_not_empty_says_so_without_offering_a_force_it_lacks(cli, tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = cli("compare", RECIPES / "original.toml", "--grid", "backbone.type=concat,film", "--out", out)
    assert result.code == 2 and "is not empty" in result.err and "--force" not in result.err, result.err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
