"""Commands that train a recipe: ``digitsum run`` (a run, or the rest of an interrupted one) and
``digitsum doctor`` (measured checks on a recipe whose loss does not fall, and ``--repair``)."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from . import JsonOpt, RecipeArg, SetOpt, app, console, err_console, path_flag, print_json, say


@app.command()
def run(
    recipe: Annotated[str | None, typer.Argument(help="recipe: a TOML file, or a recipe name (digitsum list recipes)", show_default=False)] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, path_flag("--out", "-o", help="run directory (default runs/<recipe>/<timestamp>)")] = None,
    no_preflight: Annotated[bool, typer.Option("--no-preflight", help="skip the quick checks before the first epoch")] = False,
    resume: Annotated[Path | None, path_flag("--resume", help="continue the run in this run directory", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite the run directory given by --out")] = False,
) -> None:
    """Train a recipe and write its run directory, or continue an interrupted run (--resume).

    Ctrl-C or SIGTERM stops after the current step and keeps a checkpoint; again, at once.
    Under torchrun, every rank trains its slice; rank 0 alone prints and writes.
    """
    import digitsum

    if resume is not None:
        if recipe is not None or out is not None or force:
            raise UserError("--resume continues a run with its recorded recipe: give no RECIPE, --out or --force with it "
                            "(--set may change train.device, train.threads, data.root and the like, and log.*)")
        trained = digitsum.resume(resume, overrides=set_ or [])
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


@app.command()
def doctor(
    recipe: RecipeArg,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    repair: Annotated[Path | None, path_flag("--repair", help="write the recipe with the verified fixes to this file, rerun the doctor on it, print the diff", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="let --repair write over the recipe given when an earlier --repair wrote it (never over a file of yours)")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", hidden=True)] = False,
) -> None:
    """Explain a loss that does not decrease: measured checks on a few batches (CPU, seconds).

    Every fix is tried on a short run before it is recommended. Exit code 0 when healthy (after
    --repair: when the repaired recipe is), 1 when a check finds an error, 2 for a bad recipe or data.
    """
    import digitsum
    from ..diagnosis import render_report
    from ..diagnosis.repair import check_target

    if overwrite:  # digitsum 0.1's spelling; every other command says --force
        say("warning: --overwrite is now --force (as for run, cp and export); --overwrite will go in a later release", err=True)
        force = True
    if repair is not None:
        check_target(recipe, repair, force)  # before the doctor's seconds: a refused target costs nothing
    report = digitsum.doctor(recipe, set_ or [])
    if as_json and repair is None:
        print_json(report.to_dict())
    elif not as_json:
        render_report(report, console)
    if repair is not None:
        report = _repair(recipe, set_ or [], report, repair, force, as_json)
    if not report.healthy:
        raise typer.Exit(1)


def _repair(recipe, overrides, report, out: Path, force: bool, as_json: bool):
    """Write the verified recipe fixes to ``out``, rerun the doctor on it, print the diff."""
    from rich.markup import escape

    import digitsum
    from ..diagnosis import render_report
    from ..diagnosis.repair import write_repaired

    if not report.repair:
        message = "no recipe change was verified to restore learning: nothing written"
        if report.code_causes:
            message += "; the causes are in code: " + "; ".join(report.code_causes)
        if as_json:
            print_json({"before": report.to_dict(), "written": None, "message": message})
        else:
            err_console.print(f"[yellow]--repair:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return report
    # The repaired recipe is diagnosed again with tuning: on a recipe that now learns, settings
    # reset to their defaults are kept when a run as long as the short run measures them to help;
    # a cause the first ones hid would show here too. Then the final recipe is diagnosed plainly.
    applied = dict(report.repair)
    diff = write_repaired(recipe, overrides, applied, out, force)
    fixed = digitsum.doctor(out, tune=True)
    extra = {k: v for k, v in fixed.repair.items() if applied.get(k) != v}
    if extra:
        applied.update(extra)
        diff = write_repaired(recipe, overrides, applied, out, force)
        fixed = digitsum.doctor(out)
    if as_json:
        print_json({"before": report.to_dict(), "written": str(out), "diff": diff, "after": fixed.to_dict()})
        return fixed
    console.print(f"\n[bold]wrote {escape(str(out))}[/] with the verified fixes:", highlight=False)
    say(diff.rstrip())
    if report.code_causes:
        say("not patched (causes in code): " + "; ".join(report.code_causes))
    say(f"\nthe doctor on {out}:")
    render_report(fixed, console)
    return fixed
