"""Describing registered components, for `digitsum list` and the generated docs."""

from __future__ import annotations

from typing import Any

from .registry import KIND_PLURALS, REGISTRIES, Entry, PluginError, registry_for


def _spec_text(spec: Any) -> str:
    fields = ", ".join(str(v) for v in vars(spec).values())
    return f"{type(spec).__name__}({fields})"


def describe_entry(entry: Entry) -> dict[str, Any]:
    """Name, origin, summary and parameters of one component (loading it)."""
    from .contracts import params_schema

    row: dict[str, Any] = {
        "kind": entry.kind,
        "name": entry.name,
        "origin": str(entry.origin),
        "distribution": entry.origin.distribution,
        "version": entry.origin.version,
        "entry_point": entry.origin.value,
    }
    try:
        cls = entry.load()
    except PluginError:
        row["error"] = entry.error
        return row
    row["summary"] = cls.summary()
    row["params"] = params_schema(cls.Params)
    if entry.kind == "heads":
        row["primary_metric"] = cls.primary_metric
    if entry.kind == "datasets":
        interface = cls.interface(cls.Params())
        row["inputs"] = {k: _spec_text(v) for k, v in interface.inputs.items()}
        row["targets"] = {k: _spec_text(v) for k, v in interface.targets.items()}
    return row


def describe_components(kind: str | None = None) -> list[dict[str, Any]]:
    """Every component of ``kind`` (or of every kind), broken ones included with their error."""
    registries = [registry_for(kind)] if kind else list(REGISTRIES.values())
    return [describe_entry(entry) for registry in registries for entry in registry.entries()]


def _params_text(params: list[dict[str, Any]]) -> str:
    parts = []
    for p in params:
        default = "required" if p["required"] else repr(p["default"])
        parts.append(f"{p['name']}={default}")
    return "\n".join(parts)


def render_tables(rows: list[dict[str, Any]], console) -> None:
    """One rich table per kind."""
    from rich.markup import escape
    from rich.table import Table

    for kind in REGISTRIES:
        kind_rows = [r for r in rows if r["kind"] == kind]
        if not kind_rows:
            continue
        table = Table(title=KIND_PLURALS[kind], title_justify="left", show_lines=True)
        for column in ("name", "origin", "summary", "parameters"):
            table.add_column(column)
        for row in kind_rows:
            if "error" in row:
                table.add_row(row["name"], row["origin"], f"[red]failed to load: {escape(row['error'])}[/]", "")
                continue
            summary = row["summary"]
            if "inputs" in row:
                summary += f"\ninputs: {', '.join(row['inputs'])} · targets: {', '.join(row['targets'])}"
            table.add_row(row["name"], row["origin"], escape(summary), escape(_params_text(row["params"])))
        console.print(table)


_MARKDOWN_INTRO = """\
# Components

Every built-in component, with its parameters: the keys its recipe table takes besides `type`.
Generated from the registries by `digitsum list --markdown > docs/components.md`; a test fails
when this file is out of date. Components from installed plugins show up in `digitsum list`.
"""


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _toml_value(value: Any) -> str:
    """A default as it would be written in a recipe (JSON and TOML agree on these values)."""
    import json

    return "(none)" if value is None else json.dumps(value)


def render_markdown(rows: list[dict[str, Any]]) -> str:
    """The components as a Markdown document: a section per kind, a table of parameters each."""
    lines = [_MARKDOWN_INTRO]
    for kind in REGISTRIES:
        kind_rows = [r for r in rows if r["kind"] == kind]
        if not kind_rows:
            continue
        lines.append(f"## {KIND_PLURALS[kind].capitalize()}\n")
        for row in kind_rows:
            lines.append(f"### `{row['name']}`\n")
            if "error" in row:
                lines.append(f"Failed to load: {_md(row['error'])}\n")
                continue
            origin = "" if row["origin"] == "built-in" else f" ({_md(row['origin'])})"
            lines.append(f"{_md(row['summary'])}{origin}\n")
            if "inputs" in row:
                inputs = ", ".join(f"`{k}` {v}" for k, v in row["inputs"].items())
                targets = ", ".join(f"`{k}` {v}" for k, v in row["targets"].items())
                lines.append(f"- inputs: {inputs}\n- targets: {targets}\n")
            if "primary_metric" in row:
                lines.append(f"Primary metric (in tables and comparisons): `{row['primary_metric']}`.\n")
            if row["params"]:
                lines.append("| parameter | type | default | description |\n|---|---|---|---|")
                for p in row["params"]:
                    default = "required" if p["required"] else f"`{_toml_value(p['default'])}`"
                    lines.append(f"| `{p['name']}` | {_md(p['type'])} | {default} | {_md(p['description'])} |")
                lines.append("")
            else:
                lines.append("No parameters.\n")
    return "\n".join(lines).rstrip() + "\n"
