"""Recipes and the components they choose from: ``show``, ``cp`` and ``list``."""

from typing import Annotated

import typer

from ..errors import UserError
from . import JsonOpt, RecipeArg, SetOpt, app, console, err_console, print_json, say


@app.command()
def show(recipe: RecipeArg, set_: SetOpt = None,
         origin: Annotated[bool, typer.Option("--origin", help="after each key, the file and line (or --set) it came from, or 'default'")] = False) -> None:  # fmt: skip
    """Validate a recipe and print it resolved (extends, overrides and defaults applied)."""
    import digitsum

    print(digitsum.load_recipe(recipe, set_ or []).to_toml(origins=origin), end="")


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
    if markdown and rows and not components:  # recipes or checks asked for
        raise UserError(f"--markdown writes the components' reference (docs/components.md); list {rows[0]['kind']} without it")
    if as_json:
        print_json(components if markdown else rows)
    elif markdown:
        print(render_markdown(components), end="")
    else:
        render_tables(components, console)
        if recipes := [row for row in rows if row["kind"] == "recipes"]:
            render_recipes(recipes, console)
        if checks := [row for row in rows if row["kind"] == "checks"]:
            _render_checks(checks)


def _render_checks(checks: list[dict]) -> None:
    from rich.table import Table

    from ..listing import summary_text

    table = Table(title="doctor checks (digitsum doctor; plugins add theirs by the entry-point group digitsum.checks)")
    for column in ("check", "origin", "what it measures"):
        table.add_column(column)
    for row in checks:
        table.add_row(row["name"], row["origin"], summary_text(row))
    console.print(table)


@app.command()
def cp(
    name: Annotated[str, typer.Argument(help="a built-in or plugin recipe (digitsum list recipes)", show_default=False)],
    # a str, not a Path: a trailing slash ("configs/") says DEST is a folder, and Path drops it
    dest: Annotated[str, typer.Argument(help="the file to write, or a folder (then DEST/NAME.toml)", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="overwrite DEST if it is an unedited copy of a recipe (never a file of yours)")] = False,
) -> None:
    """Copy a shipped recipe, comments and all, to edit it; then: digitsum run DEST."""
    import digitsum

    written = digitsum.copy_recipe(name, dest, force=force)
    say(f"copied recipe {name} to {written}; run it with: digitsum run {written}")
    try:
        digitsum.load_recipe(written)  # its extends must resolve from where it now lies
    except UserError as e:
        err_console.print(f"[bold yellow]warning:[/] the copy does not load from {written.parent}:", highlight=False)
        say(e.message, err=True)
