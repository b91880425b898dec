"""Validating a recipe: every fixed section, every component table against its component's
``Params``, and the wiring between them, with every problem collected into one RecipeError."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..catalog import is_url, looks_like_name
from ..errors import Problem, RecipeError, UserError, clipped, did_you_mean, raised_in, recipe_text
from ..files import is_plain
from ..kinds import KINDS
from ..registry import REGISTRIES, fusions
from .document import Document, fmt_value
from .legacy import MOVED_TRAIN_KEYS, legacy_problems
from .limits import MAX_NAMED, name_problem, show_path
from .overrides import Overrides, read_source
from .schema import SECTIONS, TOP_LEVEL, Choice, Init, InitSection, KeyPath, Recipe, TrainSection, reserved_params_problem

#: What a recipe's ``name`` may be (it names the folder its runs go to: runs/<name>/).
RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


_SEQUENCE_TYPES = {"tuple_type", "set_type", "frozen_set_type"}


def strict(model: type[BaseModel], data: Mapping[str, Any]) -> BaseModel:
    """``data`` (a table as TOML or JSON reads it) validated by ``model`` with strict types, as
    JSON data: a bool is not a number, a string not a number nor a bool, a float not an integer;
    an integer is a float and an array a tuple or a list. The one rule for every fixed section
    and every component's ``Params``, built-in or plugin."""
    try:
        text = json.dumps(data)
    except (TypeError, ValueError):  # Python values from the API with no JSON form: strict as Python objects
        return model.model_validate(data, strict=True)
    try:
        return model.model_validate_json(text, strict=True)
    except ValidationError as e:
        # A `mode="before"` validator hands on Python objects, which strict mode then takes as
        # Python: its array meant for a tuple is refused. Only such errors: the other fields
        # passed strictly, so the table is validated as before, its tuples from lists.
        errors = e.errors()
        spurious = [i for i in errors if i["type"] in _SEQUENCE_TYPES and isinstance(i["input"], list)]
        if not spurious:
            raise
        if len(spurious) < len(errors):  # real problems beside them: those alone (an array was said to be no array)
            kept = [{k: i[k] for k in ("type", "loc", "input", "ctx") if k in i} for i in errors if i not in spurious]
            raise ValidationError.from_exception_data(e.title, kept) from None
        return model.model_validate(data)


def _as_list(item: Any) -> str:
    """The list a value meant for a list key was likely meant to be (``--set backbone.hidden=64,32``)."""
    value = item["input"]
    if item["type"] not in ("list_type", "tuple_type") or isinstance(value, (list, tuple, dict)):
        return ""
    parts = [part.strip() for part in value.split(",")] if isinstance(value, str) else [recipe_text(value)]
    if not all(re.fullmatch(r"[-+]?[\d.]+(e[-+]?\d+)?|true|false", part) for part in parts):
        return ""  # not a list of numbers: the element type is the component's to say
    return f"; a list is written in brackets: [{', '.join(parts)}]"


#: How pydantic names the member of a union a value was tried against, in an error's location.
_UNION_MEMBER = re.compile(r"(bool|int|float|str|none|bytes|(literal|list|dict|tuple|set)\[.*\]|function-\w+\[.*\])", re.IGNORECASE)


@dataclass
class _Check:
    """One recipe's validation: the merged document, the label of its problems, and the problems found."""

    doc: Document
    fallback: str
    problems: list[Problem] = field(default_factory=list)

    def where(self, path: KeyPath) -> str:
        return str(self.doc.source_of(path, self.fallback))

    def problem(self, path: KeyPath, message: str, where: str | None = None) -> None:
        self.problems.append(Problem(where or self.where(path), show_path(path), message + self.doc.dropped_note(path)))

    def table(self, data: Any, path: KeyPath) -> bool:
        """Whether ``data`` is a table; a problem when not."""
        if not isinstance(data, dict):
            self.problem(path, f"must be a table (got {fmt_value(data)})")
        return isinstance(data, dict)

    def pydantic(self, error: ValidationError, prefix: KeyPath, valid_keys: Sequence[str], suffix: str = "") -> None:
        # a value that fits no member of a union (`compile`: a bool or one of two words) is one
        # problem at its key, each member's requirement joined: not one per member, under its type's name
        keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for item in error.errors():
            keys.setdefault(tuple(str(p) for p in item["loc"] if not _UNION_MEMBER.fullmatch(str(p))), []).append(item)
        for loc, items in keys.items():
            item = items[0]
            if item["type"] == "extra_forbidden":
                message = f"unknown key — {did_you_mean(str(item['loc'][-1]), valid_keys, 'keys')}"
            elif item["type"] == "missing":
                message = "is required but missing"
            elif isinstance(item.get("input"), float) and math.isnan(item["input"]):  # every bound fails NaN: say what it is
                message = "must be a number, not NaN (nan in TOML)"
            else:
                wanted = [(i["msg"][0].lower() + i["msg"][1:]).removeprefix("value error, ") for i in items]
                message = " or ".join([wanted[0], *(w.removeprefix("input should be ") for w in wanted[1:])])
                message = f"{message} (got {clipped(recipe_text(item['input']))}){_as_list(item)}"
            self.problem(prefix + loc, message + suffix)

    def section(self, model: type[BaseModel], data: Any, prefix: KeyPath, tables: Sequence[str] = ()) -> Any:
        """A fixed table validated, or None; ``tables``: its sub-tables, validated elsewhere (valid keys for did-you-mean)."""
        if not self.table(data, prefix):
            return None
        try:
            return strict(model, data)
        except ValidationError as e:
            self.pydantic(e, prefix, [*model.model_fields, *tables])
            return None

    def _registered_locally(self, kind: str, type_name: str) -> str:
        """For a run's recipe whose component was registered in the process that trained it
        (its [provenance] ``local``): where that code is, to import before reading the run."""
        provenance = self.doc.data.get("provenance")
        local = provenance.get("local") if isinstance(provenance, dict) else None
        named = f"{KINDS[kind].label} '{type_name}' from "
        if not isinstance(local, str) or named not in local:
            return ""
        where = local.partition(named)[2].split(", ")[0]
        return f"; the run was trained with it registered in its own process ([provenance] local): import {where.partition(':')[0]} (which registers it) first"

    def component(self, kind: str, data: Any, prefix: KeyPath | None = None) -> Choice | None:
        """A component table of ``kind`` split into its fixed keys and the component's own parameters."""
        prefix = prefix or KINDS[kind].table
        model = SECTIONS[kind]
        if not self.table(data, prefix):
            return None
        section = self.section(model, {k: v for k, v in data.items() if k in model.model_fields}, prefix)
        type_field = model.model_fields["type"]
        type_name = section.type if section is not None else data.get("type", None if type_field.is_required() else type_field.default)
        if not isinstance(type_name, str):
            return None
        try:  # looked up even when the table's fixed keys failed: every problem is reported at once
            entry = REGISTRIES[kind].entry(type_name)
            cls = entry.load()
        except UserError as e:  # an unknown name, or a plugin that fails to load (PluginError)
            self.problem(prefix + ("type",), e.message + self._registered_locally(kind, type_name))
            return None
        recorded = None if entry.origin.builtin else entry.qualified_name
        reserved = reserved_params_problem(kind, cls)
        if reserved:  # the plugin's to fix: named with where it comes from
            self.problem(prefix + ("type",), f"{KINDS[kind].label} '{type_name}' from {entry.origin} cannot be used: {reserved}")
            return None
        try:  # validated even when the fixed keys failed (a wrong batch_size hides no wrong normalize)
            params = strict(cls.Params, {k: v for k, v in data.items() if k not in model.model_fields})
        except ValidationError as e:
            self.pydantic(e, prefix, [*model.model_fields, *cls.Params.model_fields], f" [{KINDS[kind].label} '{type_name}']")
            return None
        return Choice(section, cls, params, recorded) if section is not None else None

    def named(self, kind: str, name: str, data: Any) -> Choice | None:
        """The component table ``[heads.<name>]`` or ``[log.<name>]``, its name checked too."""
        if problem := name_problem(KINDS[kind].label, name):
            self.problem((KINDS[kind].table[0], name), problem)
            return None
        return self.component(kind, data, (KINDS[kind].table[0], name))

    def calling(self, kind: str, choice: Choice, path: KeyPath, call: Callable[[], Any]) -> Any:
        """``call()``, a component's own code (its ``interface`` or ``check``); None and a problem
        naming the component, where it comes from and the line that raised, when it raises."""
        try:
            return call()
        except Exception as e:  # a bug in that component, not in the recipe: it is told whose
            entry = REGISTRIES[kind].entry(choice.section.type)
            self.problem(path, f"{KINDS[kind].label} '{choice.section.type}' from {entry.origin} raised "
                         f"{type(e).__name__}{raised_in(choice.cls, e)}: {clipped(str(e))} — a bug in that "
                         f"{KINDS[kind].label}'s code, not in the recipe (check() returns its reasons, never raises: docs/plugins.md)")  # fmt: skip
            return None

    def wiring(self, data: Choice | None, backbone: Choice | None, heads: Mapping[str, Choice | None]) -> None:
        """Heads bound to targets the generator produces, a backbone that can use its inputs."""
        if data is None:
            return
        interface = self.calling("datasets", data, ("data", "type"), lambda: data.cls.interface(data.params))
        if interface is None:
            return
        generator = f"{KINDS['datasets'].label} '{data.section.type}'"
        reasons = self.calling("fusions", backbone, ("backbone", "type"), lambda: backbone.cls.check(backbone.params, interface.inputs)) if backbone else ()
        for reason in reasons or ():
            fitting = _fitting_fusions(interface.inputs)
            self.problem(("backbone", "type"), f"fusion '{backbone.section.type}' cannot use the inputs of {generator} "
                         f"({', '.join(interface.inputs) or 'none'}): {reason}"
                         + (f" — fusions that fit: {', '.join(fitting)}" if fitting else ""))  # fmt: skip
        for name, head in heads.items():
            if head is None:
                continue
            target, where = head.section.target, self.where(("heads", name, "target"))
            spec = interface.targets.get(target)
            if spec is None:
                self.problem(("heads", name, "target"), f"{generator} has no target '{target}' — "
                             + did_you_mean(target, interface.targets, "targets"))  # fmt: skip
                continue
            for reason in self.calling("heads", head, ("heads", name, "type"), lambda: head.cls.check(head.params, spec)) or ():
                self.problem(("heads", name), f"head '{head.section.type}' cannot predict target '{target}': {reason}", where)
            if target in getattr(interface, "measured", frozenset()) and head.section.weight != 0:
                self.problem(("heads", name, "weight"), f"target '{target}' of {generator} is measured only, never trained on "
                             f"(see its parameters); heads.{name} must have weight 0, not {fmt_value(head.section.weight)}",
                             str(self.doc.source_of(("heads", name, "weight"), where)))  # fmt: skip


def _fitting_fusions(inputs: Mapping[str, Any]) -> list[str]:
    fitting = []
    for entry in fusions.entries():
        try:
            cls = entry.load()
            if not cls.check(cls.Params(), inputs):
                fitting.append(entry.name)
        except Exception:  # a broken or param-requiring plugin is simply not suggested
            continue
    return fitting


def load_recipe(source: str | os.PathLike[str] | Mapping[str, Any] | Recipe, overrides: Overrides = (),
                *, grid: Sequence[str] = (), require_loggers: bool = True, grid_flag: str = "--grid",
                label: str | None = None) -> Recipe:  # fmt: skip
    """Read, merge, override and validate a recipe; raise one RecipeError listing every problem.

    ``source`` is a path, a shipped recipe's name (``original``, ``dist:name``; see
    :func:`digitsum.catalog.resolve_recipe`), a :class:`Recipe` (returned as it is without
    overrides), or a recipe document as Python data (a dict as
    ``tomllib`` would read it, problems labelled ``<dict>``, its ``extends`` resolved from the
    working folder or by name, its name ``recipe`` unless it or its parent gives one).
    ``overrides`` are ``"key=value"`` strings as ``--set`` takes them, or a mapping of dotted keys
    to Python values (``{"train.epochs": 1}``, problems labelled ``overrides['train.epochs']``).
    ``grid`` holds ``"key=value"`` strings applied after them and labelled ``--grid key=value``
    (``digitsum compare`` passes each grid combination there; ``grid_flag`` names the option in
    problems, e.g. ``--param`` for a sweep's values). ``heads.<name> = false`` (or the
    value ``False``) removes an inherited head, ``log.<name> = false`` an inherited logger.
    ``require_loggers=False`` accepts loggers whose library is not installed (reading a run back
    to evaluate or predict needs none of them; a run refuses them when it starts). ``label``
    replaces ``<dict>`` for Python data: a caller that rebuilds a recipe from its dict (a sweep's
    trials) names where it came from (``sweep of recipes/original.toml``).
    """
    if isinstance(source, Recipe):  # re-validated with the overrides; its problems name the recipe, not <dict>
        if not overrides and not grid:
            return source
        source, label = source.to_dict(), label or f"recipe {source.name!r}"
    problems: list[Problem] = []
    doc, fallback, default_name = read_source(source, overrides, grid, problems, grid_flag, label)
    check, raw = _Check(doc, fallback, problems), doc.data

    for key in raw:
        if key not in TOP_LEVEL:
            home = _home_of(key)
            hint = f"did you mean '{home}'? (top-level keys: {', '.join(TOP_LEVEL)})" if home else did_you_mean(key, TOP_LEVEL, "keys")
            check.problem((key,), f"unknown key — {hint}")
    parent_failed = any(p.key == "extends" for p in problems)  # its tables are missing because of that, not twice
    for key in ("data", "backbone", "heads"):
        if key not in raw and not parent_failed:
            check.problem((key,), f"is required but missing: add a [{key}] table ({TOP_LEVEL[key]})", fallback)

    name = raw.get("name", default_name)
    if not isinstance(name, str) or not RECIPE_NAME.fullmatch(name):
        check.problem(("name",), f"must be 1-64 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit (got {fmt_value(name)})")
    description = raw.get("description", "")
    if not isinstance(description, str):
        check.problem(("description",), "must be a string")
    seed = raw.get("seed", 0)
    if not is_plain(seed, int) or not 0 <= seed < 2**63:
        check.problem(("seed",), f"must be an integer from 0 to 2**63-1 (got {fmt_value(seed)})")

    data = check.component("datasets", raw["data"]) if "data" in raw else None
    backbone = check.component("fusions", raw["backbone"]) if "backbone" in raw else None
    heads: dict[str, Choice | None] = {}
    if "heads" in raw:
        if not isinstance(raw["heads"], dict) or not raw["heads"]:
            removed = {show_path(path): where for path, where in doc.removed.items() if path[0] == "heads"}
            note = f"; removed: {', '.join(f'{key} ({where})' for key, where in removed.items())}" if removed else ""
            check.problem(("heads",), f"needs at least one [heads.<name>] table{note}", str(list(removed.values())[-1]) if removed else None)
        elif len(raw["heads"]) > MAX_NAMED:
            check.problem(("heads",), f"has {len(raw['heads'])} heads; a recipe may have at most {MAX_NAMED}")
        else:
            heads = {name: check.named("heads", name, value) for name, value in raw["heads"].items()}
    train = optimizer = schedule = None
    if check.table(train_table := raw.get("train", {}), ("train",)):
        rest = dict(train_table)
        problems.extend(legacy_problems(rest, doc, fallback))  # and takes the moved keys out of `rest`
        optimizer_table, schedule_table = rest.pop("optimizer", {}), rest.pop("schedule", {})
        train = check.section(TrainSection, rest, ("train",), tables=("optimizer", "schedule"))
        optimizer = check.component("optimizers", optimizer_table)
        schedule = check.component("schedules", schedule_table)
    log = _validate_loggers(raw.get("log", {}), check, require_loggers)
    init = _validate_init(raw["init"], check) if "init" in raw else None
    # [provenance] is written into every resolved recipe (run directories); read back, it is
    # informative only: accepted when it is a table, never used.
    if not isinstance(raw.get("provenance", {}), dict):
        check.problem(("provenance",), "must be a table")

    check.wiring(data, backbone, heads)
    if problems:
        raise RecipeError(fallback, problems)
    return Recipe(name=name, description=description, seed=seed, data=data, backbone=backbone, heads=heads,  # type: ignore[arg-type]
                  train=train, optimizer=optimizer, schedule=schedule, log=log, init=init,
                  sources={tuple(map(str, path)): str(source) for path, source in doc.sources.items()})  # fmt: skip


def _home_of(key: str) -> str | None:
    """The dotted key a top-level ``key`` most likely meant: a key of a fixed table written at the
    top (``epochs`` for ``train.epochs``, ``batch_size`` for ``data.batch_size``, ``lr`` for
    ``train.optimizer.lr``), or None."""
    if key in MOVED_TRAIN_KEYS:  # the optimizer's own settings, whatever its type
        return f"train.optimizer.{key}"
    tables = {"data": SECTIONS["datasets"], "train": TrainSection, "init": InitSection}
    return next((f"{table}.{key}" for table, model in tables.items() if key != "type" and key in model.model_fields), None)


def _validate_init(table: Any, check: _Check) -> Init | None:
    """``[init]``: the weights a run starts from. ``weights`` is a path when a file or folder of
    that name exists relative to the recipe file that gives it (the working folder for ``--set``
    and a dict), or when it cannot be a recipe's name (``runs/x``, ``w.safetensors``); otherwise a
    shipped recipe's name. A path is kept absolute, so the resolved recipe of a run (its
    recipe.toml) names the same source wherever it is replayed from. Whether the source exists and
    fits the model is checked when a run starts (a run directory read back needs no source)."""
    section = check.section(InitSection, table, ("init",))
    if section is None:
        return None
    text, source = section.weights, check.doc.source_of(("init", "weights"), check.fallback)
    if "\0" in text:
        check.problem(("init", "weights"), "must be a recipe name or a path (got a NUL character)")
        return None
    if is_url(text):  # Path() would fold it into folders under the working one
        check.problem(("init", "weights"), f"{clipped(repr(text))} is a URL: a recipe's name, a run directory or a .safetensors "
                      "file on this machine; digitsum downloads none (save it to a file first)")
        return None
    on_disk = not source.label.startswith(("--", "<", "overrides[")) and Path(source.label).is_file()
    folder = Path(source.label).parent if on_disk else Path.cwd()
    candidate = folder / Path(text).expanduser()
    is_path = candidate.exists() or not looks_like_name(text) or text.endswith(".safetensors")
    weights = os.path.abspath(candidate) if is_path else text
    # a resolved recipe (a run's recipe.toml) records the sha256 of the weights its run started
    # from: a replay says so when the file it names now holds others
    provenance = check.doc.data.get("provenance")
    recorded = provenance.get("init_sha256") if isinstance(provenance, dict) and source.label == check.fallback else None
    return Init(weights, is_path, section.freeze_epochs, str(source), recorded if isinstance(recorded, str) else None)


def _validate_loggers(table: Any, check: _Check, available: bool = True) -> dict[str, Choice]:
    """``[log.<name>]`` tables (``log.<name> = true``: the logger with its defaults; ``type``
    defaults to the table's name); a logger whose library is not installed is a problem naming
    what installs it."""
    if not isinstance(table, dict):
        check.problem(("log",), f"must be a table of loggers, [log.<name>] (got {fmt_value(table)})")
        return {}
    if len(table) > MAX_NAMED:
        check.problem(("log",), f"has {len(table)} loggers; a recipe may have at most {MAX_NAMED}")
        return {}
    chosen: dict[str, Choice] = {}
    for name, value in table.items():
        if value is True:
            value = {}
        if isinstance(value, dict) and "type" not in value:
            value = {"type": name, **value}  # [log.tensorboard]
        choice = check.named("loggers", name, value)
        reason = choice.cls.unavailable() if choice and available else None
        if reason:
            check.problem(("log", name), f"logger '{choice.section.type}' {reason}")  # type: ignore[union-attr]
        elif choice is not None:
            chosen[name] = choice
    return chosen


