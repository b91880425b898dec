"""The public surface is what the docs say it is: every ``from digitsum... import X`` and every
``digitsum.X`` the README, docs/api.md and docs/plugins.md show resolves, every name ``digitsum``
exports is documented there, and no page tells users to import from ``digitsum.engine``.

Names are resolved through the package as a user would (``digitsum.X``, then a submodule), not
through the module that happens to define them today, so moving a module inside digitsum does
not break this test as long as the public name stays."""

from __future__ import annotations

import re
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import digitsum

REPO = Path(__file__).resolve().parents[1]
SURFACE = [REPO / "README.md", REPO / "docs" / "api.md", REPO / "docs" / "plugins.md"]
EVERY_PAGE = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
IMPORT_FROM = re.compile(r"\bfrom\s+(digitsum(?:\.\w+)*)\s+import\s+(\([\w\s,]*\)|[\w ,]+)")
IMPORT = re.compile(r"(?<![\w.])import\s+(digitsum(?:\.\w+)*)\b")
REFERENCE = re.compile(r"(?<![\w.\-/])(digitsum(?:\.\w+)+)")
# an entry-point group is named like a module but is no module: "entry-point group `digitsum.checks`"
GROUP_CONTEXT = re.compile(r"group\s+`(digitsum\.\w+)`")


def python_of(text: str) -> list[str]:
    """The Python a page shows: its ```python blocks and its inline code spans."""
    blocks = [body for lang, body in FENCE.findall(text) if lang.strip().split(" ")[0] in ("python", "py", "pycon")]
    outside = FENCE.sub("", text)
    return blocks + INLINE.findall(outside)


def entry_point_groups() -> set[str]:
    installed = entry_points()
    groups = {group for group in getattr(installed, "groups", installed) if group.startswith("digitsum.")}
    for page in EVERY_PAGE:
        groups |= set(GROUP_CONTEXT.findall(page.read_text()))
        groups |= set(re.findall(r'entry-points\."(digitsum\.\w+)"', page.read_text()))
    return groups


def documented() -> dict[str, set[str]]:
    """Dotted names the surface pages use -> where (page names)."""
    groups = entry_point_groups()
    found: dict[str, set[str]] = {}
    for page in SURFACE:
        for code in python_of(page.read_text()):
            names = [f"{module}.{name.strip()}" for module, names in IMPORT_FROM.findall(code)
                     for name in names.strip("()").split(",") if name.strip()]  # fmt: skip
            names += IMPORT.findall(code)
            names += [ref for ref in REFERENCE.findall(code) if ref not in groups]
            for name in names:
                found.setdefault(name, set()).add(page.name)
    return found


def resolve(dotted: str):
    """``digitsum.a.b``: each part an attribute of what came before, or else a submodule."""
    parts = dotted.split(".")
    obj, path = digitsum, "digitsum"
    for part in parts[1:]:
        path = f"{path}.{part}"
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = import_module(path)
        except ImportError as e:
            raise AssertionError(f"{dotted}: {path} is neither an attribute nor a module ({e})") from None
    return obj


def test_the_pages_name_what_this_test_reads():
    names = documented()
    for expected in ("digitsum.train", "digitsum.Callback", "digitsum.Fusion", "digitsum.testing.check_component"):
        assert expected in names, expected


@pytest.mark.parametrize("dotted", sorted(documented()))
def test_every_documented_name_resolves(dotted):
    resolve(dotted)


def test_every_export_is_documented():
    text = "\n".join((REPO / "docs" / page).read_text() for page in ("api.md", "plugins.md"))
    missing = [name for name in digitsum.__all__ if not re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text)]
    assert not missing, f"exported from digitsum but documented in neither docs/api.md nor docs/plugins.md: {missing}"


def test_every_export_resolves():
    for name in digitsum.__all__:
        assert getattr(digitsum, name) is not None, name


def test_no_page_tells_users_to_import_the_engine():
    pattern = re.compile(r"(from\s+digitsum\.engine\b[\w.]*\s+import|import\s+digitsum\.engine\b)")
    found = [f"{page.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
             for page in EVERY_PAGE for text in [page.read_text()] for m in pattern.finditer(text)]  # fmt: skip
    assert not found, "import these from digitsum instead:\n" + "\n".join(found)
