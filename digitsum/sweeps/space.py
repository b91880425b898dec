"""The ``--param KEY=SPACE`` language: what a sweep may give each recipe key."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError, did_you_mean
from ..recipe.document import parse_toml

#: The forms a ``--param`` space takes.
SPACE_KINDS = ("loguniform", "uniform", "int", "choice")


@dataclass(frozen=True)
class Space:
    """One ``--param KEY=SPACE``: the recipe key and the values a trial may give it.

    ``kind`` is ``loguniform`` or ``uniform`` (floats in ``[low, high]``), ``int`` (integers in
    ``[low, high]``, on a log scale when ``log``) or ``choice`` (one of ``choices``). ``text`` is
    the ``--param`` as the user typed it and ``typed`` the text of each end or choice, for messages
    (``3e-4``, not the ``0.0003`` it reads as).
    """

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    text: str = field(default="", compare=False, repr=False)
    typed: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def suggest(self, trial: Any) -> Any:
        """The value of this key for an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.kind == "loguniform")

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this space can suggest."""
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and value != int(value):
            return False
        return float(self.low) <= value <= float(self.high)

    def edges(self) -> list[tuple[Any, str]]:
        """The values a recipe is checked with before any trial — every choice, or both ends —
        each with what a message calls it (``the low end -1``, ``the choice flim``)."""
        from ..recipe.limits import show_text

        values = self.choices or (self.low, self.high)
        typed = tuple(show_text(t, 40) for t in self.typed or map(str, values))  # never an escape sequence
        names = [f"the choice {t}" for t in typed] if self.choices else [f"the low end {typed[0]}", f"the high end {typed[1]}"]
        return list(zip(values, names))

    def __str__(self) -> str:
        if self.kind == "choice":
            return f"{self.key}=choice:{','.join(map(str, self.choices))}"
        return f"{self.key}={self.kind}:{self.low}:{self.high}" + (":log" if self.log else "")


def _bound(text: str, what: str, where: str, kind: str) -> float | int:
    """LOW or HIGH of a space: an integer for ``int``, else a finite number."""
    try:
        value = int(text) if kind == "int" else float(text)
    except ValueError:
        raise UserError(f"{where}: {what} {text!r} is not {'an integer' if kind == 'int' else 'a number'}") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: {what} {text!r} is not a finite number")
    return value


def _choice_value(text: str) -> Any:
    """A choice as ``--set`` reads a value: TOML (numbers, booleans, quoted strings), else the text."""
    try:
        return parse_toml(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_space(text: str) -> Space:
    """``"train.optimizer.lr=loguniform:1e-4:1e-2"`` -> a :class:`Space`; a UserError saying
    what is wrong (and what would fit) otherwise. The key is checked against a recipe by
    :func:`check_spaces`, not here."""
    from ..recipe import MOVED_TRAIN_KEYS, _override_key

    where = f"--param {text!r}"
    key, sep, spec = text.partition("=")
    key = key.strip()
    path = _override_key(key) if key else None
    if not sep or path is None:
        raise UserError(f"{where}: expected KEY=SPACE, e.g. --param train.optimizer.lr=loguniform:1e-4:1e-2")
    if len(path) == 2 and path[0] == "train" and path[1] in MOVED_TRAIN_KEYS:
        raise UserError(f"{where}: `{path[1]}` belongs to the optimizer now: --param train.optimizer.{path[1]}={spec.strip()}")
    kind, _, rest = spec.strip().partition(":")
    if kind not in SPACE_KINDS:
        raise UserError(f"{where}: unknown space {kind!r} — {did_you_mean(kind, SPACE_KINDS, 'spaces')}: "
                        "loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH[:log], choice:A,B,C")  # fmt: skip
    key = ".".join(path)
    if kind == "choice":
        values = [v.strip() for v in rest.split(",")] if rest.strip() else []
        if not values or any(not v for v in values):
            raise UserError(f"{where}: choice needs values separated by commas, e.g. choice:concat,film,embedding")
        choices = tuple(_choice_value(v) for v in values)
        for value in choices:
            if not isinstance(value, (str, int, float, bool)):
                raise UserError(f"{where}: a choice must be a number, a boolean or a string (got {value!r})")
        if len(set(map(repr, choices))) != len(choices):
            raise UserError(f"{where}: a value is given twice")
        return Space(key, kind, choices=choices, text=text, typed=tuple(values))
    parts = rest.split(":")
    log = kind == "int" and len(parts) == 3
    if log and (third := parts.pop()) != "log":
        raise UserError(f"{where}: the third part of int:LOW:HIGH:log can only be 'log' (got {third!r})")
    if len(parts) != 2:
        raise UserError(f"{where}: expected {'int:LOW:HIGH[:log]' if kind == 'int' else f'{kind}:LOW:HIGH'}")
    low, high = (_bound(p, name, where, kind) for p, name in zip(parts, ("LOW", "HIGH")))
    if low >= high:
        raise UserError(f"{where}: LOW must be below HIGH (got {parts[0]} and {parts[1]})")
    if (kind == "loguniform" or log) and low <= 0:
        raise UserError(f"{where}: a log scale needs LOW > 0 (got {parts[0]})")
    return Space(key, kind, low, high, log, text=text, typed=tuple(p.strip() for p in parts))


def parse_spaces(texts: Sequence[str]) -> list[Space]:
    """Every ``--param``, each key once."""
    spaces = [parse_space(t) for t in texts]
    if not spaces:
        raise UserError("a sweep needs at least one --param KEY=SPACE, e.g. --param train.optimizer.lr=loguniform:1e-4:1e-2")
    keys = [space.key for space in spaces]
    for key in keys:
        if keys.count(key) > 1:
            raise UserError(f"--param {key} is given twice")
    return spaces


def check_spaces(recipe: Any, overrides: Any, spaces: Sequence[Space], *, label: str | None = None,
                 head: str | None = None) -> None:  # fmt: skip
    """Load the recipe with every choice (or both ends) of every space, before any trial runs:
    an unknown key, a value its component refuses or one that removes ``head`` (the sweep's
    objective's) is one RecipeError for them all, labelled
    ``label`` (the recipe swept), each problem naming the ``--param`` as typed. A problem every
    value meets (an unknown key) is said once; one that only some meet names them (``the low end
    -1 is refused: ...``); one found elsewhere (a head the generator chosen cannot feed) says
    which ``--param`` caused it."""
    import tomli_w

    from ..errors import Problem, RecipeError
    from ..recipe import load_recipe
    from ..recipe.limits import show_text

    problems: list[Problem] = []
    for space in spaces:
        param = f"--param {show_text(space.text or str(space))}"
        edges = space.edges()
        met: dict[tuple[str, str, str], list[str]] = {}  # a problem -> the values that meet it
        for value, name in edges:
            text = tomli_w.dumps({"v": value}).partition("=")[2].strip()  # the value as TOML, as --set reads it
            try:
                chosen = load_recipe(recipe, overrides, grid=[f"{space.key}={text}"], grid_flag="--param", label=label)
            except RecipeError as e:
                for p in e.problems:
                    where = param if p.where.startswith("--param ") else p.where
                    met.setdefault((where, p.key, p.message), []).append(name)
                continue
            if head is not None and head not in chosen.heads:  # its trials would train, then have no figure to report
                removed = f"it removes head '{head}', whose metric the sweep optimises (--metric names another head's)"
                met.setdefault((param, space.key, removed), []).append(name)
        for (where, key, message), names in met.items():
            which = " and ".join(names) if len(names) < len(edges) else ""
            if where != param:
                message = f"with {param}{f' ({which})' if which else ''}: {message}"
            elif which:
                message = f"{which} {'is' if len(names) == 1 else 'are'} refused: {message}"
            problems.append(Problem(where, key, message))
    if problems:
        raise RecipeError(label or "<dict>", problems)
