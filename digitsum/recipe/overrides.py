"""Overrides: the ``--set KEY=VALUE`` grammar, and laying overrides over the recipe files.

Values parse as TOML, else they are a plain string; a mapping of dotted keys to Python values
works the same way. The overrides are gathered into one document first, each key remembering
the override it came from, then merged over the files as a child over its parent.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..catalog import resolve_recipe
from ..errors import Problem, RecipeError, UserError, recipe_text
from .document import Document, Merge, Source, load_file, merge, merged_document, parse_toml, python_document
from .limits import MAX_BYTES, bracket_problem, document_problems, show_text
from .schema import KeyPath

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
            f"--set {show_text(text)}: expected KEY=VALUE with a dotted key, e.g. --set train.epochs=1"
        )
    value = value.strip()
    if len(text) > MAX_BYTES:
        raise UserError(f"--set {show_text(text)}: longer than {MAX_BYTES // 1024} KiB, the most a recipe may hold")
    if problem := bracket_problem(value, lambda _: ""):
        raise UserError(f"--set {show_text(text)}: {problem.message}")
    try:
        document = parse_toml(f"v = {value}")
    except tomllib.TOMLDecodeError:
        return path, value
    if list(document) != ["v"]:  # "1\nname='x'": the lines after the first were dropped unseen
        raise UserError(f"--set {show_text(text)}: the value holds more than one TOML line; give one value "
                        "(text with line breaks goes in triple quotes)")
    return path, document["v"]


#: What may override a recipe: ``"key=value"`` strings (as ``--set`` takes them), or a mapping of
#: dotted keys to Python values (``{"train.epochs": 1, "heads.digit": False}``).
Overrides = Sequence[str] | Mapping[str, Any]


def _gather_overrides(overrides: Overrides, grid: Sequence[str], problems: list[Problem], grid_flag: str = "--grid") -> Document:
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
            items.append((f"{flag} {show_text(text)}", path, value))

    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            label = f"overrides[{show_text(repr(key))}]"
            path = _override_key(key) if isinstance(key, str) else None
            if path is None:
                problems.append(Problem(label, "", "expected a dotted key of letters, digits, '_' and '-', e.g. 'train.epochs'"))
            else:
                items.append((label, path, plain_python(value)))
    elif isinstance(overrides, str):
        parsed("--set", overrides)
    elif not isinstance(overrides, Iterable) or _pair(overrides):
        problems.append(Problem("overrides", "", f"{_NOT_OVERRIDES}, not {_shown(overrides)}"))
    else:
        for i, text in enumerate(overrides):
            if isinstance(text, str):
                parsed("--set", text)
            else:
                problems.append(Problem(f"overrides[{i}]", "", f"{_NOT_OVERRIDES}, not {_shown(text)}"))
    for text in grid:
        parsed(grid_flag, text)
    gathered = Document()
    for label, path, value in items:
        if path[0] == "extends":
            problems.append(Problem(label, "extends", EXTENDS_OVERRIDE))
            continue
        if path[0] == "provenance":  # what made a run, written by digitsum into its recipe.toml: never read
            problems.append(Problem(label, ".".join(path), "cannot be set: [provenance] records the versions and machine "
                                    "that made a run (digitsum writes it into the run's recipe.toml) and is never read"))
            continue
        if limits := document_problems(_nest(path, value), lambda _, where=label: where):
            problems.extend(limits)
            continue
        source = Source(label)
        merge(gathered, _nest(path, value), Merge(lambda _, s=source: s, problems, layered=False))
    return gathered


_NOT_OVERRIDES = "expected 'KEY=VALUE' text or a dict {'KEY': value}, e.g. {'train.epochs': 2}"


def _pair(value: Any) -> bool:
    """``("train.epochs", 2)``: one key and its value, not two overrides."""
    return (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str) and "=" not in value[0]
            and not isinstance(value[1], str))


def _shown(value: Any) -> str:
    """A wrong override as a message shows it: its type, a short repr and, for a key and its
    value given as a pair, how to write them."""
    text = repr(value)
    shown = f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
    if _pair(value):
        key, setting = value
        shown += f" (one key and its value: {{{key!r}: {setting!r}}} or '{key}={recipe_text(plain_python(setting))}')"
    return shown


#: ``--set extends=...`` is refused: the parents are read before the overrides, so it could not
#: change them, and silently ignoring it would run another recipe than the one asked for.
EXTENDS_OVERRIDE = (
    "cannot be overridden: a recipe's parents are read before the overrides. To start from another recipe, "
    "give its name as the recipe (digitsum run NAME --set ...), or write a recipe with extends = \"NAME\""
)


def plain_python(value: Any, depth: int = 0) -> Any:
    """An override's value as the recipe reads it: a path (``pathlib.Path``) as its text, numpy's
    numbers and arrays as Python's (what a notebook hands over: ``np.int64(2)``, ``arange``),
    inside lists and tables too; anything else as it is, for the recipe's check to judge (which
    also refuses a value nested too deep, a cyclic one among them: left as it is past that)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # a numpy scalar or array: no numpy import needed
        return value.tolist()
    if depth > _DEEPEST:
        return value
    if isinstance(value, Mapping):
        return {k: plain_python(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_python(v, depth + 1) for v in value]
    return value


_DEEPEST = 64  # deeper than any recipe may nest (the recipe's own limit is lower)


def _nest(path: KeyPath, value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


def recipe_document(source: str | os.PathLike[str] | Mapping[str, Any], overrides: Overrides = ()) -> dict[str, Any]:
    """The recipe document as written, ``extends`` and overrides applied, not validated and
    without defaults (nothing imported: no component, no torch). Raises a RecipeError when the
    document cannot be put together (bad TOML, a missing parent, a bad override)."""
    problems: list[Problem] = []
    doc, label, _ = read_source(source, overrides, (), problems)
    if problems:
        raise RecipeError(label, problems)
    return doc.data


def read_source(source: str | os.PathLike[str] | Mapping[str, Any], overrides: Overrides, grid: Sequence[str],
                 problems: list[Problem], grid_flag: str = "--grid", label: str | None = None) -> tuple[Document, str, str]:  # fmt: skip
    """The merged document, its label (a path, else ``label`` or ``<dict>`` for Python data) and its default name."""
    if not isinstance(source, (str, os.PathLike, Mapping)):
        raise UserError("a recipe is a TOML file's path, a recipe's name (digitsum list recipes), a dict or a "
                        f"digitsum.Recipe, not {_shown(source)}")
    if isinstance(source, Mapping):
        label, default_name = label or "<dict>", "recipe"
        raw = python_document(source, label, problems)
        doc = merged_document(raw, lambda _: Source(label), None, problems, ())  # extends: from the working folder
    else:
        path = resolve_recipe(source)
        label, default_name = str(path), path.stem
        doc = load_file(path, problems)
    gathered = _gather_overrides(overrides, grid, problems, grid_flag)
    # Overrides are laid over the files together: a `type` among them replaces only the table the
    # files gave, never a key given beside it (--set heads.x.target=... --grid heads.x.type=...).
    merge(doc, gathered.data, Merge(lambda p: gathered.source_of(p, label), problems, overriding=True))
    return doc, label, default_name
