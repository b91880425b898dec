"""Resource limits of a recipe, checked before anything recurses into it or allocates for it.

A recipe is a few tables a few levels deep, with short identifier-like keys; a hostile one may
be 50 MB, nest arrays thousands deep, write keys of a million characters or with terminal escape
sequences, or extend a parent that extends a parent... Each is refused as a :class:`Problem`
naming the file (and line) and key path: the file's size before it is read, its brackets before
TOML parses them, the parsed document before it is merged, copied or validated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import Problem
from ..kinds import KINDS

#: The largest recipe file read (the shipped ones are about 2 KiB).
MAX_BYTES = 1 << 20
#: The deepest nesting of tables and arrays (a recipe needs 4: ``train.schedule.momentum[0]``).
MAX_DEPTH = 32
#: The longest key, and the most files in an ``extends`` chain.
MAX_KEY = 128
MAX_EXTENDS = 32
#: The most heads, and the most loggers, a recipe may have (each head is a loss, metrics, curves
#: and a row of pictures: a hundred ran a minute and broke the pictures). Counted in the merged
#: recipe, so that ``extends`` and ``--set`` add up.
MAX_NAMED = 32

#: What a head's or a logger's name may be: it becomes a metric's name, a column, a file name.
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The tables of named components, one per name (``[heads.<name>]``), and what each holds.
NAMED_TABLES = {k.table[0]: k.label for k in KINDS.values() if k.named}

KeyPath = tuple[Any, ...]  # keys, and positions in lists


def show_key(key: Any) -> str:
    """A key as a problem may print it: itself when it is an identifier, else quoted (escapes
    escaped) and cut, so that no key can write to the terminal or fill it."""
    if not isinstance(key, str):
        return repr(key)[:40]
    if len(key) <= MAX_KEY and re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    text = ascii(key)
    return text if len(text) <= 40 else text[:37] + "..."


def show_text(text: str, limit: int = 80) -> str:
    """A command-line text (``--set KEY=VALUE``) as a problem may print it: never a terminal
    escape sequence, never more than ``limit`` characters."""
    if len(text) <= limit and text.isprintable():
        return text
    shown = ascii(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def show_path(path: KeyPath) -> str:
    """``train.schedule.momentum[0]``: a list position (an int in the path) follows its key."""
    return "".join(f"[{k}]" if isinstance(k, int) else ("." if i else "") + show_key(k) for i, k in enumerate(path))


def bracket_problem(text: str, where: Callable[[int], str], key: str = "") -> Problem | None:
    """A problem when ``text`` opens more than twice :data:`MAX_DEPTH` brackets at once, before
    a TOML parser recurses into them (counted on the raw text, strings and comments included:
    a limit far above any recipe's, so that it never needs a second parser). ``where(line)``."""
    depth = 0
    for match in re.finditer(r"[\[\]{}]", text):
        depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
        if depth > 2 * MAX_DEPTH:
            line = text.count("\n", 0, match.start()) + 1
            return Problem(where(line), key, f"tables and arrays are nested more than {MAX_DEPTH} levels deep")
    return None


def document_problems(data: Mapping[str, Any], where: Callable[[KeyPath], str], prefix: KeyPath = ()) -> list[Problem]:
    """Every key of ``data`` (at ``prefix``) checked, depth first and without recursion: nesting
    at most :data:`MAX_DEPTH`, keys 1-:data:`MAX_KEY` printable characters, names of heads and
    loggers identifiers. A Python document may be cyclic: the depth limit ends the walk."""
    problems: list[Problem] = []
    stack: list[tuple[KeyPath, Any]] = [(prefix, data)]
    text = 0  # characters of the values seen: a Python document meets a file's MAX_BYTES too
    while stack and len(problems) < 20:
        path, value = stack.pop()
        if not isinstance(value, (Mapping, list, tuple)):
            text += len(value) if isinstance(value, str) else 8  # a number as TOML writes it, about
            if text > MAX_BYTES:  # its run's recipe.toml could never be read back
                problems.append(Problem(where(path), show_path(path), f"the recipe holds more than {MAX_BYTES >> 20} MiB of text, "
                                                                      "the most a recipe may be (a recipe is a few KiB)"))  # fmt: skip
                break
            continue
        if len(path) > MAX_DEPTH:
            problems.append(Problem(where(path), show_path(path[: MAX_DEPTH + 1]) + "...",
                                    f"tables and arrays are nested more than {MAX_DEPTH} levels deep"))  # fmt: skip
            break  # a cyclic document would go on for ever
        if isinstance(value, Mapping):
            children = [(path + (key,), item) for key, item in value.items()]
            for child, _ in children:
                if problem := _key_problem(child):
                    problems.append(Problem(where(child), show_path(child), problem))
        else:
            children = [(path + (i,), item) for i, item in enumerate(value)]
        stack.extend(reversed(children))
    return problems


def name_problem(kind_label: str, name: str) -> str | None:
    """Why ``name`` cannot name a ``[heads.<name>]`` or ``[log.<name>]`` table (it names the head's
    metrics, files and columns), or None. Checked with the recipe's other problems."""
    if NAME.fullmatch(name):
        return None
    return f"a {kind_label}'s name must be 1-64 ASCII letters, digits, '_' or '-' (got {show_key(name)})"


def _key_problem(path: KeyPath) -> str | None:
    key = path[-1]
    if not isinstance(key, str):
        return None  # python_document reports keys that are not strings
    if not key or len(key) > MAX_KEY or not key.isprintable():
        if len(path) == 2 and path[0] in NAMED_TABLES:  # the rest of a name's rule waits for validation
            return name_problem(NAMED_TABLES[path[0]], key)
        return f"a key must be 1-{MAX_KEY} printable characters (got {show_key(key)}, {len(key)} characters)"
    return None
