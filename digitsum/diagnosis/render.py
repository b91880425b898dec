"""The report for people: problems in full, healthy measurements in one line each."""

from __future__ import annotations

from typing import Any

from .findings import SEVERITIES, Report

STYLE = {"error": "bold red", "warning": "yellow", "info": "green"}


def render_report(report: Report, console: Any) -> None:
    """Print a report on a rich console: problems in full, healthy measurements in one line each."""
    from rich.markup import escape

    console.print(f"[bold]digitsum doctor[/]: {escape(report.recipe)} · checks: {', '.join(report.checks)}")
    for f in report.findings:
        label, tag = f"[{STYLE[f.severity]}]{f.severity:<7}[/]", f"[{f.check}]"
        if f.severity == "info":
            console.print(f"{label} {escape(tag)} {escape(f.title)}: [dim]{escape(f.measured)}[/]", soft_wrap=True)
            continue
        console.print(f"{label} {escape(tag)} [bold]{escape(f.title)}[/]", soft_wrap=True)
        console.print(f"        measured: {escape(f.measured)}", soft_wrap=True, highlight=False)
        if f.why:
            console.print(f"        why: {escape(f.why)}", soft_wrap=True, highlight=False)
        if f.fix:
            console.print(f"        fix: [bold]{escape(f.fix)}[/]", soft_wrap=True, highlight=False)
    counts = {s: sum(x.severity == s for x in report.findings) for s in SEVERITIES}
    verdict = "[bold red]unhealthy[/]" if report.errors else "[bold green]healthy[/]"
    errors, warnings = (f"{counts[s]} {s}{'' if counts[s] == 1 else 's'}" for s in ("error", "warning"))
    console.print(f"{verdict}: {errors}, {warnings}, {counts['info']} fine · {report.seconds:.1f} s")
    if report.repair:
        keys = ", ".join(f"{k} = {v!r}" for k, v in report.repair.items())
        console.print(f"verified recipe fixes: {escape(keys)} (write them with --repair FIXED.toml)", soft_wrap=True, highlight=False)
    for cause in report.code_causes:
        console.print(f"verified code fix (not patched): {escape(cause)}", soft_wrap=True, highlight=False)
