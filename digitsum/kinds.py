"""The component kinds: one record each, which everything that is per kind derives from.

Registries, entry-point discovery, listings, the plugin scaffold and recipe validation all read
this table, so adding a kind is one record here (and its contract class and recipe section).
Nothing here imports anything.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One kind of component.

    ``name`` is the kind's identifier: the registry's name, ``digitsum list NAME``, the ``kind`` of
    a listing row, the entry-point group ``digitsum.NAME``. ``contract`` is the class in
    :mod:`digitsum.contracts` that its components subclass; ``label`` and ``plural`` word it in
    messages. ``table`` is the recipe table a component of the kind is chosen in (``named``: one
    table per name, ``[heads.<name>]``). ``word`` is the short noun of scaffolded names
    (``shapes_data``, ``ShapesData``); ``also``: other nouns a user may type for the kind
    (``digitsum list backbones``), singular, a plural ``s`` accepted too.
    """

    name: str
    contract: str
    label: str
    plural: str
    table: tuple[str, ...]
    word: str
    named: bool = False
    also: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        """The entry-point group of the kind's components."""
        return f"digitsum.{self.name}"

    @property
    def recipe_table(self) -> str:
        """The table as a recipe writes it: ``[data]``, ``[heads.<name>]``."""
        return "[" + ".".join(self.table) + (".<name>" if self.named else "") + "]"

    def words(self) -> set[str]:
        """Every word naming the kind: its name, its singular, its other nouns (and their plurals)."""
        singulars = {self.name.removesuffix("s"), self.contract.lower(), *self.also}
        return {self.name} | singulars | {f"{w}s" for w in singulars}


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("datasets", "Generator", "dataset generator", "dataset generators", ("data",), "data", also=("dataset",)),
        Kind("fusions", "Fusion", "fusion", "fusions", ("backbone",), "fusion", also=("backbone",)),
        Kind("heads", "Head", "head", "heads", ("heads",), "head", named=True),
        Kind("optimizers", "Optimizer", "optimizer", "optimizers", ("train", "optimizer"), "optimizer", also=("optimiser",)),
        Kind("schedules", "Schedule", "learning-rate schedule", "learning-rate schedules", ("train", "schedule"), "schedule",
             also=("scheduler",)),
        Kind("loggers", "Logger", "logger", "loggers", ("log",), "logger", named=True),
    )
}  # fmt: skip

#: Entry-point group of shipped recipes (:mod:`digitsum.catalog`); not a component kind.
RECIPES = "recipes"
#: Entry-point group of shipped recipes' pretrained weights (:mod:`digitsum.weights`); not a component kind.
WEIGHTS = "weights"
#: Entry-point group of the doctor's checks plugins ship (:mod:`digitsum.diagnosis`); not a component kind.
CHECKS = "checks"


def kind_named(word: str) -> Kind | None:
    """The kind ``word`` names (``fusion``, ``backbones``, ``Heads``, ...), or None."""
    word = word.lower()
    return next((k for k in KINDS.values() if word in k.words()), None)
