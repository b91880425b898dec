"""``digitsum doctor RECIPE --repair OUT.toml``: the recipe with the verified fixes applied.

Only recipe keys are written, and only those the doctor measured to restore learning
(``Report.repair``); causes in code are named by the report, never patched. The recipe is
written as its document (``extends`` and ``--set`` overrides applied, no defaults filled in),
atomically (a temporary file beside it, then renamed), and never over the input unless asked.
A run directory's ``recipe.toml`` loses its ``[provenance]``: the repaired recipe is a new one,
not the record of that run (see :func:`write_repaired`).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError, recipe_text
from ..files import read_bytes, write_text
from ..recipe.limits import MAX_BYTES


def check_target(source: str | os.PathLike[str], out: Path, force: bool = False) -> Path:
    """``out`` if ``--repair`` may write there (checked before the doctor runs, and again when it
    writes): never a file the doctor did not write (``force`` or not); the recipe being diagnosed
    only with ``force`` when an earlier ``--repair`` wrote it; not a folder; in a folder that exists."""
    from ..catalog import resolve_recipe

    out = Path(out)
    try:
        source_path = resolve_recipe(source).resolve()
    except Exception:
        source_path = None
    if out.is_dir():
        raise UserError(f"--repair {out}: is a folder; give a file name such as fixed.toml")
    if out.exists() and not out.is_file():  # refused here, not after the doctor's seconds, even with --force
        raise UserError(f"--repair {out}: is not a regular file (a pipe, a socket or a device); give a file name such as fixed.toml")
    ours = out.exists() and _written_by_doctor(out)
    if source_path is not None and out.resolve() == source_path and not (ours and force):
        raise UserError(f"--repair {out}: that is the recipe being diagnosed; write the repaired recipe elsewhere"
                        + (", or add --force (an earlier --repair wrote it)" if ours else ""))
    if out.exists() and not ours:  # --force or not: a file of the user's is never replaced
        raise UserError(f"--repair {out}: the file exists and the doctor did not write it, or it was edited since; choose another file "
                        "(--force replaces only a recipe an earlier --repair wrote)")
    if not out.parent.resolve().is_dir():
        raise UserError(f"--repair {out}: folder {out.parent} does not exist")
    return out


def write_repaired(source: str | os.PathLike[str], overrides: Sequence[str], repair: Mapping[str, Any], out: Path,
                   force: bool = False) -> str:  # fmt: skip
    """Write the repaired recipe to ``out`` atomically; return the diff (unified, TOML) between
    the recipe as it was and as written. Raises UserError where :func:`check_target` refuses."""
    from ..recipe import load_recipe, recipe_document, toml_text
    from ..recipe.validate import RECIPE_NAME

    out = check_target(source, out, force)
    doc = recipe_document(source, list(overrides))
    fixed = copy.deepcopy(doc)
    # [provenance] records the run that wrote it (versions, device, time, init_sha256): false of
    # a recipe no run has trained yet. Reading it back changes one thing, a [train] in 0.1.0's
    # spelling read as the run trained; recipe_document has already upgraded that [train] to the
    # current spelling, which reads the same without it.
    provenance = fixed.pop("provenance", None)
    # laid over the recipe as the doctor laid them when it verified them: a fix that changes a
    # component's `type` replaces its table whole (the old type's parameters are not the new one's)
    fixed = recipe_document(fixed, dict(repair))
    # a new recipe: named by its file (its runs go to runs/<file>/, not beside the broken
    # recipe's), and described as what it is, not as the recipe it mends
    was = fixed.get("name") or Path(source).stem
    fixed["name"] = out.stem if RECIPE_NAME.fullmatch(out.stem) else f"{was}-repaired"
    fixed["description"] = f"{was}, with the fixes `digitsum doctor` verified: " + ", ".join(f"{k} = {recipe_text(v)}" for k, v in repair.items())
    load_recipe(fixed, label=str(out))  # what is written loads: a RecipeError here, and nothing written
    before, after = toml_text(doc), toml_text(fixed)
    rest = "".join(f"#   {k} = {v!r}\n" for k, v in repair.items())
    if provenance is not None:
        rest += "# The run's [provenance] is left out: this is a new recipe, not that run's record.\n"
    rest += after
    write_text(out, f"# {out.name}: {_HEADER} {source} --repair` with the fixes it verified ({_digest(rest)}):\n{rest}")
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), f"{source}", f"{out}"))


_HEADER = "written by `digitsum doctor"  # the first line of every recipe --repair writes


def _digest(rest: str) -> str:
    """What the first line of a repaired recipe says of the lines below it: an edit shows."""
    return f"sha256 {hashlib.sha256(rest.encode('utf-8')).hexdigest()[:16]} of the lines below"


def _written_by_doctor(path: Path) -> bool:
    """Whether ``path`` is a recipe an earlier ``--repair`` wrote and nobody edited since (its
    first line says so, with the digest of the lines below it): an edited one is the user's."""
    try:
        if path.stat().st_size > MAX_BYTES:  # no recipe is that large: not read whole
            return False
        # line endings an editor or git changed (CRLF) are no edit of the user's
        first, _, rest = read_bytes(path).decode("utf-8").replace("\r\n", "\n").partition("\n")
    except (OSError, ValueError):
        return False
    return _HEADER in first and first.endswith(f"({_digest(rest)}):")
