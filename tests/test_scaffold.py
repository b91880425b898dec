"""`digitsum new-plugin`: the scaffold installs, lists, trains and passes its own tests unedited."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import digitsum
from digitsum.kinds import KINDS
from digitsum.scaffold import PARTS

from .conftest import TINY, run_subprocess


def install_editable(source: Path, site: Path) -> list[Path]:
    """``pip install -e`` into a private folder; returns the PYTHONPATH entries that make it visible.

    A --target folder is not a site directory (its .pth files are not read), so the source folder
    goes on the path beside it: the same effect as an editable install, nothing outside tmp touched.
    """
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), "-e", str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return [site, source]


def env_for(paths: list[Path], **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(map(str, paths)), **extra}


def test_scaffold_works_with_no_edits(tmp_path, tiny_root):
    plugin = tmp_path / "digitsum-shapes"
    created = run_subprocess("new-plugin", "digitsum-shapes", "--dir", plugin)
    assert created.returncode == 0, created.stderr
    assert (plugin / "pyproject.toml").is_file() and (plugin / "README.md").is_file()
    paths = install_editable(plugin, tmp_path / "site")

    listed = run_subprocess("list", "--json", env=env_for(paths))
    assert listed.returncode == 0, listed.stderr
    ours = {(r["kind"], r["name"]): r for r in json.loads(listed.stdout) if r["distribution"] == "digitsum-shapes"}
    # every kind and the doctor check (a kind added to digitsum.kinds is scaffolded too), and the
    # recipe it ships by entry point
    assert set(ours) == {(group, f"shapes_{part.word}") for group, part in PARTS.items()} | {("recipes", "shapes")}
    assert all(r["origin"] == "digitsum-shapes 0.1.0" and "error" not in r for r in ours.values())

    run = run_subprocess("run", "shapes", *TINY, "--out", tmp_path / "run",
                         env=env_for(paths, DIGITSUM_DATA=str(tiny_root)), cwd=tmp_path)  # by name, from another folder  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs"] == 1
    recipe = (tmp_path / "run" / "recipe.toml").read_text()
    assert 'type = "digitsum-shapes:shapes_optimizer"' in recipe and 'type = "digitsum-shapes:shapes_schedule"' in recipe  # its own
    logged = [json.loads(line) for line in (tmp_path / "run" / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1]  # its own logger wrote its file

    from PIL import Image, ImageDraw

    paper = Image.new("L", (28, 28))
    ImageDraw.Draw(paper).line([(14, 4), (14, 24)], fill=255, width=3)  # a one
    paper.save(tmp_path / "one.png")
    predicted = run_subprocess("predict", tmp_path / "run", "-i", f"image={tmp_path / 'one.png'}", "-i", "number=4", "--json",
                               env=env_for(paths), cwd=tmp_path)  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    (sample,) = json.loads(predicted.stdout)["samples"]
    # the generator names its comparison's classes; predict shows them
    assert sample["compare"]["label"] == ["less", "equal", "greater"][sample["compare"]["prediction"]]

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=plugin,
                           capture_output=True, text=True, env={**os.environ, **env_for(paths)}, timeout=600)  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:]
    # installed; each entry point (each part and the recipe) registered, and its conformance test;
    # the logger's file read back and the check's findings (test files of their own)
    assert re.search(r"^\d+ passed in ", tests.stdout.strip().splitlines()[-1]), tests.stdout[-3000:]  # none skipped
    assert int(tests.stdout.strip().splitlines()[-1].split()[0]) == 1 + 2 * (len(PARTS) + 1) + 2


SECOND_HEAD = '''

class OtherHead(TwiceHead):
    """The scaffold's head once more, under a name of its own."""
'''


def test_the_scaffolds_tests_cover_what_its_author_adds_with_no_edit(tmp_path):
    """A second head and a second recipe declared in pyproject.toml are tested by the generated
    tests as they stand; entry points in misspelt groups fail them, each named."""
    plugin = tmp_path / "digitsum-twice"
    assert run_subprocess("new-plugin", "digitsum-twice", "--dir", plugin, "--kind", "head").returncode == 0
    with (plugin / "digitsum_twice" / "head.py").open("a") as f:
        f.write(SECOND_HEAD)
    recipes = plugin / "digitsum_twice" / "recipes"
    (recipes / "other.toml").write_text((recipes / "twice.toml").read_text().replace('"twice_head"', '"other_head"')
                                        .replace('name = "twice"', 'name = "other"'))  # fmt: skip
    pyproject = plugin / "pyproject.toml"
    text = pyproject.read_text()
    text = text.replace('twice_head = "digitsum_twice.head:TwiceHead"\n',
                        'twice_head = "digitsum_twice.head:TwiceHead"\nother_head = "digitsum_twice.head:OtherHead"\n')
    text = text.replace('twice = "digitsum_twice.recipes"\n', 'twice = "digitsum_twice.recipes"\nother = "digitsum_twice.recipes"\n')
    # and two entry points in misspelt groups: both reported, not only the first
    pyproject.write_text(text + '\n[project.entry-points."digitsum.head"]\nthird_head = "digitsum_twice.head:OtherHead"\n'
                         '\n[project.entry-points."digitsum.recipe"]\nthird = "digitsum_twice.recipes:other"\n')

    paths = install_editable(plugin, tmp_path / "site")
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "tests/test_components.py"],
                           cwd=plugin, capture_output=True, text=True, env={**os.environ, **env_for(paths)}, timeout=600)  # fmt: skip
    passed = set(re.findall(r"^PASSED \S+::(\S+)", tests.stdout, re.M))
    failed = set(re.findall(r"^FAILED \S+::(\S+)", tests.stdout, re.M))
    ids = ["heads:twice_head", "heads:other_head", "recipes:twice", "recipes:other"]
    wanted = {"test_installed"} | {f"{test}[{i}]" for test in ("test_registered_through_entry_points", "test_conforms") for i in ids}
    assert wanted <= passed, tests.stdout[-3000:]
    # what fails is the misspelt entry points' own tests, and nothing else
    assert tests.returncode == 1 and failed and all(re.search(r"\[(head|recipe):third", f) for f in failed), tests.stdout[-3000:]
    for unlisted in ("[digitsum.head] third_head", "[digitsum.recipe] third"):
        assert f"{unlisted}: digitsum does not list it" in tests.stdout, tests.stdout[-3000:]


def test_the_hint_and_the_readme_install_the_test_extra_before_pytest(cli, tmp_path):
    plugin = tmp_path / "a folder with spaces [and brackets]" / "digitsum-shapes"
    result = cli("new-plugin", "digitsum-shapes", "--dir", plugin)
    assert result.code == 0, result.err
    hint = f"next: cd '{plugin}' && pip install -e \".[test]\" && digitsum list && python -m pytest"
    assert hint in result.out.splitlines()  # one line, the path quoted, rich markup left alone
    readme = (plugin / "README.md").read_text()
    assert 'pip install -e ".[test]"' in readme
    assert readme.index('pip install -e ".[test]"') < readme.index("python -m pytest")
    extras = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(re.match(r"pytest\b", requirement) for requirement in extras["test"])


def digitsum_imports(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from digitsum... import name`` and ``import digitsum...`` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "digitsum":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] == "digitsum"]
    return found


def test_the_scaffold_imports_only_digitsums_public_api(cli, tmp_path):
    import digitsum

    plugin = tmp_path / "digitsum-shapes"
    assert cli("new-plugin", "digitsum-shapes", "--dir", plugin).code == 0
    imports = {(path.relative_to(plugin).as_posix(), module, name)
               for path in sorted(plugin.rglob("*.py")) for module, name in digitsum_imports(path)}  # fmt: skip
    # Components import from digitsum itself; only the tests use digitsum.testing.
    private = {i for i in imports if i[1] != "digitsum" and not (i[1] == "digitsum.testing" and i[0].startswith("tests/"))}
    assert private == set()
    public = {name for _, module, name in imports if module == "digitsum"}
    assert {"MNIST_MEAN", "MNIST_STD", "Generator", "Fusion", "Head", "Optimizer", "Schedule", "Logger", "Finding", "Probe"} <= public
    assert all(hasattr(digitsum, name) and name in digitsum.__all__ for name in public)


def test_scaffold_with_one_kind_uses_builtins_for_the_rest(tmp_path):
    plugin = tmp_path / "gate"
    created = run_subprocess("new-plugin", "digitsum-gate", "--dir", plugin, "--kind", "fusion")
    assert created.returncode == 0, created.stderr
    assert sorted(p.name for p in (plugin / "digitsum_gate").iterdir()) == ["__init__.py", "fusion.py", "recipes"]
    pyproject = (plugin / "pyproject.toml").read_text()
    assert '"digitsum.fusions"' in pyproject and '"digitsum.heads"' not in pyproject
    paths = install_editable(plugin, tmp_path / "site")
    shown = run_subprocess("show", "gate", env=env_for(paths))
    assert shown.returncode == 0, shown.stderr
    assert 'type = "single_digit"' in shown.stdout and 'type = "digitsum-gate:gate_fusion"' in shown.stdout and 'type = "classify"' in shown.stdout


@pytest.mark.parametrize("group", PARTS)
def test_each_kind_alone_renders_and_imports(cli, tmp_path, monkeypatch, group):
    """Rendered with --kind and imported only (the plugin of every kind above installs, trains and tests)."""
    part = PARTS[group]
    word = sorted(part.words)[0]  # any of the kind's words
    dist = f"digitsum-only-{group}"
    package = dist.replace("-", "_")
    plugin = tmp_path / dist
    assert cli("new-plugin", dist, "--dir", plugin, "--kind", word).code == 0
    assert sorted(p.name for p in (plugin / package).iterdir()) == sorted(["__init__.py", f"{part.module}.py", "recipes"])
    name = f"only_{group}_{part.word}"
    entry_points = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]["entry-points"]
    assert set(entry_points) == {f"digitsum.{group}", "digitsum.recipes"} and list(entry_points[f"digitsum.{group}"]) == [name]

    # the recipe uses the part where it has a table, a built-in for every other kind
    recipe = tomllib.loads((plugin / package / "recipes" / f"only_{group}.toml").read_text())
    tables = {"datasets": recipe["data"], "fusions": recipe["backbone"], "heads": recipe["heads"]["digit"],
              "optimizers": recipe["train"]["optimizer"], "schedules": recipe["train"]["schedule"]}  # fmt: skip
    assert {g for g, table in tables.items() if table["type"] == f"{dist}:{name}"} == ({group} & set(tables))
    assert ("log" in recipe) == (group == "loggers") and (recipe["log"][name]["type"] == f"{dist}:{name}" if "log" in recipe else True)

    # every file of the project it names (a comment pointing at tests/test_logger.py, say) is there
    for path in plugin.rglob("*"):
        if path.is_file():
            named = set(re.findall(rf"(?<![\w/.])((?:tests|{package})/[\w/]+\.(?:py|toml))", path.read_text()))
            assert {n for n in named if not (plugin / n).is_file()} == set(), path

    monkeypatch.syspath_prepend(str(plugin))
    module_name, _, obj_name = entry_points[f"digitsum.{group}"][name].partition(":")
    obj = getattr(importlib.import_module(module_name), obj_name)
    contract = getattr(digitsum, KINDS[group].contract) if group in KINDS else None
    assert issubclass(obj, contract) if contract else callable(obj)
    for test_file in sorted((plugin / "tests").glob("test_*.py")):  # the generated tests import (not run: above)
        spec = importlib.util.spec_from_file_location(f"{package}_{test_file.stem}", test_file)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_help_lists_every_kind(cli):
    result = cli("new-plugin", "--help")
    assert result.code == 0
    shown = " ".join(result.out.split())
    for part in PARTS.values():
        assert all(w in shown for w in part.words if not (w.endswith("s") and w[:-1] in part.words)), part


def test_existing_folder_is_refused_and_left_alone(cli, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep")
    result = cli("new-plugin", "digitsum-mine", "--dir", target)
    assert result.code == 2 and "already exists and is not empty" in result.err
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no staging folder left behind


def test_an_empty_existing_folder_is_used(cli, tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    assert cli("new-plugin", "digitsum-empty", "--dir", target).code == 0
    assert (target / "digitsum_empty" / "head.py").is_file()


@pytest.mark.parametrize("name,message", [
    ("1plugin", "not a valid distribution name"),
    ("my plugin", "not a valid distribution name"),
    ("json", "would shadow the module 'json'"),
    ("digitsum", "would shadow the module 'digitsum'"),
    ("torch", "would shadow the installed module 'torch'"),  # was: a package named torch, installed over the real one
    ("Pydantic", "would shadow the installed module 'pydantic'"),
])  # fmt: skip
def test_bad_names_are_refused(cli, tmp_path, name, message):
    result = cli("new-plugin", name, "--dir", tmp_path / "x")
    assert result.code == 2 and message in result.err
    assert not (tmp_path / "x").exists()


def test_unknown_kind_suggests_one(cli, tmp_path):
    result = cli("new-plugin", "digitsum-x", "--dir", tmp_path / "x", "--kind", "fusoin")
    assert result.code == 2 and "did you mean 'fusion" in result.err


def test_the_scaffolds_head_gives_the_most_probable_classes(cli, tmp_path, monkeypatch):
    """What `digitsum predict` shows beside each prediction: class probabilities, rows summing to 1."""
    import torch

    plugin = tmp_path / "digitsum-probable"
    assert cli("new-plugin", "digitsum-probable", "--dir", plugin, "--kind", "head").code == 0
    monkeypatch.syspath_prepend(str(plugin))
    head_class = importlib.import_module("digitsum_probable.head").ProbableHead
    head = head_class(head_class.Params(), 8, digitsum.Classes(3))
    probabilities = head.probabilities(head(torch.randn(5, 8)))
    assert probabilities is not None and probabilities.shape == (5, 3)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(5))
