"""``digitsum run``: train a recipe, or continue an interrupted run."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from . import SetOpt, app, console, err_console, say


@app.command()
def run(
    recipe: Annotated[str | None, typer.Argument(help="recipe: a TOML file, or a recipe name (digitsum list recipes)", show_default=False)] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="run directory (default runs/<recipe>/<timestamp>)")] = None,
    no_preflight: Annotated[bool, typer.Option("--no-preflight", help="skip the quick checks before the first epoch")] = False,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue the run in this run directory", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite the run directory given by --out")] = False,
) -> None:
    """Train a recipe and write its run directory, or continue an interrupted run (--resume).

    Ctrl-C or SIGTERM stops after the current step and keeps a checkpoint; again, at once.
    Under torchrun, every rank trains its slice; rank 0 alone prints and writes.
    """
    import digitsum

    if resume is not None:
        if recipe is not None or set_ or out is not None or force:
            raise UserError("--resume continues a run with its recorded recipe: give no RECIPE, --set, --out or --force with it")
        trained = digitsum.resume(resume)
    elif recipe is None:
        raise UserError("give a recipe to train, or --resume RUN_DIR to continue a run")
    else:
        trained = digitsum.train(recipe, out, overrides=set_ or [], preflight=not no_preflight, force=force)
    if trained is None:  # a rank other than 0 of a torchrun run
        return
    if trained.interrupted_by is not None:
        position = trained.summary["position"]
        say(f"interrupted at epoch {position['epoch'] + 1} step {position['step']}; "
            f"resume with: digitsum run --resume {trained.run_dir}", err=True)  # fmt: skip
        sys.exit(128 + trained.interrupted_by)  # the shell's convention for a process a signal ended
    console.print(f"wrote {trained.run_dir}")
    if trained.failure:
        err_console.print(f"[bold red]error:[/] {trained.failure}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
