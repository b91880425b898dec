"""The check of a doctor check a plugin ships (docs/plugins.md#checks-for-digitsum-doctor)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ...diagnosis import Change, Finding, Probe
from ...diagnosis.findings import SEVERITIES
from ...errors import raised_in
from ...recipe import Recipe, load_recipe
from ..fixtures import tiny_overrides, write_tiny_mnist
from ._common import Problems, workdir_or_scratch


def tiny_probe(recipe: str | Path | Recipe, workdir: str | Path | None = None, overrides: Sequence[str] = ()) -> Probe:
    """A doctor :class:`~digitsum.diagnosis.Probe` of ``recipe`` (a path, a shipped recipe's name
    or a Recipe) on tiny generated MNIST data written under ``workdir`` (by default a new
    temporary folder, which is kept): what a plugin's tests give its doctor checks."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="digitsum-probe-")).absolute()
    root = write_tiny_mnist(workdir / "mnist")
    source = recipe.to_dict() if isinstance(recipe, Recipe) else recipe
    return Probe.from_recipe(load_recipe(source, [*tiny_overrides(root, 32), *overrides]))


def check_doctor_check(check: Callable[[Probe], Any], recipe: str | Path | Recipe, workdir: str | Path | None = None,
                       name: str | None = None) -> list[Finding]:  # fmt: skip
    """Run the doctor check ``check`` on :func:`tiny_probe` of ``recipe`` and check what it returns;
    returns its findings.

    Checks that it returns well-formed findings naming the check (``name``, by default the
    function's name) and recipe keys, and leaves the probe's model unchanged (docs/plugins.md).
    Raises :class:`~digitsum.testing.ConformanceError` listing every problem, or naming the
    exception the check raised. Without ``workdir`` the tiny data lives in a temporary folder
    removed afterwards.
    """
    name = name or getattr(check, "__name__", "check")
    with workdir_or_scratch(workdir, "digitsum-probe-") as where:
        return _checked(check, tiny_probe(recipe, where), name)


def _checked(check: Callable[[Probe], Any], probe: Probe, name: str) -> list[Finding]:
    problems = Problems("doctor check", check)
    before = {k: v.detach().clone() for k, v in probe.model.state_dict().items()}
    try:
        findings = check(probe)
    except Exception as e:
        problems.fail(f"it raised {type(e).__name__}{raised_in(check, e)}: {e}")
    if not isinstance(findings, list):
        problems.fail(f"it returned a {type(findings).__name__}: a check returns a list of Finding (empty: nothing found)")
    tables = set(probe.recipe.to_dict())
    for number, finding in enumerate(findings):
        where = f"finding {number}"
        if not isinstance(finding, Finding):
            problems.append(f"{where} is a {type(finding).__name__}, not a digitsum.Finding")
            continue
        if finding.check != name:
            problems.append(f"{where} names the check {finding.check!r}; the doctor lists it as {name!r}")
        if finding.severity not in SEVERITIES:
            problems.append(f"{where} has severity {finding.severity!r}: one of {', '.join(SEVERITIES)}")
        for field in ("title", "measured", "why", "fix"):
            if not isinstance(getattr(finding, field), str) or (field in ("title", "measured") and not getattr(finding, field)):
                problems.append(f"{where}'s {field} should be {'non-empty ' if field in ('title', 'measured') else ''}text")
        bad_keys = [k for k in finding.keys if not isinstance(k, str) or k.split(".")[0] not in tables]
        if bad_keys:
            problems.append(f"{where} names keys {bad_keys} that are not recipe keys (tables: {', '.join(sorted(tables))})")
        if not all(isinstance(c, Change) for c in finding.candidates):
            problems.append(f"{where}'s candidates should be digitsum.Change objects")
    after = probe.model.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    if changed:
        problems.append(f"it changed the probe's model ({', '.join(changed[:3])}...): train a copy, fresh_copy(probe.model)")
    problems.raise_any()
    return findings
