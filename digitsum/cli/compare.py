"""``digitsum compare``: several recipes, or one over a grid of values, trained and compared."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from . import SetOpt, app, console, say


@app.command()
def compare(
    recipes: Annotated[list[str], typer.Argument(help="recipes: TOML files or recipe names", show_default=False)],
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", "-g", help="KEY=V1,V2,...: one variant per value, e.g. --grid backbone.type=concat,film (repeatable: all combinations)", show_default=False),
    ] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="compare directory (default runs/compare/<timestamp>)")] = None,
) -> None:
    """Train several recipes, or one recipe over a grid of values, and compare them in one table."""
    import digitsum
    from ..comparison import render_table

    comparison = digitsum.compare(recipes, grid or [], set_ or [], out)
    render_table(comparison.rows, console)
    if comparison.interruption is not None:
        say(f"interrupted: {comparison.out_dir} holds the variants compared so far", err=True)
        sys.exit(comparison.interruption.exit_code)
    console.print(f"wrote {comparison.out_dir} (compare.json, compare.csv, compare.png, one run directory per variant)")
