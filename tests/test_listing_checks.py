"""`digitsum list checks`: every doctor check, built-in or a plugin's, is summed up by the first
line of its function's docstring, read without importing the check."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from .conftest import fake_distribution

CHECKS_MODULE = '''"""Checks of the looker plugin."""
raise RuntimeError("listing must not import a check")


def look(probe):
    """Whether the backbone looks at the image.

    Details the listing leaves out.
    """
    return []


def plain(probe):
    return []
'''


@pytest.fixture
def looker(tmp_path, monkeypatch):
    """A plugin whose checks lie in a package's module, one re-exported by the package, one
    without a docstring, one in a module that does not exist."""
    from digitsum import registry

    checks = {"look": "looker.checks:look", "again": "looker:again", "plain": "looker.checks:plain", "gone": "looker_missing:look"}
    site = fake_distribution(tmp_path / "site", "digitsum-looker", "2.0", {"digitsum.checks": checks},
                             {"looker/__init__.py": "from .checks import look as again\n", "looker/checks.py": CHECKS_MODULE})  # fmt: skip
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setattr(registry, "_SCAN", None)
    return site


def test_a_plugins_checks_show_the_first_line_of_their_docstring(cli, looker):
    result = cli("list", "checks", "--json")
    assert result.code == 0, result.err
    ours = {r["name"]: r for r in json.loads(result.out) if r["distribution"] == "digitsum-looker"}
    assert {name: r["summary"] for name, r in ours.items()} == {
        "look": "Whether the backbone looks at the image.", "again": "Whether the backbone looks at the image.",
        "plain": "", "gone": ""}  # fmt: skip
    assert ours["look"]["entry_point"] == "looker.checks:look"
    assert "looker" not in sys.modules and "looker.checks" not in sys.modules  # read, never imported
    shown = cli("list", "checks")
    assert "Whether the backbone looks at the image." in " ".join(shown.out.replace("│", " ").split())


def test_built_in_checks_are_summed_up_the_same_way():
    from digitsum.diagnosis import CHECKS
    from digitsum.listing import DOCTOR_CHECKS, describe_checks

    builtin = {r["name"]: r for r in describe_checks() if r["origin"] == "built-in"}
    assert list(builtin) == list(CHECKS)
    for name, check in CHECKS.items():
        module, _, function = DOCTOR_CHECKS[name].partition(":")
        assert getattr(importlib.import_module(module), function) is check  # where the listing reads it
        assert builtin[name]["summary"] == check.__doc__.strip().splitlines()[0]
        assert builtin[name]["summary"].endswith(".")  # a whole sentence, not a line cut short
