"""Recipes: TOML documents that pick components by name, validated all at once.

Loading a recipe goes through four steps, and every problem found on the way is collected
so that the user sees all of them in one message (:class:`~digitsum.errors.RecipeError`):

1. read the TOML file and its ``extends`` chain, merging tables (the child wins; a component
   table whose ``type`` changes is replaced whole, since parameters belong to a type);
2. apply ``--set key=value`` overrides (values parse as TOML, else as a plain string);
3. validate the fixed sections with pydantic, and each component table with the ``Params``
   of the component its ``type`` names;
4. check the wiring: heads bound to targets the generator produces, a backbone that can use
   the generator's inputs.

Every problem names its source file and line (or the ``--set`` that caused it), the key path,
and what would fit.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import Problem, RecipeError, UserError, did_you_mean
from .registry import KIND_LABELS, PluginError, Registry, datasets, fusions, heads

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


class BackboneSection(_Section):
    """``[backbone]``: which fusion backbone."""

    type: str = Field(description="fusion backbone, see `digitsum list fusions`")


class HeadSection(_Section):
    """``[heads.<name>]``: one output, bound to one target of the generator."""

    type: str = Field("classify", description="head, see `digitsum list heads`")
    target: str = Field(description="the generator target this head predicts")
    weight: float = Field(1.0, ge=0, le=1e6, description="weight of this head's loss in the total")


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class TrainSection(_Section):
    """``[train]``: optimisation."""

    epochs: int = Field(4, ge=1, le=1000, description="passes over the training split")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(2e-3, gt=0, le=10, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (sgd only)")
    schedule: Literal["onecycle", "cosine", "constant"] = Field(
        "onecycle", description="learning-rate schedule over the whole run"
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N or mps")
    checkpoint_every: int = Field(
        0, ge=0, le=10**9, description="also checkpoint every N steps (0: only at each epoch's end)"
    )
    threads: int = Field(0, ge=0, le=1024, description="CPU threads for tensor ops; 0: one per core (split between torchrun ranks)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: mixed precision on CUDA (ignored elsewhere)")
    channels_last: bool = Field(False, description="channels-last memory format on CUDA (ignored elsewhere)")
    compile: bool = Field(False, description="torch.compile the model on CUDA (ignored elsewhere)")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value


class Provenance(_Section):
    """``[provenance]``: written into every resolved recipe; informative when read back."""

    model_config = ConfigDict(extra="allow", frozen=True)


_TOP_LEVEL = {
    "name": "name of the recipe (default: the file name)",
    "description": "one line on what the recipe is for",
    "seed": "seed for initialisation, data order and test pairings",
    "extends": "a parent recipe, relative to this file",
    "data": "dataset generator table",
    "backbone": "fusion backbone table",
    "heads": "one table per head",
    "train": "optimisation table",
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
    """A validated recipe: everything the engine needs, nothing left to check."""

    name: str
    description: str
    seed: int
    data: Choice
    backbone: Choice
    heads: dict[str, Choice]
    train: TrainSection
    source: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The resolved document: defaults filled in, ``extends`` and overrides applied."""
        doc: dict[str, Any] = {"name": self.name}
        if self.description:
            doc["description"] = self.description
        doc["seed"] = self.seed
        doc["data"] = self.data.to_dict()
        doc["backbone"] = self.backbone.to_dict()
        doc["heads"] = {name: head.to_dict() for name, head in self.heads.items()}
        doc["train"] = self.train.model_dump()
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

    label: str  # a path, or "--set a.b=c"
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


_COMPONENT_TABLES = ("data", "backbone")


def _is_component_table(path: KeyPath) -> bool:
    return path in {(t,) for t in _COMPONENT_TABLES} or (len(path) == 2 and path[0] == "heads")


def _merge(base: _Document, data: Mapping[str, Any], source_of, prefix: KeyPath = ()) -> None:
    """Merge ``data`` into ``base`` at ``prefix``; tables merge, everything else replaces."""
    target = base.data
    for key in prefix:
        target = target[key]
    for key, value in data.items():
        path = prefix + (key,)
        old = target.get(key)
        replace_component = (
            _is_component_table(path)
            and isinstance(old, dict)
            and isinstance(value, dict)
            and "type" in value
            and value["type"] != old.get("type")
        )
        if isinstance(old, dict) and isinstance(value, dict) and not replace_component:
            base.sources.setdefault(path, source_of(path))
            _merge(base, value, source_of, path)
            continue
        if replace_component or isinstance(old, dict):
            for stale in [p for p in base.sources if p[: len(path)] == path]:
                del base.sources[stale]
        target[key] = _copy(value)
        base.sources[path] = source_of(path)
        if isinstance(value, dict):
            _record_sources(base, value, source_of, path)


def _record_sources(base: _Document, data: Mapping[str, Any], source_of, prefix: KeyPath) -> None:
    for key, value in data.items():
        base.sources[prefix + (key,)] = source_of(prefix + (key,))
        if isinstance(value, dict):
            _record_sources(base, value, source_of, prefix + (key,))


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _load_document(path: Path, problems: list[Problem], chain: tuple[Path, ...] = ()) -> _Document:
    """The document at ``path`` with its ``extends`` chain merged under it."""
    resolved = path.resolve()
    raw, lines = _read_toml(path)

    def source_of(key: KeyPath) -> Source:
        for end in range(len(key), 0, -1):
            if key[:end] in lines:
                return Source(str(path), lines[key[:end]])
        return Source(str(path))

    doc = _Document()
    parent = raw.pop("extends", None)
    if parent is not None:
        where = str(source_of(("extends",)))
        parent_path = (path.parent / parent) if isinstance(parent, str) and "\0" not in parent else None
        if parent_path is None:
            problems.append(Problem(where, "extends", f"must be a path to a recipe (got {parent!r})"))
        elif parent_path.resolve() in chain + (resolved,):
            cycle = " -> ".join(str(p) for p in chain + (resolved, parent_path.resolve()))
            problems.append(Problem(where, "extends", f"extends itself in a cycle: {cycle}"))
        elif not parent_path.is_file():
            problems.append(Problem(where, "extends", f"parent recipe not found: {parent_path}"))
        else:
            try:
                doc = _load_document(parent_path, problems, chain + (resolved,))
            except RecipeError as e:
                problems.extend(e.problems)
            except UserError as e:
                problems.append(Problem(where, "extends", e.message))
    _merge(doc, raw, source_of)
    return doc


# -- overrides ---------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[KeyPath, Any]:
    """``"train.lr=1e-3"`` -> ``(("train", "lr"), 0.001)``; a value that is not TOML is a string."""
    key, sep, value = text.partition("=")
    path = tuple(part.strip() for part in key.split("."))
    if not sep or not all(path) or not all(re.fullmatch(r"[A-Za-z0-9_-]+", p) for p in path):
        raise UserError(
            f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. --set train.epochs=1"
        )
    value = value.strip()
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return path, parsed


def _apply_override(doc: _Document, text: str, problems: list[Problem]) -> None:
    try:
        path, value = parse_override(text)
    except UserError as e:
        problems.append(Problem("--set", "", e.message.removeprefix("--set ")))
        return
    source = Source(f"--set {text}")
    table = doc.data
    for depth, key in enumerate(path[:-1]):
        if key not in table:
            table[key] = {}
            doc.sources[path[: depth + 1]] = source
        table = table[key]
        if not isinstance(table, dict):
            problems.append(Problem(str(source), ".".join(path), f"'{'.'.join(path[: depth + 1])}' is not a table"))
            return
    _merge(doc, _nest(path, value), lambda _: source)


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
    model: type[BaseModel], data: Any, prefix: KeyPath, doc: _Document, fallback: str, problems: list[Problem]
) -> BaseModel | None:
    if not isinstance(data, dict):
        where = str(doc.source_of(prefix, fallback))
        problems.append(Problem(where, ".".join(prefix), f"must be a table (got {_fmt_value(data)})"))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems.extend(_pydantic_problems(e, prefix, doc, fallback, list(model.model_fields)))
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
    except PluginError as e:
        problems.append(Problem(where, ".".join(prefix + ("type",)), e.message))
        return None
    except UserError as e:
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


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, merge, override and validate a recipe; raise one RecipeError listing every problem."""
    path = Path(path)
    problems: list[Problem] = []
    doc = _load_document(path, problems)
    for text in overrides:
        _apply_override(doc, text, problems)
    fallback = str(path)
    raw = doc.data

    for key in raw:
        if key not in _TOP_LEVEL:
            where = str(doc.source_of((key,), fallback))
            problems.append(Problem(where, key, f"unknown key — {did_you_mean(key, _TOP_LEVEL, 'keys')}"))
    for key in ("data", "backbone", "heads"):
        if key not in raw:
            problems.append(Problem(fallback, key, f"is required but missing: add a [{key}] table ({_TOP_LEVEL[key]})"))

    name = raw.get("name", path.stem)
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
    train = _validate_section(TrainSection, raw.get("train", {}), ("train",), doc, fallback, problems)
    provenance = raw.get("provenance", {})
    if not isinstance(provenance, dict):
        problems.append(Problem(str(doc.source_of(("provenance",), fallback)), "provenance", "must be a table"))

    _check_wiring(parts, doc, fallback, problems)
    if problems:
        raise RecipeError(str(path), problems)
    return Recipe(
        name=name,
        description=description,
        seed=seed,
        data=parts["data"],
        backbone=parts["backbone"],
        heads=parts["heads"],
        train=train,
        source=str(path),
        provenance=dict(provenance),
    )


def _without_none(value: Any) -> Any:
    """TOML has no null: drop None values (they mean 'the default')."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value
