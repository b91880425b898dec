"""`digitsum new-plugin`: a plugin package that installs, lists, trains and tests with no edits.

The files come from ``digitsum/templates/plugin`` (package data), rendered with
:class:`string.Template`. They are written to a temporary folder beside the target and moved
into place at the end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import keyword
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from . import __version__
from .discovery import canonical_name
from .errors import UserError
from .kinds import KINDS as ALL_KINDS
from .registry import registry_for

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*$")
#: The kinds a plugin can be scaffolded with (a template each, ``_package_/<contract>.py.tmpl``),
#: and the built-in a recipe uses for a kind the plugin does not provide.
_BUILTIN_FALLBACK = {"datasets": "single_digit", "fusions": "concat", "heads": "classify"}
KINDS = tuple(_BUILTIN_FALLBACK)
#: The module of each kind's component in the plugin package: ``generator``, ``fusion``, ``head``.
_MODULES = {k: ALL_KINDS[k].contract.lower() for k in KINDS}
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
    camel = "".join(part.capitalize() for part in short.split("_"))
    return {"dist": name, "package": package, "short": short, "camel": camel}


def _context(names: dict[str, str], kinds: list[str]) -> dict[str, str]:
    from .contracts import CONTRACT_VERSION

    short, camel, package = names["short"], names["camel"], names["package"]
    components = {k: (f"{short}_{ALL_KINDS[k].word}", f"{camel}{ALL_KINDS[k].word.capitalize()}") for k in kinds}
    groups = "".join(
        f'[project.entry-points."{ALL_KINDS[kind].group}"]\n{n} = "{package}.{_MODULES[kind]}:{cls}"\n\n'
        for kind, (n, cls) in components.items()
    )
    types = {k: components[k][0] if k in kinds else builtin for k, builtin in _BUILTIN_FALLBACK.items()}
    second_target = "compare" if "datasets" in kinds else "sum"
    heads = "".join(f'\n[heads.{t}]\ntype = "{types["heads"]}"\ntarget = "{t}"\n' for t in ("digit", second_target))
    listed = ", ".join(f"{ALL_KINDS[k].label} '{n}'" for k, (n, _) in components.items())
    return {
        **names,
        "contract": str(CONTRACT_VERSION),
        "digitsum_version": __version__,
        "install": INSTALL_COMMAND,
        "component_list": listed,
        "component_table": "\n".join(
            ["| kind | name | class |", "|---|---|---|"]
            + [f"| {ALL_KINDS[k].label} | `{n}` | `{package}.{_MODULES[k]}.{c}` |" for k, (n, c) in components.items()]
        ),
        "entry_points": groups.rstrip("\n") + "\n",
        "data_type": types["datasets"],
        "backbone_type": types["fusions"],
        "heads": heads,
        "imports": "".join(f"from {package}.{_MODULES[k]} import {c}\n" for k, (_, c) in components.items()),
        "classes": ", ".join(c for _, c in components.values()),
        "registered": ", ".join(f'("{k}", "{n}")' for k, (n, _) in components.items()),
        **{f"{_MODULES[k]}_name": n for k, (n, _) in components.items()},
        **{f"{_MODULES[k]}_class": c for k, (_, c) in components.items()},
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

    ``kinds``: which component kinds to include (default all three); the recipe uses built-ins
    for the others. The target must not exist or be an empty folder.
    """
    names = plugin_names(name)
    requested = {registry_for(k).kind for k in kinds or KINDS}
    if requested - set(KINDS):
        raise UserError(f"--kind {', '.join(sorted(requested - set(KINDS)))}: new-plugin makes {', '.join(KINDS)} (an empty plugin otherwise)")
    chosen = [k for k in KINDS if k in requested]
    target = Path(directory) if directory is not None else Path(name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target} already exists and is not empty; choose another --dir")
    context = _context(names, chosen)
    skipped = {f"_package_/{_MODULES[k]}.py.tmpl" for k in KINDS if k not in chosen}
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
