"""Whether a component keeps its contract (:mod:`digitsum.contracts`), asked where digitsum meets
it: a class's methods when the registry loads it, the layers a fusion or head built, what
an optimizer's or a schedule's ``build`` returned, and the batches a generator draws. Shared by the registry, the engine and the
conformance checks of :mod:`digitsum.testing`, so that all three say the same."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .contracts import Categorical, Classes, Component, Digits, Image, Images, Interface, Optimizer, Schedule
from .files import is_plain


def uninitialised_problem(module: nn.Module) -> str | None:
    """Why a built fusion or head cannot be used: the parameters and buffers that a lazy layer
    (``nn.LazyLinear``, ``nn.LazyConv2d``, ...) leaves uninitialised until its first forward
    pass, with the layer's class and what to do; None when there are none.

    Refused rather than initialised on a dummy batch: digitsum counts, seeds, moves and
    checkpoints the weights when it builds the model, before any batch exists (and a head's
    features come from the fusion), so the weights must exist once ``__init__`` returns.
    """
    lazy = {}
    for prefix, layer in module.named_modules():
        for name, tensor in [*layer.named_parameters(recurse=False), *layer.named_buffers(recurse=False)]:
            if nn.parameter.is_lazy(tensor):
                lazy[f"{prefix}.{name}" if prefix else name] = type(layer).__name__
    if not lazy:
        return None
    layers = ", ".join(dict.fromkeys(lazy.values()))
    return (f"has parameters that are not initialised before its first batch: {', '.join(lazy)} ({layers}); "
            "give each layer its input size (e.g. nn.Linear instead of nn.LazyLinear, sized from what __init__ "
            "receives): digitsum counts, seeds, moves and saves the weights when it builds the model, before any batch")


def is_width(value: object) -> bool:
    """Whether ``value`` can be a fusion's ``out_features``, the width the heads are built for: a
    positive int (not a bool)."""
    return is_plain(value, int) and value > 0


def _plain(signature: inspect.Signature) -> str:
    """``(self, parameters)``: a signature as messages show it, without annotations."""
    return str(signature.replace(parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
                                 return_annotation=inspect.Signature.empty))  # fmt: skip


def _required_positionals(signature: inspect.Signature) -> int:
    return sum(1 for p in signature.parameters.values()
               if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)  # fmt: skip


def accepts(function: Callable, arguments: int) -> bool:
    """Whether ``function`` can be called with ``arguments`` positional arguments; one whose
    signature cannot be read (a builtin) is trusted."""
    try:
        inspect.signature(function).bind(*range(arguments))
    except TypeError:
        return False
    except ValueError:
        return True
    return True


def _positional_names(function: Callable) -> list[str]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _moved_parameters(declared: Callable, written: Callable) -> list[str]:
    """The contract's parameter names that ``written`` takes at another position
    (``draw(self, index, rng, split)`` for ``draw(self, split, index, rng)``): digitsum passes
    them by position, so each would get another's value."""
    wanted, given = _positional_names(declared), _positional_names(written)
    return [n for i, n in enumerate(wanted) if n in given and given.index(n) != i]


def signature_problem(cls: type, base: type) -> str | None:
    """Why a method ``cls`` overrides cannot be called as digitsum calls ``base``'s (with the
    arguments the contract declares, by position), or None. Found when the class is loaded, so
    that a ``build(self)`` fails naming the method and both signatures rather than as a
    TypeError deep in a run."""
    contract_classes = [k for k in base.__mro__ if k.__module__.startswith("digitsum.")]
    names = dict.fromkeys(n for k in contract_classes for n, v in vars(k).items()
                          if (n == "__init__" or not n.startswith("_")) and isinstance(v, (Callable, classmethod)))  # fmt: skip
    missing = []
    for name in names:
        owner = next(k for k in cls.__mro__ if name in vars(k))
        if owner in contract_classes:
            if getattr(vars(owner)[name], "__digitsum_required__", False):
                missing.append(f"{name}{_plain(inspect.signature(getattr(base, name)))}")
            continue  # not overridden
        declared, written = getattr(base, name), getattr(cls, name)
        expected = _plain(inspect.signature(declared))
        if not callable(written):
            return f"{cls.__name__}.{name} is not a method: digitsum calls {name}{expected}"
        if accepts(written, _required_positionals(inspect.signature(declared))):
            moved = _moved_parameters(declared, written)
            if moved:
                return (f"{cls.__name__}.{name}{_plain(inspect.signature(written))} takes {', '.join(moved)} elsewhere "
                        f"than digitsum passes {'it' if len(moved) == 1 else 'them'}: digitsum calls {name}{expected}, by position")  # fmt: skip
            continue
        if name == "Params":  # a pydantic model: what makes Params() fail is a field without a default
            required = [n for n, f in getattr(written, "model_fields", {}).items() if f.is_required()]
            if required:
                return (f"{cls.__name__}.Params has parameters without a default ({', '.join(required)}): give each "
                        "one a default, as a recipe may leave any parameter out (digitsum calls Params())")  # fmt: skip
        written_as = _plain(inspect.signature(written))
        how = " (a @classmethod)" if isinstance(inspect.getattr_static(base, name), classmethod) else ""
        return (f"{cls.__name__}.{name}{written_as} cannot take what digitsum passes: "
                f"its contract is {name}{expected}{how}")  # fmt: skip
    if missing:  # after the methods it does define: a miswritten one says more than one left out
        return f"{cls.__name__} does not define {' or '.join(missing)}: every digitsum.{base.__name__} does (docs/plugins.md)"
    return None


#: What digitsum calls on the scheduler a schedule builds (the Trainer, checkpoints, the doctor).
SCHEDULER_METHODS = ("step", "get_last_lr", "state_dict", "load_state_dict")


def built_problem(component: Component, built: object, given: Sequence[nn.Parameter] = ()) -> str | None:
    """Why what an optimizer's or a schedule's ``build`` returned is not what its contract
    promises (a ``torch.optim.Optimizer`` holding each of the ``given`` parameters once; a
    scheduler with :data:`SCHEDULER_METHODS`), or None."""
    if isinstance(component, Optimizer):
        if not isinstance(built, torch.optim.Optimizer):
            return f"build() returned {type(built).__name__}, not a torch.optim.Optimizer"
        held = [p for group in built.param_groups for p in group["params"]]
        if given and (len(held) != len(given) or {id(p) for p in held} != {id(p) for p in given}):
            # a tensor it does not hold keeps its initial weights: a head that never trains
            return (f"build() was given {len(given)} parameter tensors and its param groups hold {len(held)}: "
                    "it must hold every parameter it is given, each once")
        if (wrong := lr_problem(component, built)) is not None:
            return wrong
    if isinstance(component, Schedule):
        missing = [m for m in SCHEDULER_METHODS if not callable(getattr(built, m, None))]
        if missing:
            return f"build() returned {type(built).__name__}, without {', '.join(missing)} (a torch LRScheduler has them)"
    return None


def lr_problem(component: Optimizer, built: torch.optim.Optimizer) -> str | None:
    """Why the optimizer's param groups do not run at the recipe's ``lr`` (a ``build`` that
    hard-codes its own), or None: the schedules read their peak from the groups, and the recipe,
    the doctor and a sweep all take ``train.optimizer.lr`` to be the rate the run trains at."""
    lr = getattr(getattr(component, "params", None), "lr", None)
    if not isinstance(lr, (int, float)):
        return None
    rates = []
    for group in built.param_groups:
        try:
            rates.append(float(group.get("lr")))
        except (TypeError, ValueError):
            return f"build() returned an optimizer whose param group has lr {group.get('lr')!r}, not the recipe's lr {lr:g}"
    off = sorted({r for r in rates if not math.isclose(r, lr, rel_tol=1e-6)})
    if off:
        return (f"build() returned an optimizer at lr {', '.join(f'{r:g}' for r in off)} where its params.lr (the recipe's "
                f"train.optimizer.lr) is {lr:g}: build it with lr=params.lr (the schedules read their peak from its param groups)")
    return None


def tensor_problems(name: str, value: object, spec: object, batch_size: int, *, form_only: bool = False,
                    device: torch.device | str = "cpu") -> list[str]:  # fmt: skip
    """What is wrong with ``value`` as a batch of ``batch_size`` samples of ``spec``, as a
    generator's ``draw`` returns it (dtype, shape, range, device); ``form_only``: its type,
    device, dtype and shape only (what a model cannot take at all). Asked by the conformance
    checks, the doctor and a run's first batch."""
    if not isinstance(value, torch.Tensor):
        return [f"'{name}' is a {type(value).__name__}, not a tensor"]
    if value.device.type != torch.device(device).type:
        return [f"'{name}' is on {value.device}, not on the data device ({torch.device(device).type})"]
    if isinstance(spec, (Image, Images)):
        # float32: the model's weights' dtype (float64 or uint8 pixels fail in the first layer),
        # what the default encode() gives
        want, shape, high = "float32", (batch_size, *image_shape(spec)), None
    elif isinstance(spec, Digits):
        want, shape, high = "int64", (batch_size, spec.length), spec.base
    elif isinstance(spec, (Categorical, Classes)):
        want, shape, high = "int64", (batch_size,), spec.classes
    else:
        return [f"'{name}' is declared as {spec!r}, which is not a digitsum spec (Image, Images, Categorical, Classes, Digits)"]
    if tuple(value.shape) != shape or value.dtype != (torch.float32 if high is None else torch.int64):
        found = f"'{name}' is {value.dtype} {tuple(value.shape)}"
        if value.numel() and not value.dtype.is_complex:
            found += f" (min {float(value.min()):.4g}, max {float(value.max()):.4g})"
        return [f"{found}, declared {spec}: {want} {shape}"]
    if form_only:
        return []
    if high is None:
        return [] if torch.isfinite(value).all() else [f"'{name}' holds NaN or infinite values"]
    if value.numel() and (int(value.min()) < 0 or int(value.max()) >= high):
        what = "digits" if isinstance(spec, Digits) else "values"
        return [f"'{name}' holds {what} outside [0, {high}) (min {int(value.min())}, max {int(value.max())})"]
    return []


def batch_problems(interface: Interface, batch: Mapping[str, object], size: int, device: torch.device | str) -> list[tuple[str, str]]:
    """``(name, problem)`` for each declared input and target of ``interface`` that ``batch``
    (``size`` samples, as ``draw`` returned it on ``device``) lacks or holds in another type,
    device, dtype or shape than its spec: what a model cannot take at all (the run's first
    batch, the doctor's sample)."""
    problems = []
    for name, spec in {**interface.inputs, **interface.targets}.items():
        found = tensor_problems(name, batch[name], spec, size, form_only=True, device=device) if name in batch else [
            f"'{name}' is missing from the batch"]  # fmt: skip
        problems += [(name, problem) for problem in found]
    return problems


def image_shape(spec: Image | Images) -> tuple[int, ...]:
    """One sample's shape for an Image (``C, H, W``) or Images (``count, C, H, W``) spec."""
    count = (spec.count,) if isinstance(spec, Images) else ()
    return (*count, spec.channels, spec.height, spec.width)


def declared_classes(head: object) -> int | None:
    """The classes a head predicts, as it declares them: its prediction space's (the parity of a
    sum has 2), else its target's."""
    space = head.prediction_space()  # type: ignore[attr-defined]
    return space.classes if space.classes is not None else getattr(head.target, "classes", None)  # type: ignore[attr-defined]


def probabilities_problems(probabilities, batch_size: int, classes: int | None) -> list[str]:
    """``probabilities``: None, or one finite row of class probabilities per sample (what a
    head's ``probabilities`` must give: checked by ``digitsum.testing.check_head`` and the doctor)."""
    if probabilities is None:
        return []
    shape = (batch_size, classes)
    if not isinstance(probabilities, torch.Tensor) or tuple(probabilities.shape) != shape or not probabilities.is_floating_point():
        found = f"{probabilities.dtype} {tuple(probabilities.shape)}" if isinstance(probabilities, torch.Tensor) else type(probabilities).__name__
        return [f"probabilities(output) gave {found}, expected None or float {shape} (one row of class probabilities per sample)"]
    p = probabilities.double()
    if not torch.isfinite(p).all():
        return ["probabilities(output) holds NaN or infinite values"]
    problems = []
    if float(p.min()) < -1e-6:
        problems.append(f"probabilities(output) holds negative values (min {float(p.min()):.3g})")
    worst = float((p.sum(dim=1) - 1).abs().max())
    if worst > 1e-4:
        problems.append(f"probabilities(output) rows do not sum to 1 (off by up to {worst:.3g})")
    return problems
