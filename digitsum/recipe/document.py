"""Reading recipe documents: TOML with the line of every key, and ``extends`` chains merged.

A document remembers where each key came from (:class:`Source`: a file and line, or an
override), so that a problem found later, in validation, still points at the line that caused it.
"""

from __future__ import annotations

import re
import shlex
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import resolve_recipe
from ..errors import Problem, RecipeError, UserError, clipped, did_you_mean, recipe_text, shown_repr
from ..kinds import KINDS
from .legacy import legacy_train, upgrade_train
from .limits import MAX_BYTES, MAX_EXTENDS, NAMED_TABLES, bracket_problem, document_problems
from .schema import KeyPath, deepest

# -- reading TOML with positions -----------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a key came from: a file and line, or a command-line override."""

    label: str  # a path, "<dict>" (or the label load_recipe was given), "--set a.b=c", "--grid a.b=c" or "overrides['a.b']"
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.label}:{self.line}" if self.line else self.label


_HEADER = re.compile(r"^\s*\[\[?([^\]]+)\]\]?\s*(#.*)?$")  # greedy, no backtracking: linear on any line
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_key(text: str) -> KeyPath:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return tuple(p.strip("\"'") for p in parts)


def _line_index(text: str) -> dict[KeyPath, int]:
    """Line number of every table header and key assignment (best effort, not a parser). A
    table only implied (``head`` by ``[head.digit]``, ``extra`` by ``extra.deep = 1``) gets the
    line that first implies it, so that a misspelt one is reported there too."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            table = path = _split_key(header.group(1))
        elif key := _KEY.match(line):
            path = table + _split_key(key.group(1))
        else:
            continue
        for end in range(1, len(path) + 1):
            lines.setdefault(path[:end], number)
    return lines


def _read_toml(path: Path) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    """The document at ``path`` and the line of each key, within :mod:`.limits` (a FIFO or a
    device is refused before it is opened, a file over the size limit before it is read)."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise UserError(f"{path} is not a regular file; a recipe is a TOML file")
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)  # never more, whatever the file claims or grows to
        if len(data) > MAX_BYTES:
            raise UserError(f"{path} is larger than {MAX_BYTES >> 20} MiB, the most a recipe may be (a recipe is a few KiB)")
        text = data.decode("utf-8-sig")  # a byte-order mark, as Windows editors write, is not TOML's
    except FileNotFoundError:
        raise UserError(f"recipe not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; give the path of a recipe .toml file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; a recipe is a TOML file") from None
    except OSError as e:
        raise UserError(f"cannot read recipe {path}: {e.strerror or e}") from None
    if problem := bracket_problem(text, lambda line: f"{path}:{line}"):
        raise RecipeError(str(path), [problem])
    try:
        doc = parse_toml(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib (3.11) puts the position in the message: "... (at line 3, column 7)"
        message = str(e)
        position = re.search(r"\(at line (\d+), column \d+\)$", message)
        where = f"{path}:{position.group(1)}" if position else str(path)
        raise RecipeError(str(path), [Problem(where, "", f"invalid TOML: {message}")]) from None
    lines = _line_index(text)
    if problems := document_problems(doc, lambda key: str(Source(str(path), deepest(key, lines)))):
        raise RecipeError(str(path), problems)
    return doc, lines


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``, with an integer too long for Python to read (over 4300 digits) a
    TOMLDecodeError at its line like any other, not a ValueError from deep in the parser."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except ValueError:  # int("1" * 5000): Python's guard against quadratic conversions
        long = re.search(r"\d{4000,}", text)
        line = text.count("\n", 0, long.start()) + 1 if long else None
        digits = len(long.group()) if long else "over 4300"
        raise tomllib.TOMLDecodeError(f"an integer of {digits} digits, more than Python reads (4300) or any setting takes"
                                      + (f" (at line {line}, column 1)" if line else "")) from None


def fmt_value(value: Any) -> str:
    """A value as problems quote it: its repr, cut at 60 characters."""
    return clipped(shown_repr(value))


# -- merging documents, remembering where each key came from -------------------------------------


@dataclass(frozen=True)
class Replaced:
    """A component table replaced whole because a later layer changed its ``type``: where that
    ``type`` came from, and the keys (with their values) the table had and lost."""

    by: Source
    dropped: dict[str, Any]


@dataclass
class Document:
    """A merged recipe document, the source of each of its keys, and the component tables a
    change of ``type`` replaced (``replaced``: what each one lost)."""

    data: dict[str, Any] = field(default_factory=dict)
    sources: dict[KeyPath, Source] = field(default_factory=dict)
    replaced: dict[KeyPath, Replaced] = field(default_factory=dict)
    removed: dict[KeyPath, Source] = field(default_factory=dict)  # heads.<name> = false: where

    def source_of(self, path: KeyPath, fallback: str) -> Source:
        """The source of the deepest known prefix of ``path``."""
        return deepest(path, self.sources) or Source(fallback)

    def dropped_note(self, path: KeyPath) -> str:
        """Why the key at ``path`` is missing when a change of its table's ``type`` dropped it
        (a table whose type changes is replaced whole): where the type changed, every key the
        table lost, and how to keep this one; '' otherwise."""
        table, key = path[:-1], path[-1]
        replaced = self.replaced.get(table)
        if replaced is None or key not in replaced.dropped or key in self._table(table):
            return ""
        name, value, by = ".".join(table), replaced.dropped[key], replaced.by
        if by.label.startswith("--"):
            keep = f"with {_set_arg(f'{name}.{key}', value)}"
        elif by.label.startswith("overrides["):
            keep = f"with overrides[{name + '.' + key!r}] = {value!r}"
        else:
            keep = f"by writing {key} = {recipe_text(value)} in [{name}] too"
        changed = f"the override {by.label}" if by.label.startswith(("--", "overrides[")) else f"{by} changed {name}.type, which"
        return (f" — {changed} replaced [{name}] whole, dropping the keys it had: {', '.join(replaced.dropped)} "
                f"(a type's parameters are its own); keep {key} {keep}")

    def _table(self, path: KeyPath) -> dict[str, Any]:
        node: Any = self.data
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}


def _set_arg(key: str, value: Any) -> str:
    """``--set KEY=VALUE`` as a shell takes it: a string as a plain word where ``--set`` reads it
    back unchanged (``sum``, not ``"sum"``), anything else as TOML; quoted when it needs to be."""
    text = recipe_text(value)
    if isinstance(value, str) and value.isprintable() and value == value.strip():
        try:
            parse_toml(f"v = {value}")
        except tomllib.TOMLDecodeError:
            text = value
    return f"--set {shlex.quote(f'{key}={text}')}"


#: Tables of one component each (``[data]``, ``[train.optimizer]``, ...), and those that cannot be removed.
_COMPONENT_TABLES = {k.table for k in KINDS.values() if not k.named}
_REQUIRED_TABLES = {*_COMPONENT_TABLES, ("heads",), ("train",)}


def _is_named(path: KeyPath) -> bool:
    """A head's or a logger's table: the ones ``= false`` removes."""
    return len(path) == 2 and path[0] in NAMED_TABLES


@dataclass
class Merge:
    """How one document is merged over another.

    ``layered``: merged over what it inherits (a child over its parent, the overrides over the
    files): a component table whose ``type`` changes is replaced whole (parameters belong to a
    type), ``heads.<name> = false`` removes an inherited head, and a new key goes where the child
    writes it. Not layered: the overrides gathered among themselves, every key kept (``false``
    too, removing only when the gathered overrides are laid over the files).
    """

    source_of: Callable[[KeyPath], Source]
    problems: list[Problem]
    layered: bool = True
    overriding: bool = False  # laying overrides over files: a scalar is not made a table


def merge(base: Document, data: Mapping[str, Any], how: Merge, prefix: KeyPath = ()) -> None:
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
            and (path in _COMPONENT_TABLES or _is_named(path))
            and isinstance(old, dict)
            and isinstance(value, dict)
            and "type" in value
            and value["type"] != old.get("type")
        )
        if isinstance(old, dict) and isinstance(value, dict) and not replace_component:
            base.sources.setdefault(path, how.source_of(path))
            merge(base, value, how, path)
            continue
        if replace_component or isinstance(old, dict):
            _forget_sources(base, path)
        if replace_component and (dropped := {k: v for k, v in old.items() if k != "type" and k not in value}):
            base.replaced[path] = Replaced(how.source_of(path + ("type",)), dropped)  # to explain a key found missing
        base.sources[path] = how.source_of(path)
        if isinstance(value, dict):
            target[key] = {}  # a new (or replaced) table: merged key by key, so that `heads.<name> = false` is seen
            merge(base, value, how, path)
        else:
            target[key] = _copy(value)
    if how.layered:
        _place_new_keys(target, inherited, data)


def _remove(base: Document, target: dict[str, Any], inherited: list[str], path: KeyPath, how: Merge) -> None:
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
        what = NAMED_TABLES[path[0]]
        hint = did_you_mean(path[-1], inherited, f"{what}s") if inherited else "nothing is inherited here"
        how.problems.append(Problem(where, key, f"there is no inherited {what} '{path[-1]}' to remove — {hint}"))
    else:
        del target[path[-1]]
        _forget_sources(base, path)
        base.removed[path] = how.source_of(path)


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


def _forget_sources(base: Document, path: KeyPath) -> None:
    """Forget what is known of the keys under ``path`` (replaced or removed)."""
    for known in (base.sources, base.replaced):
        for stale in [p for p in known if p[: len(path)] == path]:
            del known[stale]


def _copy(value: Any, bad_key: Callable[[KeyPath, Any], None] | None = None, path: KeyPath = ()) -> Any:
    """A document copied, tuples as lists; with ``bad_key``, a key that is not a string is left
    out and given to it with the path of its table (TOML's keys are strings, and so are a recipe's)."""
    if isinstance(value, Mapping):
        copied = {}
        for key, item in value.items():
            if bad_key is None or isinstance(key, str):
                copied[key] = _copy(item, bad_key, path + (key,))
            else:
                bad_key(path, key)
        return copied
    if isinstance(value, (list, tuple)):
        return [_copy(item, bad_key, path) for item in value]
    return value


def load_file(path: Path, problems: list[Problem], chain: tuple[Path, ...] = ()) -> Document:
    """The recipe file at ``path`` with its ``extends`` chain merged under it."""
    raw, lines = _read_toml(path)
    return merged_document(raw, lambda key: Source(str(path), deepest(key, lines)), path.parent, problems,
                           chain + (path.resolve(),))  # fmt: skip


def merged_document(raw: dict[str, Any], source_of: Callable[[KeyPath], Source], folder: Path | None,
                    problems: list[Problem], chain: tuple[Path, ...]) -> Document:  # fmt: skip
    """``raw`` merged over the document its ``extends`` names (relative to ``folder``, else a name)."""
    doc = Document()
    if isinstance(raw.get("provenance"), dict) and legacy_train(raw.get("train")):
        # a run directory's recipe.toml written by an older digitsum: read as the run trained
        raw["train"] = upgrade_train(raw["train"])
    parent = raw.pop("extends", None)
    if parent is not None:
        doc = _parent(parent, str(source_of(("extends",))), folder, problems, chain)
    merge(doc, raw, Merge(source_of, problems))
    return doc


def _parent(parent: Any, where: str, folder: Path | None, problems: list[Problem], chain: tuple[Path, ...]) -> Document:
    if not isinstance(parent, str) or not parent.strip() or "\0" in parent:
        problems.append(Problem(where, "extends", f"must be a recipe name or a path to a recipe (got {fmt_value(parent)})"))
        return Document()
    try:
        path = resolve_recipe(parent, folder, what="parent recipe")
    except UserError as e:
        problems.append(Problem(where, "extends", e.message))
        return Document()
    except OSError as e:  # a name the file system cannot even look up (5,000 characters)
        shown = repr(parent) if len(parent) <= 60 else f"{parent[:60]!r}… ({len(parent)} characters)"
        problems.append(Problem(where, "extends", f"cannot look up {shown}: {e.strerror or e}"))
        return Document()
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in chain + (path.resolve(),))
        problems.append(Problem(where, "extends", f"extends itself in a cycle: {cycle}"))
        return Document()
    if len(chain) >= MAX_EXTENDS:  # checked before the parent is read: a chain is never read past the limit
        files = [str(p) for p in chain + (path.resolve(),)]
        shown = " -> ".join(files[:3] + ["..."] + files[-3:])
        problems.append(Problem(where, "extends", f"the chain of extends is longer than {MAX_EXTENDS} files: {shown}"))
        return Document()
    try:
        return load_file(path, problems, chain)
    except RecipeError as e:  # not read at all (not TOML: /etc/passwd, say): its tables are missing for that reason
        problems.extend(e.problems)
        problems.append(Problem(where, "extends", f"the parent {path} cannot be read (above): it gives none of its tables"))
    except UserError as e:
        problems.append(Problem(where, "extends", e.message))
    return Document()


def python_document(source: Mapping[str, Any], label: str, problems: list[Problem]) -> dict[str, Any]:
    """A recipe given as Python data, copied (the caller's dict is never changed); keys must be
    strings, and the document within :mod:`.limits` (else it is not copied: it may be cyclic)."""
    if limits := document_problems(source, lambda _: label):
        raise RecipeError(label, limits)
    return _copy(source, lambda path, key: problems.append(Problem(label, ".".join(path), f"has a key that is not a string: {key!r}")))


