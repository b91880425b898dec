"""Why does the loss not decrease? Measured checks on a recipe, in seconds (docs/doctor.md
describes the package, module by module).

Each check is a function ``check(probe) -> list[Finding]``; nothing here knows a component, input
or target by name. A plugin ships checks for its own components in the entry-point group
``digitsum.checks`` (see docs/plugins.md).
"""

from __future__ import annotations

import reprlib
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from importlib import import_module
from pathlib import Path

import torch

from .. import kinds
from ..engine.accel import configure_threads
from ..engine.component_errors import ComponentError, blame
from ..errors import UserError, did_you_mean
from ..registry import PluginError, declared_entry_points, load_check
from ..recipe import Recipe
from ..listing import DOCTOR_CHECKS
from .checks.data import heads_contract
from .checks.relus import dead_relu_findings
from .checks.training import short_run_steps
from .findings import SEVERITIES, Change, Finding, Report, Severity
from .probe import SAMPLE, Probe, fresh_copy, seeded
from .remedies import tune as tune_settings
from .remedies import verify as verify_fixes
from .render import render_report

__all__ = ["CHECKS", "PREFLIGHT", "Change", "Finding", "Probe", "Report", "SAMPLE", "SEVERITIES", "Severity", "all_checks",
           "dead_relu_findings", "diagnose", "doctor", "fresh_copy", "render_report", "short_run_steps"]  # fmt: skip

Check = Callable[[Probe], list[Finding]]

def _builtin_check(value: str) -> Check:
    module, _, function = value.partition(":")
    return getattr(import_module(module), function)


#: Every built-in check, in the order they run and are shown; the preflight runs the fast ones.
CHECKS: dict[str, Check] = {name: _builtin_check(value) for name, value in DOCTOR_CHECKS.items()}
PREFLIGHT = ("pairing", "loss_at_init", "double_softmax", "loss_weights", "schedule")


def plugin_checks() -> dict[str, Check]:
    """Checks installed plugins ship (entry-point group ``digitsum.checks``; the allow and deny
    lists apply, as to components), by name. A check that cannot be imported becomes a check that
    reports so (an error finding), not a crash; a built-in check's name is the built-in's."""
    found: dict[str, Check] = {}
    for dist, ep in declared_entry_points(kinds.CHECKS):
        if ep.name in CHECKS or ep.name in found:
            continue
        try:
            found[ep.name] = load_check(ep, dist)
        except PluginError as e:  # a broken plugin is reported, the doctor goes on
            found[ep.name] = _broken_check(ep.name, ep.value, e.message)
    return found


def _broken_check(name: str, value: str, message: str) -> Check:
    def broken(probe: Probe) -> list[Finding]:
        return [Finding(name, "warning", f"plugin check '{name}' cannot be loaded", message,
                        "the plugin's entry point names no function digitsum can call as check(probe)", "fix or uninstall the plugin")]  # fmt: skip

    return broken


def _plugin_origin(name: str) -> str | None:
    """The distribution and version that declares doctor check ``name`` ("digitsum-looker 2.0")."""
    return next((f"{dist.name} {dist.version}" for dist, ep in declared_entry_points(kinds.CHECKS) if ep.name == name), None)


def all_checks() -> dict[str, Check]:
    """The built-in checks, then the plugins' (in entry-point order)."""
    return {**CHECKS, **plugin_checks()}


def _run_check(name: str, check: Check, probe: Probe, stop_on_component_error: bool = False) -> list[Finding]:
    """One check; a check that crashes is itself a finding, not a traceback, and names who
    raised: a component of the recipe (then ``digitsum run`` fails the same way; with
    ``stop_on_component_error`` its exception goes on, as it would in training), a plugin's
    check (a bug in that check, not in the recipe), or digitsum's own check."""
    try:
        found = check(probe)
        if isinstance(found, Iterator):  # a check written as a generator: its findings, drawn here
            found = list(found)
    except ComponentError as e:  # a component broke its contract (an optimizer missing tensors): training would stop here
        if stop_on_component_error:
            raise
        return [Finding(name, "error", f"{e.component} from {e.origin} breaks its contract in {e.method}()",
                        e.message.splitlines()[0], f"the {name} check built it as training does",
                        f"fix the {e.method}() of {e.component}; `digitsum run` refuses it the same way",
                        figures={"component": e.component, "method": e.method, "checks": [name], "breach": True})]  # fmt: skip
    except UserError:
        raise
    except Exception as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        blamed = blame(e, probe.recipe)
        if blamed is not None and stop_on_component_error:
            raise
        if blamed is not None:  # the model, its loss or the data: that is the diagnosis
            # a built-in component is not the one to change: what it was given (data, settings) is
            fix = (f"the {blamed.method}() of {blamed.component} was given what it cannot take: see the other findings"
                   if blamed.origin == "built-in" else f"fix the {blamed.method}() of {blamed.component} ({blamed.origin})")  # fmt: skip
            fix += f", or the recipe: {blamed.setting}" if blamed.setting else ""
            # what the blame found it made wrong ("its forward() returned features of shape ..."), before what was raised
            lead = blamed.message.splitlines()[0].removeprefix(f"{blamed.component} from {blamed.origin}").strip(" :")
            measured = f"{lead}: {text}" if lead.startswith("its ") else text
            return [Finding(name, "error", f"{blamed.component} from {blamed.origin} raised {type(e).__name__} in {blamed.method}()",
                            measured, f"the {name} check ran it as training does", f"{fix}; `digitsum run` would fail the same way",
                            figures={"component": blamed.component, "method": blamed.method, "checks": [name],
                                     "built_in": blamed.origin == "built-in"})]  # fmt: skip
        origin, author = _check_origin(name, check)
        # the innermost frame of the check's own package: where its author looks
        home = Path(getattr(getattr(check, "__code__", None), "co_filename", "") or ".").resolve().parent
        frames = traceback.extract_tb(e.__traceback__)
        where = next((f for f in reversed(frames) if Path(f.filename).resolve().is_relative_to(home)), frames[-1])
        # a warning: the check's bug, not the recipe's (one plugin's bug would fail every recipe's doctor)
        return [Finding(name, "warning", f"doctor check '{name}' from {origin} raised {type(e).__name__} in {where.name}()",
                        f"{text} ({Path(where.filename).name}, line {where.lineno})",
                        "a bug in the check itself: no component of the recipe raised it", f"the other checks ran; tell {author}")]  # fmt: skip
    if isinstance(found, (list, tuple)) and all(isinstance(f, Finding) for f in found):
        return list(found)
    # what the doctor would trip on later (sorting, --json): said now, naming the check
    origin, author = _check_origin(name, check)
    what = type(found).__name__ if not isinstance(found, (list, tuple)) else \
        f"a {type(found).__name__} holding a {next(type(f).__name__ for f in found if not isinstance(f, Finding))}"
    return [Finding(name, "warning", f"doctor check '{name}' from {origin} returned {what}, not a list of Finding",
                    f"{name}(probe) returned {reprlib.repr(found)}",
                    "a bug in the check itself: a check returns a list of digitsum.Finding (empty when all is well)",
                    f"the other checks ran; tell {author}")]  # fmt: skip


def _ran_it(crash: Finding, checks: list[str]) -> None:
    """Add ``checks`` to those that met the crash ``crash`` reports (one finding per failure)."""
    crash.figures["checks"] += [c for c in checks if c not in crash.figures["checks"]]
    crash.why = f"the {', '.join(crash.figures['checks'])} checks ran it as training does"


def _fold_built_in_crashes(findings: list[Finding]) -> list[Finding]:
    """A built-in component that raised beside a plugin's or local one that raised (a built-in
    head given a fusion's features of another width than it declares) met the same failure: one
    finding, naming the component whose code is to fix."""
    crashes = [f for f in findings if "component" in f.figures and "checks" in f.figures]
    own = next((f for f in crashes if f.figures.get("built_in") is False), None)
    if own is None:
        return findings
    folded = {id(f) for f in crashes if f.figures.get("built_in")}
    for crash in crashes:
        if id(crash) in folded:
            _ran_it(own, crash.figures["checks"])
    return [f for f in findings if id(f) not in folded]


def _check_origin(name: str, check: Check) -> tuple[str, str]:
    """Who wrote a check ("digitsum", "digitsum-looker 2.0", "local (module)") and whom to tell."""
    module = getattr(check, "__module__", "") or ""
    builtin = module.startswith("digitsum.")
    origin = "digitsum" if builtin else _plugin_origin(name) or f"local ({module})"
    return origin, "digitsum (a bug: please report it)" if builtin else f"the author of {origin}"


def diagnose(probe: Probe, checks: Sequence[str] | None = None, *, verify: bool | None = None,
             budget: float | None = None, tune: bool = False, stop_on_component_error: bool = False) -> Report:  # fmt: skip
    """Run ``checks`` (default: every built-in and plugin check) on ``probe`` without disturbing
    the global random state or the model; then, when a head does not learn, try every proposed
    fix (:func:`digitsum.diagnosis.remedies.verify`). ``verify`` defaults to whether the
    short run is among the checks; ``budget`` (seconds) stops trying further fixes after it.
    ``tune`` (what ``--repair`` asks for): on a recipe whose heads all learn, settings reset to
    their defaults are tried too and kept when they raise held-out skill
    (:func:`digitsum.diagnosis.remedies.tune`). ``stop_on_component_error`` (the preflight): an
    exception one of the recipe's components raises goes on, as it would in training, instead of
    becoming a finding; the doctor reports it, once however many checks ran into it."""
    started = time.perf_counter()
    available = all_checks()
    names = list(available) if checks is None else list(checks)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UserError(f"unknown check {unknown[0]!r}: {did_you_mean(unknown[0], list(available), 'checks')}")
    findings: list[Finding] = []
    repair: dict = {}
    code: list[str] = []
    # every check's random draws (dropout in a forward at initialisation, say) from a stream the
    # recipe's seed fixes: the same report whoever calls, whatever drew from torch's stream before
    with seeded(probe, "checks"):
        was_training = probe.model.training
        probe.model.train()
        # a head that breaks its contract would make every check fail in digitsum's own code
        # (a per-sample loss where a float is read): it is the finding, as in `digitsum run`
        findings = _run_check("contract", heads_contract, probe, stop_on_component_error)
        contract_broken = bool(findings)
        for name in names if not contract_broken else []:
            for finding in _run_check(name, available[name], probe, stop_on_component_error):
                # a component that raises fails every check that runs it: one finding says so
                crashed = "checks" in finding.figures and "component" in finding.figures
                same = next((f for f in findings if crashed and "checks" in f.figures and f.title == finding.title), None)
                if same is None:
                    findings.append(finding)
                else:
                    _ran_it(same, finding.figures["checks"])
            if contract_broken := any(f.figures.get("batch_contract") for f in findings):
                break  # the model cannot take the generator's batches: every further check would crash in it
        findings = _fold_built_in_crashes(findings)
        # no fix can be verified by training with a component that breaks its contract
        breach = contract_broken or any(f.figures.get("breach") for f in findings)
        if not breach and (verify if verify is not None else "short_run" in names):
            try:
                added, repair, code = verify_fixes(probe, findings, None if budget is None else started + budget)
                findings += added
            except Exception as e:  # the fixes could not be tried: say so, keep the findings
                findings.append(Finding("fixes", "warning", f"the fixes could not be tried: {type(e).__name__}", str(e)))
        repair = {**{k: v for f in findings for k, v in f.verified.items()}, **repair}
        if tune and not repair and not any(f.severity == "error" for f in findings):
            added, repair = tune_settings(probe, None if budget is None else started + budget)
            findings += added
        probe.model.train(was_training)
        probe.model.zero_grad(set_to_none=True)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: order[f.severity])  # stable: within a severity, check order
    return Report(probe.recipe.name, findings, time.perf_counter() - started, names, repair, code)


def doctor(recipe: Recipe, checks: Sequence[str] | None = None, *, tune: bool = False) -> Report:
    """Build ``recipe`` on the CPU and run the checks: what ``digitsum doctor`` does, on the
    threads a run of the recipe would use (``train.threads``; measured in docs/doctor.md), put
    back afterwards."""
    threads = torch.get_num_threads()
    configure_threads(recipe.train.threads)
    try:
        return diagnose(Probe.from_recipe(recipe), checks, tune=tune)
    finally:
        torch.set_num_threads(threads)
