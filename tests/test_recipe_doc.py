"""docs/recipes.md documents every key a recipe section accepts."""

from __future__ import annotations

import re

import pytest

from digitsum.recipe import DataSection, HeadSection, InitSection, OptimizerSection, ScheduleSection, TrainSection

from .conftest import REPO

RECIPES_DOC = REPO / "docs" / "recipes.md"


@pytest.mark.parametrize("section", [DataSection, HeadSection, TrainSection, OptimizerSection, ScheduleSection, InitSection], ids=lambda s: s.__name__)
def test_every_section_key_is_in_the_recipe_doc(section):
    text = RECIPES_DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*(\w+)\s*=", text, flags=re.MULTILINE))
    missing = sorted(set(section.model_fields) - documented)
    assert not missing, f"docs/recipes.md does not show these {section.__name__} keys: {missing}"
