"""The command line: parse, call the library, print. Heavy imports happen inside commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import UserError

app = typer.Typer(
    name="digitsum",
    help="Train and compare multi-input, multi-output digit models from TOML recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console()
err_console = Console(stderr=True)

RecipeArg = Annotated[Path, typer.Argument(help="recipe TOML file", show_default=False)]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="override a recipe key, e.g. --set train.epochs=1 (repeatable)", show_default=False),
]


def _version(value: bool) -> None:
    if value:
        print(f"digitsum {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")] = False,
) -> None:
    """Train and compare multi-input, multi-output digit models from TOML recipes."""


@app.command()
def run(
    recipe: RecipeArg,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="run directory (default runs/<recipe>/<timestamp>)")] = None,
) -> None:
    """Train a recipe and write its run directory."""
    from .engine import distributed
    from .engine.report import ConsoleReporter
    from .engine.rundir import create_run_dir
    from .engine.train import run as train_run
    from .recipe import load_recipe

    loaded = load_recipe(recipe, set_ or [])
    main_rank = distributed.current().is_main  # under torchrun, rank 0 alone writes and prints
    run_dir = create_run_dir(loaded.name, out) if main_rank else None
    train_run(loaded, run_dir, [ConsoleReporter(console)] if main_rank else [])
    if main_rank:
        console.print(f"wrote {run_dir}")


@app.command()
def show(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Validate a recipe and print it resolved (extends, overrides and defaults applied)."""
    from .recipe import load_recipe

    loaded = load_recipe(recipe, set_ or [])
    print(loaded.to_toml(), end="")


@app.command("list")
def list_(
    kind: Annotated[Optional[str], typer.Argument(help="datasets, fusions or heads (default: all)", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the registered components with their origin, summary and parameters."""
    from .listing import describe_components, render_tables

    rows = describe_components(kind)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        render_tables(rows, console)


def main() -> None:
    """Console entry point: user errors end in a short message and exit code 2."""
    try:
        app()  # click handles its own usage errors (exit 2); ours come through here
    except UserError as e:
        from rich.markup import escape

        err_console.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
