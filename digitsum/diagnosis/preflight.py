"""The preflight: the doctor's quick checks (a second or two) before a run's first epoch."""

from __future__ import annotations

from ..engine.train import Trainer
from ..engine.watch import Warner
from . import PREFLIGHT, Probe, Report, diagnose


class Preflight(Warner):
    """Before the first epoch: loss at init, double softmax, zero-weight heads (a second or two).
    A component that raises in them stops the run there, as the first step would: the Trainer
    reports it as it reports a crash in training (one message, the component's own frames)."""

    report: Report | None = None

    def on_start(self, trainer: Trainer) -> None:
        probe = Probe(trainer.recipe, trainer.generator, trainer.model, trainer.device)
        self.report = diagnose(probe, PREFLIGHT, verify=False, stop_on_component_error=True)
        for finding in self.report.findings:
            if finding.severity != "info":
                self.warn(f"preflight: {finding.title} ({finding.fix})" if finding.fix else f"preflight: {finding.title}")
