"""The example plugin's pretrained weights against digitsum's conformance check: one test per
weights entry it declares in digitsum.weights (pyproject.toml)."""

import pytest

from digitsum.testing import check_weights, weights_of


@pytest.mark.parametrize("name", weights_of("digitsum-example"))
def test_weights_load_and_fit_their_recipe(name, tmp_path):
    check_weights(name, tmp_path)  # by name, as users load them; evaluated on tiny data under tmp_path


def test_the_recipe_ships_weights():
    assert weights_of("digitsum-example") == ["digitsum-example:product"]
