"""The recipe catalog: recipes shipped inside distributions, found by name.

Each is one entry point in the group ``digitsum.recipes``, valued with the folder holding it as a
dotted path from its package (``package.folder`` for ``<name>.toml``, ``package.folder:stem`` for
``<stem>.toml``; see docs/plugins.md). Listing them imports no plugin and no torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .discovery import BUILTIN_DISTRIBUTION, canonical_name
from .errors import UserError, did_you_mean
from .files import atomic_write, read_json, why_not_made
from .kinds import RECIPES
from .registry import declared_entry_points, refused_provider

#: Test metrics of the built-in recipes at their shipped settings, written by
#: ``benchmarks/record_recipes.py`` (recipe name -> record), shipped as package data.
METRICS_FILE = Path(__file__).resolve().parent / "recipes" / "metrics.json"

# A recipe name, optionally qualified by its distribution: "original", "digitsum-example:product"
_NAME = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*:)?[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class RecipeEntry:
    """A recipe declared by a distribution's entry point, and the file it names (for its weights'
    record, the subclass :class:`digitsum.weights.WeightsEntry`)."""

    name: str
    value: str  # "package.folder" or "package.folder:stem"
    distribution: str
    version: str
    path: Path | None  # None when the file cannot be located; ``error`` says why
    error: str | None = None

    @property
    def builtin(self) -> bool:
        return canonical_name(self.distribution) == BUILTIN_DISTRIBUTION

    @property
    def origin(self) -> str:
        """``built-in``, or the distribution and its version."""
        return "built-in" if self.builtin else f"{self.distribution} {self.version}"

    @property
    def qualified_name(self) -> str:
        return f"{self.distribution}:{self.name}"


def locate(value: str, name: str, suffix: str = ".toml") -> Path:
    """The file of the recipe ``name`` declared as ``value`` (``package.folder`` holding
    ``<name>.toml``, or ``package.folder:stem`` holding ``<stem>.toml``), found without importing
    the package; ``suffix=".json"`` finds a weights record the same way. Raises LookupError saying
    why when the package or the file is not there.
    """
    folder, _, stem = value.replace(" ", "").partition(":")
    top, *subfolders = folder.split(".")
    filename = f"{stem or name}{suffix}"
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: finds, never imports
    except Exception as e:  # a broken finder on sys.meta_path, an odd sys.modules entry
        raise LookupError(f"package '{top}' cannot be located: {type(e).__name__}: {e}") from None
    if spec is None:
        raise LookupError(f"package '{top}' is not installed")
    roots = list(spec.submodule_search_locations or [])
    if not roots:
        raise LookupError(f"'{top}' is a module, not a package: a recipe must lie in a package's folder")
    for root in roots:  # several for a namespace package
        candidate = Path(root, *subfolders, filename)
        if candidate.is_file():
            return candidate
    where = ", ".join(str(Path(root, *subfolders)) for root in roots)
    raise LookupError(f"no {filename} in {where}; is it declared as package data?")


Entry = TypeVar("Entry", bound=RecipeEntry)


def declared_files(kind: str, suffix: str, entry: type[Entry]) -> list[Entry]:
    """Every file of entry-point group ``kind`` (``recipes``: ``.toml``; ``weights``: ``.json``
    records) that the built-in and the allowed plugin distributions declare, built-ins first, each
    located by :func:`locate`. Entries whose file cannot be located are included, with their ``error``."""
    entries = []
    for dist, ep in declared_entry_points(kind):
        try:
            path, error = locate(ep.value, ep.name, suffix), None
        except LookupError as e:
            path, error = None, str(e)
        entries.append(entry(ep.name, ep.value, dist.name, dist.version, path, error))
    return entries


def recipe_entries() -> list[RecipeEntry]:
    """Every recipe of the built-in and the allowed plugin distributions (:func:`declared_files`)."""
    return declared_files(RECIPES, ".toml", RecipeEntry)


def recipe_names() -> list[str]:
    """The names :func:`resolve_recipe` accepts (bare; ``distribution:name`` works too)."""
    return sorted({e.name for e in recipe_entries()})


class RecipeNotFound(UserError):
    """No file and no shipped recipe has the name given."""


def find_recipe(name: str) -> RecipeEntry:
    """The shipped recipe called ``name`` (or ``distribution:name``): a built-in first, else a
    plugin's. Raises a UserError when none is, when two plugins ship it (the qualified form picks
    one), or when its file cannot be located."""
    dist, _, bare = name.rpartition(":")
    entries = recipe_entries()
    found = [e for e in entries if e.name == bare and (not dist or canonical_name(e.distribution) == canonical_name(dist))]
    builtin = [e for e in found if e.builtin]
    if builtin:
        found = builtin[:1]  # a built-in name wins over plugins' recipes of that name
    if not found:
        refused = refused_provider(RECIPES, bare, dist)
        if refused:
            raise UserError(f"recipe '{name}' comes from {refused}")
        choices = [e.qualified_name for e in entries] if dist else [e.name for e in entries]
        raise RecipeNotFound(f"no built-in or plugin recipe is called '{name}' — {did_you_mean(name, choices, 'recipes')}")
    if len(found) > 1:
        both = ", ".join(f"'{e.qualified_name}' ({e.origin})" for e in found)
        raise UserError(
            f"recipe '{name}' is shipped by more than one plugin: {both}; name the one you want in the qualified form"
        )
    entry = found[0]
    if entry.error:
        raise UserError(f"recipe '{name}' from {entry.origin} ({entry.value}) cannot be used: {entry.error}")
    return entry


def looks_like_name(text: str) -> bool:
    """Whether ``text`` could be a recipe name (``original``, ``dist:name``) rather than only a path."""
    return bool(_NAME.match(text))


def is_url(text: str) -> bool:
    """Whether ``text`` is a URL (``https://...``): digitsum reads files and names, and downloads none."""
    return bool(re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text))


def resolve_recipe(source: str | os.PathLike[str], relative_to: str | os.PathLike[str] | None = None,
                   what: str = "recipe") -> Path:  # fmt: skip
    """The recipe file that ``source`` names: an existing file (relative to ``relative_to``, by
    default the working folder) first, else a built-in recipe's name, else a plugin recipe's
    name (``distribution:name`` picks one of several). ``what`` words the error
    (``"parent recipe"`` for ``extends``). Raises a UserError, with a did-you-mean, when none fits.
    """
    text = os.fspath(source)
    if not text.strip():  # Path("") is the working folder: "is a folder" would puzzle
        raise UserError(f"the {what} is empty; give a recipe .toml file or a recipe name (digitsum list recipes)")
    candidate = Path(relative_to, text) if relative_to is not None else Path(text)  # an absolute text wins
    if candidate.is_file():
        return candidate
    if looks_like_name(text):
        try:
            return find_recipe(text).path  # type: ignore[return-value]  # find_recipe refuses entries without a path
        except RecipeNotFound:
            pass
    if candidate.is_dir():
        if what == "recipe" and (candidate / "recipe.toml").is_file():  # a run directory: what a user likely meant with it
            raise UserError(f"{candidate} is a run directory; its recipe is {candidate / 'recipe.toml'} (to train it again); "
                            f"to continue the run: digitsum run --resume {candidate}; to score it: digitsum eval {candidate}")  # fmt: skip
        raise UserError(f"{candidate} is a folder; give a recipe .toml file or a recipe name (digitsum list recipes)")
    if os.path.lexists(candidate):  # a pipe, a device, a dangling or looping link: there, but never read
        raise UserError(f"{candidate} is not a regular file; give a recipe .toml file or a recipe name (digitsum list recipes)")
    stem = Path(text).stem if text.endswith(".toml") else text  # "orignal.toml" -> "did you mean 'original'?"
    names = [e.name for e in recipe_entries()]
    if is_url(text):  # Path() would fold it into folders: http:/example.com/x.toml
        raise UserError(f"{what} not found: {text!r} is a URL; digitsum reads recipes from files and by name, and downloads "
                        "none: save it to a file first")
    if not looks_like_name(text):  # a path with folders: not a name either
        shipped = f" — a recipe named '{Path(text).stem}' ships with digitsum or a plugin: give its name" if Path(text).stem in names else ""
        raise UserError(f"{what} not found: no such file: {candidate}{shipped}")  # docs' recipes/add-2.toml, outside a checkout
    folder = f" in {relative_to}" if relative_to is not None else ""
    raise UserError(
        f"{what} '{text}' not found: no such file{folder}, and no built-in or plugin recipe has that name — "
        + did_you_mean(stem.rpartition(":")[2], names, "recipes")
    )


# -- copying ---------------------------------------------------------------------------------------


def copy_recipe(name: str, dest: str | os.PathLike[str], force: bool = False) -> Path:
    """Copy the shipped recipe ``name`` to ``dest`` byte for byte (comments kept), for editing.

    ``dest`` may be a folder (existing, or written with a trailing slash): the copy is then
    ``dest/<name>.toml``. An existing file is replaced only with ``force``, and only when it is
    an unedited copy of a recipe (what ``cp`` wrote: nothing of the user's is lost); the copy is
    written atomically. Returns the path written.
    """
    entry = find_recipe(name)
    if not os.fspath(dest).strip():
        raise UserError("the destination is empty: give the .toml file to write, or a folder (. for the working folder)")
    target = Path(dest)
    if target.is_dir() or os.fspath(dest).endswith(("/", os.sep)):
        target = target / f"{entry.name}.toml"
    if target.is_dir():
        raise UserError(f"{target} is a folder; give the path of the .toml file to write")
    if (target.exists() or target.is_symlink()) and not force:  # a link, even one to nothing, is the user's
        raise UserError(f"{target} already exists; give --force (from Python: force=True) to overwrite it")
    if target.is_symlink() or (target.exists() and not target.is_file()):  # a link, a pipe, a socket, a device: the user's
        raise UserError(f"{target} is not a regular file (a link, a pipe, a socket or a device): cp replaces only a copy it wrote; "
                        "choose another name")
    if target.exists() and not _unedited_copy(target):
        raise UserError(f"{target} already exists and is no unedited copy of a recipe: --force replaces only what `digitsum cp` "
                        "wrote, never a file of yours (your edits included); move it away, or choose another name")
    try:
        data = entry.path.read_bytes()  # type: ignore[union-attr]
    except OSError as e:
        raise UserError(f"cannot read recipe '{name}' ({entry.path}): {e.strerror or e}") from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create folder {target.parent}: {why_not_made(target.parent, e)}") from None
    atomic_write(target, lambda f: f.write(data))
    return target


def _unedited_copy(path: Path) -> bool:
    """Whether the regular file ``path`` holds, byte for byte, one of the recipes ``cp`` copies."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    for entry in recipe_entries():
        try:
            if entry.path is not None and entry.path.read_bytes() == data:
                return True
        except OSError:
            continue
    return False


# -- recorded metrics ------------------------------------------------------------------------------


def settings_digest(document: Mapping[str, Any]) -> str:
    """A hash of a merged recipe document's settings (everything but its name and description).

    Recorded with each recipe's metrics: when the recipe changes, its figures are no longer
    shown as those of its shipped settings.
    """
    settings = {k: v for k, v in document.items() if k not in ("name", "description")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def recorded_metrics() -> dict[str, dict[str, Any]]:
    """The table of measured test metrics of the built-in recipes (recipe name -> record):
    ``{"seed", "epochs", "test": {head: {metric: value}}, "seconds", "measured", "machine",
    "settings"}``. Empty when the table is missing or unreadable."""
    table = read_json(METRICS_FILE)
    return {k: v for k, v in table.items() if isinstance(v, dict)} if isinstance(table, dict) else {}
