"""Validating a recipe: every fixed section, every component table against its component's
``Params``, and the wiring between them, with every problem collected into one RecipeError."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import Problem, RecipeError, UserError, did_you_mean
from ..registry import Registry, datasets, fusions, heads, loggers, optimizers, schedules
from .document import Document, fmt_value
from .legacy import legacy_problems
from .overrides import Overrides, read_source
from .schema import (TOP_LEVEL, BackboneSection, Choice, DataSection, HeadSection, KeyPath, LogSection,
                     OptimizerSection, Recipe, ScheduleSection, TrainSection, _Section)  # fmt: skip

# -- validation ------------------------------------------------------------------------------------


def _pydantic_problems(
    error: ValidationError, prefix: KeyPath, doc: Document, fallback: str, valid_keys: Sequence[str]
) -> list[Problem]:
    problems = []
    for item in error.errors():
        path = prefix + tuple(str(p) for p in item["loc"])
        key = ".".join(path)
        where = str(doc.source_of(path, fallback))
        if item["type"] == "extra_forbidden":
            message = f"unknown key — {did_you_mean(str(item['loc'][-1]), valid_keys, 'keys')}"
        elif item["type"] == "missing":
            message = "is required but missing"
        else:
            message = item["msg"][0].lower() + item["msg"][1:]
            message = message.removeprefix("value error, ")
            message = f"{message} (got {fmt_value(item['input'])})"
        problems.append(Problem(where, key, message))
    return problems


def _validate_section(
    model: type[BaseModel], data: Any, prefix: KeyPath, doc: Document, fallback: str, problems: list[Problem],
    tables: Sequence[str] = (),
) -> BaseModel | None:
    """Validate a fixed table; ``tables``: its sub-tables, validated elsewhere (valid keys for did-you-mean)."""
    if not isinstance(data, dict):
        where = str(doc.source_of(prefix, fallback))
        problems.append(Problem(where, ".".join(prefix), f"must be a table (got {fmt_value(data)})"))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems.extend(_pydantic_problems(e, prefix, doc, fallback, [*model.model_fields, *tables]))
        return None


def _validate_component(
    registry: Registry,
    section_model: type[_Section],
    data: Any,
    prefix: KeyPath,
    doc: Document,
    fallback: str,
    problems: list[Problem],
) -> Choice | None:
    """Split a component table into its fixed keys and the component's own parameters."""
    if not isinstance(data, dict):
        where = str(doc.source_of(prefix, fallback))
        problems.append(Problem(where, ".".join(prefix), f"must be a table (got {fmt_value(data)})"))
        return None
    fixed = {k: v for k, v in data.items() if k in section_model.model_fields}
    params = {k: v for k, v in data.items() if k not in section_model.model_fields}
    section = _validate_section(section_model, fixed, prefix, doc, fallback, problems)
    if section is None:
        return None
    type_name = section.type
    where = str(doc.source_of(prefix + ("type",), fallback))
    try:
        cls = registry.get(type_name)
    except UserError as e:  # an unknown name, or a plugin that fails to load (PluginError)
        problems.append(Problem(where, ".".join(prefix + ("type",)), e.message))
        return None
    try:
        validated = cls.Params.model_validate(params)
    except ValidationError as e:
        valid = list(section_model.model_fields) + list(cls.Params.model_fields)
        for p in _pydantic_problems(e, prefix, doc, fallback, valid):
            problems.append(Problem(p.where, p.key, f"{p.message} [{registry.label} '{type_name}']"))
        return None
    return Choice(section, cls, validated)


def _check_wiring(recipe_parts: dict[str, Any], doc: Document, fallback: str, problems: list[Problem]) -> None:
    data: Choice | None = recipe_parts.get("data")
    if data is None:
        return
    interface = data.cls.interface(data.params)
    generator = f"dataset generator '{data.section.type}'"
    backbone: Choice | None = recipe_parts.get("backbone")
    if backbone is not None:
        for reason in backbone.cls.check(backbone.params, interface.inputs):
            fitting = _fitting_fusions(interface.inputs)
            where = str(doc.source_of(("backbone", "type"), fallback))
            problems.append(
                Problem(
                    where,
                    "backbone.type",
                    f"fusion '{backbone.section.type}' cannot use the inputs of {generator} "
                    f"({', '.join(interface.inputs) or 'none'}): {reason}"
                    + (f" — fusions that fit: {', '.join(fitting)}" if fitting else ""),
                )
            )
    for name, head in (recipe_parts.get("heads") or {}).items():
        if head is None:
            continue
        target_key = ("heads", name, "target")
        where = str(doc.source_of(target_key, fallback))
        spec = interface.targets.get(head.section.target)
        if spec is None:
            problems.append(
                Problem(
                    where,
                    ".".join(target_key),
                    f"{generator} has no target '{head.section.target}' — "
                    + did_you_mean(head.section.target, interface.targets, "targets"),
                )
            )
            continue
        for reason in head.cls.check(head.params, spec):
            problems.append(
                Problem(where, f"heads.{name}", f"head '{head.section.type}' cannot predict target '{head.section.target}': {reason}")
            )
        measured = getattr(interface, "measured", frozenset())
        if head.section.target in measured and head.section.weight != 0:
            problems.append(
                Problem(
                    str(doc.source_of(("heads", name, "weight"), where)),
                    f"heads.{name}.weight",
                    f"target '{head.section.target}' of {generator} is measured only, never trained on "
                    f"(see its parameters); heads.{name} must have weight 0, not {fmt_value(head.section.weight)}",
                )
            )


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


def load_recipe(source: str | os.PathLike[str] | Mapping[str, Any], overrides: Overrides = (),
                *, grid: Sequence[str] = (), require_loggers: bool = True, grid_flag: str = "--grid") -> Recipe:  # fmt: skip
    """Read, merge, override and validate a recipe; raise one RecipeError listing every problem.

    ``source`` is a path, a shipped recipe's name (``original``, ``dist:name``; see
    :func:`digitsum.catalog.resolve_recipe`), or a recipe document as Python data (a dict as
    ``tomllib`` would read it, problems labelled ``<dict>``, its ``extends`` resolved from the
    working folder or by name, its name ``recipe`` unless it or its parent gives one).
    ``overrides`` are ``"key=value"`` strings as ``--set`` takes them, or a mapping of dotted keys
    to Python values (``{"train.epochs": 1}``, problems labelled ``overrides['train.epochs']``).
    ``grid`` holds ``"key=value"`` strings applied after them and labelled ``--grid key=value``
    (``digitsum compare`` passes each grid combination there; ``grid_flag`` names the option in
    problems, e.g. ``--param`` for a sweep's values). ``heads.<name> = false`` (or the
    value ``False``) removes an inherited head, ``log.<name> = false`` an inherited logger.
    ``require_loggers=False`` accepts loggers whose library is not installed (reading a run back
    to evaluate or predict needs none of them; a run refuses them when it starts).
    """
    problems: list[Problem] = []
    doc, fallback, default_name = read_source(source, overrides, grid, problems, grid_flag)
    raw = doc.data

    for key in raw:
        if key not in TOP_LEVEL:
            where = str(doc.source_of((key,), fallback))
            problems.append(Problem(where, key, f"unknown key — {did_you_mean(key, TOP_LEVEL, 'keys')}"))
    parent_failed = any(p.key == "extends" for p in problems)  # its tables are missing because of that, not twice
    for key in ("data", "backbone", "heads"):
        if key not in raw and not parent_failed:
            problems.append(Problem(fallback, key, f"is required but missing: add a [{key}] table ({TOP_LEVEL[key]})"))

    name = raw.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        problems.append(
            Problem(str(doc.source_of(("name",), fallback)), "name",
                    f"must be 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit (got {fmt_value(name)})")
        )  # fmt: skip
    description = raw.get("description", "")
    if not isinstance(description, str):
        problems.append(Problem(str(doc.source_of(("description",), fallback)), "description", "must be a string"))
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        problems.append(
            Problem(str(doc.source_of(("seed",), fallback)), "seed", f"must be an integer from 0 to 2**63-1 (got {fmt_value(seed)})")
        )

    parts: dict[str, Any] = {}
    if "data" in raw:
        parts["data"] = _validate_component(datasets, DataSection, raw["data"], ("data",), doc, fallback, problems)
    if "backbone" in raw:
        parts["backbone"] = _validate_component(fusions, BackboneSection, raw["backbone"], ("backbone",), doc, fallback, problems)
    if "heads" in raw:
        table = raw["heads"]
        if not isinstance(table, dict) or not table:
            problems.append(Problem(str(doc.source_of(("heads",), fallback)), "heads", "needs at least one [heads.<name>] table"))
        else:
            parts["heads"] = {
                name: _validate_component(heads, HeadSection, value, ("heads", name), doc, fallback, problems)
                for name, value in table.items()
            }
    train = optimizer = schedule = None
    train_table = raw.get("train", {})
    if not isinstance(train_table, dict):
        problems.append(Problem(str(doc.source_of(("train",), fallback)), "train", f"must be a table (got {fmt_value(train_table)})"))
    else:
        rest = dict(train_table)
        problems.extend(legacy_problems(rest, doc, fallback))  # and takes the moved keys out of `rest`
        optimizer_table, schedule_table = rest.pop("optimizer", {}), rest.pop("schedule", {})
        train = _validate_section(TrainSection, rest, ("train",), doc, fallback, problems, tables=("optimizer", "schedule"))
        optimizer = _validate_component(optimizers, OptimizerSection, optimizer_table, ("train", "optimizer"), doc, fallback, problems)
        schedule = _validate_component(schedules, ScheduleSection, schedule_table, ("train", "schedule"), doc, fallback, problems)
    log = _validate_loggers(raw.get("log", {}), doc, fallback, problems, require_loggers)
    # [provenance] is written into every resolved recipe (run directories); read back, it is
    # informative only: accepted when it is a table, never used.
    if not isinstance(raw.get("provenance", {}), dict):
        problems.append(Problem(str(doc.source_of(("provenance",), fallback)), "provenance", "must be a table"))

    _check_wiring(parts, doc, fallback, problems)
    if problems:
        raise RecipeError(fallback, problems)
    return Recipe(
        name=name,
        description=description,
        seed=seed,
        data=parts["data"],
        backbone=parts["backbone"],
        heads=parts["heads"],
        train=train,
        optimizer=optimizer,
        schedule=schedule,
        log=log,
    )


def _logger_table(name: str, value: Any) -> Any:
    """A ``[log.<name>]`` value as the table it stands for: ``true`` is the logger with its
    defaults, and ``type`` defaults to the table's name."""
    if value is True:
        value = {}
    if isinstance(value, dict) and "type" not in value:
        value = {"type": name, **value}
    return value


def logger_types(document: Mapping[str, Any]) -> dict[str, str]:
    """The loggers a recipe document (:func:`recipe_document`) names, ``[log.<name>]`` -> its
    type, read as validation reads them but not validated (nothing imported): what is not a
    table of loggers is left out, for validation to report."""
    tables = document.get("log")
    types: dict[str, str] = {}
    for name, value in tables.items() if isinstance(tables, dict) else ():
        table = _logger_table(name, value)
        if isinstance(table, dict) and isinstance(table.get("type"), str):
            types[name] = table["type"]
    return types


def _validate_loggers(table: Any, doc: Document, fallback: str, problems: list[Problem], available: bool = True) -> dict[str, Choice]:
    """``[log.<name>]`` tables (``log.<name> = true``: the logger with its defaults); a logger
    whose library is not installed is a problem naming what installs it."""
    if not isinstance(table, dict):
        problems.append(Problem(str(doc.source_of(("log",), fallback)), "log", f"must be a table of loggers, [log.<name>] (got {fmt_value(table)})"))
        return {}
    chosen: dict[str, Choice] = {}
    for name, value in table.items():
        path = ("log", name)
        choice = _validate_component(loggers, LogSection, _logger_table(name, value), path, doc, fallback, problems)
        if choice is None:
            continue
        reason = choice.cls.unavailable() if available else None
        if reason:
            where = str(doc.source_of(path, fallback))
            problems.append(Problem(where, ".".join(path), f"logger '{choice.section.type}' {reason}"))
            continue
        chosen[name] = choice
    return chosen


