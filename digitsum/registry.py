"""Registries of components, one per kind (:mod:`digitsum.kinds`).

Both ways in end in :meth:`Registry.add`: entry points (names read from package metadata, each
component imported on first use, under guard, so one broken or hostile component fails
alone: see :func:`_isolated_import`) and the decorator
``@fusions.register("name")`` for a class defined in the running process. This module imports
neither torch nor any component: ``digitsum --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from . import discovery
from .discovery import BUILTIN_DISTRIBUTION, PluginDistribution, canonical_name
from .errors import UserError, did_you_mean
from .kinds import KINDS, kind_named


class PluginError(UserError):
    """A component could not be loaded, or breaks its contract."""


@dataclass(frozen=True)
class Origin:
    """Where a component comes from: a distribution's entry point, or in-process code."""

    value: str  # "module:object"
    distribution: str | None = None  # None: registered in-process by the decorator
    version: str | None = None

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION

    def __str__(self) -> str:
        if self.builtin:
            return "built-in"
        if self.distribution is None:
            return f"local ({self.value})"
        return f"{self.distribution} {self.version}"


@dataclass
class Entry:
    """One registered component; its object is imported on first :meth:`load`."""

    kind: str
    name: str
    origin: Origin
    _entry_point: metadata.EntryPoint | None = None
    _obj: Any = None
    error: str | None = field(default=None)

    @property
    def qualified_name(self) -> str:
        return f"{self.origin.distribution}:{self.name}" if self.origin.distribution else self.name

    def load(self) -> Any:
        """The component class, imported and checked against its contract."""
        if self._obj is None and self.error is None:
            what = f"{KINDS[self.kind].label} '{self.name}' from {self.origin}"
            try:
                with _isolated_import(what, slow_note=not self.origin.builtin):
                    obj = self._entry_point.load() if self._entry_point else None
                    self.error = _contract_problem(self.kind, obj)  # its class attributes are its code too
            except KeyboardInterrupt:  # the user's Ctrl-C: digitsum stops as anywhere else
                raise
            except BaseException as e:  # a plugin's import can fail in any way, sys.exit() included
                self.error = _failure_text(e, self.origin.value)
            else:
                if self.error is None:
                    self._obj = obj
        if self.error is not None:
            raise PluginError(
                f"{KINDS[self.kind].label} '{self.name}' from {self.origin} "
                f"({self.origin.value}) cannot be used: {self.error}"
            )
        return self._obj


def _described(origin: Origin) -> str:
    """An origin with its entry point: "plugin-x 1.0 (mod:Cls)", "local (mod:Cls)" (which names it already)."""
    return str(origin) if origin.distribution is None else f"{origin} ({origin.value})"


#: Seconds a plugin's import may take before a note on stderr says that it is still going.
SLOW_IMPORT_S = 5.0
_SHOWN_OUTPUT = 2000  # characters of what an import printed shown in the note


def load_entry_point(ep: discovery.PluginEntryPoint, what: str) -> Any:
    """The object a plugin's entry point names (a doctor check's function), imported as
    components are (its output kept off stdout); a PluginError saying why it cannot be."""
    try:
        with _isolated_import(what, slow_note=True):
            return ep.entry_point.load()
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a plugin's import can fail in any way, sys.exit() included
        raise PluginError(f"{what} ({ep.value}) cannot be used: {_failure_text(e, ep.value)}") from None


def load_check(ep: discovery.PluginEntryPoint, dist: PluginDistribution) -> Callable[..., Any]:
    """A plugin's doctor check (``digitsum.checks``), imported as components are and checked to
    be what the doctor calls, ``check(probe)``; a PluginError saying why it cannot be used."""
    import inspect

    from .contract_checks import accepts

    what = f"doctor check '{ep.name}' from {dist.name} {dist.version}"
    check = load_entry_point(ep, what)
    if not callable(check):
        problem = f"it is a {type(check).__name__}, not a function taking a Probe"
    elif not accepts(check, 1):
        problem = f"{getattr(check, '__name__', ep.name)}{inspect.signature(check)} cannot take what digitsum passes: a check is check(probe)"
    else:
        problem = None
    if problem:
        raise PluginError(f"{what} ({ep.value}) cannot be used: {problem}")
    return check


def _failure_text(error: BaseException, reference: str) -> str:
    """Why importing ``reference`` ("package.module:Class") failed, with the line of the
    plugin's own code it failed at: an ImportError's text names the module it imported from
    (digitsum's, say), not the author's line that asked."""
    if isinstance(error, SystemExit):
        return f"it tried to end the program while being imported (SystemExit({error.code!r}))"
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, SyntaxError):  # its text names the file and the line already
        return text
    package = reference.partition(":")[0].split(".")[0]
    own = [(frame, line) for frame, line in traceback.walk_tb(error.__traceback__)
           if str(frame.f_globals.get("__name__", "")).split(".")[0] == package]  # fmt: skip
    if not own:
        return text
    frame, line = own[-1]
    return f"{text} (at {frame.f_code.co_filename}:{line})"


def _note(text: str) -> None:
    sys.stderr.write(f"note: {text}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def _isolated_import(what: str, slow_note: bool) -> Iterator[None]:
    """Import a component without letting its module speak on stdout (``digitsum list --json``
    must stay JSON): whatever it prints, through ``sys.stdout`` or file descriptor 1, is shown
    as a note on stderr instead. A note also says so when the import takes over
    :data:`SLOW_IMPORT_S` seconds."""
    timer = threading.Timer(SLOW_IMPORT_S, _note, [f"importing {what}… (still going)"])
    timer.daemon = True
    if slow_note:
        timer.start()
    captured, raw = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), _fd_redirected(1, raw):
            yield
    finally:  # a failed import's output is shown too: it may say why
        timer.cancel()
        printed = (captured.getvalue() + raw.getvalue()).strip()
        if printed:
            shown = "".join(c if c.isprintable() or c == "\n" else "?" for c in printed[:_SHOWN_OUTPUT])
            _note(f"importing {what} printed (kept off stdout):\n{shown}")


@contextlib.contextmanager
def _fd_redirected(fd: int, text: io.StringIO) -> Iterator[None]:
    """Send what is written to file descriptor ``fd`` meanwhile to ``text`` (on exit); a process
    without that descriptor is left alone."""
    import tempfile  # only once a component is imported: `digitsum --help` stays fast

    for stream in {sys.stdout, sys.__stdout__}:
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.__stdout__.flush()  # its buffer holds what the import wrote through it
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            text.write(sink.read(4 * _SHOWN_OUTPUT).decode("utf-8", "replace"))


def _contract_problem(kind: str, obj: Any) -> str | None:
    """Why ``obj`` is not a valid component of ``kind``, or None when it is."""
    from . import contract_checks, contracts  # components import torch anyway; the registry itself does not

    base = getattr(contracts, KINDS[kind].contract)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        return f"{obj!r} is not a subclass of digitsum.{base.__name__}"
    params = getattr(obj, "Params", None)
    if not (isinstance(params, type) and issubclass(params, contracts.Params)):
        return f"{obj.__name__}.Params must subclass digitsum.Params"
    missing = [name for name in base.required_params if name not in params.model_fields]
    if missing:
        return f"{obj.__name__}.Params has no field {', '.join(missing)}: every {KINDS[kind].label} has it (docs/plugins.md)"
    if getattr(obj, "contract", None) != contracts.CONTRACT_VERSION:
        return (
            f"it was written for component contract {getattr(obj, 'contract', None)!r}, "
            f"this digitsum speaks contract {contracts.CONTRACT_VERSION}; "
            "install a version of the plugin made for it (its author: contract = "
            f"{contracts.CONTRACT_VERSION} once the class keeps this contract, docs/plugins.md)"
        )
    return contract_checks.signature_problem(obj, base)


class Registry:
    """Components of one kind, by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.label = KINDS[kind].label
        self.group = KINDS[kind].group
        self._entries: dict[str, list[Entry]] = {}
        self._discovered = False

    # -- registration ---------------------------------------------------------------------

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator registering a component defined in the running process.

        The class is checked against its kind's contract at once (a PluginError names what is
        wrong), so a mistake shows in the cell that defines the class, not in a later run.
        Running the same definition again (a notebook cell re-run, edited or not) replaces the
        class registered under ``name`` by the new one.
        """
        problem = discovery.component_name_problem(name)
        if problem:
            raise PluginError(f"{self.label} name {name!r}: {problem}")

        def decorator(cls: type) -> type:
            origin = Origin(f"{getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', repr(cls))}")
            problem = _contract_problem(self.kind, cls)
            if problem:
                raise PluginError(f"{self.label} '{name}' ({origin.value}) cannot be registered: {problem}")
            self.discover()  # a built-in's or an installed plugin's name is refused here, not at a later use
            self.add(Entry(self.kind, name, origin, _obj=cls))
            return cls

        return decorator

    def add(self, entry: Entry) -> None:
        """Add an entry; a second one under the same name from the same process is refused."""
        existing = self._entries.setdefault(entry.name, [])
        for i, other in enumerate(existing):
            if other.origin == entry.origin:
                if entry.origin.distribution is None:  # the same class defined again (a cell re-run): the new one
                    existing[i] = entry
                return  # the same component seen twice (e.g. an entry point re-read)
            if other.origin.value == entry.origin.value and None in (other.origin.distribution, entry.origin.distribution):
                return  # a plugin module that also decorates the class its entry point names
            if entry.origin.distribution is None or other.origin.distribution is None:
                raise PluginError(
                    f"{self.label} '{entry.name}' is registered twice: by {_described(other.origin)} "
                    f"and by {_described(entry.origin)}; rename one of them"
                    + (f" (or forget the first: digitsum.registry.{self.kind}.remove({entry.name!r}))"
                       if other.origin.distribution is None else "")
                )
        # Two distributions defining one name are both kept: using the bare name is then an
        # error naming both (unless one is built-in: it wins, with a warning), and
        # "distribution:name" picks one. Nothing else breaks.
        existing.append(entry)

    def remove(self, name: str) -> None:
        """Forget what :meth:`register` added under ``name`` in this process (a notebook cleaning
        up, a test); a built-in's or an installed plugin's component stays, refused with a
        UserError, as is a name nothing registered."""
        self.discover()
        entries = self._entries.get(name, [])
        kept = [e for e in entries if e.origin.distribution is not None]
        if len(kept) == len(entries):
            what = (f"comes from {', '.join(_described(e.origin) for e in kept)}" if kept
                    else f"is not registered — {did_you_mean(name, self._entries, KINDS[self.kind].plural)}")  # fmt: skip
            raise UserError(f"{self.label} '{name}' {what}: remove() forgets only what register() added in this process")
        if kept:
            self._entries[name] = kept
        else:
            del self._entries[name]

    def discover(self) -> None:
        """Read this kind's entry points from installed, allowed distributions (once)."""
        if self._discovered:
            return
        self._discovered = True
        for dist, ep in declared_entry_points(self.kind):
            origin = Origin(ep.value, dist.name, dist.version)
            self.add(Entry(self.kind, ep.name, origin, _entry_point=ep.entry_point))

    def has_local_entries(self) -> bool:
        """Whether anything was registered in this process (by the decorator)."""
        return any(e.origin.distribution is None for entries in self._entries.values() for e in entries)

    # -- lookup ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        """Every entry, duplicates included, sorted by name."""
        for name in self.names():
            yield from self._entries[name]

    def entry(self, name: str) -> Entry:
        """The entry for ``name`` or ``distribution:name``; errors suggest what would fit."""
        self.discover()
        dist, _, bare = name.rpartition(":")
        candidates = self._entries.get(bare, [])
        if dist:
            candidates = [e for e in candidates if canonical_name(e.origin.distribution or "") == canonical_name(dist)]
        if not candidates:
            refused = refused_provider(self.kind, bare, dist)
            if refused:
                raise UserError(f"{self.label} '{name}' comes from {refused}")
            installed = {canonical_name(d.name) for d in plugin_distributions()} | {"digitsum"}
            if dist and canonical_name(dist) not in installed:  # a run directory of a plugin since uninstalled, say
                if (version := _installed_version(dist)) is not None:
                    raise UserError(f"{self.label} '{name}': the distribution '{dist}' ({version}) is installed "
                                    f"but declares no digitsum components; {did_you_mean(bare, self._entries, KINDS[self.kind].plural)}")  # fmt: skip
                # a typo of an installed plugin's name is no package to install
                providers = sorted({e.origin.distribution for e in self._entries.get(bare, []) if e.origin.distribution})
                close = difflib.get_close_matches(dist, providers, n=1, cutoff=0.85)  # plugins share "digitsum-"
                builtin = any(e.origin.builtin for e in self._entries.get(bare, []))
                fix = (f"did you mean '{close[0]}:{bare}'? (installed)" if close else
                       f"did you mean '{bare}'? (built in)" if builtin else f"pip install {dist}")  # fmt: skip
                raise UserError(f"{self.label} '{name}' comes from the distribution '{dist}', which is not installed: {fix}")
            misgrouped = [f"{d.name} {d.version} declares '{bare}' in the entry-point group [{ep.group}], not [{self.group}]"
                          for d in plugin_distributions() for ep in d.misgrouped if ep.name == bare]  # fmt: skip
            if dist and not misgrouped:  # an installed distribution named, without that component
                own = sorted(e.name for es in self._entries.values() for e in es
                             if canonical_name(e.origin.distribution or "digitsum") == canonical_name(dist))  # fmt: skip
                raise UserError(f"unknown {self.label} '{name}' — {dist} declares no {self.label} '{bare}' "
                                f"({KINDS[self.kind].plural} it declares: {', '.join(own) or 'none'}); a {self.label} is seen once "
                                f"its distribution declares it in the entry-point group [{self.group}] and is installed again")  # fmt: skip
            hint = did_you_mean(bare, self._entries, KINDS[self.kind].plural)
            if not hint.startswith("did you mean"):  # not a typo: perhaps a component of the user's own
                hint += (f"; a {self.label} of your own is seen once its package declares it in the entry-point group "
                         f"[{self.group}] and is installed (`digitsum new-plugin` writes one); {self.kind}.register() "
                         "adds it to one Python process only")  # fmt: skip
            raise UserError(f"unknown {self.label} '{name}' — " + ("; ".join(misgrouped) or hint))
        builtin = [e for e in candidates if e.origin.builtin]
        if len(candidates) > 1 and builtin:
            self._warn_shadowed(builtin[0], [e for e in candidates if not e.origin.builtin])
            return builtin[0]
        if len(candidates) > 1:
            both = ", ".join(f"'{e.qualified_name}' ({e.origin})" for e in candidates)
            raise UserError(
                f"{self.label} '{name}' is defined by more than one plugin: {both}; "
                "name the one you want in the qualified form"
            )
        return candidates[0]

    def _warn_shadowed(self, builtin: Entry, plugins: list[Entry]) -> None:
        """Say once that plugins' components named like a built-in one are not used under that name."""
        if (self.kind, builtin.name) in _WARNED:
            return
        _WARNED.add((self.kind, builtin.name))
        for e in plugins:
            sys.stderr.write(f"warning: {e.origin} also defines {self.label} '{e.name}'; the built-in one is used, "
                             f"the plugin's is '{e.qualified_name}'\n")  # fmt: skip

    def get(self, name: str) -> Any:
        """The component class for ``name``, loaded and checked."""
        return self.entry(name).load()

    def __contains__(self, name: str) -> bool:
        self.discover()
        return name.rpartition(":")[2] in self._entries


_SCAN: list[PluginDistribution] | None = None
_WARNED: set[tuple[str, str]] = set()  # (kind, name) of built-ins whose plugin namesakes were warned about


def plugin_distributions() -> list[PluginDistribution]:
    """Installed distributions declaring digitsum entry points (read once per process)."""
    global _SCAN
    if _SCAN is None:
        _SCAN = discovery.scan()
    return _SCAN


def declared_entry_points(kind: str) -> Iterator[tuple[PluginDistribution, discovery.PluginEntryPoint]]:
    """Each entry point of ``kind`` that an allowed distribution declares, with the distribution."""
    for dist in plugin_distributions():
        for ep in dist.entry_points if not dist.refused else ():
            if ep.kind == kind:
                yield dist, ep


def refused_provider(kind: str, name: str, dist: str) -> str | None:
    """'plugin X 1.0, which is not loaded: ...' when a refused distribution (``dist``, if given)
    declares ``name`` in ``kind`` (a component kind or ``recipes``); None when none does."""
    for d in plugin_distributions():
        if d.refused and (not dist or canonical_name(dist) == canonical_name(d.name)):
            if any(ep.kind == kind and ep.name == name for ep in d.entry_points):
                return f"plugin {d.name} {d.version}, which is not loaded: {d.refused}"
    return None


#: One registry per kind of component (:data:`digitsum.kinds.KINDS`), by kind name.
REGISTRIES: dict[str, Registry] = {name: Registry(name) for name in KINDS}
datasets, fusions, heads, optimizers, schedules, loggers = REGISTRIES.values()  # in KINDS' order
#: The label of each kind, by kind name ("dataset generator", ...).
KIND_LABELS = {name: kind.label for name, kind in KINDS.items()}


def registry_for(kind: str) -> Registry:
    """The registry for a kind, by any of its words (``fusion``, ``backbones``, ...)."""
    found = kind_named(kind)
    if found is None:
        import difflib

        words = {word: k.name for k in KINDS.values() for word in k.words()}
        close = {words[w] for w in difflib.get_close_matches(kind.lower(), words, n=3, cutoff=0.5)}
        valid = ", ".join(REGISTRIES)
        hint = f"did you mean {' or '.join(repr(c) for c in sorted(close))}? (valid: {valid})" if close else f"valid: {valid}"
        raise UserError(f"unknown kind '{kind}' — {hint}")
    return REGISTRIES[found.name]


def _installed_version(distribution: str) -> str | None:
    """The version of an installed distribution, None when it is not installed."""
    try:
        return metadata.version(distribution)
    except (metadata.PackageNotFoundError, ValueError):
        return None
