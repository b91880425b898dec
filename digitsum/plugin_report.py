"""What each installed plugin distribution ships and whether it can be used: ``digitsum
plugins`` (its table) and strict plugin loading (``--strict-plugins``: every failure raised).

Its components are imported and checked as ``digitsum list`` does (each in isolation, see
:mod:`digitsum.registry`; read from the listing cache while no plugin changed), its recipe and
weights files located, its doctor checks imported; a failure is reported with the reason, never
raised, except by :func:`require_all_plugins`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import discovery
from .catalog import locate
from .errors import UserError
from .kinds import CHECKS, KINDS, RECIPES, WEIGHTS
from .listing import LABELS, cached_components, namesake_notes
from .registry import PluginError, load_check, plugin_distributions
from .weights import read_record


def plugin_report() -> list[dict[str, Any]]:
    """Each distribution declaring components: version, status, components, failures (loading them)."""
    report = []
    # each component's load and check, as `digitsum list` records them (its cache: no import
    # while the installed plugins have not changed)
    components = {(row["kind"], row["distribution"], row["entry_point"]): row for row in cached_components()}
    for dist in plugin_distributions():
        row: dict[str, Any] = {
            "distribution": dist.name,
            "version": dist.version,
            "builtin": dist.builtin,
            "location": dist.location,
            "status": "ok",
            "reason": dist.refused,
            "problems": list(dist.problems),
            **{group: [] for group in _GROUPS},
        }
        for ep in dist.entry_points:
            row[ep.kind if ep.kind in (RECIPES, WEIGHTS, CHECKS) else "components"].append(_part_report(ep, dist, components))
        if dist.refused:
            row["status"] = "disabled" if dist.disabled else "failed"
        elif dist.problems or any("error" in part for part in _parts(row)):
            row["status"] = "failed"
        report.append(row)
    notes = namesake_notes([(part.get("kind", RECIPES), part["name"], row["distribution"])
                            for row in report if not row["reason"] for part in _parts(row) if part.get("kind") != WEIGHTS])  # fmt: skip
    for row in report:
        for part in _parts(row):
            note = notes.get((part.get("kind", RECIPES), part["name"], row["distribution"]))
            if note:
                part["namesakes"] = note
    return report


#: What a :func:`plugin_report` row lists its distribution's parts under.
_GROUPS = ("components", RECIPES, WEIGHTS, CHECKS)


def _parts(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything a :func:`plugin_report` row's distribution ships: components, recipes, weights, checks."""
    return [part for group in _GROUPS for part in row[group]]


def _part_report(ep: discovery.PluginEntryPoint, dist: discovery.PluginDistribution,
                 components: dict[tuple[str, str, str], dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """One thing a distribution ships: a recipe's or weights' file located (and the record read), a
    doctor check imported, or a component's row of the listing (``components``, by kind,
    distribution and entry point: loaded and checked); its error (none for a refused
    distribution's checks and components, which are not loaded)."""
    part: dict[str, Any] = {"kind": ep.kind, "name": ep.name, "entry_point": ep.value}
    try:
        if ep.kind in (RECIPES, WEIGHTS):
            part["path"] = str(path := locate(ep.value, ep.name, ".toml" if ep.kind == RECIPES else ".json"))
            if ep.kind == WEIGHTS:
                read_record(path)
        elif dist.refused:
            pass
        elif ep.kind == CHECKS:
            load_check(ep, dist)
        elif "error" in (row := components[ep.kind, dist.name, ep.value]):
            part["error"] = row["error"]  # the reason alone: the table names the component
    except LookupError as e:
        part["error"] = str(e)
    except UserError as e:
        part["error"] = e.message
    return part


@dataclass(frozen=True)
class PluginFailure:
    """Something of one plugin distribution that cannot be used, and why."""

    distribution: str
    version: str
    what: str  # "fusion 'gated' (module:Class)", "recipe 'x' (package.folder)" or "its metadata"
    reason: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}: {self.what}: {self.reason}"


def _failed_parts(row: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(what, error) for each component and recipe of a :func:`plugin_report` row that failed."""
    for part in _parts(row):
        if "error" in part:
            yield f"{LABELS[part.get('kind', RECIPES)]} '{part['name']}' ({part['entry_point']})", part["error"]


def load_all() -> list[PluginFailure]:
    """Import and check every component of every allowed distribution, and locate every recipe
    file it ships (:func:`plugin_report`); what failed, and why. Distributions refused by the
    allow/deny lists are not loaded and are not failures."""
    failures = []
    for row in plugin_report():
        if row["status"] == "disabled":  # refused by the allow/deny lists: not loaded, its metadata unread
            continue
        metadata = ([row["reason"]] if row["status"] == "failed" and row["reason"] else []) + row["problems"]
        parts = [] if row["reason"] else list(_failed_parts(row))  # a refused distribution's parts are not used
        for what, reason in [("its metadata", problem) for problem in metadata] + parts:
            failures.append(PluginFailure(row["distribution"], row["version"], what, reason))
    return failures


def require_all_plugins() -> None:
    """Strict mode: raise a PluginError naming every plugin failure (see :func:`load_all`)."""
    failures = load_all()
    if failures:
        lines = "\n".join(f"  {f}" for f in failures)
        raise PluginError(
            f"strict plugin loading ({discovery.STRICT_ENV} or --strict-plugins): "
            f"{len(failures)} plugin failure(s)\n{lines}"
        )


def _counted(kind: str, n: int) -> str:
    """``n`` parts of ``kind`` in words: "4 fusions", "1 recipe", "weights of 16 recipes"."""
    if kind == WEIGHTS:
        return f"weights of {n} recipe{'s' * (n != 1)}"
    return f"{n} {LABELS[kind] if n == 1 else KINDS[kind].plural if kind in KINDS else LABELS[kind] + 's'}"


def render_plugins(report: list[dict[str, Any]], console) -> None:
    """A table of plugin distributions, with each failure spelled out below it."""
    from rich.markup import escape
    from rich.table import Table

    table = Table("distribution", "version", "status", "components", title="plugin distributions", title_justify="left",
                  show_lines=True)  # fmt: skip
    colour = {"ok": "green", "failed": "red", "disabled": "yellow"}
    for row in report:
        parts = _parts(row)
        if row["builtin"] and not any("error" in c for c in parts):  # counted: `digitsum list` shows them, plugins come first here
            kinds = [c.get("kind", RECIPES) for c in parts]
            names = "\n".join(_counted(k, kinds.count(k)) for k in dict.fromkeys(kinds))
        else:
            names = "\n".join(f"{LABELS[c.get('kind', RECIPES)]} {c['name']}" + (" [red](failed)[/]" if "error" in c else "")
                              + (" [yellow](name clash)[/]" if "namesakes" in c else "") for c in parts)  # fmt: skip
        status = row["status"] + (" (built-in)" if row["builtin"] else "")
        table.add_row(escape(row["distribution"]), escape(row["version"]), f"[{colour[row['status']]}]{status}[/]", names)
    console.print(table)
    for row in report:
        where = f"{row['distribution']} {row['version']}"
        if row["reason"]:
            console.print(f"{escape(where)}: {escape(row['reason'])}", highlight=False)
        for problem in row["problems"]:
            console.print(f"[red]{escape(where)}[/]: {escape(problem)}", highlight=False)
        for what, error in _failed_parts(row):
            console.print(f"[red]{escape(where)}[/]: {escape(what)} failed: {escape(error)}", highlight=False)
        for part in _parts(row):
            if "namesakes" in part:
                what = f"{LABELS[part.get('kind', RECIPES)]} '{part['name']}'"
                console.print(f"[yellow]{escape(where)}[/]: {escape(what)} is {escape(part['namesakes'])}", highlight=False)


