"""Starting a run from weights (``[init]``, docs/recipes.md): the source's tensors loaded into a
freshly built model by name and shape, a report of what was loaded, skipped and newly
initialised, and the freeze of the loaded parameters for the first ``init.freeze_epochs`` epochs.

Only a fresh run loads it: a resumed run continues from its own checkpoint, and keeps the report
(with the names it freezes) in that checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..files import field_problems
from ..recipe import Init
from ..weights import load_weights, read_tensors, sha256_of
from .checkpoint import load_checkpoint, names_listed, weights_problems

#: How many names a message lists of each side before "and N more".
_SHOWN = 12


@dataclass
class InitReport:
    """What ``[init]`` loaded into the model: ``source`` as the recipe resolved it, its ``kind``
    (``recipe``, ``run`` or ``file``) and the ``sha256`` of the file read (for a recipe's name,
    its weights file); ``loaded``: the model's tensors taken from the source; ``skipped``: name
    in both, shapes differ (``[source shape, model shape]``); ``new``: the model's tensors the
    source has no tensor for (kept as initialised from the seed); ``unused``: the source's tensors
    the model has no tensor for; ``frozen``: the loaded parameters frozen for the first
    ``freeze_epochs`` epochs; ``recorded_sha256``: the sha256 the recipe's ``[provenance]``
    records for the weights its run started from ("" when it records none)."""

    source: str
    kind: str
    sha256: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, list[list[int]]] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    freeze_epochs: int = 0
    recorded_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InitReport:
        """The report ``to_dict`` gave (a checkpoint's ``init``); ValueError naming what does not fit."""
        types = {"source": str, "kind": str, "sha256": str, "loaded": list, "skipped": dict, "new": list, "unused": list,
                 "frozen": list, "freeze_epochs": int, "recorded_sha256": str}  # fmt: skip
        problems = field_problems(data, types, required=("source", "kind", "sha256")) if isinstance(data, dict) else ["not a table"]
        if problems:
            raise ValueError(f"its init record: {'; '.join(problems)}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def lines(self) -> list[str]:
        """The short summary a run prints."""
        lines = [f"init: {len(self.loaded)} tensors loaded from {self.kind} {self.source} (sha256 {self.sha256[:12]}…)"]
        if self.skipped:
            shapes = [f"{name} {_shape(a)} -> {_shape(b)}" for name, (a, b) in self.skipped.items()]
            lines.append(f"init: {len(self.skipped)} skipped, shapes differ (source -> model): {_listed(shapes)}")
        if self.new:
            lines.append(f"init: {len(self.new)} newly initialised (not in the source): {_listed(self.new)}")
        if self.unused:
            lines.append(f"init: {len(self.unused)} tensors of the source unused (not in the model): {_listed(self.unused)}")
        if self.recorded_sha256 and self.recorded_sha256 != self.sha256:
            lines.append(f"init: these are not the weights this recipe's run started from (sha256 {self.recorded_sha256[:12]}…, "
                         "[provenance] init_sha256): the run will not replay it")  # fmt: skip
        if self.frozen and self.freeze_epochs:
            lines.append(f"init: the {len(self.frozen)} loaded parameters stay frozen for the first {_epochs(self.freeze_epochs)}")
        return lines


def _epochs(count: int) -> str:
    return f"{count} epoch{'s' if count != 1 else ''}"


def _shape(shape: list[int]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _listed(names: list[str]) -> str:
    return names_listed(names, _SHOWN)


def read_source(init: Init) -> tuple[dict[str, torch.Tensor], str, str]:
    """The tensors ``init.weights`` names, its kind and the sha256 of the file read; a UserError
    naming ``init.weights`` and the recipe file when it is missing, unreadable or tampered with."""
    try:
        if not init.is_path:
            tensors, record, _ = load_weights(init.weights)  # verifies sha256 and the recipe's settings
            return tensors, "recipe", record.sha256
        path = Path(init.weights)
        if path.is_dir():
            path = path / "checkpoint.pt"
            if not path.is_file():
                raise UserError(f"{path.parent} is not a run directory with a checkpoint (no checkpoint.pt)")
            return _state_dict(load_checkpoint(path)["model"], path), "run", sha256_of(path)
        if not path.exists():
            raise UserError(f"no such file or folder: {path}")
        if path.suffix == ".pt":
            return _state_dict(load_checkpoint(path)["model"], path), "run", sha256_of(path)
        return read_tensors(path), "file", sha256_of(path)
    except UserError as e:
        raise UserError(f"init.weights = {init.weights!r} ({init.where}): {e.message}") from None
    except OSError as e:
        raise UserError(f"init.weights = {init.weights!r} ({init.where}): cannot read it: {e.strerror or e}") from None


def _state_dict(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserError(f"{path} holds no model state dict of tensors")
    return state


def load_init(model: nn.Module, init: Init) -> InitReport:
    """Load every tensor of ``init``'s source whose name and shape match into ``model`` (its
    parameters and buffers); refuse, listing both sides' names, when none does."""
    tensors, kind, sha256 = read_source(init)
    report = InitReport(init.weights, kind, sha256, freeze_epochs=init.freeze_epochs, recorded_sha256=init.recorded_sha256 or "")
    own = model.state_dict()
    matched = {}
    for name, tensor in own.items():
        theirs = tensors.get(name)
        if theirs is None:
            report.new.append(name)
        elif tuple(theirs.shape) != tuple(tensor.shape):
            report.skipped[name] = [list(theirs.shape), list(tensor.shape)]
        else:
            matched[name] = theirs
            report.loaded.append(name)
    report.unused = [name for name in tensors if name not in own]
    # a float tensor taken from integers, or NaN: the run would start from weights no training had
    # (an int copy rounds nothing back; a NaN is the loss's at the first step), so say so here
    if problems := weights_problems(own, matched, _SHOWN):
        raise UserError(f"init.weights = {init.weights!r} ({init.where}): " + "; ".join(problems)
                        + "; start from weights a training run saved (digitsum export RUN --format safetensors)")
    if not matched:
        raise UserError(
            f"init.weights = {init.weights!r} ({init.where}): no tensor of the source fits the model (same name and "
            f"shape), nothing to start from.\n  the source's: {_listed(list(tensors)) or 'none'}\n  the model's: {_listed(list(own))}"
            + (f"\n  same names, other shapes: {_listed(list(report.skipped))}" if report.skipped else "")
        )
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name in matched:
                tensor.copy_(matched[name])
    parameters = {name for name, _ in model.named_parameters()}
    report.frozen = [name for name in report.loaded if name in parameters] if init.freeze_epochs else []
    if report.frozen and len(report.frozen) == len(parameters):
        raise UserError(
            f"init.freeze_epochs = {init.freeze_epochs} ({init.where}): every parameter of the model was loaded from "
            f"{init.weights}, so freezing them leaves nothing to train in the first {_epochs(init.freeze_epochs)}; set "
            "init.freeze_epochs = 0"
        )
    return report


def freeze(model: nn.Module, names: list[str], frozen: bool) -> None:
    """Freeze (``requires_grad`` off) or unfreeze the parameters ``names`` of ``model``. A frozen
    parameter gets no gradient (None after ``zero_grad(set_to_none=True)``), and torch's optimizers
    skip parameters without one — weight decay and momentum included — so the optimizer, built
    over every parameter, needs nothing when they are unfrozen."""
    wanted = set(names)
    for name, parameter in model.named_parameters():
        if name in wanted:
            parameter.requires_grad_(not frozen)
