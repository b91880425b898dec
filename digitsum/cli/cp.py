"""``digitsum cp``: a shipped recipe copied out to edit."""

from typing import Annotated

import typer

from ..errors import UserError
from . import app, err_console, say


@app.command()
def cp(
    name: Annotated[str, typer.Argument(help="a built-in or plugin recipe (digitsum list recipes)", show_default=False)],
    # a str, not a Path: a trailing slash ("configs/") says DEST is a folder, and Path drops it
    dest: Annotated[str, typer.Argument(help="the file to write, or a folder (then DEST/NAME.toml)", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="overwrite DEST if it exists")] = False,
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
