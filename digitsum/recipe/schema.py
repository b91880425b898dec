"""The recipe's schema: the fixed sections as pydantic models, and the validated :class:`Recipe`.

A component table (``[data]``, ``[backbone]``, ``[heads.<name>]``, ...) is split in two when it
is validated: the keys of its section model here (``type``, ``batch_size``, ...) and the
component's own parameters, validated by the ``Params`` of the component ``type`` names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..kinds import KINDS

KeyPath = tuple[str, ...]


def deepest(path: KeyPath, known: Mapping[KeyPath, Any]) -> Any:
    """What ``known`` holds for the deepest prefix of ``path`` it has, or None."""
    return next((known[path[:end]] for end in range(len(path), 0, -1) if path[:end] in known), None)


#: Recipe keys that say where and on what a run executes on this machine, not what it computes:
#: they may differ between a checkpoint and the recipe it is resumed or evaluated with, and
#: between the machines sharing one sweep; the doctor never proposes to change them.
MACHINE_LOCAL_KEYS = frozenset({"data.root", "data.download", "train.device", "train.threads", "train.checkpoint_every"})

# -- fixed sections -------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Section):
    """``[data]``: which generator, how big a batch, where MNIST lives."""

    type: str = Field(description="dataset generator, see `digitsum list datasets`")
    batch_size: int = Field(128, ge=1, le=65536, description="samples per training step")
    root: str | None = Field(None, description="MNIST folder; default $DIGITSUM_DATA or the user cache")
    download: bool = Field(True, description="download MNIST when it is missing")
    val: int = Field(
        0, ge=0, le=10**9,
        description="MNIST training images held out as a validation split 'val' (chosen by the seed, never trained on); 0: none",
    )


class BackboneSection(_Section):
    """``[backbone]``: which fusion backbone."""

    type: str = Field(description="fusion backbone, see `digitsum list fusions`")


class HeadSection(_Section):
    """``[heads.<name>]``: one output, bound to one target of the generator."""

    type: str = Field("classify", description="head, see `digitsum list heads`")
    target: str = Field(description="the generator target this head predicts")
    weight: float = Field(1.0, ge=0, le=1e6, description="weight of this head's loss in the total")


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class OptimizerSection(_Section):
    """``[train.optimizer]``: which optimizer; its parameters (``lr``, ...) beside ``type``."""

    type: str = Field("adam", description="optimizer, see `digitsum list optimizers`")


class ScheduleSection(_Section):
    """``[train.schedule]``: which learning-rate schedule; its parameters beside ``type``."""

    type: str = Field("onecycle", description="learning-rate schedule, see `digitsum list schedules`")


class LogSection(_Section):
    """``[log.<name>]``: one logger; ``type`` defaults to the table's name (``[log.tensorboard]``)."""

    type: str = Field(description="logger, see `digitsum list loggers`")


class TrainSection(_Section):
    """``[train]``: optimisation. The optimizer and the schedule are component tables of their
    own, ``[train.optimizer]`` and ``[train.schedule]`` (validated apart: see :class:`Recipe`)."""

    epochs: int = Field(4, ge=1, le=1000, description="passes over the training split")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N or mps")
    checkpoint_every: int = Field(
        0, ge=0, le=10**9, description="also checkpoint every N steps (0: only at each epoch's end)"
    )
    eval_every: int = Field(
        1, ge=1, le=1000, description="evaluate the val and test splits after every Nth epoch, and always after the last"
    )
    threads: int = Field(0, ge=0, le=1024, description="CPU threads for tensor ops; 0: one per usable core (split between torchrun ranks)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: mixed precision on CUDA, and on CPUs with bf16 instructions (ignored elsewhere)")
    channels_last: bool = Field(False, description="channels-last memory format on CUDA and CPU (ignored elsewhere)")
    compile: bool | Literal["reduce-overhead", "max-autotune"] = Field(
        False, description="torch.compile the model on CUDA (ignored elsewhere); 'reduce-overhead': with CUDA graphs"
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value


class InitSection(_Section):
    """``[init]``: start training from weights instead of a random initialisation."""

    weights: str = Field(
        min_length=1, max_length=4096,
        description="a shipped recipe's name with weights, a run directory or a .safetensors file "
                    "(a path relative to the recipe's folder)",
    )
    freeze_epochs: int = Field(0, ge=0, le=1000, description="keep the loaded parameters frozen for the first N epochs, then train everything")


@dataclass(frozen=True)
class Init:
    """The validated ``[init]``: ``weights`` as resolved when the recipe was read (a shipped
    recipe's name, or an absolute path: a run directory or a ``.safetensors`` file, ``is_path``),
    and ``where``, the file and line that gave ``init.weights`` (for the messages of a run);
    ``recorded_sha256``: the sha256 of the weights a resolved recipe's run started from (its
    ``[provenance] init_sha256``), when it has one and ``init.weights`` was not overridden."""

    weights: str
    is_path: bool
    freeze_epochs: int
    where: str
    recorded_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "freeze_epochs": self.freeze_epochs}


#: The fixed keys of each kind's component table, by kind (:data:`digitsum.kinds.KINDS`); the
#: component's own parameters sit beside them.
SECTIONS: dict[str, type[_Section]] = {"datasets": DataSection, "fusions": BackboneSection, "heads": HeadSection,
                                       "optimizers": OptimizerSection, "schedules": ScheduleSection, "loggers": LogSection}  # fmt: skip


def reserved_params_problem(kind: str, cls: type) -> str | None:
    """Why a component's ``Params`` cannot be used in its recipe table: a field named like one of
    the table's fixed keys (a head's ``target`` or ``weight``), whose value the table keeps for
    itself; the saved recipe could not say which the run used. None when there is none."""
    fixed = SECTIONS[kind].model_fields
    clash = [name for name in getattr(getattr(cls, "Params", None), "model_fields", {}) if name in fixed]
    if not clash:
        return None
    return (f"{cls.__name__}.Params declares {', '.join(repr(n) for n in clash)}, which {KINDS[kind].recipe_table} "
            f"keeps for itself (its keys: {', '.join(fixed)}): the component must name its parameter otherwise")

TOP_LEVEL = {
    "name": "name of the recipe (default: the file name)",
    "description": "one line on what the recipe is for",
    "seed": "seed for initialisation, data order and test pairings",
    "extends": "a parent recipe: a path relative to this file, or a recipe name",
    "data": "dataset generator table",
    "backbone": "fusion backbone table",
    "heads": "one table per head",
    "train": "optimisation table",
    "log": "one table per logger, [log.<name>]",
    "init": "start from weights: [init] weights = a recipe name, a run directory or a .safetensors file",
    "provenance": "versions that made a resolved recipe",
}


#: An array of plain values is written on one line up to this many characters.
_INLINE_ARRAY = 100
_ARRAY = re.compile(r"^(?P<key>[^\n]+ = )\[\n(?P<items>(?:    [^\n\[\]{}]+,\n)+)\]$", re.MULTILINE)


def toml_text(doc: Mapping[str, Any]) -> str:
    """``doc`` as TOML, as a person writes a recipe: ``conv_channels = [6, 12]`` on one line
    (tomli_w writes one element a line). The short arrays of plain values are joined, and the
    text is kept only if it reads back as ``doc``."""
    import tomllib

    import tomli_w

    text = tomli_w.dumps(doc)

    def inline(match: re.Match[str]) -> str:
        joined = f"{match['key']}[{', '.join(line.strip()[:-1] for line in match['items'].splitlines())}]"
        return joined if len(joined) <= _INLINE_ARRAY else match[0]

    compact = _ARRAY.sub(inline, text)
    return compact if compact != text and tomllib.loads(compact) == tomllib.loads(text) else text


# -- the validated recipe ---------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """A component picked by a recipe table: its section, its class and its validated params;
    ``recorded``: the name a resolved recipe gives it, a plugin's qualified (``dist:name``) so
    that a run directory keeps meaning the same class when another plugin brings a namesake."""

    section: Any
    cls: type
    params: Any
    recorded: str | None = None

    def to_dict(self) -> dict[str, Any]:
        section = self.section.model_dump() | ({"type": self.recorded} if self.recorded else {})
        return _without_none({**section, **self.params.model_dump(mode="json")})


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: everything the engine needs, nothing left to check.

    ``optimizer`` and ``schedule`` are the component tables ``[train.optimizer]`` and
    ``[train.schedule]`` (``recipe.optimizer.params.lr`` is the peak learning rate); ``train``
    holds the rest of ``[train]``; ``log`` the loggers by table name (``[log.<name>]``).
    """

    name: str
    description: str
    seed: int
    data: Choice
    backbone: Choice
    heads: dict[str, Choice]
    train: TrainSection
    optimizer: Choice
    schedule: Choice
    log: dict[str, Choice] = field(default_factory=dict)
    init: Init | None = None  # [init]: the weights training starts from (None: a random initialisation)
    #: Where each key of the recipe was written ("recipes/x.toml:12", "--set data.val"), by key
    #: path: for the messages of a run, which finds some values wrong only once it has the data.
    sources: Mapping[tuple[str, ...], str] = field(default_factory=dict, compare=False, repr=False)

    def where(self, key: str) -> str | None:
        """The file and line (or the override) that gave the dotted ``key``, or that gave the
        deepest table holding it when the key itself was not written; None when unknown."""
        return deepest(tuple(key.split(".")), self.sources)

    def choices(self) -> list[tuple[str, Choice]]:
        """Every component the recipe chooses, with its kind (``("heads", choice)``)."""
        return [("datasets", self.data), ("fusions", self.backbone), ("optimizers", self.optimizer), ("schedules", self.schedule),
                *(("heads", c) for c in self.heads.values()), *(("loggers", c) for c in self.log.values())]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The resolved document: defaults filled in, ``extends`` and overrides applied."""
        doc: dict[str, Any] = {"name": self.name}
        if self.description:
            doc["description"] = self.description
        doc["seed"] = self.seed
        doc["data"] = self.data.to_dict()
        doc["backbone"] = self.backbone.to_dict()
        doc["heads"] = {name: head.to_dict() for name, head in self.heads.items()}
        doc["train"] = {**self.train.model_dump(), "optimizer": self.optimizer.to_dict(), "schedule": self.schedule.to_dict()}
        if self.init is not None:
            doc["init"] = self.init.to_dict()
        if self.log:
            # `type` is written only where it is not the table's name: [log.tensorboard], not type = "tensorboard" again
            doc["log"] = {name: {k: v for k, v in c.to_dict().items() if not (k == "type" and v == name)} for name, c in self.log.items()}
        return doc

    def to_toml(self, provenance: Mapping[str, Any] | None = None, *, origins: bool = False) -> str:
        """The resolved recipe as TOML (what ``digitsum show`` prints); ``origins``: each key
        followed by a comment saying where its value came from (``# recipes/x.toml:7``,
        ``# --set train.epochs=3``) or ``# default``."""
        doc = self.to_dict()
        if provenance:
            doc["provenance"] = dict(provenance)
        text = toml_text(doc)
        return _with_origins(text, self.sources) if origins else text

    def interface(self):  # -> contracts.Interface (kept lazy: contracts import torch)
        return self.data.cls.interface(self.data.params)


_TABLE = re.compile(r"^\[(?P<path>[A-Za-z0-9_.-]+)\]$")
_KEY = re.compile(r"^(?P<key>[A-Za-z0-9_-]+) = ")


def _with_origins(text: str, sources: Mapping[tuple[str, ...], str]) -> str:
    """``text`` (TOML of a recipe) with each ``key = value`` line followed by where the value
    came from, aligned; a key no layer wrote is a default."""
    lines, table = text.splitlines(), ()
    notes: dict[int, str] = {}
    for number, line in enumerate(lines):
        if line.startswith("["):  # a quoted name ([heads."my head"]): its keys are left unannotated
            table = tuple(header["path"].split(".")) if (header := _TABLE.match(line)) else None
        elif table is not None and (key := _KEY.match(line)):
            notes[number] = sources.get((*table, key["key"]), "default")
    width = max((len(lines[n]) for n in notes), default=0)
    return "".join(f"{line.ljust(width)}  # {notes[n]}\n" if n in notes else f"{line}\n" for n, line in enumerate(lines))


def _without_none(value: Any) -> Any:
    """TOML has no null: drop None values (they mean 'the default')."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value
