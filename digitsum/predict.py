"""Predict with a trained model on a user's own inputs: :func:`predict` reads raw values per
input (images in any form :mod:`digitsum.images` reads, integers for categorical inputs), prepares
them as the generator prepared its training batches (``Generator.encode``), runs the model and
returns :class:`Predictions`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .contracts import Categorical, Generator, Head, Image, Images, Spec
from .errors import UserError, did_you_mean
from .files import is_plain
from .engine.model import DigitModel
from .images import image_batch


@dataclass(frozen=True)
class HeadPredictions:
    """What one head predicts for a batch of ``B`` samples (tensors on the CPU).

    ``prediction``: ``[B]`` (``[B, length]`` per digit, ``[B, top]`` for a head that predicts its
    ``top`` most probable classes), the head's own ``predict``, in the
    prediction space the head declares (``Head.prediction_space``): ``classes``, how many
    classes it predicts (None: real values), and ``labels``, their names when it gives them
    (the parity of a sum: 2 classes, whatever its target's).
    ``probabilities``: ``[B, classes]`` or None when the head gives none (e.g. ``regress``).
    ``top_classes`` / ``top_probabilities``: ``[B, k]``, the ``k`` most likely classes, most
    likely first (None without probabilities). The top class is the prediction for heads that
    predict the most likely class (``classify``); a head with another rule (an ordinal head
    counts thresholds passed) may predict a class that is not the first of its top list.
    """

    head: str
    target: str
    prediction: Tensor
    probabilities: Tensor | None = None
    top_classes: Tensor | None = None
    top_probabilities: Tensor | None = None
    classes: int | None = None
    labels: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.prediction)

    def _sample(self, i: int | None) -> int:
        """Which sample ``i`` names; without one, the only sample (a batch needs ``i``: answering
        for its first sample alone would read as the answer for all)."""
        if i is None:
            if len(self) != 1:
                raise ValueError(f"{self.head}: {len(self)} samples were predicted: pass the sample's index, "
                                 f"e.g. value(0), or read .prediction for all of them")  # fmt: skip
            return 0
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.head}: sample {i} of a batch of {len(self)}")
        return i

    def value(self, i: int | None = None) -> int | float | list[int]:
        """Sample ``i``'s prediction as a Python number; for a ``Digits`` target, its list of
        digits, most significant first. ``i`` may be left out for a prediction of one sample."""
        i = self._sample(i)
        value = self.prediction[i]
        return value.tolist() if value.dim() else value.item()

    def label(self, i: int | None = None) -> str | list[str] | None:
        """The name of sample ``i``'s predicted class (a list of names for a top-k or per-digit
        prediction), when the head names its classes."""
        value = self.value(i)
        values = value if isinstance(value, list) else [value]
        labels = self.labels
        if labels is None or not all(isinstance(v, int) and 0 <= v < len(labels) for v in values):
            return None
        return [labels[v] for v in values] if isinstance(value, list) else labels[value]

    def probability(self, i: int | None = None) -> float | None:
        """The probability of sample ``i``'s predicted class, or None without probabilities."""
        i = self._sample(i)
        if self.probabilities is None or self.prediction[i].dim():
            return None
        predicted = self.prediction[i].item()
        if not float(predicted).is_integer() or not 0 <= predicted < self.probabilities.shape[1]:
            return None
        return float(self.probabilities[i, int(predicted)])

    def top(self, i: int | None = None) -> list[tuple[int, float]]:
        """Sample ``i``'s most likely classes as ``(class, probability)``, most likely first."""
        i = self._sample(i)
        if self.top_classes is None or self.top_probabilities is None:
            return []
        return [(int(c), float(p)) for c, p in zip(self.top_classes[i], self.top_probabilities[i])]

    def _top(self, i: int) -> list[dict[str, Any]]:
        named = self.labels is not None
        return [{"class": c, "probability": p} | ({"label": self.labels[c]} if named else {}) for c, p in self.top(i)]

    def sample(self, i: int | None = None) -> dict[str, Any]:
        """Sample ``i`` as JSON-ready data: target, prediction (and its ``label`` when the head
        names its classes), its probability, the top classes."""
        named = {"label": self.label(i)} if self.labels is not None else {}
        return {
            "target": self.target,
            "prediction": self.value(i),
            **named,
            "probability": self.probability(i),
            "top": self._top(i),
        }

    def to_dict(self) -> dict[str, Any]:
        """The whole batch as JSON-ready lists (``probabilities`` and ``top`` None without
        probabilities), with the head's ``classes`` and their ``labels`` (None: unnamed)."""
        top = None if self.top_classes is None else [self._top(i) for i in range(len(self))]
        return {
            "target": self.target,
            "classes": self.classes,
            "labels": None if self.labels is None else list(self.labels),
            "prediction": self.prediction.tolist(),
            "probabilities": None if self.probabilities is None else self.probabilities.tolist(),
            "top": top,
        }


class Predictions(Mapping[str, HeadPredictions]):
    """A model's predictions for a batch, by head name: ``predictions["digit"]`` is a
    :class:`HeadPredictions`.

    ``batch_size`` samples; ``batched`` is False when every input was given as a single
    value (one image, one int), and then ``sample()`` reads the one answer back, e.g.
    ``predictions.sample()["digit"]["prediction"]`` (or ``predictions["digit"].value()``).
    ``to_dict()`` gives JSON-ready lists for the whole batch.
    """

    def __init__(self, heads: Mapping[str, HeadPredictions], batch_size: int, batched: bool) -> None:
        self._heads = dict(heads)
        self.batch_size = batch_size
        self.batched = batched

    def __getitem__(self, name: str) -> HeadPredictions:
        try:
            return self._heads[name]
        except KeyError:
            raise KeyError(f"no head {name!r}: {did_you_mean(name, self._heads, 'heads')}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._heads)

    def __len__(self) -> int:
        return len(self._heads)

    def sample(self, i: int | None = None) -> dict[str, dict[str, Any]]:
        """Every head's answer for sample ``i`` (see :meth:`HeadPredictions.sample`); ``i`` may
        be left out for a prediction of one sample."""
        return {name: head.sample(i) for name, head in self._heads.items()}

    def samples(self) -> list[dict[str, dict[str, Any]]]:
        """:meth:`sample` for every sample, in order."""
        return [self.sample(i) for i in range(self.batch_size)]

    def to_dict(self) -> dict[str, Any]:
        """``{"batch_size", "batched", "heads": {name: HeadPredictions.to_dict()}}``, JSON-ready."""
        return {
            "batch_size": self.batch_size,
            "batched": self.batched,
            "heads": {name: head.to_dict() for name, head in self._heads.items()},
        }

    def __repr__(self) -> str:
        count = f"{self.batch_size} sample" + ("s" if self.batch_size != 1 else "")
        lines = [f"Predictions({count}; heads: {', '.join(self._heads)})"]
        shown = min(self.batch_size, 10)
        for i in range(shown):
            parts = []
            for name, head in self._heads.items():
                text = f"{name}: {head.label(i) or number_text(head.value(i))}"
                p = head.probability(i)
                if p is not None:
                    text += f" ({p:.1%})"
                if self.batch_size == 1 and head.top(i):
                    text += "  top " + ", ".join(f"{t.get('label', t['class'])} {t['probability']:.1%}" for t in head._top(i))
                parts.append(text)
            if self.batch_size == 1:  # one sample: a line per head, with its top classes
                lines += [f"  {part}" for part in parts]
            else:
                lines.append(f"  [{i}] " + "   ".join(parts))
        if shown < self.batch_size:
            lines.append(f"  ... {self.batch_size - shown} more")
        return "\n".join(lines)


def number_text(value: int | float | list[int]) -> str:
    """A prediction as printed: a Digits prediction's digits joined (``[0, 7]`` -> ``07``)."""
    if isinstance(value, list):  # a Digits prediction: its digits, most significant first
        return "".join(str(d) for d in value)
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def describe_input(spec: Spec) -> str:
    """What a user gives for an input of this spec, in words."""
    if isinstance(spec, Image):
        kind = "grey" if spec.channels == 1 else f"{spec.channels}-channel"
        return f"an image (the model sees it {kind}, {spec.height}x{spec.width})"
    if isinstance(spec, Categorical):
        return f"an integer from 0 to {spec.classes - 1}"
    if isinstance(spec, Images):
        return f"{spec.count} image(s) in order, each {describe_input(spec.image)}"
    return repr(spec)


def image_sequence_batch(value: Any, spec: Images, *, preprocess: bool = True, name: str = "images") -> tuple[Tensor, bool]:
    """An ``Images`` input -> (float ``[B, count, C, H, W]``, whether it was a batch).

    One sample is a sequence of ``count`` images in any form :func:`digitsum.images.image_batch`
    takes (e.g. a list of paths); a batch is a list (or tuple) of such sequences, each a list or
    tuple, or an array of them whose second axis is the sequence (``[B, count, H, W]``, or the
    generator's own ``[B, count, C, H, W]``). A sequence of another length is a UserError naming the input.
    """
    many = isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, (list, tuple)) for v in value)
    if not many and getattr(value, "ndim", 0) in (4, 5) and value.shape[1] == spec.count:
        value, many = list(value), True  # an array of sequences, split along its batch axis
    samples = value if many else [value]
    stacked = []
    for k, sample in enumerate(samples):
        images, _ = image_batch(sample, spec.image, preprocess=preprocess, name=name)
        if len(images) != spec.count:
            which = f" (sample {k})" if many else ""
            raise UserError(f"input '{name}'{which} takes {spec.count} image(s) in order, most significant digit first, "
                            f"got {len(images)} (one sample: a list of {spec.count}; a batch: a list of such lists; "
                            f"on the command line: --input {name}=FILE {spec.count} times)")
        stacked.append(images)
    return torch.stack(stacked), many


def _check_names(inputs: Mapping[str, Any], specs: Mapping[str, Spec]) -> None:
    problems = [f"unknown input '{name}': {did_you_mean(str(name), specs, 'inputs')}" for name in inputs if name not in specs]
    problems += [f"missing input '{name}': {describe_input(spec)}" for name, spec in specs.items() if name not in inputs]
    if problems:
        expected = "; ".join(f"{name} ({describe_input(spec)})" for name, spec in specs.items())
        raise UserError("the inputs do not fit the model:\n" + "\n".join(f"  {p}" for p in problems) + f"\nit takes: {expected}")


def categorical_batch(value: Any, spec: Categorical, name: str) -> tuple[Tensor, bool]:
    """An int, a list of ints or an integer array/tensor -> (int64 ``[B]``, whether it was a batch).

    Values must lie in ``[0, spec.classes)``; bools and floats are refused (UserError naming
    ``name`` and the valid range).
    """
    import numpy as np

    valid = f"valid values are 0 to {spec.classes - 1}"
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)):
        if not value:
            raise UserError(f"input '{name}' is an empty list: give integers ({valid})")
        bad = [v for v in value if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))]
        if bad:
            raise UserError(f"input '{name}' holds {bad[0]!r} ({type(bad[0]).__name__}): give integers ({valid})")
        values, batched = [int(v) for v in value], True
    elif isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
            raise UserError(f"input '{name}' has dtype {array.dtype}: give integers ({valid})")
        if array.ndim > 1:
            raise UserError(f"input '{name}' has shape {array.shape}: give one integer or a 1-D batch of them")
        if array.ndim == 1 and array.size == 0:
            raise UserError(f"input '{name}' is an empty array: give integers ({valid})")
        values, batched = array.astype(np.int64).reshape(-1).tolist(), array.ndim == 1
    elif is_plain(value, int):
        values, batched = [value], False
    else:
        raise UserError(f"input '{name}' is {value!r} ({type(value).__name__}): give an integer, a list of integers or an integer array ({valid})")
    outside = [v for v in values if not 0 <= v < spec.classes]  # as Python ints: 10**20 does not fit an int64
    if outside:
        shown = str(outside[0]) if len(str(outside[0])) <= 24 else f"{str(outside[0])[:12]}…({len(str(outside[0]))} digits)"
        raise UserError(f"input '{name}' = {shown} is out of range: {valid}")
    return torch.tensor(values, dtype=torch.int64), batched


def raw_batch(generator: Generator, inputs: Mapping[str, Any], *, preprocess: bool = True) -> tuple[dict[str, Tensor], bool]:
    """A user's inputs -> (raw inputs for ``generator.encode``, on the CPU; whether any was a batch).

    Checks the names (a UserError lists missing and unknown ones with a did-you-mean), reads
    each value (:func:`digitsum.images.image_batch`, :func:`categorical_batch`) and makes the
    batch sizes agree: a single value is repeated to the batch's size, two batches of
    different sizes are an error.
    """
    specs = type(generator).interface(generator.params).inputs
    _check_names(inputs, specs)
    raw: dict[str, Tensor] = {}
    batched: dict[str, bool] = {}
    for name, spec in specs.items():
        if isinstance(spec, Image):
            raw[name], batched[name] = image_batch(inputs[name], spec, preprocess=preprocess, name=name)
        elif isinstance(spec, Images):
            raw[name], batched[name] = image_sequence_batch(inputs[name], spec, preprocess=preprocess, name=name)
        elif isinstance(spec, Categorical):
            raw[name], batched[name] = categorical_batch(inputs[name], spec, name)
        else:  # pragma: no cover - check_generator refuses other input specs
            raise UserError(f"input '{name}' is declared as {spec!r}, which prediction cannot read")
    sizes = {name: len(raw[name]) for name in raw if batched[name]}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name}: {size}" for name, size in sizes.items())
        raise UserError(f"the inputs' batch sizes differ ({listed}): give batches of one size, or single values")
    size = next(iter(sizes.values()), 1)
    for name in raw:
        if not batched[name] and size != 1:
            raw[name] = raw[name].expand(size, *raw[name].shape[1:]).contiguous()
    return raw, bool(sizes)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def predict(model: DigitModel, generator: Generator, inputs: Mapping[str, Any], *, device: torch.device | str,
            preprocess: bool = True, top: int = 3) -> Predictions:  # fmt: skip
    """Run ``model`` on a user's ``inputs``; return every head's predictions.

    ``inputs`` maps each of the generator's declared inputs to raw values, as
    :meth:`digitsum.run.Run.predict` takes them (docs/api.md): images, brought to MNIST's format
    by :func:`digitsum.images.to_mnist` unless ``preprocess=False`` (then they must already be
    in it, at the spec's size), and integers in ``[0, classes)``; a single value is repeated to
    the size of the batches given with it, whose sizes must agree. They go through
    ``generator.encode``, then the model runs on ``device`` (where it must already be) in eval
    mode under ``torch.no_grad``, its modes restored afterwards. ``top``: the most likely
    classes kept per sample (0: none). Wrong names, values or files raise :class:`UserError`.
    """
    if top < 0:
        raise UserError(f"top = {top}: give how many of the most likely classes to show (0 or more)")
    device = torch.device(device)
    parameters = list(model.parameters())
    if parameters and not _same_device(parameters[0].device, device):
        raise ValueError(f"the model is on {parameters[0].device}, not on {device}: move it there first (model.to(device))")
    raw, batched = raw_batch(generator, inputs, preprocess=preprocess)
    batch_size = len(next(iter(raw.values())))
    floating = next((p.dtype for p in parameters if p.is_floating_point()), torch.float32)
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            encoded = generator.encode({name: value.to(device) for name, value in raw.items()})
            batch = {k: v.to(floating) if v.is_floating_point() else v for k, v in encoded.items()}
            outputs = model(batch)
            heads = {name: _head_predictions(name, model, output, top) for name, output in outputs.items()}
    finally:
        for module, training in modes:
            module.training = training  # as they were, module by module (not model.train(mode))
    return Predictions(heads, batch_size, batched)


def _head_predictions(name: str, model: DigitModel, output: Tensor, top: int) -> HeadPredictions:
    head: Head = model.heads[name]
    space = head.prediction_space()
    prediction = head.predict(output).detach().cpu()
    probabilities = head.probabilities(output)
    top_classes = top_probabilities = None
    if probabilities is not None:
        probabilities = probabilities.detach().float().cpu()
        k = min(top, probabilities.shape[1])
        top_probabilities, top_classes = probabilities.topk(k, dim=1)
    return HeadPredictions(name, model.bindings[name].target, prediction, probabilities, top_classes, top_probabilities,
                           space.classes, space.labels)  # fmt: skip

