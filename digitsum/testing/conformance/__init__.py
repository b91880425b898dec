"""The conformance suite plugins' tests call (docs/plugins.md): a check per kind of component, of
a distribution's components and weights, of a doctor check; each raises ConformanceError (an
AssertionError) listing every problem it found."""

from ...contracts import Fusion, Generator, Head, Logger, Optimizer, Schedule
from ...discovery import canonical_name
from ...registry import REGISTRIES, Entry, PluginError
from ._common import ConformanceError, nothing_declared
from .checks import check_doctor_check, tiny_probe
from .generator import check_generator
from .model_parts import check_fusion, check_head
from .runs import check_logger
from .training import check_optimizer, check_schedule
from .weights import check_weights, weights_of

CHECKS = {Generator: check_generator, Fusion: check_fusion, Head: check_head, Optimizer: check_optimizer,
          Schedule: check_schedule, Logger: check_logger}  # fmt: skip


def check_component(cls: type, params=None, **options):
    """Run the check for ``cls``'s kind (in :data:`CHECKS`) with ``params`` and ``options``;
    returns what it returns."""
    for base, check in CHECKS.items():
        if isinstance(cls, type) and issubclass(cls, base):
            return check(cls, params, **options)
    raise ConformanceError(repr(cls), ["it is not a subclass of digitsum.Generator, Fusion, Head, Optimizer, Schedule or Logger"])


def _entries_of(distribution: str) -> list[Entry]:
    """The registry entries of every component ``distribution`` registers (it must be installed)."""
    found = [entry for registry in REGISTRIES.values() for entry in registry.entries()
             if canonical_name(entry.origin.distribution or "") == canonical_name(distribution)]  # fmt: skip
    if not found:
        raise nothing_declared(distribution, "registers no components", "digitsum.<kind>")
    return found


def components_of(distribution: str) -> list[tuple[str, str, type]]:
    """``(kind, name, class)`` of every component ``distribution`` registers (it must be installed)."""
    return [(entry.kind, entry.name, entry.load()) for entry in _entries_of(distribution)]


def check_distribution(distribution: str) -> list[str]:
    """Load every component ``distribution`` registers and check each; returns their names, or
    raises one :class:`ConformanceError` listing every component that does not load or breaks
    its contract, with each one's problems.

    Components that need parameters or other inputs than the defaults are better checked one
    by one with :func:`check_component` and its options.
    """
    checked, problems = [], []
    for entry in _entries_of(distribution):
        try:
            check_component(entry.load())
            checked.append(f"{entry.kind}:{entry.name}")
        except PluginError as e:
            problems.append(f"{entry.kind}:{entry.name}: {e.message}")
        except ConformanceError as e:
            problems += [f"{entry.kind}:{entry.name}: {p}" for p in e.problems]
    if problems:
        raise ConformanceError(f"distribution {distribution}", problems)
    return checked

