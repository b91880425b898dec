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
    from .engine.train import Callback, Trainer
    from .engine.watch import Watch

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

RecipeArg = Annotated[Path, typer.Argument(help="recipe: a TOML file, or a recipe name (digitsum list recipes)", show_default=False)]
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
    strict_plugins: Annotated[
        bool, typer.Option("--strict-plugins", help="fail (exit 2) if any plugin fails to load; also DIGITSUM_STRICT_PLUGINS=1")
    ] = False,
) -> None:
    """Train and compare multi-input, multi-output digit models from TOML recipes."""
    from .discovery import strict_from_env

    if strict_plugins or strict_from_env():
        from .registry import require_all_plugins

        require_all_plugins()


@app.command()
def run(
    recipe: Annotated[Optional[Path], typer.Argument(help="recipe: a TOML file, or a recipe name (digitsum list recipes)", show_default=False)] = None,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="run directory (default runs/<recipe>/<timestamp>)")] = None,
    no_preflight: Annotated[bool, typer.Option("--no-preflight", help="skip the quick checks before the first epoch")] = False,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="continue the run in this run directory", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite the run directory given by --out")] = False,
) -> None:
    """Train a recipe and write its run directory, or continue an interrupted run (--resume).

    Ctrl-C or SIGTERM stops after the current step and keeps a checkpoint; again, at once.
    Under torchrun, every rank trains its slice; rank 0 alone prints and writes.
    """
    from .engine import distributed
    from .engine.rundir import choose_run_dir, prepare_run_dir
    from .engine.train import Trainer
    from .engine.watch import doctor_command
    from .recipe import load_recipe

    main_rank = distributed.current().is_main
    if resume is not None:
        if recipe is not None or set_ or out is not None or force:
            raise UserError("--resume continues a run with its recorded recipe: give no RECIPE, --set, --out or --force with it")
        from .engine.resume import resume_trainer

        watch, callbacks = _run_callbacks(doctor_command(resume / "recipe.toml"), preflight=False)
        trainer = resume_trainer(resume, callbacks, writes=main_rank)
        if main_rank:
            console.print(f"resuming {resume} at epoch {trainer.epochs_done + 1} step {trainer.step}")
    elif recipe is None:
        raise UserError("give a recipe to train, or --resume RUN_DIR to continue a run")
    else:
        loaded = load_recipe(recipe, set_ or [])
        run_dir = choose_run_dir(loaded.name, out, force) if main_rank else None
        watch, callbacks = _run_callbacks(doctor_command(recipe, set_ or []), preflight=not no_preflight)
        trainer = Trainer(loaded, run_dir, callbacks)  # loads the data before anything is written
        if main_rank:
            prepare_run_dir(run_dir)
    try:
        _fit(trainer)
    finally:
        distributed.stop()
    if not main_rank:
        return
    console.print(f"wrote {trainer.run_dir}")
    if watch.failure:
        err_console.print(f"[bold red]error:[/] {watch.failure}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _run_callbacks(hint: str, preflight: bool) -> tuple[Watch, list[Callback]]:
    """What a run from the command line reports and checks: progress, the preflight, the watch
    (kept, to read its verdict), and the pictures every run directory gets."""
    from .engine.report import ConsoleReporter
    from .engine.train import default_callbacks
    from .engine.watch import Preflight, Watch

    watch = Watch(console, hint)
    checks = [Preflight(console, hint)] if preflight else []
    return watch, [ConsoleReporter(console), *checks, watch, *default_callbacks()]


def _fit(trainer: Trainer) -> None:
    """Train with Ctrl-C and SIGTERM turned into a checkpointed stop; say how to resume."""
    from .engine.interrupt import stop_on_signals

    run_dir = trainer.run_dir
    try:
        with stop_on_signals(trainer) as interruption:
            trainer.fit()
    except UserError as e:
        if run_dir is not None and (run_dir / "checkpoint.pt").exists():
            e.message += f"\nthe last checkpoint is intact; resume with: digitsum run --resume {run_dir}"
        raise
    if interruption.signum and not trainer.finished:
        err_console.print(
            f"interrupted at epoch {trainer.epochs_done + 1} step {trainer.step}; "
            f"resume with: digitsum run --resume {run_dir}",
            highlight=False, soft_wrap=True, markup=False,
        )  # fmt: skip
        sys.exit(interruption.exit_code)


@app.command()
def doctor(
    recipe: RecipeArg,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Explain a loss that does not decrease: measured checks on a few batches (CPU, seconds).

    Exit code 0 when healthy, 1 when a check finds an error, 2 for a bad recipe or data.
    """
    from .engine.doctor import doctor as diagnose, render_report
    from .recipe import load_recipe

    report = diagnose(load_recipe(recipe, set_ or []))
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        render_report(report, console)
    if not report.healthy:
        raise typer.Exit(1)


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
    kind: Annotated[Optional[str], typer.Argument(help="datasets, fusions, heads or recipes (default: all)", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown of the components, as in docs/components.md")] = False,
) -> None:
    """List the registered components (origin, summary, parameters) and the shipped recipes
    (origin, description, test metrics measured at their shipped settings)."""
    from .catalog import describe_recipes
    from .listing import cached_components, list_kind, render_markdown, render_recipes, render_tables

    wanted = list_kind(kind)
    if markdown and wanted == "recipes":
        raise UserError("--markdown writes the components' reference (docs/components.md); list recipes without it")
    rows = cached_components(wanted) if wanted != "recipes" else []
    recipes = describe_recipes() if wanted in (None, "recipes") and not markdown else []
    if as_json:
        print(json.dumps(rows + recipes, indent=2))
    elif markdown:
        print(render_markdown(rows), end="")
    else:
        render_tables(rows, console)
        if recipes:
            render_recipes(recipes, console)


@app.command()
def cp(
    name: Annotated[str, typer.Argument(help="a built-in or plugin recipe (digitsum list recipes)", show_default=False)],
    # a str, not a Path: a trailing slash ("configs/") says DEST is a folder, and Path drops it
    dest: Annotated[str, typer.Argument(help="the file to write, or a folder (then DEST/NAME.toml)", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="overwrite DEST if it exists")] = False,
) -> None:
    """Copy a shipped recipe, comments and all, to edit it; then: digitsum run DEST."""
    from .catalog import copy_recipe
    from .recipe import recipe_document

    written = copy_recipe(name, dest, force)
    console.print(f"copied recipe {name} to {written}; run it with: digitsum run {written}", highlight=False, soft_wrap=True)
    try:
        recipe_document(written)  # its extends must resolve from where it now lies
    except UserError as e:
        err_console.print(f"[bold yellow]warning:[/] the copy does not load from {written.parent}:", highlight=False)
        err_console.print(e.message, highlight=False, markup=False, soft_wrap=True)


@app.command()
def compare(
    recipes: Annotated[list[Path], typer.Argument(help="recipes: TOML files or recipe names", show_default=False)],
    grid: Annotated[
        Optional[list[str]],
        typer.Option("--grid", "-g", help="KEY=V1,V2,...: one variant per value, e.g. --grid backbone.type=concat,film (repeatable: all combinations)", show_default=False),
    ] = None,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="compare directory (default runs/compare/<timestamp>)")] = None,
) -> None:
    """Train several recipes, or one recipe over a grid of values, and compare them in one table."""
    from .engine.compare import plan_variants, render_table, run_compare
    from .engine.report import ConsoleReporter
    from .engine.rundir import create_run_dir

    variants = plan_variants(recipes, grid or [], set_ or [])
    out_dir = create_run_dir("compare", out)
    console.print(f"comparing {len(variants)} variants: {', '.join(v.label for v in variants)}")
    rows = run_compare(variants, out_dir, lambda _: [ConsoleReporter(console)])
    render_table(rows, console)
    console.print(f"wrote {out_dir} (compare.json, compare.csv, compare.png, one run directory per variant)")


@app.command()
def plugins(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List installed plugin distributions: versions, what each registers, load failures."""
    from .listing import plugin_report, render_plugins

    report = plugin_report()
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        render_plugins(report, console)


@app.command("new-plugin")
def new_plugin(
    name: Annotated[str, typer.Argument(help="distribution name, e.g. digitsum-shapes", show_default=False)],
    directory: Annotated[Optional[Path], typer.Option("--dir", help="where to create it (default ./NAME); must not hold anything")] = None,
    kind: Annotated[
        Optional[list[str]], typer.Option("--kind", "-k", help="only this kind: dataset, fusion or head (repeatable; default all)", show_default=False)
    ] = None,
) -> None:
    """Create a plugin package: one component of each kind, a recipe, tests and a README."""
    from .scaffold import scaffold_plugin

    created = scaffold_plugin(name, directory, kind)
    console.print(f"created plugin {name} in {created}", highlight=False)
    console.print(f"next: cd {created} && pip install -e '.[test]' && digitsum list && python -m pytest", highlight=False)


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
