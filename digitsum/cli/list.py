"""``digitsum list``: the registered components, the shipped recipes, the doctor's checks."""

from typing import Annotated

import typer

from ..errors import UserError
from . import JsonOpt, app, console, print_json


@app.command("list")
def list_(
    kind: Annotated[str | None, typer.Argument(help="datasets, fusions, heads, optimizers, schedules, loggers, recipes or checks (default: all)", show_default=False)] = None,
    as_json: JsonOpt = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown of the components, as in docs/components.md")] = False,
) -> None:
    """List the registered components (origin, summary, parameters) and the shipped recipes
    (origin, description, test metrics measured at their shipped settings)."""
    import digitsum
    from ..listing import render_markdown, render_recipes, render_tables

    rows = digitsum.list_components(kind)
    components = [row for row in rows if row["kind"] not in ("recipes", "checks")]
    if markdown and kind is not None and rows and not components:
        raise UserError(f"--markdown writes the components' reference (docs/components.md); list {rows[0]['kind']} without it")
    if as_json:
        print_json(components if markdown else rows)
    elif markdown:
        print(render_markdown(components), end="")
    if as_json or markdown:
        return
    render_tables(components, console)
    recipes = [row for row in rows if row["kind"] == "recipes"]
    if recipes:
        render_recipes(recipes, console)
    checks = [row for row in rows if row["kind"] == "checks"]
    if checks:
        from rich.table import Table

        table = Table(title="doctor checks (digitsum doctor; plugins add theirs by the entry-point group digitsum.checks)")
        for column in ("check", "origin", "what it measures"):
            table.add_column(column)
        for row in checks:
            table.add_row(row["name"], row["origin"], row["summary"])
        console.print(table)
