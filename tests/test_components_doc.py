from __future__ import annotations

from digitsum.listing import describe_components, render_markdown

from .conftest import REPO

DOC = REPO / "docs" / "components.md"


def test_components_doc_is_generated_from_the_registries():
    builtins = [row for row in describe_components() if row["origin"] == "built-in"]
    expected = render_markdown(builtins)
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/components.md is out of date: run `digitsum list --markdown > docs/components.md`"
    )


def test_markdown_lists_every_builtin_with_its_parameters(cli):
    result = cli("list", "--markdown")
    assert result.code == 0
    for row in describe_components():
        assert f"### `{row['name']}`" in result.out
        for param in row.get("params", []):
            assert f"| `{param['name']}` |" in result.out
