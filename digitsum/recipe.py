"""Recipes: TOML documents that pick components by name, validated all at once.

Loading a recipe goes through four steps, and every problem found on the way is collected
so that the user sees all of them in one message (:class:`~digitsum.errors.RecipeError`):

1. find the recipe (a path, or a shipped recipe's name: :mod:`digitsum.catalog`), read it and
   its ``extends`` chain (each parent a path relative to its child, or a name), merging tables:
   the child wins; a component table whose ``type`` changes is replaced whole, since parameters
   belong to a type; ``heads.<name> = false`` removes an inherited head;
2. gather the overrides (``--set key=value``, whose values parse as TOML, else as a plain
   string; a mapping of Python values; grid values) and lay them over the files together;
3. validate the fixed sections with pydantic, and each component table with the ``Params``
   of the component its ``type`` names;
4. check the wiring: heads bound to targets the generator produces, a backbone that can use
   the generator's inputs.

Every problem names its source file and line (or the override that caused it), the key path,
and what would fit.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import Problem, RecipeError, UserError, did_you_mean
from .registry import KIND_LABELS, Registry, datasets, fusions, heads, loggers, optimizers, schedules

KeyPath = tuple[str, ...]


# -- fixed sections -------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Section):
    """``[data]``: which generator, how big a batch, where MNIST lives."""

    type: str = Field(description="dataset generator, see `digitsum list datasets`")
    batch_size: int = Field(128, ge=1, le=65536, description="samples per training step")
    root: str | None = Field(None, description="MNIST folder; default $DIGITSUM_DATA or the user cache")
    download: bool = Field(True, description="download MNIST when it is missing")
    val: int = Field(
        0, ge=0, le=10**9,
        description="training samples held out as a validation split 'val' (chosen by the seed, never trained on); 0: none",
    )


class BackboneSection(_Section):
    """``[backbone]``: which fusion backbone."""

    type: str = Field(description="fusion backbone, see `digitsum list fusions`")


class HeadSection(_Section):
    """``[heads.<name>]``: one output, bound to one target of the generator."""

    type: str = Field("classify", description="head, see `digitsum list heads`")
    target: str = Field(description="the generator target this head predicts")
    weight: float = Field(1.0, ge=0, le=1e6, description="weight of this head's loss in the total")


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class OptimizerSection(_Section):
    """``[train.optimizer]``: which optimizer; its parameters (``lr``, ...) beside ``type``."""

    type: str = Field("adam", description="optimizer, see `digitsum list optimizers`")


class ScheduleSection(_Section):
    """``[train.schedule]``: which learning-rate schedule; its parameters beside ``type``."""

    type: str = Field("onecycle", description="learning-rate schedule, see `digitsum list schedules`")


class LogSection(_Section):
    """``[log.<name>]``: one logger; ``type`` defaults to the table's name (``[log.tensorboard]``)."""

    type: str = Field(description="logger, see `digitsum list loggers`")


class TrainSection(_Section):
    """``[train]``: optimisation. The optimizer and the schedule are component tables of their
    own, ``[train.optimizer]`` and ``[train.schedule]`` (validated apart: see :class:`Recipe`)."""

    epochs: int = Field(4, ge=1, le=1000, description="passes over the training split")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N or mps")
    checkpoint_every: int = Field(
        0, ge=0, le=10**9, description="also checkpoint every N steps (0: only at each epoch's end)"
    )
    eval_every: int = Field(
        1, ge=1, le=1000, description="evaluate the val and test splits after every Nth epoch, and always after the last"
    )
    threads: int = Field(0, ge=0, le=1024, description="CPU threads for tensor ops; 0: one per usable core (split between torchrun ranks)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: mixed precision on CUDA, and on CPUs with bf16 instructions (ignored elsewhere)")
    channels_last: bool = Field(False, description="channels-last memory format on CUDA and CPU (ignored elsewhere)")
    compile: bool | Literal["reduce-overhead", "max-autotune"] = Field(
        False, description="torch.compile the model on CUDA (ignored elsewhere); 'reduce-overhead': with CUDA graphs"
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value


_TOP_LEVEL = {
    "name": "name of the recipe (default: the file name)",
    "description": "one line on what the recipe is for",
    "seed": "seed for initialisation, data order and test pairings",
    "extends": "a parent recipe: a path relative to this file, or a recipe name",
    "data": "dataset generator table",
    "backbone": "fusion backbone table",
    "heads": "one table per head",
    "train": "optimisation table",
    "log": "one table per logger, [log.<name>]",
    "provenance": "versions that made a resolved recipe",
}


# -- the validated recipe ---------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """A component picked by a recipe table: its section, its class and its validated params."""

    section: Any
    cls: type
    params: Any

    def to_dict(self) -> dict[str, Any]:
        return _without_none({**self.section.model_dump(), **self.params.model_dump(mode="json")})


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: everything the engine needs, nothing left to check.

    ``optimizer`` and ``schedule`` are the component tables ``[train.optimizer]`` and
    ``[train.schedule]`` (``recipe.optimizer.params.lr`` is the peak learning rate); ``train``
    holds the rest of ``[train]``; ``log`` the loggers by table name (``[log.<name>]``).
    """

    name: str
    description: str
    seed: int
    data: Choice
    backbone: Choice
    heads: dict[str, Choice]
    train: TrainSection
    optimizer: Choice
    schedule: Choice
    log: dict[str, Choice] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The resolved document: defaults filled in, ``extends`` and overrides applied."""
        doc: dict[str, Any] = {"name": self.name}
        if self.description:
            doc["description"] = self.description
        doc["seed"] = self.seed
        doc["data"] = self.data.to_dict()
        doc["backbone"] = self.backbone.to_dict()
        doc["heads"] = {name: head.to_dict() for name, head in self.heads.items()}
        doc["train"] = {**self.train.model_dump(), "optimizer": self.optimizer.to_dict(), "schedule": self.schedule.to_dict()}
        if self.log:
            # `type` is written only where it is not the table's name: [log.tensorboard], not type = "tensorboard" again
            doc["log"] = {name: {k: v for k, v in c.to_dict().items() if not (k == "type" and v == name)} for name, c in self.log.items()}
        return doc

    def to_toml(self, provenance: Mapping[str, Any] | None = None) -> str:
        import tomli_w

        doc = self.to_dict()
        if provenance:
            doc["provenance"] = dict(provenance)
        return tomli_w.dumps(doc)

    def interface(self):  # -> contracts.Interface (kept lazy: contracts import torch)
        return self.data.cls.interface(self.data.params)


# -- reading TOML with positions -----------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a key came from: a file and line, or a command-line override."""

    label: str  # a path, "<dict>", "--set a.b=c", "--grid a.b=c" or "overrides['a.b']"
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.label}:{self.line}" if self.line else self.label


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_key(text: str) -> KeyPath:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return tuple(p.strip("\"'") for p in parts)


def _line_index(text: str) -> dict[KeyPath, int]:
    """Line number of every table header and key assignment (best effort, not a parser)."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            table = _split_key(header.group(1))
            lines.setdefault(table, number)
        elif key := _KEY.match(line):
            lines.setdefault(table + _split_key(key.group(1)), number)
    return lines


def _read_toml(path: Path) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"recipe not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; give the path of a recipe .toml file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; a recipe is a TOML file") from None
    except OSError as e:
        raise UserError(f"cannot read recipe {path}: {e.strerror or e}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib (3.11) puts the position in the message: "... (at line 3, column 7)"
        message = str(e)
        position = re.search(r"\(at line (\d+), column \d+\)$", message)
        where = f"{path}:{position.group(1)}" if position else str(path)
        raise RecipeError(str(path), [Problem(where, "", f"invalid TOML: {message}")]) from None
    return doc, _line_index(text)


# -- merging documents, remembering where each key came from -------------------------------------


@dataclass
class _Document:
    data: dict[str, Any] = field(default_factory=dict)
    sources: dict[KeyPath, Source] = field(default_factory=dict)

    def source_of(self, path: KeyPath, fallback: str) -> Source:
        """The source of the deepest known prefix of ``path``."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.sources:
                return self.sources[path[:end]]
        return Source(fallback)


_COMPONENT_TABLES = {("data",), ("backbone",), ("train", "optimizer"), ("train", "schedule")}
_REQUIRED_TABLES = {("data",), ("backbone",), ("heads",), ("train",), ("train", "optimizer"), ("train", "schedule")}
#: Tables of named components, one per name: ``[heads.<name>]`` and ``[log.<name>]``.
_NAMED_TABLES = ("heads", "log")


def _is_component_table(path: KeyPath) -> bool:
    return path in _COMPONENT_TABLES or _is_named(path)


def _is_named(path: KeyPath) -> bool:
    """A head's or a logger's table: the ones ``= false`` removes."""
    return len(path) == 2 and path[0] in _NAMED_TABLES


@dataclass
class _Merge:
    """How one document is merged over another.

    ``layered``: merged over what it inherits (a child over its parent, the overrides over the
    files): a component table whose ``type`` changes is replaced whole, ``heads.<name> = false``
    removes an inherited head, and a new key goes where the child writes it. Not layered: the
    overrides gathered among themselves, every key kept (``false`` too, removing only when the
    gathered overrides are laid over the files).
    """

    source_of: Callable[[KeyPath], Source]
    problems: list[Problem]
    layered: bool = True
    overriding: bool = False  # laying overrides over files: a scalar is not made a table


def _merge(base: _Document, data: Mapping[str, Any], how: _Merge, prefix: KeyPath = ()) -> None:
    """Merge ``data`` into ``base`` at ``prefix``; tables merge, everything else replaces."""
    target = base.data
    for key in prefix:
        target = target[key]
    inherited = list(target)
    for key, value in data.items():
        path = prefix + (key,)
        old = target.get(key)
        if how.layered and value is False and (_is_named(path) or path in _REQUIRED_TABLES or isinstance(old, dict)):
            _remove(base, target, inherited, path, how)
            continue
        if how.overriding and isinstance(value, dict) and old is not None and not isinstance(old, dict):
            leaf = path
            while isinstance(value, dict) and value:
                first = next(iter(value))
                leaf, value = leaf + (first,), value[first]
            where = str(how.source_of(leaf))
            how.problems.append(Problem(where, ".".join(leaf), f"'{'.'.join(path)}' is not a table"))
            continue
        replace_component = (
            how.layered
            and _is_component_table(path)
            and isinstance(old, dict)
            and isinstance(value, dict)
            and "type" in value
            and value["type"] != old.get("type")
        )
        if isinstance(old, dict) and isinstance(value, dict) and not replace_component:
            base.sources.setdefault(path, how.source_of(path))
            _merge(base, value, how, path)
            continue
        if replace_component or isinstance(old, dict):
            _forget_sources(base, path)
        if how.layered and isinstance(value, dict) and not replace_component:
            target[key] = {}  # a new table: merged key by key, so that `heads.<name> = false` is seen
            base.sources[path] = how.source_of(path)
            _merge(base, value, how, path)
            continue
        target[key] = _copy(value)
        base.sources[path] = how.source_of(path)
        if isinstance(value, dict):
            _record_sources(base, value, how.source_of, path)
    if how.layered:
        _place_new_keys(target, inherited, data)


def _remove(base: _Document, target: dict[str, Any], inherited: list[str], path: KeyPath, how: _Merge) -> None:
    """``heads.<name> = false`` (or ``log.<name> = false``): drop an inherited head (logger);
    any other table cannot be removed."""
    key = ".".join(path)
    where = str(how.source_of(path))
    if not _is_named(path):
        how.problems.append(
            Problem(where, key, "cannot be removed: `= false` removes only a head or a logger (heads.<name> = false, "
                    "log.<name> = false); every other table is needed, or has defaults")
        )  # fmt: skip
    elif path[-1] not in inherited or path[-1] not in target:
        what = "head" if path[0] == "heads" else "logger"
        hint = did_you_mean(path[-1], inherited, f"{what}s") if inherited else "nothing is inherited here"
        how.problems.append(Problem(where, key, f"there is no inherited {what} '{path[-1]}' to remove — {hint}"))
    else:
        del target[path[-1]]
        _forget_sources(base, path)


def _place_new_keys(target: dict[str, Any], inherited: list[str], data: Mapping[str, Any]) -> None:
    """Put keys that ``data`` added where it writes them: before the next inherited key it
    lists after them, else at the end (so a child's new heads can come before ``sum``)."""
    order = [k for k in inherited if k in target]
    pending: list[str] = []
    for key in data:
        if key not in target:
            continue  # removed
        if key not in inherited:
            pending.append(key)
        elif pending:
            at = order.index(key)
            order[at:at] = pending
            pending = []
    order += pending
    if list(target) != order:
        items = [(k, target[k]) for k in order]
        target.clear()
        target.update(items)


def _forget_sources(base: _Document, path: KeyPath) -> None:
    for stale in [p for p in base.sources if p[: len(path)] == path]:
        del base.sources[stale]


def _record_sources(base: _Document, data: Mapping[str, Any], source_of, prefix: KeyPath) -> None:
    for key, value in data.items():
        base.sources[prefix + (key,)] = source_of(prefix + (key,))
        if isinstance(value, dict):
            _record_sources(base, value, source_of, prefix + (key,))


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


def _load_file(path: Path, problems: list[Problem], chain: tuple[Path, ...] = ()) -> _Document:
    """The recipe file at ``path`` with its ``extends`` chain merged under it."""
    raw, lines = _read_toml(path)

    def source_of(key: KeyPath) -> Source:
        for end in range(len(key), 0, -1):
            if key[:end] in lines:
                return Source(str(path), lines[key[:end]])
        return Source(str(path))

    return _document(raw, source_of, path.parent, problems, chain + (path.resolve(),))


def _document(raw: dict[str, Any], source_of: Callable[[KeyPath], Source], folder: Path | None,
              problems: list[Problem], chain: tuple[Path, ...]) -> _Document:  # fmt: skip
    """``raw`` merged over the document its ``extends`` names (relative to ``folder``, else a name)."""
    doc = _Document()
    if isinstance(raw.get("provenance"), dict) and legacy_train(raw.get("train")):
        # a run directory's recipe.toml written by an older digitsum: read as the run trained
        raw["train"] = upgrade_train(raw["train"])
    parent = raw.pop("extends", None)
    if parent is not None:
        doc = _parent(parent, str(source_of(("extends",))), folder, problems, chain)
    _merge(doc, raw, _Merge(source_of, problems))
    return doc


def _parent(parent: Any, where: str, folder: Path | None, problems: list[Problem], chain: tuple[Path, ...]) -> _Document:
    from .catalog import resolve_recipe

    if not isinstance(parent, str) or not parent.strip() or "\0" in parent:
        problems.append(Problem(where, "extends", f"must be a recipe name or a path to a recipe (got {_fmt_value(parent)})"))
        return _Document()
    try:
        path = resolve_recipe(parent, folder, what="parent recipe")
    except UserError as e:
        problems.append(Problem(where, "extends", e.message))
        return _Document()
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in chain + (path.resolve(),))
        problems.append(Problem(where, "extends", f"extends itself in a cycle: {cycle}"))
        return _Document()
    try:
        return _load_file(path, problems, chain)
    except RecipeError as e:
        problems.extend(e.problems)
    except UserError as e:
        problems.append(Problem(where, "extends", e.message))
    return _Document()


def _python_document(source: Mapping[str, Any], label: str, problems: list[Problem]) -> dict[str, Any]:
    """A recipe given as Python data, copied (the caller's dict is never changed); keys must be strings."""

    def copy(value: Any, path: KeyPath) -> Any:
        if isinstance(value, Mapping):
            copied = {}
            for key, item in value.items():
                if isinstance(key, str):
                    copied[key] = copy(item, path + (key,))
                else:  # TOML's keys are strings, and so are a recipe's
                    problems.append(Problem(label, ".".join(path), f"has a key that is not a string: {key!r}"))
            return copied
        if isinstance(value, (list, tuple)):
            return [copy(item, path) for item in value]
        return value

    return copy(source, ())


# -- overrides ---------------------------------------------------------------------------------------


_OVERRIDE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _override_key(text: str) -> KeyPath | None:
    path = tuple(part.strip() for part in text.split("."))
    return path if all(_OVERRIDE_KEY.fullmatch(p) for p in path) else None


def parse_override(text: str) -> tuple[KeyPath, Any]:
    """``"train.lr=1e-3"`` -> ``(("train", "lr"), 0.001)``; a value that is not TOML is a string."""
    key, sep, value = text.partition("=")
    path = _override_key(key)
    if not sep or path is None:
        raise UserError(
            f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. --set train.epochs=1"
        )
    value = value.strip()
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return path, parsed


#: What may override a recipe: ``"key=value"`` strings (as ``--set`` takes them), or a mapping of
#: dotted keys to Python values (``{"train.epochs": 1, "heads.digit": False}``).
Overrides = Sequence[str] | Mapping[str, Any]


def _gather_overrides(overrides: Overrides, grid: Sequence[str], problems: list[Problem], grid_flag: str = "--grid") -> _Document:
    """Every override in one document, in order (the grid's last), each key remembering the
    override it came from: ``--set KEY=VALUE``, ``--grid KEY=VALUE`` (``grid_flag``: the
    option that gave it, e.g. ``--param``) or ``overrides['KEY']``."""
    items: list[tuple[str, KeyPath, Any]] = []

    def parsed(flag: str, text: str) -> None:
        try:
            path, value = parse_override(text)
        except UserError as e:
            problems.append(Problem(flag, "", e.message.removeprefix("--set ")))
        else:
            items.append((f"{flag} {text}", path, value))

    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            label = f"overrides[{key!r}]"
            path = _override_key(key) if isinstance(key, str) else None
            if path is None:
                problems.append(Problem(label, "", "expected a dotted key of letters, digits, '_' and '-', e.g. 'train.epochs'"))
            else:
                items.append((label, path, value))
    else:
        for text in [overrides] if isinstance(overrides, str) else overrides:
            parsed("--set", text)
    for text in grid:
        parsed(grid_flag, text)
    gathered = _Document()
    for label, path, value in items:
        source = Source(label)
        _merge(gathered, _nest(path, value), _Merge(lambda _, s=source: s, problems, layered=False))
    return gathered


def _nest(path: KeyPath, value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


# -- validation ------------------------------------------------------------------------------------


def _fmt_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pydantic_problems(
    error: ValidationError, prefix: KeyPath, doc: _Document, fallback: str, valid_keys: Sequence[str]
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
            message = f"{message} (got {_fmt_value(item['input'])})"
        problems.append(Problem(where, key, message))
    return problems


def _validate_section(
    model: type[BaseModel], data: Any, prefix: KeyPath, doc: _Document, fallback: str, problems: list[Problem],
    tables: Sequence[str] = (),
) -> BaseModel | None:
    """Validate a fixed table; ``tables``: its sub-tables, validated elsewhere (valid keys for did-you-mean)."""
    if not isinstance(data, dict):
        where = str(doc.source_of(prefix, fallback))
        problems.append(Problem(where, ".".join(prefix), f"must be a table (got {_fmt_value(data)})"))
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
    doc: _Document,
    fallback: str,
    problems: list[Problem],
) -> Choice | None:
    """Split a component table into its fixed keys and the component's own parameters."""
    if not isinstance(data, dict):
        where = str(doc.source_of(prefix, fallback))
        problems.append(Problem(where, ".".join(prefix), f"must be a table (got {_fmt_value(data)})"))
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
            problems.append(Problem(p.where, p.key, f"{p.message} [{KIND_LABELS[registry.kind]} '{type_name}']"))
        return None
    return Choice(section, cls, validated)


def _check_wiring(recipe_parts: dict[str, Any], doc: _Document, fallback: str, problems: list[Problem]) -> None:
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
                    f"(see its parameters); heads.{name} must have weight 0, not {_fmt_value(head.section.weight)}",
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


def recipe_document(source: str | os.PathLike[str] | Mapping[str, Any], overrides: Overrides = (),
                    *, grid: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    """The recipe document as written, ``extends`` and overrides applied, not validated and
    without defaults (nothing imported: no component, no torch). Raises a RecipeError when the
    document cannot be put together (bad TOML, a missing parent, a bad override)."""
    problems: list[Problem] = []
    doc, label, _ = _read_source(source, overrides, grid, problems)
    if problems:
        raise RecipeError(label, problems)
    return doc.data


def _read_source(source: str | os.PathLike[str] | Mapping[str, Any], overrides: Overrides, grid: Sequence[str],
                 problems: list[Problem], grid_flag: str = "--grid") -> tuple[_Document, str, str]:  # fmt: skip
    """The merged document, its label (a path or ``<dict>``) and its default name."""
    from .catalog import resolve_recipe

    if isinstance(source, Mapping):
        label, default_name = "<dict>", "recipe"
        raw = _python_document(source, label, problems)
        doc = _document(raw, lambda _: Source(label), None, problems, ())  # extends: from the working folder
    else:
        path = resolve_recipe(source)
        label, default_name = str(path), path.stem
        doc = _load_file(path, problems)
    gathered = _gather_overrides(overrides, grid, problems, grid_flag)
    # Overrides are laid over the files together: a `type` among them replaces only the table the
    # files gave, never a key given beside it (--set heads.x.target=... --grid heads.x.type=...).
    _merge(doc, gathered.data, _Merge(lambda p: gathered.source_of(p, label), problems, overriding=True))
    return doc, label, default_name


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
    doc, fallback, default_name = _read_source(source, overrides, grid, problems, grid_flag)
    raw = doc.data

    for key in raw:
        if key not in _TOP_LEVEL:
            where = str(doc.source_of((key,), fallback))
            problems.append(Problem(where, key, f"unknown key — {did_you_mean(key, _TOP_LEVEL, 'keys')}"))
    parent_failed = any(p.key == "extends" for p in problems)  # its tables are missing because of that, not twice
    for key in ("data", "backbone", "heads"):
        if key not in raw and not parent_failed:
            problems.append(Problem(fallback, key, f"is required but missing: add a [{key}] table ({_TOP_LEVEL[key]})"))

    name = raw.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        problems.append(
            Problem(str(doc.source_of(("name",), fallback)), "name",
                    f"must be 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit (got {_fmt_value(name)})")
        )  # fmt: skip
    description = raw.get("description", "")
    if not isinstance(description, str):
        problems.append(Problem(str(doc.source_of(("description",), fallback)), "description", "must be a string"))
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        problems.append(
            Problem(str(doc.source_of(("seed",), fallback)), "seed", f"must be an integer from 0 to 2**63-1 (got {_fmt_value(seed)})")
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
        problems.append(Problem(str(doc.source_of(("train",), fallback)), "train", f"must be a table (got {_fmt_value(train_table)})"))
    else:
        rest = dict(train_table)
        problems.extend(_legacy_problems(rest, doc, fallback))  # and takes the moved keys out of `rest`
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


def _validate_loggers(table: Any, doc: _Document, fallback: str, problems: list[Problem], available: bool = True) -> dict[str, Choice]:
    """``[log.<name>]`` tables (``log.<name> = true``: the logger with its defaults); a logger
    whose library is not installed is a problem naming what installs it."""
    if not isinstance(table, dict):
        problems.append(Problem(str(doc.source_of(("log",), fallback)), "log", f"must be a table of loggers, [log.<name>] (got {_fmt_value(table)})"))
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


# -- the spelling of [train] before optimizers and schedules were components (digitsum 0.1.0) ----------

#: Keys of ``[train]`` that moved into ``[train.optimizer]``.
MOVED_TRAIN_KEYS = ("lr", "weight_decay", "momentum")


def legacy_train(train: Any) -> bool:
    """Whether a ``[train]`` table is wholly in the old spelling: ``optimizer = "adamw"``, ``lr``, ...
    (a table mixing both spellings is not: its old keys are reported as errors)."""
    return (
        isinstance(train, dict)
        and not any(isinstance(train.get(k), dict) for k in ("optimizer", "schedule"))
        and (any(k in train for k in MOVED_TRAIN_KEYS) or any(isinstance(train.get(k), str) for k in ("optimizer", "schedule")))
    )


def upgrade_train(train: dict[str, Any]) -> dict[str, Any]:
    """A ``[train]`` table in the old spelling as component tables that train exactly as it did.

    The old defaults (Adam, lr 2e-3, no weight decay, SGD momentum 0.9, onecycle) apply to what
    it leaves out; the old ``onecycle`` cycled the momentum (Adam's beta1) between 0.85 and 0.95,
    so the upgraded schedule says so; ``momentum`` was ignored by Adam and AdamW, so it is
    dropped there. Used for resolved recipes and checkpoints written by older runs.
    """
    new = {k: v for k, v in train.items() if k not in MOVED_TRAIN_KEYS}
    kind = train.get("optimizer", "adam")
    if isinstance(kind, str):
        optimizer: dict[str, Any] = {"type": kind, "lr": train.get("lr", 2e-3), "weight_decay": train.get("weight_decay", 0.0)}
        if kind == "sgd":
            optimizer["momentum"] = train.get("momentum", 0.9)
        new["optimizer"] = optimizer
    schedule = train.get("schedule", "onecycle")
    if isinstance(schedule, str):
        new["schedule"] = {"type": schedule, **({"warmup": 0.25, "momentum": [0.85, 0.95]} if schedule == "onecycle" else {})}
    return new


def upgrade_resolved(doc: dict[str, Any]) -> dict[str, Any]:
    """A resolved recipe (``Recipe.to_dict()``, as checkpoints store it) in the current spelling."""
    if not legacy_train(doc.get("train")):
        return doc
    return {**doc, "train": upgrade_train(doc["train"])}


def _toml_text(value: Any) -> str:
    import tomli_w

    try:
        return tomli_w.dumps({"v": value}).partition("=")[2].strip()
    except TypeError:
        return repr(value)


def _legacy_problems(train: dict[str, Any], doc: _Document, fallback: str) -> list[Problem]:
    """The old spelling of ``[train]`` (``optimizer = "adamw"``, ``lr = ...``, ``schedule =
    "onecycle"``) is an error saying how to write it now; the keys are taken out of ``train``."""
    problems = []
    for key in MOVED_TRAIN_KEYS:
        if key not in train:
            continue
        value = _toml_text(train.pop(key))
        where = str(doc.source_of(("train", key), fallback))
        what = "SGD's momentum" if key == "momentum" else f"`{key}`"
        problems.append(Problem(where, f"train.{key}", f"{what} belongs to the optimizer now: write {key} = {value} under "
                                f"[train.optimizer] (--set train.optimizer.{key}={value})"))  # fmt: skip
    for key in ("optimizer", "schedule"):
        if not isinstance(train.get(key), str):
            continue
        value = train.pop(key)
        where = str(doc.source_of(("train", key), fallback))
        message = f"is a table now: write [train.{key}] with type = \"{value}\" (--set train.{key}.type={value})"
        if key == "optimizer":
            message += " and the optimizer's parameters (lr, weight_decay, ...) beside it"
        elif value == "onecycle":
            message += "; the old onecycle also cycled the momentum between 0.85 and 0.95: add momentum = [0.85, 0.95] to keep that"
        problems.append(Problem(where, f"train.{key}", message))
    return problems


def _without_none(value: Any) -> Any:
    """TOML has no null: drop None values (they mean 'the default')."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value
