"""Pretrained weights: every built-in recipe's, loaded by name, used by predict/eval/export, and
refused when tampered with, of another recipe, or downloaded wrong."""

from __future__ import annotations

import importlib
import json
import math
import shutil
from pathlib import Path

import pytest

import digitsum
from digitsum import registry
from digitsum.catalog import recipe_entries
from digitsum.errors import UserError
from digitsum.weights import cache_folder, read_record, weights_entries

from .conftest import RECIPES, REPO, fake_distribution

BUILTIN_WEIGHTS = RECIPES / "weights"
BUILTIN_RECIPES = sorted(e.name for e in recipe_entries() if e.builtin)


def test_every_built_in_recipe_ships_weights():
    assert sorted(e.name for e in weights_entries() if e.builtin) == BUILTIN_RECIPES


@pytest.mark.parametrize("name", BUILTIN_RECIPES)
def test_built_in_weights_load_by_name_and_run(name, tiny_data):
    run = digitsum.load(name)
    assert run.run_dir is None and run.weights.recipe == name and run.recipe.name == name
    assert sorted(run.weights.test) == sorted(run.recipe.heads)  # a test metric recorded for every head
    assert run.weights.parameters == sum(p.numel() for p in run.model.parameters())
    assert len(run.history) == run.weights.epochs == run.recipe.train.epochs
    heads = run.evaluate("test")  # the tiny data's format: the model runs on it
    assert sorted(heads) == sorted(run.recipe.heads)
    assert all(math.isfinite(v) for values in heads.values() for v in values.values())
    assert name in repr(run) and "pretrained" in repr(run)


def test_predict_with_pretrained_weights_from_an_empty_folder(cli, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from digitsum.testing.fixtures import tiny_digit_images

    image = tiny_digit_images(np.array([4]), np.random.default_rng(0))[0]
    Image.fromarray(image).save(tmp_path / "digit.png")
    monkeypatch.chdir(tmp_path)
    result = cli("predict", "original", "-i", "image=digit.png", "-i", "number=3", "--json")
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert answer["run"] == "pretrained original"
    sample = answer["samples"][0]
    assert sample["sum"]["prediction"] == sample["digit"]["prediction"] + 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digit.png"]  # nothing written


def test_eval_of_pretrained_weights_prints_every_head(cli, tiny_data):
    result = cli("eval", "speedrun", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["run"] == "pretrained speedrun"
    shown = cli("eval", "speedrun")  # on tiny data: not the figures recorded on MNIST
    assert shown.code == 0 and "the weights' recorded test metrics: NOT reproduced" in shown.out


def test_export_of_pretrained_weights_writes_into_the_working_folder(cli, tmp_path, monkeypatch, tiny_data):
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    # `original`: the README exports add-15 the same way, whose 9 test views x 30 images cost 25 s here
    result = cli("export", "original", "--format", "onnx")
    assert result.code == 0, result.err
    sidecar = json.loads((tmp_path / "original.onnx.json").read_text())
    assert sidecar["weights"]["recipe"] == "original" and sidecar["run_dir"] is None
    assert sidecar["weights"]["sha256"] == read_record(BUILTIN_WEIGHTS / "original.json").sha256


def test_a_name_without_weights_or_run_is_a_clear_error(cli):
    result = cli("predict", "orignal", "-i", "image=x.png")
    assert result.code == 2 and "Traceback" not in result.err
    assert "no run directory orignal" in result.err and "original" in result.err


# -- weights shipped by a distribution: tampered, of another recipe, remote ----------------------------

TINY_RECIPE = 'extends = "original"\nname = "{name}"\ndescription = "a plugin recipe with the original\'s settings"\n'


@pytest.fixture
def install(tmp_path, monkeypatch):
    """Install a fake distribution shipping a recipe with the settings of ``original`` and, as its
    weights, a copy of the original's (with ``record`` changes, or the tensors' file ``tensors``)."""
    monkeypatch.setattr(registry, "_SCAN", None)

    def install(name: str = "mine", record: dict | None = None, tensors: bytes | None = None, url: bool = False) -> Path:
        package = "mine_plugin"
        site = fake_distribution(tmp_path / "site", "digitsum-mine", "1.0",
                                 {"digitsum.recipes": {name: f"{package}.recipes"}, "digitsum.weights": {name: f"{package}.weights"}},
                                 {f"{package}/__init__.py": "", f"{package}/recipes/{name}.toml": TINY_RECIPE.format(name=name)})  # fmt: skip
        folder = site / package / "weights"
        folder.mkdir()
        data = tensors if tensors is not None else (BUILTIN_WEIGHTS / "original.safetensors").read_bytes()
        written = {**json.loads((BUILTIN_WEIGHTS / "original.json").read_text()), "recipe": name, "file": f"{name}.safetensors"}
        if url:
            served = tmp_path / "served" / "w.safetensors"
            served.parent.mkdir()
            served.write_bytes(data)
            del written["file"]
            written["url"] = served.as_uri()
        else:
            (folder / f"{name}.safetensors").write_bytes(data)
        (folder / f"{name}.json").write_text(json.dumps({**written, **(record or {})}))
        monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        registry._SCAN = None
        return site

    return install


def test_a_plugins_weights_load_by_name(install):
    install()
    run = digitsum.load("mine")
    assert run.recipe.name == "mine" and run.weights.test == read_record(BUILTIN_WEIGHTS / "original.json").test


def test_tampered_weights_are_refused_before_anything_loads(install, cli):
    data = bytearray((BUILTIN_WEIGHTS / "original.safetensors").read_bytes())
    data[-1] ^= 1  # one bit of one weight
    install(tensors=bytes(data))
    result = cli("predict", "mine", "-i", "image=x.png", "-i", "number=1")
    assert result.code == 2 and "Traceback" not in result.err
    assert "mine.safetensors does not match its record" in " ".join(result.err.split())


def test_weights_recorded_for_other_settings_are_refused(install, cli):
    install(record={"settings": "0" * 16})
    result = cli("eval", "mine")
    assert result.code == 2 and "trained for other settings" in " ".join(result.err.split())


def test_weights_of_another_recipe_are_refused(install):
    add = (BUILTIN_WEIGHTS / "embedding.safetensors").read_bytes()  # the tensors of another recipe, recorded as ours
    from digitsum.weights import sha256_of

    install(tensors=add, record={"sha256": sha256_of(BUILTIN_WEIGHTS / "embedding.safetensors"), "bytes": len(add)})
    with pytest.raises(UserError, match=r"holds the weights of recipe 'embedding' \(settings \w+\), not of 'mine'"):
        digitsum.load("mine")


@pytest.mark.parametrize("field, value, message", [
    ("sha256", "xyz", "'sha256' should be 64"),
    ("file", "../../etc/passwd.safetensors", "'file' should be the name"),
    ("bytes", -1, "'bytes' should be from 1"),
    ("test", [], "'test' should be a table"),
    ("url", "ftp://x/y", "give exactly one of"),
])  # fmt: skip
def test_a_malformed_record_is_refused_with_what_is_wrong(install, field, value, message):
    install(record={field: value})
    with pytest.raises(UserError, match=message):
        digitsum.load("mine")


def test_remote_weights_are_downloaded_once_and_verified(install, tmp_path):
    install(url=True)
    first = digitsum.load("mine")
    cached = list(cache_folder().glob("*.safetensors"))
    assert [p.name for p in cached] == [f"{first.weights.sha256}.safetensors"]
    (tmp_path / "served" / "w.safetensors").unlink()  # the second load reads the cache
    again = digitsum.load("mine")
    assert all((a == b).all() for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
    cached[0].unlink()


def test_a_corrupted_download_leaves_nothing_in_the_cache(install, cli):
    data = bytearray((BUILTIN_WEIGHTS / "original.safetensors").read_bytes())
    data[1000] ^= 0xFF
    install(tensors=bytes(data), url=True)
    before = sorted(cache_folder().glob("**/*")) if cache_folder().exists() else []
    result = cli("eval", "mine")
    assert result.code == 2 and "does not match its record" in result.err and "nothing was kept" in result.err
    assert (sorted(cache_folder().glob("**/*")) if cache_folder().exists() else []) == before


def test_an_unreachable_url_is_a_clear_error(install, tmp_path):
    install(url=True)
    shutil.rmtree(tmp_path / "served")
    with pytest.raises(UserError, match="cannot download the weights of 'mine'"):
        digitsum.load("mine")


def test_export_safetensors_refuses_a_run_of_changed_settings(tiny_run, tmp_path, cli):
    result = cli("export", tiny_run.run_dir, "--format", "safetensors", "--out", tmp_path / "w")
    assert result.code == 2 and "did not train recipe 'original' as built-in ships it" in " ".join(result.err.split())
    assert not (tmp_path / "w").exists()


def test_the_table_of_weights_in_the_docs_is_the_records():
    import importlib.util

    spec = importlib.util.spec_from_file_location("zoo_weights", REPO / "benchmarks" / "zoo_weights.py")
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    assert zoo.table() in (REPO / "docs" / "api.md").read_text()  # benchmarks/zoo_weights.py --table


def test_a_record_is_reproduced_only_by_the_same_metrics_to_four_digits():
    from digitsum.weights import WeightsRecord

    record = WeightsRecord("r", "s" * 64, "0" * 64, 1, 0, 1, 1, {"digit": {"accuracy": 0.98761, "loss": 0.1}}, "cmd", "0.1.0")
    assert record.reproduced_by({"digit": {"accuracy": 0.98764, "loss": 0.10001}})
    assert not record.reproduced_by({"digit": {"accuracy": 0.9875, "loss": 0.1}})
    assert not record.reproduced_by({"digit": {"loss": 0.1}})  # a recorded metric that is missing


@pytest.mark.parametrize("name", ["original", "add-4"])
def test_pretrained_metrics_are_its_records_history_as_flat_records(name):
    import digitsum

    run = digitsum.load(name)
    test = [m for m in run.metrics if m["split"] == "test"]
    assert test and test[-1]["epoch"] == len(run.history)
    heads = run.history[-1]["test"]
    assert {f"{h}.{k}": v for h, ms in heads.items() for k, v in ms.items()}.items() <= test[-1].items()


def test_a_records_meta_is_its_record_without_the_history():
    record = digitsum.load("original").weights
    assert record.meta == {k: v for k, v in record.to_dict().items() if k != "history"}
    assert record.meta["test"] == record.test and "sha256" in record.meta
