"""Describing registered components, shipped recipes and plugins, for `digitsum list`,
`digitsum plugins`, strict plugin loading and the generated docs."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, discovery
from .catalog import recipe_entries, recorded_metrics, settings_digest
from .errors import UserError, did_you_mean, recipe_text
from .files import read_json, write_json
from .kinds import CHECKS, KINDS, RECIPES, WEIGHTS
from .paths import user_cache_dir
from .weights import WeightsEntry, verify, weights_entries
from .registry import KIND_LABELS, REGISTRIES, Entry, PluginError, declared_entry_points, plugin_distributions, registry_for

if TYPE_CHECKING:
    from pydantic import BaseModel

#: What `digitsum list` lists: the component kinds, the shipped recipes, the doctor's checks.
LIST_KINDS = [*KINDS, RECIPES, CHECKS]

#: Where each of the doctor's built-in checks lives, in the order they run (digitsum.diagnosis.CHECKS
#: is made from it), as an entry point's value: listed like a plugin's check, importing no torch.
DOCTOR_CHECKS = {
    "data": "digitsum.diagnosis.checks.data:check_data",
    "pairing": "digitsum.diagnosis.checks.data:check_pairing",
    "loss_at_init": "digitsum.diagnosis.checks.loss:check_loss_at_init",
    "double_softmax": "digitsum.diagnosis.checks.loss:check_double_softmax",
    "head_output": "digitsum.diagnosis.checks.loss:check_head_output",
    "loss_weights": "digitsum.diagnosis.checks.gradients:check_loss_weights",
    "loss_floor": "digitsum.diagnosis.checks.floor:check_loss_floor",
    "schedule": "digitsum.diagnosis.checks.optimization:check_schedule",
    "optimizer": "digitsum.diagnosis.checks.optimization:check_optimizer",
    "batch_independence": "digitsum.diagnosis.checks.wiring:check_batch_independence",
    "learnability": "digitsum.diagnosis.checks.learnability:check_learnability",
    "short_run": "digitsum.diagnosis.checks.training:check_short_run",
    "input_use": "digitsum.diagnosis.checks.wiring:check_input_use",
    "overfit": "digitsum.diagnosis.checks.training:check_overfit",
}


def _row(kind: str, name: str, origin: str, distribution: str | None, version: str | None, **more: Any) -> dict[str, Any]:
    """The keys every row of `digitsum list --json` starts with, then ``more``."""
    return {"kind": kind, "name": name, "origin": origin, "distribution": distribution, "version": version, **more}


def describe_checks() -> list[dict[str, Any]]:
    """The doctor's checks: the built-in ones, then those the allowed plugins ship (entry-point
    group ``digitsum.checks``, read without importing them)."""
    rows = [_row(CHECKS, name, "built-in", "digitsum", __version__, entry_point=value, summary=function_summary(value))
            for name, value in DOCTOR_CHECKS.items()]  # fmt: skip
    for dist, ep in declared_entry_points(CHECKS):
        if not dist.builtin:
            rows.append(_row(CHECKS, ep.name, f"{dist.name} {dist.version}", dist.name, dist.version,
                             entry_point=ep.value, summary=function_summary(ep.value)))  # fmt: skip
    return rows


def function_summary(value: str, hops: int = 3) -> str:
    """The first line of the docstring of the function an entry point's ``value`` names
    (``module:function``), as a component's summary is its class docstring's: read from the
    module's source, importing nothing (a check's module imports torch). A name the module
    imports (``from .checks import look``) is followed up to ``hops`` times; "" when the
    source or the function cannot be found."""
    module, _, name = value.replace(" ", "").partition(":")
    path = _module_source(module)
    if path is None or not name.isidentifier() or hops < 0:
        return ""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return ""
    for node in reversed(tree.body):  # the last binding of the name is the one the module exports
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            doc = (ast.get_docstring(node) or "").strip()
            return doc.splitlines()[0] if doc else ""
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                    try:  # resolves `from .checks import look` by name, importing nothing
                        source = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                    except (ImportError, ValueError):
                        return ""
                    return function_summary(f"{source}:{alias.name}", hops - 1)
    return ""


def _module_source(module: str) -> Path | None:
    """The ``.py`` file of ``module``, located from its top-level package's spec (which imports nothing)."""
    top, *inner = module.split(".")
    try:
        spec = importlib.util.find_spec(top) if top.isidentifier() else None
    except Exception:  # a broken finder on sys.meta_path, an odd sys.modules entry: no summary
        return None
    if spec is None:
        return None
    if not inner:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    for root in spec.submodule_search_locations or []:
        for candidate in (Path(root, *inner[:-1], f"{inner[-1]}.py"), Path(root, *inner, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None


LABELS = {**KIND_LABELS, RECIPES: "recipe", WEIGHTS: "weights of", CHECKS: "doctor check"}


def list_kind(kind: str | None) -> str | None:
    """A component kind (:data:`digitsum.kinds.KINDS`), ``recipes`` or ``checks``, for any of
    their words; None for all."""
    if kind is None:
        return None
    if kind.lower() in ("recipes", "recipe"):
        return RECIPES
    if kind.lower() in ("checks", "check"):
        return CHECKS
    try:
        return registry_for(kind).kind
    except UserError:
        raise UserError(f"unknown kind '{kind}' — {did_you_mean(kind.lower(), LIST_KINDS, 'kinds')}") from None


def _details(cls: type) -> list[str]:
    """The paragraphs of a class docstring after its first line (what the features a head reads
    must hold, say), each on one line; the first line is its summary."""
    body = inspect.cleandoc(cls.__doc__ or "").partition("\n")[2]
    return [" ".join(p.split()) for p in body.split("\n\n") if p.strip()]


def summary_text(row: dict[str, Any]) -> str:
    """A listed component's or doctor check's summary, or a note that it has no docstring
    (an empty cell reads as a listing bug; ``--json`` keeps the empty summary)."""
    what = "function" if row["kind"] == CHECKS else "class"
    return row["summary"] or f"(no summary: its {what} has no docstring, whose first line would show here)"


def namesake_notes(parts: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """For each ``(kind, name, distribution)`` whose kind and name another distribution declares
    too: what the bare name means and what a recipe must write (docs/plugins.md, "Origins and
    names defined twice"), so ``digitsum plugins`` and ``digitsum list`` show a clash before a
    recipe trips on it."""
    by_name: dict[tuple[str, str], list[str]] = {}
    for kind, name, dist in parts:
        by_name.setdefault((kind, name), []).append(dist)
    notes = {}
    for (kind, name), dists in by_name.items():
        dists = list(dict.fromkeys(dists))
        builtin = next((d for d in dists if discovery.canonical_name(d) == "digitsum"), None)
        for dist in dists if len(dists) > 1 else ():
            others = ", ".join(d for d in dists if d != dist)
            if dist == builtin:
                meaning = f"the bare name '{name}' stays this built-in one"
            elif builtin:
                meaning = f"the bare name '{name}' is the built-in one, this one is '{dist}:{name}'"
            else:
                meaning = f"name it '{dist}:{name}' (the bare name is refused)"
            notes[(kind, name, dist)] = f"also defined by {others}; {meaning}"
    return notes


def mark_namesakes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` of ``digitsum list``, each one whose name another distribution defines too with
    its :func:`namesake_notes` note as ``namesakes``."""
    notes = namesake_notes([(r["kind"], r["name"], r["distribution"] or r["origin"]) for r in rows])
    for row in rows:
        note = notes.get((row["kind"], row["name"], row["distribution"] or row["origin"]))
        if note:
            row["namesakes"] = note
    return rows


def _spec_text(spec: Any) -> str:
    fields = ", ".join(str(v) for v in vars(spec).values() if v is not None)
    return f"{type(spec).__name__}({fields})"


def plain(value: Any) -> Any:
    """A default as JSON and TOML hold it: tuples as lists (``betas = [0.9, 0.999]``)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def params_schema(params: type[BaseModel]) -> list[dict[str, Any]]:
    """Name, type, default and description of each parameter, for listings and docs."""
    rows = []
    for name, field in params.model_fields.items():
        default = None if field.is_required() else plain(field.get_default(call_default_factory=True))
        hint = field.annotation
        annotation = hint.__name__ if isinstance(hint, type) else str(hint)  # list[int], Literal[...]: in full
        rows.append({"name": name, "type": annotation.replace("typing.", ""), "default": default,
                     "required": field.is_required(), "description": field.description or "", "range": _range(field)})
    return rows


_BOUNDS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}


def _range(field: Any) -> str:
    """A field's numeric bounds as a recipe must keep them (``> 0, ≤ 10``), '' without any."""
    return ", ".join(f"{sign} {plain(getattr(m, key))}" for m in field.metadata for key, sign in _BOUNDS.items()
                     if getattr(m, key, None) is not None)  # fmt: skip


def describe_entry(entry: Entry) -> dict[str, Any]:
    """Name, origin, summary and parameters of one component (loading it)."""
    origin = entry.origin
    row = _row(entry.kind, entry.name, str(origin), origin.distribution, origin.version, entry_point=origin.value)
    try:
        cls = entry.load()
    except PluginError:
        row["error"] = entry.error
        return row
    row["summary"] = cls.summary()
    row["details"] = _details(cls)
    row["params"] = params_schema(cls.Params)
    if entry.kind == "heads":
        row["primary_metric"] = cls.primary_metric
    if entry.kind == "loggers":
        row["requires"] = list(cls.requires)
        row["install"] = cls.install
    if entry.kind == "datasets":
        interface = cls.interface(cls.Params())
        row["inputs"] = {k: _spec_text(v) for k, v in interface.inputs.items()}
        row["targets"] = {k: _spec_text(v) for k, v in interface.targets.items()}
    return row


def describe_components(kind: str | None = None) -> list[dict[str, Any]]:
    """Every component of ``kind`` (or of every kind), broken ones included with their error."""
    registries = [registry_for(kind)] if kind else list(REGISTRIES.values())
    return [describe_entry(entry) for registry in registries for entry in registry.entries()]


def describe_recipes() -> list[dict[str, Any]]:
    """Every shipped recipe: name, origin, description, file, and the test metrics recorded for
    its shipped settings (``None`` when none are, or when the recipe changed since)."""
    from .recipe import recipe_document  # pydantic, no torch: only when recipes are listed

    metrics = recorded_metrics()
    weights = {(discovery.canonical_name(w.distribution), w.name): w for w in weights_entries()}
    rows = []
    for entry in recipe_entries():
        row = _row(RECIPES, entry.name, entry.origin, entry.distribution, entry.version, entry_point=entry.value,
                   path=str(entry.path) if entry.path else None, description="", metrics=None, weights=None)  # fmt: skip
        rows.append(row)
        if entry.error:
            row["error"] = entry.error
            continue
        try:
            document = recipe_document(entry.path)  # type: ignore[arg-type]
        except UserError as e:
            row["error"] = e.message
            continue
        description = document.get("description", "")
        row["description"] = description if isinstance(description, str) else ""
        digest = settings_digest(document)
        record = metrics.get(entry.name) if entry.builtin else None
        if record is not None:
            if record.get("settings") == digest:
                row["metrics"] = record
            else:
                row["metrics_stale"] = True  # measured for settings the recipe no longer has
        shipped = weights.get((discovery.canonical_name(entry.distribution), entry.name))
        if shipped is not None:
            row["weights"] = _weights_summary(shipped, digest)
    return rows


def _weights_summary(entry: WeightsEntry, digest: str) -> dict[str, Any]:
    """What a recipe row says of its weights: size, seed, test metrics, and whether they can be used."""
    try:
        record = entry.record()
    except UserError as e:
        return {"error": e.message}
    summary: dict[str, Any] = {"bytes": record.bytes, "seed": record.seed, "epochs": record.epochs,
                               "test": record.test, "remote": record.url is not None}  # fmt: skip
    if record.settings != digest:
        summary["error"] = "trained for other settings than the recipe has now"
    elif record.file is not None:  # a few MB at most: hashed, so that a damaged file shows here too
        try:
            verify(entry.path.parent / record.file, record)  # type: ignore[union-attr]
        except (UserError, OSError):
            summary["error"] = f"{record.file} is missing, or does not match its record (changed or damaged)"
    return summary


# -- the listing cache (docs/architecture.md: why, and what its key covers) -----------------------

CACHE_FORMAT = 2  # 2: optimizers, schedules and loggers
_CACHE_KEEP = 16  # cache files kept (several virtual environments can share one cache folder)


def _cache_path() -> Path:
    fp = discovery.fingerprint(plugin_distributions(), CACHE_FORMAT, __version__, sys.version_info[:2])
    return user_cache_dir() / "components" / f"{fp}.json"


def _read_cache(path: Path) -> list[dict[str, Any]] | None:
    doc = read_json(path)  # None when missing, unreadable or corrupt: rebuilt below
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or not isinstance(doc.get("rows"), list):
        return None
    rows = doc["rows"]
    if not all(isinstance(r, dict) and r.get("kind") in REGISTRIES and "name" in r for r in rows):
        return None
    return rows


def _write_cache(path: Path, rows: list[dict[str, Any]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"format": CACHE_FORMAT, "rows": rows})
        old = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in old[_CACHE_KEEP:]:
            stale.unlink(missing_ok=True)
    except OSError:
        pass  # the cache only saves time; a read-only home folder must not break `list`


def cached_components(kind: str | None = None) -> list[dict[str, Any]]:
    """:func:`describe_components`, from the cache when the installed plugins have not changed."""
    wanted = registry_for(kind).kind if kind else None
    if any(r.has_local_entries() for r in REGISTRIES.values()):
        return describe_components(kind)  # classes defined in this process: nothing to cache
    path = _cache_path()
    rows = _read_cache(path)
    if rows is None:
        rows = describe_components()
        if not any("error" in r for r in rows):  # the fix of a broken one need not change the fingerprint
            _write_cache(path, rows)
    return [r for r in rows if wanted is None or r["kind"] == wanted]


def _params_text(params: list[dict[str, Any]]) -> str:
    """One line a parameter, whole: its default as a recipe writes it, and its description."""
    lines = []
    for p in params:
        default = "(required)" if p["required"] else f"= {_default_text(p['default'])}"
        bounds = f" ({p['range']})" if p.get("range") else ""
        lines.append(f"  {p['name']} {default}{bounds}" + (f" — {p['description']}" if p.get("description") else ""))
    return "\n".join(["parameters:", *lines]) if lines else "parameters: none"


def render_tables(rows: list[dict[str, Any]], console) -> None:
    """One rich table per kind."""
    from rich.markup import escape
    from rich.table import Table

    for kind in REGISTRIES:
        kind_rows = [r for r in rows if r["kind"] == kind]
        if not kind_rows:
            continue
        # the parameters under the summary: folded onto more lines when they must be, never cut short
        table = Table(title=KINDS[kind].plural, title_justify="left", show_lines=True)
        table.add_column("name", overflow="fold")
        table.add_column("origin", overflow="fold")
        table.add_column("summary and parameters", overflow="fold", ratio=1)
        for row in kind_rows:
            if "error" in row:
                table.add_row(row["name"], row["origin"], f"[red]failed to load: {escape(row['error'])}[/]")
                continue
            summary = summary_text(row)
            if "namesakes" in row:
                summary = f"{row['namesakes']}\n{summary}"
            if "inputs" in row:
                summary += f"\ninputs: {', '.join(row['inputs'])} · targets: {', '.join(row['targets'])}"
            table.add_row(row["name"], row["origin"], escape(f"{summary}\n{_params_text(row['params'])}"))
        console.print(table)


def metrics_text(row: dict[str, Any]) -> str:
    """A recipe row's recorded test metrics, one head a line; "—" when none are recorded."""
    record = row.get("metrics")
    if not record:
        return "— (recorded for other settings)" if row.get("metrics_stale") else "—"
    lines = [f"{head} {metric} {_mean_min(value)}" for head, values in record.get("test", {}).items() for metric, value in values.items()]
    seeds = record.get("seeds") or ([record["seed"]] if "seed" in record else [])
    over = f"mean (min) of {len(seeds)} seeds, " if len(seeds) > 1 else f"seed {seeds[0]}, " if seeds else ""
    lines.append(f"{over}{record.get('epochs', '?')} epochs, {record.get('seconds', 0):.0f} s")
    return "\n".join(lines)


def _mean_min(value: Any) -> str:
    """A recorded metric: ``{"mean", "min", "seeds"}`` over several seeds as "mean (min)", or one
    seed's number (tables recorded before seeds were)."""
    if isinstance(value, dict):
        if len(value.get("seeds", [])) > 1:
            return f"{value['mean']:.4f} ({value['min']:.4f})"
        return f"{value['mean']:.4f}"
    return f"{value:.4f}"


def render_recipes(rows: list[dict[str, Any]], console) -> None:
    """The shipped recipes as a rich table: name, origin, description, recorded test metrics."""
    from rich.markup import escape
    from rich.table import Column, Table

    # the name is never cut: it is what a reader copies into the next command
    table = Table(Column("name", no_wrap=True), "origin", "description", "test (shipped settings)", "pretrained weights",
                  title="recipes", title_justify="left", show_lines=True)  # fmt: skip
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], row["origin"], f"[red]cannot be used: {escape(row['error'])}[/]", "", "")
            continue
        description = "\n".join(filter(None, [row.get("namesakes"), row["description"]]))
        table.add_row(row["name"], escape(row["origin"]), escape(description), escape(metrics_text(row)),
                      escape(weights_text(row)))  # fmt: skip
    console.print(table)
    console.print("run one: digitsum run NAME · copy one to edit: digitsum cp NAME DEST.toml · "
                  "use its weights: digitsum predict NAME -i ...", highlight=False)  # fmt: skip


def weights_text(row: dict[str, Any]) -> str:
    """A recipe row's weights: size and the test metrics they measure; "—" when it has none."""
    weights = row.get("weights")
    if not weights:
        return "—"
    if "error" in weights and "bytes" not in weights:
        return f"cannot be used: {weights['error']}"
    where = ", downloaded on first use" if weights["remote"] else ""
    lines = [f"{weights['bytes'] / 1e6:.2f} MB{where}, seed {weights['seed']}"]
    for head, values in weights["test"].items():  # each head's first metric, its primary one (all in docs/api.md)
        metric = next((m for m in values if m != "loss"), None)
        if metric is not None:
            lines.append(f"{head} {metric} {values[metric]:.4f}")
    if "error" in weights:
        lines.append(f"cannot be used: {weights['error']}")
    return "\n".join(lines)


_MARKDOWN_INTRO = """\
# Components

Every built-in component, with its parameters: the keys its recipe table takes besides `type`.
Generated from the registries by `digitsum list --markdown > docs/components.md`; a test fails
when this file is out of date. Components from installed plugins show up in `digitsum list`.
"""

_KIND_NOTES = {
    "optimizers": "The learning rate `lr` is also the peak of the schedule. A key the chosen optimizer does not "
    "have is an error (e.g. `momentum` for `adam`: its momentum is `betas`).",
    "schedules": "Stepped after every training step; each peaks at the optimizer's `lr` and changes nothing else "
    "unless a parameter says so (onecycle's `momentum`).",
    "loggers": "Each `[log.<name>]` table adds a logger to the run (`type` defaults to the table's name: "
    "`[log.tensorboard]`); `log.<name> = true` takes its defaults, `log.<name> = false` removes an inherited one. "
    "A logger whose library is not installed is refused before training, naming what installs it.",
}


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default_text(value: Any) -> str:
    return "(none)" if value is None else recipe_text(value)


def render_markdown(rows: list[dict[str, Any]]) -> str:
    """The components as a Markdown document: a section per kind, a table of parameters each."""
    lines = [_MARKDOWN_INTRO]
    for kind in REGISTRIES:
        kind_rows = [r for r in rows if r["kind"] == kind]
        if not kind_rows:
            continue
        lines.append(f"## {KINDS[kind].plural.capitalize()}\n")
        lines.append(f"Chosen in `{KINDS[kind].recipe_table}`. {_KIND_NOTES.get(kind, '')}".rstrip() + "\n")
        for row in kind_rows:
            lines.append(f"### `{row['name']}`\n")
            if "error" in row:
                lines.append(f"Failed to load: {_md(row['error'])}\n")
                continue
            origin = "" if row["origin"] == "built-in" else f" ({_md(row['origin'])})"
            lines.append(f"{_md(summary_text(row))}{origin}\n")
            lines.extend(f"{_md(paragraph)}\n" for paragraph in row.get("details", []))
            if "inputs" in row:
                inputs = ", ".join(f"`{k}` {v}" for k, v in row["inputs"].items())
                targets = ", ".join(f"`{k}` {v}" for k, v in row["targets"].items())
                lines.append(f"- inputs: {inputs}\n- targets: {targets}\n")
            if row.get("install"):
                lines.append(f"Needs {', '.join(f'`{m}`' for m in row['requires'])}: `{row['install']}`.\n")
            if "primary_metric" in row:
                lines.append(f"Primary metric (in tables and comparisons): `{row['primary_metric']}`.\n")
            if row["params"]:
                lines.append("| parameter | type | default | description |\n|---|---|---|---|")
                for p in row["params"]:
                    default = "required" if p["required"] else f"`{_default_text(p['default'])}`"
                    kind = p["type"] + (f", {p['range']}" if p.get("range") else "")
                    lines.append(f"| `{p['name']}` | {_md(kind)} | {default} | {_md(p['description'])} |")
                lines.append("")
            else:
                lines.append("No parameters.\n")
    return "\n".join(lines).rstrip() + "\n"
