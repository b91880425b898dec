"""Recipes: TOML documents that pick components by name, validated all at once.

A recipe is read with its ``extends`` chain (:mod:`.document`), the overrides are laid over it
(:mod:`.overrides`), then its fixed sections (:mod:`.schema`), its component tables and their
wiring are validated (:mod:`.validate`). Every problem found on the way is collected into one
:class:`~digitsum.errors.RecipeError`. Old spellings are known to :mod:`.legacy` alone.
"""

from .document import Source
from .legacy import MOVED_TRAIN_KEYS, legacy_train, upgrade_resolved, upgrade_train
from .overrides import Overrides, _override_key, parse_override, recipe_document
from .schema import (MACHINE_LOCAL_KEYS, BackboneSection, Choice, DataSection, HeadSection, Init, InitSection, KeyPath, LogSection,
                     OptimizerSection, Recipe, ScheduleSection, TrainSection, toml_text)  # fmt: skip
from .validate import load_recipe

__all__ = [
    "MACHINE_LOCAL_KEYS", "MOVED_TRAIN_KEYS", "BackboneSection", "Choice", "DataSection", "HeadSection", "Init", "InitSection", "KeyPath",
    "LogSection", "OptimizerSection", "Overrides", "Recipe", "ScheduleSection", "Source", "TrainSection", "_override_key",
    "legacy_train", "load_recipe", "parse_override", "recipe_document", "toml_text", "upgrade_resolved", "upgrade_train",
]  # fmt: skip
