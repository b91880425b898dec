"""The example plugin's components against digitsum's conformance suite."""

import pytest

from digitsum.contracts import Categorical, Classes, Image
from digitsum.testing import check_component, check_recipe
from digitsum_example.bilinear import Bilinear
from digitsum_example.ordinal import Ordinal
from digitsum_example.product import ProductDigit



@pytest.mark.parametrize("cls", [ProductDigit, Bilinear, Ordinal], ids=lambda c: c.__name__)
def test_conforms(cls):
    check_component(cls)


def test_bilinear_with_another_number_range():
    check_component(Bilinear, inputs={"picture": Image(1, 28, 28), "n": Categorical(3)})


def test_ordinal_on_the_product_target():
    check_component(Ordinal, Ordinal.Params(hidden=8), target=Classes(82))


def test_ordinal_refuses_an_image_target():
    assert Ordinal.check(Ordinal.Params(), Image()) != []


def test_product_targets_are_digit_times_number():
    interface = ProductDigit.interface(ProductDigit.Params(numbers=4))
    assert interface.targets["product"] == Classes(28)


def test_recipe_trains(tmp_path):
    summary = check_recipe("product", tmp_path)  # the installed plugin's recipe, by name
    assert set(summary["metrics"]["test"]) == {"digit", "product"}
