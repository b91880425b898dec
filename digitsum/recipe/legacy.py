"""Old spellings: ``[train]`` as digitsum 0.1.0 wrote it, before the optimizer and the schedule
were components (``optimizer = "adamw"``, ``lr = ...``, ``schedule = "onecycle"``).

In a recipe a user writes, the old spelling is an error that gives the new one
(:func:`legacy_problems`). A resolved recipe (one with ``[provenance]``, from a run directory)
and a checkpoint are read as the old code trained them (:func:`upgrade_train`), so old runs still
load, resume and replay. This module is the only place that knows the old spelling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import Problem, recipe_text

if TYPE_CHECKING:
    from .document import Document

#: Keys of ``[train]`` that moved into ``[train.optimizer]``.
MOVED_TRAIN_KEYS = ("lr", "weight_decay", "momentum")


def legacy_train(train: Any) -> bool:
    """Whether a ``[train]`` table is wholly in the old spelling: ``optimizer = "adamw"``, ``lr``, ...
    (a table mixing both spellings is not: its old keys are reported as errors)."""
    return (
        isinstance(train, dict)
        and not any(isinstance(train.get(k), dict) for k in ("optimizer", "schedule"))
        and (any(k in train for k in MOVED_TRAIN_KEYS) or any(isinstance(train.get(k), str) for k in ("optimizer", "schedule")))
    )


def upgrade_train(train: dict[str, Any]) -> dict[str, Any]:
    """A ``[train]`` table in the old spelling as component tables that train exactly as it did.

    The old defaults (Adam, lr 2e-3, no weight decay, SGD momentum 0.9, onecycle) apply to what
    it leaves out; the old ``onecycle`` cycled the momentum (Adam's beta1) between 0.85 and 0.95,
    so the upgraded schedule says so; ``momentum`` was ignored by Adam and AdamW, so it is
    dropped there. Used for resolved recipes and checkpoints written by older runs.
    """
    new = {k: v for k, v in train.items() if k not in MOVED_TRAIN_KEYS}
    kind = train.get("optimizer", "adam")
    if isinstance(kind, str):
        optimizer: dict[str, Any] = {"type": kind, "lr": train.get("lr", 2e-3), "weight_decay": train.get("weight_decay", 0.0)}
        if kind == "sgd":
            optimizer["momentum"] = train.get("momentum", 0.9)
        new["optimizer"] = optimizer
    schedule = train.get("schedule", "onecycle")
    if isinstance(schedule, str):
        new["schedule"] = {"type": schedule, **({"warmup": 0.25, "momentum": [0.85, 0.95]} if schedule == "onecycle" else {})}
    return new


def upgrade_resolved(doc: dict[str, Any]) -> dict[str, Any]:
    """A resolved recipe (``Recipe.to_dict()``, as checkpoints store it) in the current spelling."""
    if not legacy_train(doc.get("train")):
        return doc
    return {**doc, "train": upgrade_train(doc["train"])}


def legacy_problems(train: dict[str, Any], doc: Document, fallback: str) -> list[Problem]:
    """The old spelling of ``[train]`` (``optimizer = "adamw"``, ``lr = ...``, ``schedule =
    "onecycle"``) is an error saying how to write it now; the keys are taken out of ``train``."""
    problems = []
    for key in MOVED_TRAIN_KEYS:
        if key not in train:
            continue
        value = recipe_text(train.pop(key))
        where = str(doc.source_of(("train", key), fallback))
        what = "SGD's momentum" if key == "momentum" else f"`{key}`"
        problems.append(Problem(where, f"train.{key}", f"{what} belongs to the optimizer now: write {key} = {value} under "
                                f"[train.optimizer] (--set train.optimizer.{key}={value})"))  # fmt: skip
    for key in ("optimizer", "schedule"):
        if not isinstance(train.get(key), str):
            continue
        value = train.pop(key)
        where = str(doc.source_of(("train", key), fallback))
        message = f"is a table now: write [train.{key}] with type = \"{value}\" (--set train.{key}.type={value})"
        if key == "optimizer":
            message += " and the optimizer's parameters (lr, weight_decay, ...) beside it"
        elif value == "onecycle":
            message += "; the old onecycle also cycled the momentum between 0.85 and 0.95: add momentum = [0.85, 0.95] to keep that"
        problems.append(Problem(where, f"train.{key}", message))
    return problems


