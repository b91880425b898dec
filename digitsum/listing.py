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
