"""`digitsum list` shows every parameter's default, bounds and description whole, readable at 100 columns."""

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
            bounds = f" ({p['range']})" if p["range"] else ""  # the values a recipe may give it
            assert f"{p['name']} {default}{bounds} — {' '.join(p['description'].split())}" in text, (row["name"], p["name"])


def test_a_component_without_a_docstring_is_listed_with_a_note_saying_so(cli, monkeypatch):
    """An empty summary cell reads as a listing bug; the note says what is missing and where it goes."""
    from digitsum import Fusion
    from digitsum.registry import fusions

    class Undocumented(Fusion):
        out_features = 1

        def forward(self, batch):
            return batch["image"].flatten(1)[:, :1]

    monkeypatch.setenv("COLUMNS", "300")  # no word folded
    fusions.register("undocumented_fusion")(Undocumented)
    try:
        (row,) = [r for r in json.loads(cli("list", "fusions", "--json").out) if r["name"] == "undocumented_fusion"]
        assert row["summary"] == ""  # --json stays what the class says
        text = " ".join(cli("list", "fusions").out.replace("│", " ").split())
        assert "undocumented_fusion local (" in text
        assert "(no summary: its class has no docstring, whose first line would show here)" in text
    finally:
        fusions.remove("undocumented_fusion")


def test_a_doctor_check_without_a_docstring_is_noted_as_a_function():
    from digitsum.listing import summary_text

    assert summary_text({"kind": "checks", "summary": ""}).startswith("(no summary: its function has no docstring")


def test_a_parameters_bounds_are_listed_as_the_recipe_must_keep_them(cli):
    [adam] = [row for row in json.loads(cli("list", "optimizers", "--json").out) if row["name"] == "adam"]
    ranges = {p["name"]: p["range"] for p in adam["params"]}
    assert ranges["lr"] == "> 0, ≤ 10" and ranges["eps"] == "> 0, ≤ 1" and ranges["betas"] == ""
