"""Plugins ship pretrained weights (docs/plugins.md#shipping-weights): a distribution declaring a
``digitsum.weights`` entry is listed, loads by name and passes ``digitsum.testing.check_weights``;
a tampered file, weights recorded for another recipe and a missing record are refused. Each
test builds its plugin in a private folder (weights fabricated from the recipe's untrained
model: no training) and runs ``digitsum`` in a subprocess with that folder on PYTHONPATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from digitsum.catalog import settings_digest
from digitsum.recipe import recipe_document
from digitsum.weights import FORMAT, WeightsRecord, sha256_of, write_record, write_tensors

from .conftest import fake_distribution
from .test_plugins import digitsum

DIST, PACKAGE = "digitsum-weighty", "weighty"
RECIPES = {
    "tiny": 'extends = "original"\nname = "tiny"\ndescription = "original, shipped with weights by a test plugin"\n',
    "other": 'extends = "original"\nname = "other"\ndescription = "original with another width"\n\n'
             '[backbone]\nhidden = [32, 16]\n',
}  # fmt: skip
TEST_METRICS = {"digit": {"loss": 2.3, "accuracy": 0.1}, "sum": {"loss": 2.9, "accuracy": 0.05}}


def weights_plugin(site: Path, *, trained_for: str = "tiny", settings_of: str | None = None, model_of: str | None = None,
                   record: bool = True, test: dict | None = None) -> Path:  # fmt: skip
    """A distribution shipping the recipes ``tiny`` and ``other`` and weights declared for ``tiny``:
    the untrained model of ``model_of`` (default ``trained_for``) and a record naming the recipe
    ``trained_for`` and the settings digest of ``settings_of`` (default ``trained_for``); no
    record file with ``record=False``."""
    import digitsum

    site = fake_distribution(
        site, DIST, "0.2",
        {"digitsum.recipes": {name: f"{PACKAGE}.recipes" for name in RECIPES}, "digitsum.weights": {"tiny": f"{PACKAGE}.weights"}},
        {f"{PACKAGE}/__init__.py": "", **{f"{PACKAGE}/recipes/{n}.toml": text for n, text in RECIPES.items()}},
    )  # fmt: skip
    folder = site / PACKAGE / "weights"
    folder.mkdir()
    recipe_path = site / PACKAGE / "recipes" / f"{model_of or trained_for}.toml"
    digest = settings_digest(recipe_document(site / PACKAGE / "recipes" / f"{settings_of or trained_for}.toml"))
    model = digitsum.build(recipe_path, "cpu").model
    tensors = folder / "tiny.safetensors"
    write_tensors(tensors, model.state_dict(), {"format": FORMAT, "recipe": trained_for, "settings": digest})
    if record:
        write_record(folder / "tiny.json", WeightsRecord(
            recipe=trained_for, settings=digest, sha256=sha256_of(tensors), bytes=tensors.stat().st_size, file=tensors.name,
            seed=0, epochs=1, parameters=sum(p.numel() for p in model.parameters()), test=test or TEST_METRICS,
            command=f"digitsum run {trained_for}", digitsum_version=digitsum.__version__,
        ))  # fmt: skip
    return site


def check_weights_in(site: Path, name: str, workdir: Path) -> subprocess.CompletedProcess:
    """``digitsum.testing.check_weights(name)`` in a fresh interpreter that sees ``site``."""
    code = f"from digitsum.testing import check_weights, weights_of\nprint(weights_of({DIST!r}))\ncheck_weights({name!r}, {str(workdir)!r})\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(site)})  # fmt: skip


def test_a_plugin_declaring_weights_is_listed_and_loads_by_name(tmp_path, tiny_root):
    site = weights_plugin(tmp_path / "site")
    listed = digitsum("list", "recipes", "--json", site=site)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["tiny"]["origin"] == f"{DIST} 0.2"
    weights = rows["tiny"]["weights"]
    assert weights["bytes"] == (site / PACKAGE / "weights" / "tiny.safetensors").stat().st_size
    assert weights["test"] == TEST_METRICS and "error" not in weights
    assert rows["other"]["weights"] is None
    report = {r["distribution"]: r for r in json.loads(digitsum("plugins", "--json", site=site).stdout)}
    assert report[DIST]["status"] == "ok"
    assert [(w["name"], "error" in w) for w in report[DIST]["weights"]] == [("tiny", False)]
    table = digitsum("plugins", site=site)
    assert "weights of tiny" in table.stdout and "(failed)" not in table.stdout.split(DIST)[1]

    evaluated = digitsum("eval", "tiny", "--json", site=site, env={"DIGITSUM_DATA": str(tiny_root)}, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert set(json.loads(evaluated.stdout)["heads"]) == {"digit", "sum"}
    image = tmp_path / "seven.png"
    from PIL import Image, ImageDraw

    picture = Image.new("L", (28, 28))
    ImageDraw.Draw(picture).line([(8, 6), (20, 6), (12, 22)], fill=255, width=3)
    picture.save(image)
    predicted = digitsum("predict", f"{DIST}:tiny", "-i", f"image={image}", "-i", "number=3", "--json", site=site, cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert set(json.loads(predicted.stdout)["samples"][0]) == {"digit", "sum"}

    checked = check_weights_in(site, "tiny", tmp_path / "check")
    assert checked.returncode == 0, checked.stderr
    assert f"['{DIST}:tiny']" in checked.stdout


def test_check_weights_wants_test_metrics_for_every_head(tmp_path):
    site = weights_plugin(tmp_path / "site", test={"digit": TEST_METRICS["digit"], "sun": TEST_METRICS["sum"]})
    checked = check_weights_in(site, f"{DIST}:tiny", tmp_path / "check")
    assert checked.returncode == 1
    assert "the record has no test metrics for head 'sum' of the recipe" in checked.stderr
    assert "the record has test metrics for head 'sun', which the recipe does not have" in checked.stderr


def test_a_url_record_downloads_once_into_the_cache_and_checks_it(tmp_path, tiny_root):
    site = weights_plugin(tmp_path / "site")
    folder, cache = site / PACKAGE / "weights", tmp_path / "cache"
    record = json.loads((folder / "tiny.json").read_text())  # as docs/plugins.md turns a file record into a url record
    published = tmp_path / "published" / record.pop("file")
    published.parent.mkdir()
    (folder / published.name).rename(published)
    record["url"] = published.as_uri()
    (folder / "tiny.json").write_text(json.dumps(record, indent=2) + "\n")
    env = {"DIGITSUM_DATA": str(tiny_root), "XDG_CACHE_HOME": str(cache)}
    listed = {r["name"]: r for r in json.loads(digitsum("list", "recipes", "--json", site=site, env=env).stdout)}
    assert listed["tiny"]["weights"]["remote"] is True
    result = digitsum("eval", "tiny", site=site, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (cache / "digitsum" / "weights" / f"{record['sha256']}.safetensors").read_bytes() == published.read_bytes()
    published.write_bytes(published.read_bytes()[:-1] + b"x")  # the published file changed
    (cache / "digitsum" / "weights" / f"{record['sha256']}.safetensors").unlink()
    refused = digitsum("eval", "tiny", site=site, env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "does not match its record" in " ".join(refused.stderr.split())
    assert list((cache / "digitsum" / "weights").iterdir()) == []  # nothing half-written kept


def test_a_tampered_weights_file_is_refused_naming_it(tmp_path, tiny_root):
    site = weights_plugin(tmp_path / "site")
    tensors = site / PACKAGE / "weights" / "tiny.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF  # one bit of one weight: same size, another sha256
    tensors.write_bytes(bytes(data))
    result = digitsum("eval", "tiny", site=site, env={"DIGITSUM_DATA": str(tiny_root)}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert str(tensors) in message and "does not match its record" in message
    checked = check_weights_in(site, "tiny", tmp_path / "check")
    assert checked.returncode == 1 and "does not match its record" in checked.stderr


@pytest.mark.parametrize(("trained_for", "settings_of", "said"), [
    ("other", "other", "were trained for recipe 'other'"),      # the other recipe's model and record
    ("tiny", "other", "were trained for other settings"),        # recorded with the other recipe's settings digest
], ids=["another-recipe", "another-settings"])  # fmt: skip
def test_weights_recorded_for_another_recipe_are_refused(tmp_path, tiny_root, trained_for, settings_of, said):
    site = weights_plugin(tmp_path / "site", trained_for=trained_for, settings_of=settings_of)
    result = digitsum("eval", "tiny", site=site, env={"DIGITSUM_DATA": str(tiny_root)}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert said in message and "nothing was loaded" in message, message
    listed = {r["name"]: r for r in json.loads(digitsum("list", "recipes", "--json", site=site).stdout)}
    assert listed["tiny"]["weights"]["error"] == "trained for other settings than the recipe has now"
    checked = check_weights_in(site, "tiny", tmp_path / "check")
    assert checked.returncode == 1 and said in " ".join(checked.stderr.split())


def test_weights_whose_tensors_do_not_fit_the_recipe_are_refused(tmp_path, tiny_root):
    site = weights_plugin(tmp_path / "site", model_of="other")  # the record is right, the tensors another model's
    result = digitsum("eval", "tiny", site=site, env={"DIGITSUM_DATA": str(tiny_root)}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "do not fit the model its recipe builds" in " ".join(result.stderr.split())
    checked = check_weights_in(site, "tiny", tmp_path / "check")
    assert checked.returncode == 1
    assert "tensor 'backbone.mlp.0.weight' has shape (32, 202), the recipe's model (120, 202)" in checked.stderr, checked.stderr[-2000:]


def test_a_weights_entry_without_its_record_is_reported_failed(tmp_path):
    site = weights_plugin(tmp_path / "site", record=False)
    result = digitsum("plugins", "--json", site=site)
    assert result.returncode == 0, result.stderr
    row = {r["distribution"]: r for r in json.loads(result.stdout)}[DIST]
    assert row["status"] == "failed"
    (weights,) = row["weights"]
    assert weights["name"] == "tiny" and "no tiny.json" in weights["error"]
    table = digitsum("plugins", site=site)
    assert "weights of tiny (failed)" in " ".join(table.stdout.split())
    assert f"{DIST} 0.2: weights of 'tiny' ({PACKAGE}.weights) failed: no tiny.json" in " ".join(table.stdout.split())
    strict = digitsum("--strict-plugins", "list", "recipes", site=site)
    assert strict.returncode == 2 and "no tiny.json" in strict.stderr


def test_exported_weights_record_the_command_that_reproduces_them_thread_count_included(tmp_path, tiny_root):
    site = weights_plugin(tmp_path / "site")
    env = {"DIGITSUM_DATA": str(tiny_root)}
    trained = digitsum("run", "tiny", "--set", "train.threads=1", "--out", tmp_path / "run", site=site, env=env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    exported = digitsum("export", tmp_path / "run", "--format", "safetensors", "--out", tmp_path / "w", site=site, env=env)
    assert exported.returncode == 0, exported.stderr
    record = json.loads((tmp_path / "w" / "tiny.json").read_text())
    # the thread count changes a CPU run's last bits: without it the command need not give the recorded metrics
    assert record["command"] == "digitsum run tiny --set seed=0 --set train.threads=1" and record["machine"].endswith(", 1 thread")
