"""``digitsum plugins`` and ``digitsum new-plugin``: the installed plugins, a new one."""

from pathlib import Path
from typing import Annotated

import typer

from ..scaffold import kind_words
from . import JsonOpt, app, console, path_flag, print_json, say


@app.command()
def plugins(as_json: JsonOpt = False) -> None:
    """List installed plugin distributions: versions, what each registers, load failures."""
    from ..plugin_report import plugin_report, render_plugins

    report = plugin_report()
    if as_json:
        print_json(report)
    else:
        render_plugins(report, console)


@app.command("new-plugin")
def new_plugin(
    name: Annotated[str, typer.Argument(help="distribution name, e.g. digitsum-shapes", show_default=False)],
    directory: Annotated[Path | None, path_flag("--dir", help="where to create it (default ./NAME); must not hold anything")] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", "-k", metavar="KIND", help=f"only this kind: {kind_words()} (a plural too; repeatable; default all)", show_default=False),
    ] = None,
) -> None:
    """Create a plugin package: one component of each kind and a doctor check, a recipe, tests and a README."""
    from ..scaffold import next_steps, scaffold_plugin

    created = scaffold_plugin(name, directory, kind)
    # plain lines: rich would take "[test]" for a style tag and drop it; one line to copy
    say(f"created plugin {name} in {created}")
    say(f"next: {next_steps(created)}")
