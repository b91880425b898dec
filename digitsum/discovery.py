"""Finding plugin distributions: which installed distributions declare digitsum entry points,
which of them the allow/deny lists let in (docs/plugins.md), and a fingerprint of them all.

Each distribution is read on its own, so that one with broken metadata is reported (with its
name, version and the reason) instead of hiding every other plugin. Nothing here imports a
plugin, or torch: reading entry points needs package metadata only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from .errors import did_you_mean
from .kinds import CHECKS, KINDS, RECIPES, WEIGHTS

BUILTIN_DISTRIBUTION = "digitsum"
#: Every group digitsum reads, by kind: the component kinds (:mod:`digitsum.kinds`), ``recipes``
#: (:mod:`digitsum.catalog`), ``weights`` (:mod:`digitsum.weights`) and the doctor's ``checks``.
ENTRY_POINT_GROUPS = {**{name: kind.group for name, kind in KINDS.items()},
                      **{k: f"digitsum.{k}" for k in (RECIPES, WEIGHTS, CHECKS)}}  # fmt: skip

STRICT_ENV = "DIGITSUM_STRICT_PLUGINS"
ALLOW_ENV = "DIGITSUM_PLUGINS_ALLOW"
DENY_ENV = "DIGITSUM_PLUGINS_DENY"

_COMPONENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_OBJECT_REFERENCE = re.compile(r"^[\w.]+:[\w.]+$")
_RECIPE_REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$")  # package.folder[:stem]


def canonical_name(name: str) -> str:
    """A distribution name as package indexes compare them (PEP 503): ``My_Plugin`` -> ``my-plugin``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _env_list(variable: str) -> set[str]:
    return {canonical_name(n.strip()) for n in os.environ.get(variable, "").split(",") if n.strip()}


def strict_from_env() -> bool:
    """Whether ``DIGITSUM_STRICT_PLUGINS`` asks for strict plugin loading."""
    return os.environ.get(STRICT_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _refusal(distribution: str, allow: set[str], deny: set[str]) -> str | None:
    """Why the allow/deny lists refuse ``distribution`` (an empty ``allow``: every one), or None."""
    name = canonical_name(distribution)
    if name == BUILTIN_DISTRIBUTION:
        return None
    if name in deny:
        return f"disabled by {DENY_ENV}"
    if allow and name not in allow:
        return f"not in {ALLOW_ENV}"
    return None


@dataclass(frozen=True)
class PluginEntryPoint:
    """One component or recipe declared by a distribution (nothing imported)."""

    kind: str
    name: str
    value: str
    entry_point: metadata.EntryPoint = field(compare=False, repr=False)


@dataclass
class PluginDistribution:
    """An installed distribution that declares digitsum entry points."""

    name: str
    version: str
    location: str  # its metadata folder, e.g. .../site-packages/x-1.0.dist-info
    entry_points: list[PluginEntryPoint] = field(default_factory=list)
    #: Why it is not loaded: disabled by the allow/deny lists, or broken metadata.
    refused: str | None = None
    #: Problems in its metadata (entry points that cannot be used), reported, never raised.
    problems: list[str] = field(default_factory=list)
    #: Entry points in a ``digitsum.*`` group digitsum does not read (a misspelt group, such as
    #: ``digitsum.fusion``): each is also a problem; kept so that a lookup of the name can say so.
    misgrouped: list[metadata.EntryPoint] = field(default_factory=list)

    @property
    def builtin(self) -> bool:
        return canonical_name(self.name) == BUILTIN_DISTRIBUTION

    @property
    def disabled(self) -> bool:
        return self.refused is not None and self.refused.startswith(("disabled", "not in"))


def _read_distribution(dist: metadata.Distribution) -> PluginDistribution | None:
    """The digitsum entry points of one distribution; None when it declares none."""
    text = dist.read_text("entry_points.txt") or ""
    if "digitsum." not in text:
        return None  # most distributions: decided without parsing anything
    found = PluginDistribution(dist.metadata["Name"] or "unknown", dist.version or "?", "")
    found.location = os.path.abspath(str(getattr(dist, "_path", "") or dist.locate_file("")))
    try:
        entry_points = list(dist.entry_points)
    except Exception as e:  # a malformed entry_points.txt must not hide the other plugins
        found.refused = f"its entry_points.txt cannot be read: {type(e).__name__}: {e}"
        return found
    for ep in entry_points:
        kind = next((k for k, g in ENTRY_POINT_GROUPS.items() if g == ep.group), None)
        if kind is None:
            if ep.group.startswith("digitsum."):  # meant for digitsum, but it would never be read
                found.misgrouped.append(ep)
                hint = did_you_mean(ep.group, ENTRY_POINT_GROUPS.values(), "groups")
                found.problems.append(f"entry point '{ep.name} = {ep.value}' in [{ep.group}]: digitsum reads no such group — {hint}")
            continue
        problem = _entry_point_problem(ep, kind)
        if problem:
            found.problems.append(f"entry point '{ep.name} = {ep.value}' in [{ep.group}]: {problem}")
            continue
        found.entry_points.append(PluginEntryPoint(kind, ep.name, ep.value, ep))
    return found if found.entry_points or found.problems else None


def component_name_problem(name: str, what: str = "a component name") -> str | None:
    """Why ``name`` cannot name a component (or recipe, check) in recipes; None when it can."""
    if not isinstance(name, str) or not _COMPONENT_NAME.match(name):
        return f"{what} is letters, digits, '_', '-' or '.', without ':'"
    return None


def _entry_point_problem(ep: metadata.EntryPoint, kind: str) -> str | None:
    what = {RECIPES: "a recipe name", WEIGHTS: "a recipe name", CHECKS: "a check name"}.get(kind, "a component name")
    problem = component_name_problem(ep.name, what)
    if problem:
        return problem
    value = ep.value.replace(" ", "")
    if kind in (RECIPES, WEIGHTS):
        suffix = ".toml" if kind == RECIPES else ".json"
        if not _RECIPE_REFERENCE.match(value):
            return f"the value must be 'package.folder' (holding <name>{suffix}) or 'package.folder:stem' (holding <stem>{suffix})"
    elif not _OBJECT_REFERENCE.match(value):
        return "the value must be 'module:function'" if kind == CHECKS else "the value must be 'module:Class'"
    return None


def scan() -> list[PluginDistribution]:
    """Every installed distribution declaring digitsum entry points, the built-in one first,
    each refused by the allow/deny lists of the environment saying so.

    A distribution found twice on the path (e.g. installed, and again through PYTHONPATH) is
    taken once, from where Python would import it: the first occurrence.
    """
    allow, deny = _env_list(ALLOW_ENV), _env_list(DENY_ENV)
    seen: set[str] = set()
    found: list[PluginDistribution] = []
    for dist in metadata.distributions():
        try:
            # the name from the metadata folder's name where it has one: parsing every
            # METADATA file would cost more than the rest of `digitsum list` together
            key = canonical_name(getattr(dist, "_normalized_name", None) or dist.metadata["Name"] or "")
        except Exception:  # unreadable METADATA: not something we can report by name
            continue
        if not key or key in seen:
            continue
        seen.add(key)
        try:
            plugin = _read_distribution(dist)
        except Exception as e:  # any other metadata breakage stays with its distribution
            plugin = PluginDistribution(key, "?", "", refused=f"its metadata cannot be read: {type(e).__name__}: {e}")
        if plugin is None:
            continue
        plugin.refused = plugin.refused or _refusal(plugin.name, allow, deny)
        found.append(plugin)
    found.sort(key=lambda p: (not p.builtin, canonical_name(p.name)))
    return found


# -- fingerprint -------------------------------------------------------------------------------


def _package_state(module: str) -> list[object]:
    """Count, total size and newest mtime of the .py files of ``module``'s top-level package.

    Covers editable installs and plugins on PYTHONPATH, whose code changes without a new
    version number. Uses ``find_spec``, which locates a package without importing it.
    """
    top = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except Exception:
        return [top, "unfindable"]
    if spec is None:
        return [top, "missing"]
    roots = list(spec.submodule_search_locations or []) or ([spec.origin] if spec.origin else [])
    count = size = newest = 0
    for root in roots:
        paths = [Path(root)] if os.path.isfile(root) else Path(root).rglob("*.py")
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                continue
            count, size, newest = count + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return [top, roots, count, size, newest]


def fingerprint(plugins: list[PluginDistribution], *extra: object) -> str:
    """A hash that changes when any plugin distribution, its entry points or its code change."""
    state: list[object] = list(extra)
    for p in plugins:
        try:
            mtime = os.stat(p.location).st_mtime_ns if p.location else 0
        except OSError:
            mtime = 0
        eps = sorted((e.kind, e.name, e.value) for e in p.entry_points)
        packages = sorted({e.value.split(":")[0].split(".")[0] for e in p.entry_points})
        state.append([p.name, p.version, p.location, mtime, p.refused, p.problems, eps])
        state.extend(_package_state(top) for top in packages)
    return hashlib.sha256(json.dumps(state, default=str).encode()).hexdigest()[:32]
