"""Blaming the right component: an exception raised by a component's own code becomes a short
report naming the component, where it comes from (whom to tell) and the method that raised,
with that component's frames only (docs/architecture.md, "When component code raises")."""

from __future__ import annotations

import inspect
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import torch
from torch import Tensor, nn

from ..contract_checks import batch_problems, built_problem
from ..contracts import Component, Fusion, Head, Interface, declared_output_shape
from ..errors import UserError
from ..recipe import Choice, Recipe
from .checkpoint import round_trip_problem

#: digitsum's own package folder: of it, only the built-in components count as component code.
_DIGITSUM = Path(__file__).resolve().parents[1]
_BUILTIN_COMPONENTS = _DIGITSUM / "components"
#: torch's package folder: library code a component calls into, never the component's own frames.
_TORCH = Path(inspect.getfile(nn.Module)).resolve().parents[2]


class ComponentError(UserError):
    """A component's code raised during a run: the message names the component, its
    distribution and the method, with the traceback of the component's own frames only."""

    exit_code = 1

    def __init__(self, message: str, component: str, method: str, origin: str, setting: str = "") -> None:
        super().__init__(message)
        self.component, self.method, self.origin = component, method, origin
        #: what in the recipe may be the cause instead of the code ("data.batch_size ..."), or ""
        self.setting = setting


@dataclass(frozen=True)
class _Suspect:
    label: str  # "head 'ordinal'"
    cls: type
    origin: str  # "digitsum-example 0.1.0", "built-in", "local (module:Class)"
    roots: tuple[Path, ...]  # folders holding its code


def _code_roots(cls: type) -> tuple[Path, ...]:
    """Where a component's own code lives: its package (for digitsum's built-ins, the
    components folder), and that of every class it inherits from outside digitsum's core."""
    roots = []
    for klass in inspect.getmro(cls):
        module = sys.modules.get(klass.__module__)
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if path.is_relative_to(_DIGITSUM):
            if path.is_relative_to(_BUILTIN_COMPONENTS):
                roots.append(_BUILTIN_COMPONENTS)
            continue
        top = sys.modules.get(klass.__module__.split(".")[0])
        top_file = getattr(top, "__file__", None)
        roots.append(Path(top_file).resolve().parent if top_file and top_file.endswith("__init__.py") else path.parent)
    return tuple(dict.fromkeys(roots))


def _suspects(recipe: Recipe, objects: Sequence[object] = (), made: Mapping[str, object] = {}) -> list[_Suspect]:
    """Every component the recipe chooses; what they ``made`` (by kind: the torch optimizer an
    optimizer component built runs the plugin's ``step``), under the component's name; and
    ``objects`` (a run's callbacks) that are not digitsum's own."""
    from ..registry import KIND_LABELS

    suspects = []
    for kind, choice in recipe.choices():
        origin = origin_of(kind, choice)
        suspects.append(_Suspect(f"{KIND_LABELS[kind]} '{choice.section.type}'", choice.cls, origin, _code_roots(choice.cls)))
        if made.get(kind) is not None:
            cls = type(made[kind])
            suspects.append(_Suspect(suspects[-1].label, cls, origin, _code_roots(cls)))
    for obj in objects:
        cls = type(obj)
        if not any(issubclass(cls, s.cls) for s in suspects):
            suspects.append(_Suspect(f"callback {cls.__name__}", cls, _local(cls), _code_roots(cls)))
    return suspects


def built(kind: str, choice: Choice, component: Component, made: object, given: Sequence[nn.Parameter] = ()) -> object:
    """``made``, what ``component`` (the recipe's ``choice`` of ``kind``) built from ``given``
    (an optimizer's parameters), if it is what its contract promises; else a
    :class:`ComponentError` naming the component, its origin and what came back, before anything
    trips on it (a schedule's LambdaLR on a list, a step() missing, an optimizer missing a head)."""
    problem = built_problem(component, made, given)
    if problem is None:
        return made
    raise _breach(kind, choice, "build", f"{problem}\n(a bug in that component's build(): docs/plugins.md says what it returns)")


def check_batch(recipe: Recipe, interface: Interface, batch: Mapping[str, object], size: int, device: torch.device) -> None:
    """A :class:`ComponentError` naming the generator when a batch it drew (``size`` samples)
    breaks its declared specs in dtype or shape (float64 or uint8 images, a missing input): the
    model would fail in its first layer, and the error would name the fusion that tripped on it."""
    problems = batch_problems(interface, batch, size, device)
    if problems:
        raise _breach("datasets", recipe.data, "draw", f"draw() returned a batch its declaration does not allow: {problems[0][1]}\n"
                      "(a bug in that generator's draw(): docs/plugins.md, \"Specs\", says what each spec's tensor is)")  # fmt: skip


def check_states(recipe: Recipe, states: Mapping[str, object], callbacks: Mapping[str, object] = {}) -> None:
    """A :class:`ComponentError` naming the first component whose state (``states``: the
    optimizer's and the scheduler's by kind, the callbacks' by their checkpoint key, ``callbacks``
    giving each key's object) cannot go into a checkpoint and come back from it, before such a
    checkpoint replaces a good one."""
    for key, state in states.items():
        problem = round_trip_problem(state)
        if problem is None:
            continue
        what = (f"its state_dict() holds what a checkpoint cannot hold ({problem}): keep tensors and plain data "
                "(numbers, strings, lists, dicts) in it, as docs/plugins.md says")  # fmt: skip
        if key in ("optimizers", "schedules"):
            raise _breach(key, recipe.optimizer if key == "optimizers" else recipe.schedule, "state_dict", what)
        owner = callbacks[key]
        logger = next((name for name, choice in recipe.log.items() if type(owner) is choice.cls), None)
        if logger is not None:
            raise _breach("loggers", recipe.log[logger], "state_dict", what)
        label = f"callback {type(owner).__name__}"
        raise ComponentError(f"{label} from {_local(type(owner))}: {what}", label, "state_dict", _local(type(owner)))


def _breach(kind: str, choice: Choice, method: str, problem: str) -> ComponentError:
    """A component of the recipe broke its contract in ``method`` (it returned or holds the wrong thing)."""
    from ..registry import KIND_LABELS

    label, origin = f"{KIND_LABELS[kind]} '{choice.section.type}'", origin_of(kind, choice)
    return ComponentError(f"{label} from {origin}: {problem}", label, method, origin)


def origin_of(kind: str, choice: Choice) -> str:
    """Where a recipe's chosen component of ``kind`` comes from: "digitsum-example 0.1.0",
    "built-in" or "local (module:Class)"."""
    from ..registry import REGISTRIES

    try:
        return str(REGISTRIES[kind].entry(choice.section.type).origin)
    except UserError:
        return _local(choice.cls)


def _local(cls: type) -> str:
    return f"local ({cls.__module__}:{cls.__qualname__})"


def _is_component_code(frame: FrameType, suspect: _Suspect) -> bool:
    """Whether a frame runs the component's own code (not torch's, not digitsum's core)."""
    path = Path(frame.f_code.co_filename).resolve()
    if path.is_relative_to(_TORCH) or (path.is_relative_to(_DIGITSUM) and not path.is_relative_to(_BUILTIN_COMPONENTS)):
        return False
    return not suspect.roots or any(path.is_relative_to(root) for root in suspect.roots)


def _owner(frame: FrameType, suspects: list[_Suspect]) -> _Suspect | None:
    """The component whose method this frame runs (``self`` an instance, or ``cls`` the class)."""
    for name in ("self", "cls"):
        if name not in frame.f_code.co_varnames[: frame.f_code.co_argcount]:
            continue
        obj = frame.f_locals.get(name)
        mro = inspect.getmro(obj if isinstance(obj, type) else type(obj))
        # the most derived match: a plugin head subclassing `classify` is itself, not `classify`
        matches = [s for s in suspects if s.cls in mro and _is_component_code(frame, s)]
        if matches:
            return min(matches, key=lambda s: mro.index(s.cls))
    return None


def _misshapen_output(frame: FrameType) -> str | None:
    """When a head method that reads the head's output (``loss``, ``metrics``, ``predict``...)
    was given an output of another shape than the head's ``output_kind`` declares, what
    ``forward()`` returned against what it should have: then ``forward()`` made the fault that
    the method only tripped on."""
    code = frame.f_code
    head, arguments = frame.f_locals.get("self"), code.co_varnames[1 : code.co_argcount]
    output = frame.f_locals.get(arguments[0]) if arguments else None
    if not isinstance(head, Head) or code.co_name == "forward" or not isinstance(output, Tensor) or output.dim() == 0:
        return None
    target = frame.f_locals.get(arguments[1]) if len(arguments) > 1 else None
    return output_problem(head, output, len(target) if isinstance(target, Tensor) and target.dim() else len(output))


def output_problem(head: Head, output: Tensor, size: int) -> str | None:
    """What is wrong with the shape of ``output``, ``head``'s forward on ``size`` samples, against
    what its ``output_kind`` declares; None when nothing is (an 'other' output: its own business)."""
    kind, space = getattr(head, "output_kind", "class_logits"), head.prediction_space()
    declared = declared_output_shape(kind, size, space.classes if space.length is None else None)
    if declared is None or tuple(output.shape) == declared:
        return None
    return f"forward() returned an output of shape {list(output.shape)} where its output_kind '{kind}' declares {list(declared)}"


def check_outputs(recipe: Recipe, model: nn.Module, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> None:
    """A :class:`ComponentError` naming the first head whose output on a batch has another shape
    than its ``output_kind`` declares. A narrower one trips the loss (and :func:`blame` names the
    head); a wider one would train without an error, spending probability on classes that never come."""
    for name, output in outputs.items():
        head = model.heads[name]
        problem = output_problem(head, output, len(batch[model.bindings[name].target])) if isinstance(output, Tensor) else None
        if problem is not None:
            raise _breach("heads", recipe.heads[name], "forward", f"{problem}\n(a bug in that head's forward(), or its "
                          "output_kind: docs/plugins.md, \"Head\", says what each kind declares)")  # fmt: skip


def check_metrics(recipe: Recipe, model: nn.Module, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> None:
    """A :class:`ComponentError` naming the first head whose ``metrics()`` on a batch are not one
    value per sample: a metric averaged over the batch would be summed as one sample's and
    reported as a wrong number."""
    for name, output in outputs.items():
        head, target = model.heads[name], batch[model.bindings[name].target]
        with torch.no_grad():
            metrics = head.metrics(output, target)
        if not isinstance(metrics, Mapping):
            raise _breach("heads", recipe.heads[name], "metrics", f"metrics() returned {_form(metrics)} where it returns a "
                          f"dict of per-sample values, each a tensor of shape [{len(target)}] (the batch's)")  # fmt: skip
        for key, value in metrics.items():
            if not isinstance(value, Tensor) or tuple(value.shape) != (len(target),):
                raise _breach("heads", recipe.heads[name], "metrics", f"metrics() returned '{key}' as {_form(value)} where "
                              f"each metric is per sample, a tensor of shape [{len(target)}] (the batch's): digitsum "
                              "averages them over a split")  # fmt: skip


def check_losses(recipe: Recipe, losses: Mapping[str, Tensor]) -> None:
    """A :class:`ComponentError` naming the first head whose ``loss()`` is not a floating-point
    scalar: the losses are weighed, summed and back-propagated (a per-sample loss ``[B]`` would
    fail in torch's backward, where nothing names the head)."""
    for name, loss in losses.items():
        if not isinstance(loss, Tensor) or loss.dim() != 0 or not loss.is_floating_point():
            raise _breach("heads", recipe.heads[name], "loss", f"loss() returned {_form(loss)} where a head's loss is the "
                          "batch's mean, a floating-point scalar (a tensor of shape []): reduce it with .mean()")  # fmt: skip


def _form(value: object) -> str:
    """What a component returned, as a contract breach names it: "a tensor of shape [128]"."""
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def _misshapen_features(frames: list[tuple[FrameType, int]], depth: int) -> tuple[Fusion, str] | None:
    """When a head's ``forward()`` raised on features of another width than the backbone's
    ``out_features`` declares (the model's frame holds both), the fusion and what its
    ``forward()`` returned against it: then the fusion made the fault the head tripped on."""
    for frame, _ in reversed(frames[:depth]):
        backbone, features = getattr(frame.f_locals.get("self"), "backbone", None), frame.f_locals.get("features")
        if isinstance(backbone, Fusion) and isinstance(features, Tensor):
            declared = [len(features), getattr(backbone, "out_features", None)]
            if list(features.shape) == declared:
                return None
            return backbone, f"forward() returned features of shape {list(features.shape)} where its out_features declares {declared}"
    return None


def blame(error: BaseException, recipe: Recipe, objects: Sequence[object] = (), made: Mapping[str, object] = {}) -> ComponentError | None:
    """A :class:`ComponentError` for ``error`` if a component's method (or one of ``objects``',
    a run's callbacks, or of what the components ``made``, by kind) raised it, else None."""
    suspects = _suspects(recipe, objects, made)
    frames = list(traceback.walk_tb(error.__traceback__))
    for depth in range(len(frames) - 1, -1, -1):  # the innermost component method is to blame
        suspect = _owner(frames[depth][0], suspects)
        if suspect is not None:
            break
    else:
        return None
    method = frames[depth][0].f_code.co_name
    own = [(f, line) for f, line in frames[depth:] if _is_component_code(f, suspect)]
    stack = traceback.StackSummary.extract(iter(own), capture_locals=False)
    detail = "".join(traceback.format_list(stack)).rstrip()
    kind = type(error).__qualname__
    text = str(error).strip()
    raised = f"{kind}{': ' + text if text else ''}"
    misshapen = _misshapen_output(frames[depth][0])
    features = _misshapen_features(frames, depth) if method == "forward" and issubclass(suspect.cls, Head) else None
    if features is not None:  # a head tripped on the features the fusion made: blamed on the fusion's forward()
        backbone, misshapen = features
        head, suspect = suspect.label, min((s for s in suspects if isinstance(backbone, s.cls)),
                                           key=lambda s: type(backbone).__mro__.index(s.cls))  # fmt: skip
        what = f": its {misshapen}; the forward() of {head} then raised"
        fault, method = "forward(), or its out_features", "forward"
        shown = f"the traceback shows where {head} tripped on them"  # the fusion's forward() had returned
    elif misshapen is not None:  # the method only tripped on what forward() made
        what = f": its {misshapen}; {method}() then raised"
        fault, method = "forward(), or its output_kind", "forward"  # blamed on forward()
        shown = f"the traceback shows where its {frames[depth][0].f_code.co_name}() tripped on it"
    else:
        what, fault, shown = f" raised {kind} in {method}()", "code", "the traceback shows its own frames only"
    message = f"{suspect.label} from {suspect.origin}{what}:\n{detail}\n{raised}\n(a bug in that component's {fault}; {shown})"
    setting = ""
    if "more than 1 value per channel" in text:  # torch's batch norm, in training, on a batch of one sample
        setting = (f"batch norm needs 2 samples or more in a training batch; data.batch_size is {recipe.data.section.batch_size}, "
                   "and an epoch's last batch holds what is left of the training split")  # fmt: skip
        message += f"\n(or the batch: {setting})"
    return ComponentError(message, suspect.label, method, suspect.origin, setting)


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed: Python's MemoryError, torch's (CUDA) out of
    memory, or the CPU allocator's RuntimeError."""
    oom = getattr(torch, "OutOfMemoryError", None)
    return isinstance(error, MemoryError) or (oom is not None and isinstance(error, oom)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


@contextmanager
def blame_components(recipe: Recipe, objects: Sequence[object] = (), made: Mapping[str, object] = {}) -> Iterator[None]:
    """Turn an exception raised by one of ``recipe``'s components (or of ``objects``: a run's
    callbacks; or of what the components ``made``: ``{"optimizers": torch_optimizer, ...}``) into
    a :class:`ComponentError`; leave user errors, interrupts and digitsum's own exceptions as they are."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        if _out_of_memory(error):  # the machine's limit, not a bug in the component that asked for memory
            first = " ".join(str(error).split())[:200]
            raise UserError(f"out of memory ({type(error).__name__}: {first}): lower data.batch_size, or the model's sizes "
                            "(its backbone's channels and hidden layers)") from None  # fmt: skip
        blamed = blame(error, recipe, objects, made)
        if blamed is None:
            raise
        raise blamed from error
