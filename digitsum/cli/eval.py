"""``digitsum eval``: a run's metrics on a split."""

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError, did_you_mean
from . import JsonOpt, app, console, print_json


@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="run directory", show_default=False)],
    split: Annotated[str, typer.Option("--split", help="test, train, or val (a run that held one out)")] = "test",
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a run directory's checkpoint and print the metrics of every head."""
    import digitsum

    loaded = digitsum.load_run(run_dir)
    if split not in loaded.generator.split_names():
        raise UserError(f"--split {split!r}: {did_you_mean(split, loaded.generator.split_names(), 'splits')}")
    epoch, step = len(loaded.history), int(loaded.summary.get("position", {}).get("step", 0))
    heads = loaded.evaluate(split)
    if as_json:
        print_json({"run": str(run_dir), "recipe": loaded.recipe.name, "split": split, "epoch": epoch, "step": step, "heads": heads})
        return
    from rich.table import Table

    where = f"epoch {epoch}" + (f" + {step} steps" if step else "")
    table = Table(title=f"{loaded.recipe.name} ({where}) on the {split} split")
    for column in ("head", "metric", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for head, values in heads.items():
        for metric, value in values.items():
            table.add_row(head, metric, f"{value:.4f}")
    console.print(table)
