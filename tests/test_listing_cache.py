"""`digitsum list` answers from a cache keyed by the installed plugins, rebuilt when they change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from digitsum import listing

from .conftest import fake_distribution

RUN_AND_REPORT_TORCH = (
    "import sys; sys.argv = ['digitsum', *sys.argv[1:]]\n"
    "from digitsum.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "print('TORCH', 'torch' in sys.modules)\n"
)


def list_json(cache: Path, site: Path | None = None, *command: str) -> tuple[list[dict], bool]:
    """``digitsum list --json`` (or ``command``) in a fresh interpreter: its rows, and whether it
    imported torch."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(site or "")}
    args = [sys.executable, "-c", RUN_AND_REPORT_TORCH, *(command or ("list", "--json"))]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    body, _, flag = result.stdout.rpartition("TORCH ")
    return json.loads(body), flag.strip() == "True"


def cache_files(cache: Path) -> list[Path]:
    return sorted((cache / "digitsum" / "components").glob("*.json"))


def test_warm_list_does_not_import_torch_and_gives_the_same_rows(tmp_path):
    cold_rows, cold_torch = list_json(tmp_path)
    warm_rows, warm_torch = list_json(tmp_path)
    assert cold_torch and not warm_torch
    assert warm_rows == cold_rows and len(cache_files(tmp_path)) == 1


def test_installing_a_plugin_or_changing_its_code_invalidates_the_cache(tmp_path):
    cache, site = tmp_path / "cache", tmp_path / "site"
    list_json(cache)
    module = "from digitsum.components.heads.classify import Classify\n\nclass Wide(Classify):\n    \"\"\"v1\"\"\"\n"
    fake_distribution(site, "digitsum-wide", "1.0", {"digitsum.heads": {"wide": "wide_plugin:Wide"}}, {"wide_plugin.py": module})
    rows, imported = list_json(cache, site)
    assert imported and {r["summary"] for r in rows if r["name"] == "wide"} == {"v1"}
    assert list_json(cache, site) == (rows, False)  # cached now

    path = site / "wide_plugin.py"
    path.write_text(module.replace("v1", "v2, edited in place"))  # an editable install, same version
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    rows, imported = list_json(cache, site)
    assert imported and {r["summary"] for r in rows if r["name"] == "wide"} == {"v2, edited in place"}


def test_the_plugins_report_answers_from_the_cache_and_sees_a_component_broken_since(tmp_path):
    cache, site = tmp_path / "cache", tmp_path / "site"
    module = "from digitsum.components.heads.classify import Classify as Wide\n"
    fake_distribution(site, "digitsum-wide", "1.0", {"digitsum.heads": {"wide": "wide_plugin:Wide"}}, {"wide_plugin.py": module})
    list_json(cache, site)
    report, imported = list_json(cache, site, "plugins", "--json")
    (wide,) = [r for r in report if r["distribution"] == "digitsum-wide"]
    assert not imported and wide["status"] == "ok" and "error" not in wide["components"][0]  # what `list` loaded and checked

    path = site / "wide_plugin.py"
    path.write_text("raise RuntimeError('broken since')\n")
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    report, imported = list_json(cache, site, "plugins", "--json")
    (wide,) = [r for r in report if r["distribution"] == "digitsum-wide"]
    assert imported and wide["status"] == "failed" and "broken since" in wide["components"][0]["error"]


def test_a_listing_with_a_broken_component_is_not_cached(tmp_path):
    site = fake_distribution(tmp_path / "site", "digitsum-broken", "0.1", {"digitsum.heads": {"boom": "boom_plugin:Boom"}},
                             {"boom_plugin.py": "raise ImportError('needs digitsum-extras')\n"})  # fmt: skip
    rows, _ = list_json(tmp_path / "cache", site)
    assert "needs digitsum-extras" in next(r for r in rows if r["name"] == "boom")["error"]
    assert cache_files(tmp_path / "cache") == []


def test_a_corrupt_cache_is_ignored_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    expected = listing.describe_components()
    path = listing._cache_path()
    for garbage in ["{not json", json.dumps({"format": 1, "rows": [{"kind": "nonsense"}]}), json.dumps([1, 2])]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(garbage)
        assert listing.cached_components() == expected
        assert json.loads(path.read_text())["rows"] == expected


def test_an_unwritable_cache_folder_does_not_break_list(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert {r["name"] for r in listing.cached_components("heads")} == {r["name"] for r in listing.describe_components("heads")}


def test_the_cache_folder_is_found_without_torch():
    code = "import sys; from digitsum.paths import user_cache_dir; user_cache_dir(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
