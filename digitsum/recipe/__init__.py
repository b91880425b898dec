"""Recipes: TOML documents that pick components by name, validated all at once.

Loading a recipe goes through four steps, and every problem found on the way is collected
so that the user sees all of them in one message (:class:`~digitsum.errors.RecipeError`):

1. find the recipe (a path, or a shipped recipe's name: :mod:`digitsum.catalog`), read it and
   its ``extends`` chain (each parent a path relative to its child, or a name), merging tables
   (:mod:`.document`);
2. gather the overrides (``--set key=value``, a mapping of Python values, grid values) and lay
   them over the files together (:mod:`.overrides`);
3. validate the fixed sections (:mod:`.schema`) with pydantic, and each component table with
   the ``Params`` of the component its ``type`` names (:mod:`.validate`);
4. check the wiring: heads bound to targets the generator produces, a backbone that can use
   the generator's inputs.

Every problem names its source file and line (or the override that caused it), the key path,
and what would fit. Old spellings are known to :mod:`.legacy` alone.
"""

from .document import Source
from .legacy import MOVED_TRAIN_KEYS, legacy_train, upgrade_resolved, upgrade_train
from .overrides import Overrides, _override_key, parse_override, recipe_document
from .schema import (MACHINE_LOCAL_KEYS, BackboneSection, Choice, DataSection, HeadSection, KeyPath, LogSection,
                     OptimizerSection, Recipe, ScheduleSection, TrainSection)  # fmt: skip
from .validate import load_recipe

__all__ = [
    "MACHINE_LOCAL_KEYS", "MOVED_TRAIN_KEYS", "BackboneSection", "Choice", "DataSection", "HeadSection", "KeyPath",
    "LogSection", "OptimizerSection", "Overrides", "Recipe", "ScheduleSection", "Source", "TrainSection", "_override_key",
    "legacy_train", "load_recipe", "parse_override", "recipe_document", "upgrade_resolved", "upgrade_train",
]  # fmt: skip
