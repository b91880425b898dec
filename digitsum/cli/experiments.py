"""Commands that train many runs and compare them: ``digitsum compare`` (several recipes, or one
over a grid of values) and ``digitsum sweep`` (an Optuna search of a recipe's hyper-parameters,
chosen on a val split)."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from . import RecipeArg, SetOpt, app, console, path_flag, say


@app.command()
def compare(
    recipes: Annotated[list[str], typer.Argument(help="recipes: TOML files or recipe names", show_default=False)],
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", "-g", metavar="KEY=V1,V2", help="KEY=V1,V2,...: one variant per value, e.g. --grid backbone.type=concat,film (repeatable: all combinations)", show_default=False),
    ] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, path_flag("--out", "-o", help="compare directory (default runs/compare/<timestamp>)")] = None,
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


@app.command()
def sweep(
    recipe: RecipeArg,
    param: Annotated[
        list[str],
        typer.Option("--param", "-p", metavar="KEY=SPACE", help="KEY=SPACE to search: loguniform:A:B, uniform:A:B, int:A:B[:log], choice:X,Y,Z (repeatable)", show_default=False),
    ],
    trials: Annotated[int, typer.Option("--trials", "-n", metavar="N", help="trials the study holds at the end (those of earlier starts count)")],
    workers: Annotated[int, typer.Option("--workers", "-w", metavar="N", help="processes on this machine running trials together")] = 1,
    storage: Annotated[str | None, typer.Option("--storage", metavar="URL", help="Optuna storage URL (sqlite:///F, postgresql://...) or journal:PATH; default <out>/study.journal", show_default=False)] = None,
    study: Annotated[str | None, typer.Option("--study", metavar="NAME", help="study name (default: the recipe's name)", show_default=False)] = None,
    metric: Annotated[str | None, typer.Option("--metric", metavar="HEAD.METRIC", help="HEAD.METRIC on the val split to optimise (default: the first head's primary metric)", show_default=False)] = None,
    direction: Annotated[str | None, typer.Option("--direction", metavar="max|min", help="max or min (default: min for losses and errors, else max)", show_default=False)] = None,
    val: Annotated[int | None, typer.Option("--val", metavar="N", help="samples held out as the validation split (default: the recipe's data.val, else 5000)", show_default=False)] = None,
    pruner: Annotated[str, typer.Option("--pruner", metavar="median|none", help="median: stop a trial worse than the median after an epoch; none")] = "median",
    prune_startup: Annotated[int, typer.Option("--prune-startup", metavar="N", help="trials finished before the median pruner prunes")] = 5,
    set_: SetOpt = None,
    out: Annotated[Path | None, path_flag("--out", "-o", help="sweep directory (default sweeps/<study>)")] = None,
) -> None:
    """Search hyper-parameters with Optuna, choosing on a validation split (docs/sweeps.md).

    Each trial is a run directory under the sweep directory; the same command again (same
    storage) continues the study. Writes best.toml, history.png, importances.png, sweep.json.
    """
    import digitsum

    settings = digitsum.SweepSettings(workers=workers, storage=storage, study=study, metric=metric, direction=direction,
                                      overrides=set_ or [], out=out, val=val, pruner=pruner, prune_startup=prune_startup)  # fmt: skip
    result = digitsum.sweep(recipe, param, trials, settings=settings)
    _print(result)
    if result.interrupted:
        say(f"interrupted: run the same command again to continue the study ({result.storage})", err=True)
        sys.exit(130)


def _print(result: Any) -> None:
    """The study's counts and notes, its best trials (the baseline always) and the files written."""
    from rich.table import Table

    counts = result.counts()
    console.print(f"study {result.study}: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())), highlight=False)
    for note in result.notes:
        say(f"note: {note}")
    ranked = result.ranked()
    if not ranked:
        console.print("no trial has finished yet", highlight=False)
        return
    keys = list(ranked[0].params)
    table = Table(title=f"best trials by val {result.metric} ({'higher' if result.direction == 'maximize' else 'lower'} is better; test only reported)")
    for column in ("trial", "val", "test", "epochs", *keys):
        table.add_column(column, justify="left" if column in keys else "right")
    shown = ranked[:5] + [r for r in ranked[5:] if r.baseline]  # the baseline always, to compare with
    for row in shown:
        test = "" if row.test is None else f"{row.test:.4f}"
        table.add_row(f"{row.number} (baseline)" if row.baseline else str(row.number), f"{row.value:.4f}", test, str(row.epochs or ""),
                      *(f"{row.params.get(k):.4g}" if isinstance(row.params.get(k), float) else str(row.params.get(k)) for k in keys))  # fmt: skip
    console.print(table)
    if result.best_recipe:
        say(f"best recipe: {result.best_recipe} (digitsum run {result.best_recipe})")
    for plot in result.plots:
        say(f"wrote {plot}")
