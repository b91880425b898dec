"""Build what a recipe describes — its generator and its model — and nothing else.

:func:`build` is the one way to turn a recipe into objects (the Trainer, the doctor, a loaded run
and the benchmarks call it). It writes nothing, leaves torch's global random state as it found it,
configures no threads and starts no processes; data are loaded when the generator first needs them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from ..contract_checks import is_width, uninitialised_problem
from ..contracts import Generator
from ..data import DataContext, default_root
from ..errors import UserError
from ..recipe import Choice, Recipe
from ..registry import KIND_LABELS
from .component_errors import blame_components, origin_of
from .model import Binding, DigitModel


M = TypeVar("M", bound=torch.nn.Module)


@dataclass
class Built:
    """A recipe's generator and model, on ``device``; the model in training mode."""

    recipe: Recipe
    generator: Generator
    model: DigitModel
    device: torch.device


def pick_device(name: str | torch.device, key: str = "train.device") -> torch.device:
    """``auto`` is CUDA when present, else the CPU; an explicit device must exist. ``key``
    names where the choice came from, for the error message."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{key} = '{name}' but CUDA is not available here; use 'auto' or 'cpu'")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{key} = 'mps' but MPS is not available here; use 'auto' or 'cpu'")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):  # meta, xla...: no storage, or not built in
        raise UserError(f"{key} = '{name}': not a device digitsum runs on; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"{key} = '{name}' but this machine has {torch.cuda.device_count()} CUDA devices")
    return device


def build_model(recipe: Recipe) -> DigitModel:
    """The model a recipe describes, on the CPU, initialised from torch's current random state."""
    interface = recipe.interface()
    backbone = _initialised("fusions", recipe.backbone, recipe.backbone.cls(recipe.backbone.params, interface.inputs))
    heads, bindings = {}, {}
    for name, choice in recipe.heads.items():
        target = interface.targets[choice.section.target]
        needed = choice.cls.features_for(choice.params, target)
        if needed is not None and needed != backbone.out_features:
            raise UserError(
                f"heads.{name}: head '{choice.section.type}' reads {needed} features for target "
                f"'{choice.section.target}' ({target}), but backbone '{recipe.backbone.section.type}' "
                f"gives {backbone.out_features}: use a backbone whose features it can read (e.g. per-image "
                "logits: digit_cnn)"
            )
        heads[name] = _initialised("heads", choice, choice.cls(choice.params, backbone.out_features, target))
        bindings[name] = Binding(choice.section.target, choice.section.weight)
    return DigitModel(backbone, heads, bindings)


def _initialised(kind: str, choice: Choice, part: M) -> M:
    """``part``, a fusion or head just built; a user error naming it when a lazy layer left
    weights uninitialised (:func:`~digitsum.contract_checks.uninitialised_problem`), or a fusion
    left its ``out_features`` unset (the heads are built for that width)."""
    problem = uninitialised_problem(part)
    width = getattr(part, "out_features", None)
    if not problem and kind == "fusions" and not is_width(width):
        problem = (f"has out_features = {width!r} after __init__: a fusion sets it to the width of the features its "
                   "forward() returns, a positive int (the heads are built for it)")  # fmt: skip
    if problem:
        raise UserError(f"{KIND_LABELS[kind]} '{choice.section.type}' from {origin_of(kind, choice)} {problem}")
    return part


def build(recipe: Recipe, device: str | torch.device | None = None) -> Built:
    """The recipe's generator and model on ``device`` (default: the recipe's ``train.device``).

    The model's initial weights depend on the recipe's seed alone: two builds of one recipe
    are equal, and equal to the model ``digitsum run`` starts from. An exception raised by a
    component's own code names the component (:class:`~digitsum.engine.component_errors.ComponentError`).
    """
    device = pick_device(recipe.train.device) if device is None else pick_device(device, "device")
    generator = make_generator(recipe, device)
    with blame_components(recipe):
        check_memory(recipe, device)
        with torch.random.fork_rng(devices=[]):  # the caller's random state stays untouched
            torch.manual_seed(recipe.seed)
            model = build_model(recipe)
    return Built(recipe, generator, model.to(device), device)


def make_generator(recipe: Recipe, device: torch.device) -> Generator:
    """The recipe's dataset generator on ``device``, its data loaded and split (MNIST from
    ``data.root``, else $DIGITSUM_DATA or the user cache; ``data.val`` held out)."""
    section = recipe.data.section
    root = Path(section.root).expanduser() if section.root else default_root()
    context = DataContext(root, device, section.download, val=section.val, seed=recipe.seed, val_where=recipe.where("data.val"))
    with blame_components(recipe):
        return recipe.data.cls(recipe.data.params, context)


#: Bytes a parameter takes in training: its value, its gradient and two optimizer moments (Adam's), in fp32.
TRAINING_BYTES_PER_PARAMETER = 16


def check_memory(recipe: Recipe, device: torch.device) -> None:
    """Refuse a model that cannot fit before any of it is allocated: each size may be within its
    limit and the whole still need more memory than the device has. The model is built on the
    meta device (shapes, no storage) to count its parameters; a component that cannot be built
    there is not checked (its real build says what it needs)."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            parameters = sum(p.numel() for p in build_model(recipe).parameters())
    except UserError:
        raise
    except Exception:
        return
    if device.type == "cuda":
        memory = torch.cuda.get_device_properties(device).total_memory
    elif device.type == "cpu" and hasattr(os, "sysconf"):
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    else:
        return
    needed = parameters * TRAINING_BYTES_PER_PARAMETER
    if needed > memory:
        raise UserError(
            f"recipe '{recipe.name}' builds a model of {parameters:,} parameters: training it needs about "
            f"{_size(needed)} (weights, gradients, optimizer state), more than the {_size(memory)} of this "
            f"{device.type}; make its sizes smaller ([backbone], [heads.*])"
        )


def _size(count: int) -> str:
    return f"{count / 2**30:,.1f} GiB" if count >= 2**30 else f"{count / 2**20:,.0f} MiB"
