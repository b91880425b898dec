"""The command line: parse, call the library, print. Heavy imports happen inside commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import UserError, did_you_mean

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

RecipeArg = Annotated[str, typer.Argument(help="recipe: a TOML file, or a recipe name (digitsum list recipes)", show_default=False)]
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
    recipe: Annotated[Optional[str], typer.Argument(help="recipe: a TOML file, or a recipe name (digitsum list recipes)", show_default=False)] = None,
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
    from .engine import runner
    from .engine.distributed import current
    from .recipe import load_recipe

    if resume is not None:
        if recipe is not None or set_ or out is not None or force:
            raise UserError("--resume continues a run with its recorded recipe: give no RECIPE, --set, --out or --force with it")
        outcome = runner.resume(resume, console=console)
    elif recipe is None:
        raise UserError("give a recipe to train, or --resume RUN_DIR to continue a run")
    else:
        loaded = load_recipe(recipe, set_ or [])
        outcome = runner.start(loaded, out, force=force, console=console, preflight=not no_preflight)
    if not current().is_main:
        return
    if outcome.interrupted:
        trainer = outcome.trainer
        err_console.print(
            f"interrupted at epoch {trainer.epochs_done + 1} step {trainer.step}; "
            f"resume with: digitsum run --resume {outcome.run_dir}",
            highlight=False, soft_wrap=True, markup=False,
        )  # fmt: skip
        sys.exit(outcome.interruption.exit_code)
    console.print(f"wrote {outcome.run_dir}")
    if outcome.failure:
        err_console.print(f"[bold red]error:[/] {outcome.failure}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def doctor(
    recipe: RecipeArg,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    repair: Annotated[Optional[Path], typer.Option("--repair", help="write the recipe with the verified fixes to this file, rerun the doctor on it, print the diff", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="let --repair write over the recipe given")] = False,
) -> None:
    """Explain a loss that does not decrease: measured checks on a few batches (CPU, seconds).

    Every fix is tried on a short run before it is recommended. Exit code 0 when healthy (after
    --repair: when the repaired recipe is), 1 when a check finds an error, 2 for a bad recipe or data.
    """
    from .api import doctor as diagnose
    from .engine.doctor import render_report

    report = diagnose(recipe, set_ or [])
    if as_json and repair is None:
        print(json.dumps(report.to_dict(), indent=2))
    elif not as_json:
        render_report(report, console)
    if repair is not None:
        report = _repair(recipe, set_ or [], report, repair, overwrite, as_json)
    if not report.healthy:
        raise typer.Exit(1)


def _repair(recipe, overrides, report, out: Path, overwrite: bool, as_json: bool):
    """Write the verified recipe fixes to ``out``, rerun the doctor on it, print the diff."""
    from rich.markup import escape

    from .api import doctor as diagnose
    from .engine.doctor import render_report
    from .engine.doctor.repair import write_repaired

    if not report.repair:
        message = "no recipe change was verified to restore learning: nothing written"
        if report.code_causes:
            message += "; the causes are in code: " + "; ".join(report.code_causes)
        if as_json:
            print(json.dumps({"before": report.to_dict(), "written": None, "message": message}, indent=2))
        else:
            err_console.print(f"[yellow]--repair:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return report
    # the repaired recipe is diagnosed again; fixes verified on it (a cause the first causes hid)
    # are added, a few rounds at most
    # The repaired recipe is diagnosed again with tuning: on a recipe that now learns, settings
    # reset to their defaults are kept when a run as long as the short run measures them to help;
    # a cause the first ones hid would show here too. Then the final recipe is diagnosed plainly.
    applied = dict(report.repair)
    diff = write_repaired(recipe, overrides, applied, out, overwrite)
    fixed = diagnose(out, tune=True)
    extra = {k: v for k, v in fixed.repair.items() if applied.get(k) != v}
    if extra:
        applied.update(extra)
        diff = write_repaired(recipe, overrides, applied, out, overwrite)
        fixed = diagnose(out)
    if as_json:
        print(json.dumps({"before": report.to_dict(), "written": str(out), "diff": diff, "after": fixed.to_dict()}, indent=2))
        return fixed
    console.print(f"\n[bold]wrote {escape(str(out))}[/] with the verified fixes:", highlight=False)
    console.print(diff.rstrip(), highlight=False, markup=False)
    if report.code_causes:
        console.print("not patched (causes in code): " + "; ".join(report.code_causes), highlight=False, markup=False)
    console.print(f"\nthe doctor on {out}:", highlight=False, markup=False)
    render_report(fixed, console)
    return fixed


@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="run directory", show_default=False)],
    split: Annotated[str, typer.Option("--split", help="test, train, or val (a run that held one out)")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Evaluate a run directory's checkpoint and print the metrics of every head."""
    from .api import load_run

    loaded = load_run(run_dir)
    if split not in loaded.generator.split_names():
        raise UserError(f"--split {split!r}: {did_you_mean(split, loaded.generator.split_names(), 'splits')}")
    epoch, step = len(loaded.history), int(loaded.summary.get("position", {}).get("step", 0))
    result = {"run": str(run_dir), "recipe": loaded.recipe.name, "split": split, "epoch": epoch, "step": step,
              "heads": loaded.evaluate(split)}  # fmt: skip
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
def predict(
    run_dir: Annotated[Path, typer.Argument(help="a trained run directory", show_default=False)],
    input_: Annotated[
        list[str],
        typer.Option("--input", "-i", help="NAME=VALUE: an image file or a number per input of the recipe, e.g. "
                     "--input image=seven.png --input number=3 (repeat a name for a batch)", show_default=False),
    ],
    top: Annotated[int, typer.Option("--top", help="most probable classes shown per head")] = 3,
    no_preprocess: Annotated[bool, typer.Option("--no-preprocess", help="images are already in MNIST's format (28x28, light digit on dark)")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, auto ...")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Predict every head of a trained run on your own inputs: per head, the prediction and the
    most probable classes. Images of any size and either polarity are brought to MNIST's format."""
    from .api import load_run

    loaded = load_run(run_dir, device)
    inputs, labels = _predict_inputs(input_, loaded.generator)
    predictions = loaded.predict(preprocess=not no_preprocess, top=top, **inputs)
    if as_json:
        print(json.dumps({"run": str(run_dir), "inputs": labels, "samples": predictions.samples()}, indent=2))
        return
    width = max(len(name) for name in predictions)
    for label, sample in zip(labels, predictions.samples()):
        console.print(label, highlight=False, markup=False)
        for name, answer in sample.items():
            ranked = ", ".join(f"{t['class']} {100 * t['probability']:.1f} %" for t in answer["top"])
            console.print(f"  {name:<{width}}  {answer['prediction']!s:>4}" + (f"   top: {ranked}" if ranked else ""),
                          highlight=False, markup=False)  # fmt: skip


def _predict_inputs(items: list[str], generator) -> tuple[dict, list[str]]:
    """``["image=a.png", "number=3"]`` -> inputs for :func:`predict` and a label per sample.

    Image inputs take file paths, categorical ones whole numbers; a name given several times
    makes a batch (names given once are repeated over it). An Images input (a sequence of
    images) is given once per image, in order: its paths make one sample's sequence.
    """
    from .contracts import Categorical, Images
    from .engine.predict import describe_input

    specs = generator.interface(generator.params).inputs
    values: dict[str, list] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise UserError(f"--input {item!r}: expected NAME=VALUE, e.g. --input image=seven.png")
        if name not in specs:
            raise UserError(f"--input {item!r}: the recipe has no input '{name}' — {did_you_mean(name, specs, 'inputs')}")
        if isinstance(specs[name], Categorical):
            try:
                values.setdefault(name, []).append(int(value))
            except ValueError:
                raise UserError(f"--input {item!r}: '{name}' takes a whole number ({describe_input(specs[name])})") from None
        else:
            values.setdefault(name, []).append(value)
    missing = [name for name in specs if name not in values]
    if missing:
        raise UserError("missing " + ", ".join(f"--input {n}=..." for n in missing) + f" ({describe_input(specs[missing[0]])})")
    sequences = {name: values.pop(name) for name in list(values) if isinstance(specs[name], Images)}
    size = max((len(v) for v in values.values()), default=1)
    inputs = {name: (v[0] if len(v) == 1 else v) for name, v in values.items()}  # a single value serves every sample
    labels = [" ".join(f"{name}={v[i] if len(v) > 1 else v[0]}" for name, v in values.items()) for i in range(size)]
    for name, paths in sequences.items():  # one sequence, the same for every sample
        inputs[name] = paths
        labels = [f"{label} {name}={','.join(paths)}".strip() for label in labels]
    return inputs, labels


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="run directory", show_default=False)],
    format_: Annotated[
        Optional[str],
        typer.Option("--format", "-f", help="onnx or torchscript (default: torchscript for an --out ending in .pt, else onnx)", show_default=False),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="model file (default RUN_DIR/model.onnx or RUN_DIR/model.pt); its sidecar is FILE.json", show_default=False)
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing model file and its sidecar")] = False,
) -> None:
    """Export a run's model to ONNX or TorchScript, with a JSON sidecar saying how to use it.

    The model takes raw inputs (images as float32 pixels in [0, 1], light digit on dark; numbers
    as int64) and returns each head's output and its prediction. It is checked against PyTorch
    on 256 test samples before anything is written: exit 1 if they differ by more than 1e-4.
    """
    from .engine.export import check_format, format_for, require_exporter

    fmt = check_format(format_) if format_ is not None else format_for(out)
    require_exporter(fmt)  # before loading the run: a missing package is known at once
    from .api import load_run

    result = load_run(run_dir).export(fmt, out, force=force)
    console.print(f"checked on {result.source}, in batches of {result.samples}, 1 and 7: "
                  f"largest absolute difference from PyTorch per output", highlight=False, soft_wrap=True)  # fmt: skip
    for name, difference in result.differences.items():
        console.print(f"  {name:<24} {difference:.3g}", highlight=False, soft_wrap=True)
    console.print(f"wrote {result.path} and {result.sidecar}", highlight=False, soft_wrap=True)


@app.command()
def show(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Validate a recipe and print it resolved (extends, overrides and defaults applied)."""
    from .recipe import load_recipe

    loaded = load_recipe(recipe, set_ or [])
    print(loaded.to_toml(), end="")


@app.command("list")
def list_(
    kind: Annotated[Optional[str], typer.Argument(help="datasets, fusions, heads, optimizers, schedules, loggers, recipes or checks (default: all)", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown of the components, as in docs/components.md")] = False,
) -> None:
    """List the registered components (origin, summary, parameters) and the shipped recipes
    (origin, description, test metrics measured at their shipped settings)."""
    from .catalog import describe_recipes
    from .listing import cached_components, describe_checks, list_kind, render_markdown, render_recipes, render_tables

    wanted = list_kind(kind)
    if markdown and wanted in ("recipes", "checks"):
        raise UserError(f"--markdown writes the components' reference (docs/components.md); list {wanted} without it")
    rows = cached_components(wanted) if wanted not in ("recipes", "checks") else []
    recipes = describe_recipes() if wanted in (None, "recipes") and not markdown else []
    checks = describe_checks() if wanted in (None, "checks") and not markdown else []
    if as_json:
        print(json.dumps(rows + recipes + checks, indent=2))
    elif markdown:
        print(render_markdown(rows), end="")
    else:
        render_tables(rows, console)
        if recipes:
            render_recipes(recipes, console)
        if checks:
            from rich.table import Table

            table = Table(title="doctor checks (digitsum doctor; plugins add theirs by the entry-point group digitsum.checks)")
            for column in ("check", "origin", "what it measures"):
                table.add_column(column)
            for row in checks:
                table.add_row(row["name"], row["origin"], row["summary"])
            console.print(table)


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
    recipes: Annotated[list[str], typer.Argument(help="recipes: TOML files or recipe names", show_default=False)],
    grid: Annotated[
        Optional[list[str]],
        typer.Option("--grid", "-g", help="KEY=V1,V2,...: one variant per value, e.g. --grid backbone.type=concat,film (repeatable: all combinations)", show_default=False),
    ] = None,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="compare directory (default runs/compare/<timestamp>)")] = None,
) -> None:
    """Train several recipes, or one recipe over a grid of values, and compare them in one table."""
    from .engine.compare import plan_variants, render_table, run_compare
    from .engine.rundir import create_run_dir

    variants = plan_variants(recipes, grid or [], set_ or [])
    out_dir = create_run_dir("compare", out)
    console.print(f"comparing {len(variants)} variants: {', '.join(v.label for v in variants)}")
    comparison = run_compare(variants, out_dir, console=console)
    render_table(comparison.rows, console)
    if comparison.interruption is not None:
        err_console.print(f"interrupted: {out_dir} holds the variants compared so far", highlight=False, markup=False)
        sys.exit(comparison.interruption.exit_code)
    console.print(f"wrote {out_dir} (compare.json, compare.csv, compare.png, one run directory per variant)")


@app.command()
def sweep(
    recipe: RecipeArg,
    param: Annotated[
        list[str],
        typer.Option("--param", "-p", help="KEY=SPACE to search: loguniform:A:B, uniform:A:B, int:A:B[:log], choice:X,Y,Z (repeatable)", show_default=False),
    ],
    trials: Annotated[int, typer.Option("--trials", "-n", help="trials the study holds at the end (those of earlier starts count)")],
    workers: Annotated[int, typer.Option("--workers", "-w", help="processes on this machine running trials together")] = 1,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL (sqlite:///F, postgresql://...) or journal:PATH; default <out>/study.journal", show_default=False)] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="study name (default: the recipe's name)", show_default=False)] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="HEAD.METRIC on the val split to optimise (default: the first head's primary metric)", show_default=False)] = None,
    direction: Annotated[Optional[str], typer.Option("--direction", help="max or min (default: min for losses and errors, else max)", show_default=False)] = None,
    val: Annotated[Optional[int], typer.Option("--val", help="samples held out as the validation split (default: the recipe's data.val, else 5000)", show_default=False)] = None,
    pruner: Annotated[str, typer.Option("--pruner", help="median: stop a trial worse than the median after an epoch; none")] = "median",
    prune_startup: Annotated[int, typer.Option("--prune-startup", help="trials finished before the median pruner prunes")] = 5,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="sweep directory (default sweeps/<study>)")] = None,
) -> None:
    """Search hyper-parameters with Optuna, choosing on a validation split (docs/sweeps.md).

    Each trial is a run directory under the sweep directory; the same command again (same
    storage) continues the study. Writes best.toml, history.png, importances.png, sweep.json.
    """
    from .api import sweep as search

    result = search(recipe, param, trials, workers=workers, storage=storage, study=study, metric=metric,
                    direction=direction, overrides=set_ or [], out=out, val=val, pruner=pruner,
                    prune_startup=prune_startup)  # fmt: skip
    _print_sweep(result)
    if result.interrupted:
        err_console.print(f"interrupted: run the same command again to continue the study ({result.storage})", highlight=False, markup=False)
        sys.exit(130)


def _print_sweep(result) -> None:
    from rich.table import Table

    counts = result.counts()
    console.print(f"study {result.study}: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())), highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
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
        console.print(f"best recipe: {result.best_recipe} (digitsum run {result.best_recipe})", highlight=False, markup=False)
    for plot in result.plots:
        console.print(f"wrote {plot}", highlight=False, markup=False)


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
    from .scaffold import next_steps, scaffold_plugin

    created = scaffold_plugin(name, directory, kind)
    # markup=False: rich would take "[test]" for a style tag and drop it; soft_wrap: one line to copy.
    console.print(f"created plugin {name} in {created}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"next: {next_steps(created)}", highlight=False, markup=False, soft_wrap=True)


def main() -> None:
    """The command line, run in this process (tests call it): user errors end in a short message
    and exit code 2."""
    try:
        app()  # click handles its own usage errors (exit 2); ours come through here
    except UserError as e:
        from rich.markup import escape

        err_console.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:  # Ctrl-C outside training (loading data, say): nothing was written
        err_console.print("interrupted", highlight=False)
        sys.exit(130)


def entry_point() -> None:
    """The ``digitsum`` executable (and ``python -m digitsum``): :func:`main`."""
    main()
