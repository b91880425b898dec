"""Stand-ins for code fixes, so that a cause in code can be measured like a recipe change.

Each function takes a probe and returns a new probe whose generator or model behaves as if the
code were fixed (the original probe is left as it is). The doctor never patches code; it uses
these to say, with numbers, that fixing the code would restore learning.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..contracts import Batch
from .probe import Probe, fresh_copy


class _AlteredGenerator:
    """Delegates to a generator and alters each batch it draws."""

    def __init__(self, inner, alter: Callable[[Batch], Batch]) -> None:
        self.inner, self.alter = inner, alter
        self.splits = getattr(inner, "splits", ("train", "test"))

    def draw(self, split: str, index: Tensor, rng: torch.Generator) -> Batch:
        return self.alter(self.inner.draw(split, index, rng))

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def standardised_input(name: str, mean: float, std: float) -> Callable[[Probe], Probe]:
    """The generator's input ``name`` standardised with the measured mean and std."""

    def emulate(probe: Probe) -> Probe:
        alter = lambda b: {**b, name: (b[name].float() - mean) / (std or 1.0)}  # noqa: E731
        return Probe(probe.recipe, _AlteredGenerator(probe.generator, alter), probe.model, probe.device)

    return emulate


class _Altered(nn.Module):
    """A head that is the wrapped head in everything its subclass does not redefine."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, features: Tensor) -> Tensor:
        return self.inner(features)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner" or name.startswith("__"):  # mid-copy (deepcopy), before `inner` exists
                raise
            return getattr(self.inner, name)


class _LogOfOutput(_Altered):
    """A head whose output is the log of the wrapped head's (probabilities become logits)."""

    def forward(self, features: Tensor) -> Tensor:
        return self.inner(features).clamp_min(1e-12).log()


class _CrossEntropyLoss(_Altered):
    """A head whose loss is the cross-entropy of its class logits against what it should predict
    (its prediction space's expected value)."""

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output.float(), self.inner.prediction_space().expected(target))


class _ScaledOutput(_Altered):
    """A head whose output is the wrapped head's times ``factor``."""

    def __init__(self, inner: nn.Module, factor: float) -> None:
        super().__init__(inner)
        self.factor = factor

    def forward(self, features: Tensor) -> Tensor:
        return self.inner(features) * self.factor


class _RescaledLoss(_Altered):
    """A head whose loss is the wrapped head's times ``factor``, divided by the batch's size when
    ``per_sample`` (a sum over the samples made their mean)."""

    def __init__(self, inner: nn.Module, factor: float, per_sample: bool) -> None:
        super().__init__(inner)
        self.factor, self.per_sample = factor, per_sample

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.inner.loss(output, target) * (self.factor / (len(output) if self.per_sample else 1))


class _EvalForward(_Altered):
    """A head (or backbone) whose forward runs in eval mode in training too: without its dropout
    or other noise."""

    def forward(self, features):  # a head's features; a backbone's batch
        was = self.inner.training
        self.inner.eval()
        try:
            return self.inner(features)
        finally:
            self.inner.train(was)


def _heads_altered(heads: list[str], altered: Callable[[nn.Module], _Altered]) -> Callable[[Probe], Probe]:
    """A probe whose model has each of ``heads`` wrapped by ``altered`` (on a copy)."""

    def emulate(probe: Probe) -> Probe:
        model = fresh_copy(probe.model)
        for head in heads:
            model.heads[head] = altered(model.heads[head])
        return Probe(probe.recipe, probe.generator, model, probe.device)

    return emulate


def logits_from_probabilities(head: str) -> Callable[[Probe], Probe]:
    """The head returns the log of its probabilities: logits whose softmax is its output."""
    return _heads_altered([head], _LogOfOutput)


def logits_scaled(head: str, factor: float) -> Callable[[Probe], Probe]:
    """The head's outputs ``factor`` times what its forward returns (a division undone)."""
    return _heads_altered([head], partial(_ScaledOutput, factor=factor))


def loss_rescaled(heads: list[str], factor: float = 1.0, per_sample: bool = False) -> Callable[[Probe], Probe]:
    """The heads' losses times ``factor`` (a constant undone), over the batch's size when
    ``per_sample`` (a sum over the batch made a mean): all at once, as one fix to the class they share."""
    return _heads_altered(heads, partial(_RescaledLoss, factor=factor, per_sample=per_sample))


def without_training_noise(head: str) -> Callable[[Probe], Probe]:
    """The head's forward in training as in evaluation (its dropout off)."""
    return _heads_altered([head], _EvalForward)


def without_backbone_noise(probe: Probe) -> Probe:
    """The backbone's forward in training as in evaluation (its dropout off)."""
    model = fresh_copy(probe.model)
    model.backbone = _EvalForward(model.backbone)
    return Probe(probe.recipe, probe.generator, model, probe.device)


def unfrozen(names: list[str]) -> Callable[[Probe], Probe]:
    """The named parameters trained (requires_grad on), as if the code that froze them were gone."""

    def emulate(probe: Probe) -> Probe:
        model = fresh_copy(probe.model)
        for name, parameter in model.named_parameters():
            if name in names:
                parameter.requires_grad_(True)
        return Probe(probe.recipe, probe.generator, model, probe.device)

    return emulate


def cross_entropy_loss(head: str) -> Callable[[Probe], Probe]:
    """The head trains its class logits with cross-entropy (as its accuracy reads them)."""
    return _heads_altered([head], _CrossEntropyLoss)


def reinitialised(layers: list[str]) -> Callable[[Probe], Probe]:
    """The named modules re-initialised with their class's own default initialisation."""

    def emulate(probe: Probe) -> Probe:
        model = fresh_copy(probe.model)
        modules = dict(model.named_modules())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(probe.recipe.seed)
            for name in layers:
                module = modules.get(name)
                if isinstance(module, nn.Module) and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return Probe(probe.recipe, probe.generator, model, probe.device)

    return emulate
