"""The command line: parse, call the library, print. Heavy imports happen inside commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import UserError

if TYPE_CHECKING:
    from .engine.train import Trainer

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
    recipe: Annotated[Optional[Path], typer.Argument(help="recipe TOML file", show_default=False)] = None,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="run directory (default runs/<recipe>/<timestamp>)")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="continue the run in this run directory", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite the run directory given by --out")] = False,
) -> None:
    """Train a recipe and write its run directory, or continue an interrupted run (--resume).

    Ctrl-C or SIGTERM stops after the current step and keeps a checkpoint; again, at once.
    """
    from .engine.report import ConsoleReporter
    from .engine.rundir import choose_run_dir, prepare_run_dir
    from .engine.train import Trainer
    from .recipe import load_recipe

    reporter = ConsoleReporter(console)
    if resume is not None:
        if recipe is not None or set_ or out is not None or force:
            raise UserError("--resume continues a run with its recorded recipe: give no RECIPE, --set, --out or --force with it")
        from .engine.resume import resume_trainer

        trainer = resume_trainer(resume, [reporter])
        console.print(f"resuming {resume} at epoch {trainer.epochs_done + 1} step {trainer.step}")
    elif recipe is None:
        raise UserError("give a recipe to train, or --resume RUN_DIR to continue a run")
    else:
        loaded = load_recipe(recipe, set_ or [])
        run_dir = choose_run_dir(loaded.name, out, force)
        trainer = Trainer(loaded, run_dir, [reporter])  # loads the data before anything is written
        prepare_run_dir(run_dir)
    _fit(trainer)


def _fit(trainer: Trainer) -> None:
    """Train with Ctrl-C and SIGTERM turned into a checkpointed stop; say how to resume."""
    from .engine.interrupt import stop_on_signals

    run_dir = trainer.run_dir
    try:
        with stop_on_signals(trainer) as interruption:
            trainer.fit()
    except UserError as e:
        if (run_dir / "checkpoint.pt").exists():
            e.message += f"\nthe last checkpoint is intact; resume with: digitsum run --resume {run_dir}"
        raise
    if interruption.signum and not trainer.finished:
        err_console.print(
            f"interrupted at epoch {trainer.epochs_done + 1} step {trainer.step}; "
            f"resume with: digitsum run --resume {run_dir}",
            highlight=False, soft_wrap=True, markup=False,
        )  # fmt: skip
        sys.exit(interruption.exit_code)
    console.print(f"wrote {run_dir}")


@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="run directory", show_default=False)],
    split: Annotated[str, typer.Option("--split", help="test or train")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Evaluate a run directory's checkpoint and print the metrics of every head."""
    if split not in ("test", "train"):
        raise UserError(f"--split {split!r}: must be test or train")
    from .engine.resume import evaluate_run

    result = evaluate_run(run_dir, split)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    from rich.table import Table

    where = f"epoch {result['epoch']}" + (f" + {result['step']} steps" if result["step"] else "")
    table = Table(title=f"{result['recipe']} ({where}) on the {split} split")
    for column in ("head", "metric", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for head, values in result["heads"].items():
        for metric, value in values.items():
            table.add_row(head, metric, f"{value:.4f}")
    console.print(table)


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
    except KeyboardInterrupt:  # Ctrl-C outside training (loading data, say): nothing was written
        err_console.print("interrupted", highlight=False)
        sys.exit(130)
