"""What a check returns: findings, the changes they propose, and the report that holds them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from .probe import Probe

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
#: A finding's figure naming the recipe section whose component's own code it finds broken
#: (``"train.optimizer"``: a step that climbs): no setting of that section but its ``type`` is
#: then tried or proposed as a fix (a learning rate cannot mend a sign error).
BROKEN_CODE = "broken_code"
#: A finding's figure marking its cause as a hypothesis about the learning rate ("training at lr
#: 0.5 kills ReLUs"): when every rate it proposes is tried and restores no head, the hypothesis is
#: refuted and the error becomes a warning (dead units beside shifted labels are a symptom).
SUSPECTS_LR = "suspects_lr"
#: A finding's figure naming the head it finds not learning in the short run: when a higher
#: learning rate alone restores it and the whole run's rates add up to well over what that took,
#: the head is slow, not stalled, and the error a warning (remedies.verify).
STALLED_HEAD = "stalled_head"


#: How a finding's fix points at the fix search: once a verified fix restores every stalled
#: head, the findings whose fix starts so get that fix instead (remedies.verify).
SEE_FIXES = "see the fixes tried below"

@dataclass(frozen=True)
class Change:
    """One change the doctor can try: recipe keys to set, or a stand-in for a code change.

    ``keys`` maps dotted recipe keys to values (``{"heads.sum.output": "logits"}``): such a
    change is tried by rebuilding the recipe with it, and ``digitsum doctor --repair`` writes it.
    A cause in code (a plugin's head that returns probabilities, a generator that scales its
    images) has no key: ``emulate`` returns a probe whose model or generator behaves as if the
    code were fixed, so that the fix can be measured all the same; ``code`` says what to change.
    ``corrects`` marks the fix of a defect its check proved without training (a double softmax, a
    loss weight of 0): kept while it stops no head learning, even when a short run cannot yet
    show it helps (a settings change must raise held-out skill to be kept).
    """

    label: str
    keys: dict[str, Any] = field(default_factory=dict)
    emulate: Callable[[Probe], Probe] | None = field(default=None, compare=False)
    code: str = ""
    corrects: bool = field(default=False, compare=False)

    @property
    def in_recipe(self) -> bool:
        return bool(self.keys) and self.emulate is None


#: The recipe key of the learning rate, which several checks' fixes change.
LR_KEY = "train.optimizer.lr"


@dataclass
class Finding:
    """One thing a check found: what was measured, why it matters, what to change.

    ``candidates`` are the changes the check suspects would help; the doctor tries each one
    (a short run with only that change) before it recommends it, and ``tried`` records every
    attempt with its measured before/after (see :mod:`digitsum.diagnosis.remedies`).
    """

    check: str
    severity: Severity
    title: str
    measured: str
    why: str = ""
    fix: str = ""
    keys: list[str] = field(default_factory=list)  # recipe keys the fix touches, e.g. "train.optimizer.lr"
    figures: dict[str, Any] = field(default_factory=dict)  # the measured numbers, for scripts
    candidates: list[Change] = field(default_factory=list, repr=False)
    tried: list[dict[str, Any]] = field(default_factory=list)  # each change tried: label, keys, before, after, restores
    # recipe keys whose fix the check verified itself, exactly and without training (a schedule
    # simulated): --repair writes them as it writes the fixes the short runs verified
    verified: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        keys = ("check", "severity", "title", "measured", "why", "fix", "keys", "figures", "tried")
        return {k: _json_safe(getattr(self, k)) for k in keys}


def _json_safe(value: Any) -> Any:
    """NaN and inf become None: JSON has no spelling for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class Report:
    """Every finding of a diagnosis, how long it took, and the recipe changes verified to help.

    ``repair`` maps recipe keys to the values that were measured to restore learning (what
    ``digitsum doctor --repair`` writes); ``code_causes`` names causes that only code can fix.
    """

    recipe: str
    findings: list[Finding]
    seconds: float
    checks: list[str]
    repair: dict[str, Any] = field(default_factory=dict)
    code_causes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def healthy(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}
        return {"recipe": self.recipe, "healthy": self.healthy, "seconds": round(self.seconds, 2),
                "checks": self.checks, "counts": counts, "findings": [f.to_dict() for f in self.findings],
                "repair": _json_safe(self.repair), "code_causes": self.code_causes}  # fmt: skip


def fmt(x: float) -> str:
    """A measured number, short: 4 decimals, or 3 significant digits for very small/large ones."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if (abs(x) < 1e-3 and x != 0) or abs(x) >= 1e4 else f"{x:.4f}".rstrip("0").rstrip(".")


def pct(x: float) -> str:
    return f"{100 * x:.0f} %"
