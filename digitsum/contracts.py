"""The contracts a component implements: what plugin authors subclass.

Three kinds of component meet in a model:

* a **Generator** makes batches: it declares the ``inputs`` it feeds the model and the
  ``targets`` it asks of it, and draws a batch for any tensor of sample indices;
* a **Fusion** backbone maps the inputs of a batch to one feature vector per sample;
* a **Head** maps those features to an output, and owns its loss and metrics.

Three more say how a model is trained and what a run reports: an **Optimizer** makes the torch
optimizer, a **Schedule** the learning-rate scheduler stepped after every training step, and a
**Logger** is a callback that reports a run somewhere (TensorBoard, MLflow, a file).

Each component class has a ``Params`` pydantic model (``extra="forbid"``): its defaults and
descriptions are its documentation (``digitsum list``), and it validates the component's
table in a recipe. A batch is a plain ``dict[str, Tensor]`` holding inputs and targets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from .data import MNIST_MEAN, MNIST_STD, DataContext
from .callbacks import Callback

#: Version of these contracts. A component declares the version it was written for in
#: ``contract``; digitsum refuses one written for a version it does not speak.
CONTRACT_VERSION = 1

Batch = dict[str, Tensor]


def required(method: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a contract method every component of its kind defines itself: a class that does not
    is refused as it is registered, naming the method (not a NotImplementedError mid-run)."""
    method.__digitsum_required__ = True  # type: ignore[attr-defined]
    return method


@dataclass(frozen=True)
class Image:
    """A float image tensor of shape ``[B, channels, height, width]``."""

    channels: int = 1
    height: int = 28
    width: int = 28


@dataclass(frozen=True)
class Categorical:
    """An int64 tensor of shape ``[B]`` holding values in ``[0, classes)``, given as an input."""

    classes: int


@dataclass(frozen=True, repr=False)
class Classes:
    """An int64 target tensor of shape ``[B]`` holding class indices in ``[0, classes)``;
    ``labels``, a name per class for people (predict and export show them), when the integers
    are not their own names (``Classes(3, labels=("less", "equal", "greater"))``)."""

    classes: int
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != self.classes:
            raise ValueError(f"{len(self.labels)} labels for {self.classes} classes")

    def __repr__(self) -> str:  # messages name the spec as it is written, without an unset default
        return f"Classes(classes={self.classes}" + (f", labels={self.labels!r})" if self.labels is not None else ")")


@dataclass(frozen=True)
class Images:
    """A sequence of ``count`` images: a float tensor ``[B, count, channels, height, width]``.

    Each ``x[:, k]`` is an image as :class:`Image` describes it (prepared the same way: the
    default ``Generator.encode`` standardises every image of the sequence). For inputs made of
    several images of the same kind, e.g. the digits of a number, most significant first.
    """

    count: int
    channels: int = 1
    height: int = 28
    width: int = 28

    @property
    def image(self) -> Image:
        """The spec of one image of the sequence."""
        return Image(self.channels, self.height, self.width)


@dataclass(frozen=True)
class Digits:
    """An int64 target tensor ``[B, length]``: a number written as ``length`` digits in ``base``.

    The digits are **most significant first**, as numbers are written: ``x[:, 0]`` is the
    leading digit, ``x[:, -1]`` the units; leading zeros pad every number to ``length``. For
    targets too large for a class index (the sum of two 100-digit numbers has 101 digits), or
    several digits predicted together (the digits of a sequence of images, in its order).
    """

    length: int
    base: int = 10


Spec = Union[Image, Categorical, Classes, Images, Digits]


class Params(BaseModel):
    """Base for every component's ``Params``: unknown keys are errors, never ignored.

    A recipe's table is validated with strict types, as JSON data (the same rule for every
    component, see :func:`digitsum.recipe.validate.strict`): a bool is not a number, a string is
    neither a number nor a bool; an integer fits a float field and an array a tuple or a list.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def for_diagnosis(self) -> Params:
        """These params with every field marked ``json_schema_extra={"evaluation_only": True}``
        at its default: what the doctor builds. Such a field changes only how a trained model is
        scored (test-time augmentation, say), never training; the doctor's many evaluations then
        cost one forward pass each."""
        updates = {name: field.get_default(call_default_factory=True) for name, field in type(self).model_fields.items()
                   if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("evaluation_only")}
        return self.model_copy(update=updates) if updates else self


class Component:
    """What every registered component has in common."""

    Params: ClassVar[type[Params]] = Params
    #: Fields its kind's every ``Params`` must have (checked when the class is loaded).
    required_params: ClassVar[tuple[str, ...]] = ()
    #: The contract version this component was written for.
    contract: ClassVar[int] = CONTRACT_VERSION

    def __init__(self, params: Params) -> None:
        self.params = params

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring: the one-line description in listings."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


@dataclass(frozen=True)
class Interface:
    """What a generator feeds the model (``inputs``) and asks of it (``targets``).

    ``measured`` names targets that are measured but never trained on: a head bound to one must
    have weight 0 (the recipe is refused otherwise), so its metrics report what the model learnt
    without that label (e.g. the digits of a task supervised by their sum alone).
    """

    inputs: Mapping[str, Spec]
    targets: Mapping[str, Spec]
    measured: frozenset[str] = frozenset()


class Generator(Component):
    """Makes batches of inputs and targets from preloaded tensors.

    Subclasses set ``inputs`` and ``targets`` (or override :meth:`interface` when they depend
    on the parameters), implement :meth:`size` and :meth:`draw`. ``draw`` must be vectorised:
    tensor ops over the whole index tensor, never one Python call per sample. All randomness
    comes from the ``rng`` it is given, so that the engine controls reproducibility: train
    batches get a fresh stream every epoch, the test split the same stream every time.

    With ``data.val`` > 0 the engine also asks for the split ``val``, whose samples
    ``draw("train", ...)`` must never use: ``self.data.mnist(split)`` holds them out already,
    data of the generator's own are split with ``self.data.holdout(n)``. A generator whose
    ``size("val")`` raises (or is 0) is refused for such a recipe, before training.
    """

    inputs: ClassVar[Mapping[str, Spec]] = {}
    targets: ClassVar[Mapping[str, Spec]] = {}
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    @classmethod
    def interface(cls, params: Params) -> Interface:
        """Inputs and targets for these parameters, known without loading any data."""
        return Interface(dict(cls.inputs), dict(cls.targets))

    def __init__(self, params: Params, data: DataContext) -> None:
        super().__init__(params)
        self.data = data

    @required
    def size(self, split: str) -> int:
        """Number of samples in one epoch of ``split``."""
        raise NotImplementedError

    def split_names(self) -> tuple[str, ...]:
        """The splits this generator draws here: ``splits``, and ``val`` when the recipe holds
        a validation split out (``data.val`` > 0)."""
        names = tuple(type(self).splits)
        held_out = getattr(self.data, "val", 0)  # a DataContext; getattr: one made by hand before `val` existed
        return (*names, "val") if held_out and "val" not in names else names

    @required
    def draw(self, split: str, index: Tensor, rng: torch.Generator) -> Batch:
        """The batch for the samples ``index`` (int64, on the data device) of ``split``."""
        raise NotImplementedError

    def encode(self, inputs: Mapping[str, Tensor]) -> Batch:
        """The model's inputs from raw ones, prepared exactly as :meth:`draw` prepares its own.

        Raw inputs are what a user has at prediction time, one entry per declared input:

        * an ``Image`` input: float pixels in ``[0, 1]``, ``[B, channels, height, width]``, a
          light digit on a dark ground (MNIST's format: ``digitsum.images`` turns a photo or a
          scan into it, ``mnist_pixels`` MNIST's uint8 images);
        * an ``Images`` input: the same per image, ``[B, count, channels, height, width]``;
        * a ``Categorical`` input: int64 ``[B]`` with values in ``[0, classes)``.

        Returns the declared inputs only (no targets), on the raw ones' device, and leaves the
        raw tensors unchanged; a missing one is a KeyError. Nothing random (noise and
        augmentation belong to ``draw``) and no data loading: prediction may run where the
        training data are not.

        The default converts each image to float32 and standardises it, ``(x - MNIST_MEAN) /
        MNIST_STD``, unless the params' field ``normalize`` is false (the pixels then stay in
        ``[0, 1]``), and each categorical to int64. A generator that prepares its inputs
        otherwise overrides it; a ``draw`` that ends by calling ``encode`` on raw inputs keeps
        the two in step, and ``digitsum.testing.check_generator`` compares them.
        """
        interface = type(self).interface(self.params)
        standardise = getattr(self.params, "normalize", True) is not False
        batch: Batch = {}
        for name, spec in interface.inputs.items():
            if name not in inputs:
                raise KeyError(f"encode() needs the raw input {name!r} (declared: {', '.join(interface.inputs)})")
            value = inputs[name]
            if isinstance(spec, (Image, Images)):
                x = value.float()
                # out of place, the caller's tensor unchanged: sub makes the new tensor div_ works in
                batch[name] = torch.sub(x, MNIST_MEAN).div_(MNIST_STD) if standardise else x.clone()
            else:
                batch[name] = value.long()
        return batch

    def describe(self, batch: Batch, i: int) -> str:
        """A short caption of sample ``i`` of ``batch`` for picture grids."""
        return ""


class Fusion(Component, nn.Module):
    """A backbone: maps a batch's inputs to features of shape ``[B, out_features]``."""

    out_features: int

    @classmethod
    def check(cls, params: Params, inputs: Mapping[str, Spec]) -> list[str]:
        """Reasons this backbone cannot serve these inputs; empty when it can."""
        return []

    def __init__(self, params: Params, inputs: Mapping[str, Spec]) -> None:
        nn.Module.__init__(self)
        self.params = params
        self.inputs = dict(inputs)

    @required
    def forward(self, batch: Batch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


#: How a head's output is read, declared by ``Head.output_kind``:
#:
#: * ``"class_logits"`` (the default): ``[B, classes]`` scores whose argmax is ``predict``, with a
#:   cross-entropy-like loss (ln(classes) for a uniform guess); only these heads get
#:   ``digitsum doctor``'s logits checks (width, loss at init, double softmax);
#: * ``"value"``: one real number per sample, ``[B]`` (a regression);
#: * ``"other"``: anything else (K-1 ordinal thresholds, one distribution per digit position, ...).
#:
#: The last two are judged through ``predict``, ``probabilities`` and metrics only;
#: ``digitsum.testing.check_head`` checks the declaration against the output.
OUTPUT_KINDS = ("class_logits", "value", "other")


def declared_output_shape(output_kind: str, size: int, classes: int | None) -> tuple[int, ...] | None:
    """The output shape ``output_kind`` declares for ``size`` samples of ``classes`` classes:
    ``(size, classes)`` for ``class_logits``, ``(size,)`` for ``value``; None when it declares
    none (``other``, or class logits over classes unknown)."""
    if output_kind == "class_logits":
        return None if classes is None else (size, classes)
    return (size,) if output_kind == "value" else None


@dataclass(frozen=True)
class PredictionSpace:
    """What a head's ``predict`` returns and how it relates to the head's target
    (:meth:`Head.prediction_space`): export, ``digitsum.predict`` and ``digitsum doctor`` read a
    head's predictions through it, never through the head's class.

    * ``classes``: predictions are integers ``0 .. classes - 1`` (None: real values);
    * ``length``: None, one prediction per sample (``[B]``); else ``[B, length]``, one per
      digit, most significant first (as a ``Digits`` target);
    * ``top``: 1, one class per sample; else ``[B, top]``, the ``top`` most probable classes,
      most probable first, and a prediction is right when the expected value is among them;
    * ``relation``: ``"target"``, a value of the target (its class, its digits); ``"rounded"``,
      a real output rounded and clamped to the target's classes (a regression); ``"derived"``,
      ``derive(target)`` is what a right prediction equals (the parity of a sum, say);
    * ``labels``: a name per class, for people (None: the integers are the names);
    * ``meaning``: what a prediction is, in words (``""``: the target's predicted value);
    * ``output``: how to read the head's raw output, in words (``""``: logits over the classes
      for a ``class_logits`` head, a generic sentence for any other).
    """

    classes: int | None
    length: int | None = None
    top: int = 1
    relation: Literal["target", "rounded", "derived"] = "target"
    derive: Callable[[Tensor], Tensor] | None = None
    labels: tuple[str, ...] | None = None
    meaning: str = ""
    output: str = ""

    def __post_init__(self) -> None:
        if (self.relation == "derived") != (self.derive is not None):
            raise ValueError("a PredictionSpace gives derive exactly when its relation is 'derived'")
        if self.labels is not None and len(self.labels) != self.classes:
            raise ValueError(f"{len(self.labels)} labels for {self.classes} classes")
        if self.top != 1 and (self.classes is None or self.length is not None or not 1 < self.top <= self.classes):
            raise ValueError(f"top={self.top} needs one class prediction per sample among at least {self.top} classes")

    @classmethod
    def of(cls, target: Spec) -> PredictionSpace:
        """The default: the target's own values (its classes and their labels, or a ``Digits``
        target's digits)."""
        if isinstance(target, Digits):
            return cls(target.base, target.length)
        return cls(getattr(target, "classes", None), labels=getattr(target, "labels", None))

    def expected(self, target: Tensor) -> Tensor:
        """What right predictions equal for these target values (the target itself unless derived)."""
        return self.derive(target) if self.derive is not None else target

    def shape(self, size: int) -> tuple[int, ...]:
        """The shape ``predict`` returns for ``size`` samples."""
        return (size,) if self.length is None and self.top == 1 else (size, self.length or self.top)

    def right(self, prediction: Tensor, expected: Tensor) -> Tensor:
        """Per sample, whether ``prediction`` (from ``predict``) is right for ``expected`` (from
        :meth:`expected`): equal in every place, or, for a top-k space, holding it."""
        size = len(expected)
        if self.top > 1:
            return (prediction.reshape(size, -1) == expected.reshape(size, 1)).any(dim=1)
        return (prediction.reshape(size, -1) == expected.reshape(size, -1)).all(dim=1)

    def chance(self, expected: Tensor) -> float:
        """The accuracy of always predicting the most frequent expected value(s) (for a top-k
        space, the ``top`` most frequent ones) on these expected values."""
        _, counts = torch.unique(expected.reshape(len(expected), -1), dim=0, return_counts=True)
        return float(counts.sort(descending=True).values[: self.top].sum()) / max(len(expected), 1)


class Head(Component, nn.Module):
    """Maps features to an output for one target; owns its loss and metrics.

    ``primary_metric`` names the metric shown in tables and compared across runs;
    ``output_kind`` declares how the output is read (:data:`OUTPUT_KINDS`).
    """

    primary_metric: ClassVar[str] = "accuracy"
    output_kind: ClassVar[str] = "class_logits"

    @classmethod
    def check(cls, params: Params, target: Spec) -> list[str]:
        """Reasons this head cannot be bound to this target; empty when it can."""
        return []

    def __init__(self, params: Params, in_features: int, target: Spec) -> None:
        nn.Module.__init__(self)
        needed = type(self).features_for(params, target)
        if needed is not None and in_features != needed:
            raise ValueError(f"{type(self).__name__} reads {needed} features for {target}; it was given {in_features}")
        self.params = params
        self.target = target

    @classmethod
    def features_for(cls, params: Params, target: Spec) -> int | None:
        """How many features this head reads for ``target``; None (the default): any number.

        A head that reads the backbone's features as they are (e.g. per-image digit logits,
        ``[B, images * classes]``) returns their number: a backbone that gives another is refused
        when the model is built, with both numbers (and ``Head.__init__`` refuses it too).
        """
        return None

    @required
    def forward(self, features: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @required
    def loss(self, output: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        """The mean loss over the batch, to be minimised."""
        raise NotImplementedError

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Per-sample metric values, each of shape ``[B]``; the engine averages them over a split."""
        return {}

    def predict(self, output: Tensor) -> Tensor:
        """The prediction per sample, comparable with the target (for captions): ``[B]`` for a
        ``Classes`` target, ``[B, length]`` for a ``Digits`` one."""
        return output.argmax(dim=1)

    def prediction_space(self) -> PredictionSpace:
        """What :meth:`predict` returns and how it relates to the target; the default,
        :meth:`PredictionSpace.of` the target, suits a head predicting the target's own values."""
        return PredictionSpace.of(self.target)

    def probabilities(self, output: Tensor) -> Tensor | None:
        """Per-class probabilities ``[B, classes]`` of ``output`` over the prediction space's
        classes (non-negative, each row summing to 1), or None (the default): no distribution,
        as a regression gives."""
        return None


class Optimizer(Component):
    """Makes the torch optimizer of a run (``[train.optimizer]`` in a recipe).

    ``Params`` must have a field ``lr``: the learning rate, also the peak every schedule scales
    (read from the optimizer's param groups when the schedule is built).
    """

    #: Fields every optimizer's Params has: recipes, sweeps and the doctor's fixes set them by name.
    required_params: ClassVar[tuple[str, ...]] = ("lr",)

    @required
    def build(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer over exactly ``parameters`` (all on one device), in one param group whose
        ``lr`` is ``params.lr``; its ``state_dict`` must resume a run exactly (torch's do)."""
        raise NotImplementedError


class Schedule(Component):
    """Makes the learning-rate scheduler of a run (``[train.schedule]`` in a recipe).

    The peak learning rate is the optimizer's own (each param group's ``lr`` when the schedule
    is built): a schedule never goes above it, accepts any number of steps (one, too: a smoke
    test), and changes nothing but the learning rate (not momentum, betas or weight decay)
    unless its own parameters say so.
    """

    @required
    def build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        """The scheduler for the run's ``total_steps`` steps of ``optimizer`` (already built),
        stepped after every optimizer step; its ``state_dict`` must resume exactly (torch's do)."""
        raise NotImplementedError


class Logger(Component, Callback):
    """Reports a run somewhere: a callback built from a ``[log.<name>]`` table of a recipe.

    It has every hook of a ``digitsum.Callback`` and keeps in ``state_dict`` what a resumed run
    needs to continue as the same run (a tracking server's id, say). Import the logger's library
    inside its hooks, never at module level, and name it in ``requires``: a recipe naming a
    logger whose library is missing is refused when it is loaded, with the ``install`` instruction.
    """

    #: Modules (import names) the logger needs; checked when a recipe naming it is loaded.
    requires: ClassVar[tuple[str, ...]] = ()
    #: What installs them, shown when one is missing, e.g. ``pip install "digitsum[tensorboard]"``.
    install: ClassVar[str] = ""

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this logger cannot run here (a library in ``requires`` is not installed), or None."""
        import importlib.util

        missing = []
        for module in cls.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # a parent package missing, or a broken one
                found = False
            if not found:
                missing.append(module)
        if not missing:
            return None
        how = f": {cls.install}" if cls.install else ""
        return f"needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed{how}"
