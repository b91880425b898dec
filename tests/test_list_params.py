"""`digitsum list` shows every parameter's default and description whole, readable at 100 columns."""

from __future__ import annotations

import json

import pytest

from digitsum.kinds import KINDS


@pytest.mark.parametrize("kind", list(KINDS))
def test_list_shows_each_parameters_default_and_description(cli, monkeypatch, kind):
    monkeypatch.setenv("COLUMNS", "100")
    rows = json.loads(cli("list", kind, "--json").out)
    result = cli("list", kind)
    assert result.code == 0 and max(map(len, result.out.splitlines())) <= 100
    text = " ".join(result.out.replace("│", " ").split())
    assert "…" not in text
    for row in rows:
        for p in row.get("params", []):
            default = "(required)" if p["required"] else "= " + ("(none)" if p["default"] is None else json.dumps(p["default"]))
            assert f"{p['name']} {default} — {' '.join(p['description'].split())}" in text, (row["name"], p["name"])
