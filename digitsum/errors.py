"""User-facing errors.

Anything the user can fix (a recipe, an override, a data file, a plugin, a path) raises a
:class:`UserError`. The CLI prints its message and exits with code 2, without a traceback.
Everything else is a bug in digitsum or a plugin and keeps its traceback.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class UserError(Exception):
    """An error the user can fix; its message says what is wrong and what would fit."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def _render_traceback_(self) -> list[str]:
        """What IPython (Jupyter) shows for it: the message, as the CLI prints it, without the
        library's frames above it (the hook IPython looks for on an exception)."""
        return [f"{type(self).__name__}: {self.message}"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a recipe: where it is and what to do about it."""

    where: str  # "recipes/x.toml:12" or "--set train.lr"
    key: str  # dotted key path, e.g. "backbone.hiden"; "" for the document itself
    message: str

    def render(self) -> str:
        key = f" {self.key}:" if self.key else ""
        return f"{self.where}{key} {self.message}"


class RecipeError(UserError):
    """Every problem found in a recipe, reported at once."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        lines = [f"{source}: {count}"] + [f"  {p.render()}" for p in problems[:SHOWN_PROBLEMS]]
        if len(problems) > SHOWN_PROBLEMS:  # 100,000 unknown keys printed 100,001 lines
            lines.append(f"  ... and {len(problems) - SHOWN_PROBLEMS} more (the whole list: RecipeError.problems)")
        super().__init__("\n".join(lines))


#: The most problems a recipe error's message lists; all of them stay in ``RecipeError.problems``.
SHOWN_PROBLEMS = 50


def install_command(extra: str) -> str:
    """The pip command that adds digitsum's optional ``extra`` (``onnx``, ``sweep``, ...) to this
    environment: for digitsum imported from a checkout (``pip install -e .``), from that checkout
    (from a package index, ``digitsum[extra]`` would replace the checkout by a released version)."""
    import tomllib

    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:  # a wheel's digitsum/ has no pyproject.toml of digitsum's beside it
        with open(os.path.join(checkout, "pyproject.toml"), "rb") as file:
            ours = tomllib.load(file).get("project", {}).get("name") == "digitsum"
    except (OSError, ValueError, AttributeError):
        ours = False
    if ours:
        shown = "." if checkout == os.getcwd() else checkout
        return f'pip install -e "{shown}[{extra}]"'
    return f'pip install "digitsum[{extra}]"'


def did_you_mean(name: str, choices: Iterable[str], what: str = "") -> str:
    """A hint naming the closest valid choices, and all of them when there are few.

    >>> did_you_mean("flim", ["concat", "film", "embedding"])
    "did you mean 'film'? (valid: concat, embedding, film)"
    """
    choices = sorted(set(choices))
    if not choices:
        return f"no {what or 'choices'} are available"
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    valid = ", ".join(choices) if len(choices) <= 12 else ", ".join(choices[:12]) + ", ..."
    if close:
        guesses = " or ".join(f"'{c}'" for c in close)
        return f"did you mean {guesses}? (valid: {valid})"
    return f"valid: {valid}"


def recipe_text(value: Any) -> str:
    """A value as a recipe would write it, for messages that tell the user what to write
    (``true``, ``"0.9"``, ``[32, 64]``: JSON and TOML agree on these); its repr otherwise.

    >>> recipe_text(True), recipe_text((32, 64)), recipe_text("adamw")
    ('true', '[32, 64]', '"adamw"')
    """
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return shown_repr(value)


def shown_repr(value: Any) -> str:
    """``repr(value)``, but an integer too long for Python to write in decimal (over 4300 digits:
    its guard against slow conversions) as a description, never a ValueError in a message."""
    try:
        return repr(value)
    except ValueError:
        if isinstance(value, int):
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        raise


def clipped(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, ending in ``...`` when cut: a value quoted in a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_text(error: BaseException, limit: int = 200) -> str:
    """What ``error`` says, on one line and :func:`clipped` to ``limit`` characters (its type's
    name when it says nothing): a library's exception quoted in a user's message."""
    return clipped(" ".join(str(error).split()) or type(error).__name__, limit)


def raised_in(code: Any, error: BaseException) -> str:
    """" in loss() (head.py, line 12)": the innermost frame of ``error``'s traceback in the file
    that defines ``code`` (a component's class or a doctor check: its author's code), so that the
    message says which function raised; "" when none is (the exception came from digitsum or
    torch alone)."""
    try:
        source = inspect.getsourcefile(code)
    except (TypeError, OSError):
        return ""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if source and f.filename == source]
    return f" in {frames[-1].name}() ({os.path.basename(source)}, line {frames[-1].lineno})" if frames else ""
