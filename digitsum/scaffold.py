"""`digitsum new-plugin`: a plugin package that installs, lists, trains and tests with no edits.

The files come from ``digitsum/templates/plugin`` (package data), rendered with
:class:`string.Template`. They are written to a temporary folder beside the target and moved
into place at the end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import importlib.util
import keyword
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from . import __version__
from .discovery import canonical_name
from .errors import UserError
from .errors import did_you_mean
from .kinds import CHECKS
from .kinds import KINDS as ALL_KINDS

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*$")


@dataclass(frozen=True)
class Part:
    """One thing a plugin can be scaffolded with: a component of a kind, or a doctor check.

    Its code is ``_package_/<module>.py.tmpl``, its own tests (if any) ``tests/test_<module>.py.tmpl``;
    both are left out when the part is. Its entry point is ``<short>_<word>`` in the group
    ``digitsum.<group>``, valued ``<package>.<module>:<object>`` (the class ``<Short><Word>``, or
    the function ``<short>_<word>`` for a check). In the shipped recipe, ``${<group>}`` is
    ``own`` (formatted with the part's name) when the plugin has it, else ``builtin``.
    """

    group: str
    label: str
    word: str
    module: str
    words: frozenset[str]
    builtin: str = ""
    own: str = 'type = "{dist}:{name}"'  # qualified: a namesake another plugin brings cannot take its place
    function: bool = False


#: The recipe's table for a kind the plugin does not provide: digitsum's built-ins ("": none).
_BUILTIN = {
    "datasets": 'type = "single_digit"',
    "fusions": 'type = "concat"',
    "heads": 'type = "classify"',
    "optimizers": 'type = "adam"\nlr = 2e-3',
    "schedules": 'type = "onecycle"\nmomentum = [0.85, 0.95]  # the optimizer\'s momentum (Adam\'s beta1) cycled against the lr (0.95 -> 0.85 at the peak -> 0.95)',
    "loggers": "",
}
#: What a part's own recipe table says where it is not ``type = "<dist>:<name>"``.
_OWN = {"loggers": '\n[log.{name}]  # its parameters go here\ntype = "{dist}:{name}"'}

#: Everything a plugin can be scaffolded with, in order: every component kind, then a doctor check.
PARTS: dict[str, Part] = {
    **{
        name: Part(name, kind.label, kind.word, kind.contract.lower(), frozenset(kind.words()), _BUILTIN.get(name, ""),
                   _OWN.get(name, Part.own))
        for name, kind in ALL_KINDS.items()
    },
    CHECKS: Part(CHECKS, "doctor check", "check", "check", frozenset({"check", "checks"}), own="", function=True),
}  # fmt: skip
KINDS = tuple(PARTS)


def kind_words() -> str:
    """What ``--kind`` accepts, for ``digitsum new-plugin --help``: each part's singular words."""
    def singulars(part: Part) -> list[str]:
        first = part.group.removesuffix("s")
        return [first, *sorted(w for w in part.words - {first} if not (w.endswith("s") and w[:-1] in part.words))]

    return ", ".join("/".join(singulars(part)) for part in PARTS.values())


def part_named(word: str) -> str:
    """The part (its group: ``fusions``, ``checks``) that ``word`` names; a UserError if none."""
    words = {w: name for name, part in PARTS.items() for w in part.words}
    try:
        return words[word.lower()]
    except KeyError:
        raise UserError(f"unknown kind '{word}' — {did_you_mean(word.lower(), words)}") from None


#: How a scaffolded plugin is installed: editable, with its `test` extra (pytest) for its tests.
INSTALL_COMMAND = 'pip install -e ".[test]"'


def next_steps(created: str | Path) -> str:
    """The shell commands to run in a plugin just created in ``created``: install it with its
    test extra, list it, run its tests (the hint ``digitsum new-plugin`` prints)."""
    return f"cd {shlex.quote(str(created))} && {INSTALL_COMMAND} && digitsum list && python -m pytest"


def plugin_names(name: str) -> dict[str, str]:
    """Distribution, import package and short name for a plugin NAME; a UserError if unusable."""
    if not _NAME.match(name):
        raise UserError(
            f"plugin name {name!r} is not a valid distribution name: use letters, digits and "
            "'-', '_' or '.' between them, starting with a letter (e.g. digitsum-shapes)"
        )
    package = canonical_name(name).replace("-", "_")
    short = package.removeprefix("digitsum_") or package
    if canonical_name(name) == "digitsum" or package in sys.stdlib_module_names or keyword.iskeyword(package):
        raise UserError(f"plugin name {name!r} would shadow the module '{package}'; pick another, e.g. digitsum-{short}-plugin")
    if _shadows_an_installed_module(package, name):
        raise UserError(f"plugin name {name!r} would shadow the installed module '{package}' (pip install would clash with it, "
                        f"and pytest in the plugin's folder would import the wrong one); pick another, e.g. digitsum-{short}")  # fmt: skip
    camel = "".join(part.capitalize() for part in short.split("_"))
    return {"dist": name, "package": package, "short": short, "camel": camel}


def _shadows_an_installed_module(package: str, name: str) -> bool:
    """Whether a module ``package`` is importable and is not this plugin's own, installed before
    (found without importing it)."""
    try:
        if importlib.util.find_spec(package) is None:
            return False
    except (ImportError, ValueError):
        return False
    from .discovery import scan

    return not any(canonical_name(p.name) == canonical_name(name) for p in scan())


def _context(names: dict[str, str], chosen: list[str]) -> dict[str, str]:
    from .contracts import CONTRACT_VERSION

    short, camel, package = names["short"], names["camel"], names["package"]
    # per part chosen: (its name, the object its entry point names)
    objects = {}
    for group in chosen:
        part = PARTS[group]
        name = f"{short}_{part.word}"
        objects[group] = (name, name if part.function else f"{camel}{part.word.capitalize()}")
    entry_points = "".join(
        f'[project.entry-points."digitsum.{group}"]\n{name} = "{package}.{PARTS[group].module}:{obj}"\n\n'
        for group, (name, obj) in objects.items()
    )
    listed = ", ".join(f"{PARTS[g].label} '{name}'" for g, (name, _) in objects.items())
    return {
        **names,
        "contract": str(CONTRACT_VERSION),
        "digitsum_version": __version__,
        "install": INSTALL_COMMAND,
        "component_list": listed,
        "component_table": "\n".join(
            ["| kind | name | code |", "|---|---|---|"]
            + [f"| {PARTS[g].label} | `{name}` | `{package}.{PARTS[g].module}.{obj}` |" for g, (name, obj) in objects.items()]
        ),
        "entry_points": entry_points.rstrip("\n") + "\n",
        # the recipe: each part's table (its own, or a built-in's), a second head on the generator's other target
        **{group: part.own.format(dist=names["dist"], name=objects[group][0]) if group in objects else part.builtin
           for group, part in PARTS.items()},
        "second_target": "compare" if "datasets" in objects else "sum",
        **{f"{PARTS[g].module}_name": name for g, (name, _) in objects.items()},
        **{f"{PARTS[g].module}_class": obj for g, (_, obj) in objects.items()},
    }


def _templates(folder: Traversable | None = None, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path relative to the plugin templates, text) of every template file under ``folder``."""
    for child in (folder or resources.files("digitsum") / "templates" / "plugin").iterdir():
        if child.is_dir():
            yield from _templates(child, f"{prefix}{child.name}/")
        elif child.name.endswith(".tmpl"):
            yield f"{prefix}{child.name}", child.read_text(encoding="utf-8")


def scaffold_plugin(name: str, directory: str | Path | None = None, kinds: Sequence[str] | None = None) -> Path:
    """Create plugin package ``name`` in ``directory`` (default ``./name``); return its path.

    ``kinds``: which parts to include, by any word for them (``fusion``, ``optimizers``,
    ``check``; default all of :data:`PARTS`); the recipe uses built-ins for the component kinds
    left out. The target must not exist or be an empty folder.
    """
    names = plugin_names(name)
    requested = {part_named(k) for k in kinds or KINDS}
    chosen = [k for k in KINDS if k in requested]
    target = Path(directory) if directory is not None else Path(name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target} already exists and is not empty; choose another --dir")
    context = _context(names, chosen)
    skipped = {f"{folder}{PARTS[k].module}.py.tmpl" for k in KINDS if k not in chosen for folder in ("_package_/", "tests/test_")}
    parent = target.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp"))
    except OSError as e:
        raise UserError(f"cannot create {target}: {e.strerror or e}") from None
    try:
        for relative, text in _templates():
            if relative in skipped:
                continue
            out = relative.removesuffix(".tmpl").replace("_package_", names["package"]).replace("_short_", names["short"])
            out = ".gitignore" if out == "gitignore" else out
            path = staging / out
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(text).substitute(context), encoding="utf-8")
        if target.is_dir():
            target.rmdir()  # empty, checked above
        os.replace(staging, target)
    except OSError as e:
        raise UserError(f"cannot create {target}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
