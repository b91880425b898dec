"""The example plugin's components against digitsum's conformance suite."""

import pytest
import torch

from digitsum.contracts import Categorical, Classes, Image
from digitsum.testing import check_component, check_recipe
from digitsum_example.bilinear import Bilinear
from digitsum_example.lion import Lion, LionOptimizer
from digitsum_example.ordinal import Ordinal
from digitsum_example.product import ProductDigit



@pytest.mark.parametrize("cls", [ProductDigit, Bilinear, Ordinal, Lion], ids=lambda c: c.__name__)
def test_conforms(cls):
    check_component(cls)


def test_bilinear_with_another_number_range():
    check_component(Bilinear, inputs={"picture": Image(1, 28, 28), "n": Categorical(3)})


def test_ordinal_on_the_product_target():
    check_component(Ordinal, Ordinal.Params(hidden=8), target=Classes(82))


def test_ordinal_probabilities_follow_the_cumulative_logits():
    head = Ordinal(Ordinal.Params(), 4, Classes(4))
    output = torch.tensor([[4.0, 2.0, -3.0]])  # logits of target > 0, > 1, > 2
    above = torch.sigmoid(output[0])
    expected = torch.stack([1 - above[0], above[0] - above[1], above[1] - above[2], above[2]])
    probabilities = head.probabilities(output)
    assert torch.allclose(probabilities[0], expected)
    assert int(probabilities.argmax()) == int(head.predict(output)) == 2


def test_ordinal_probabilities_are_a_distribution_even_with_unordered_thresholds():
    torch.manual_seed(0)
    head = Ordinal(Ordinal.Params(), 4, Classes(6))
    with torch.no_grad():
        head.thresholds.copy_(torch.tensor([0.5, -1.0, 2.0, 1.0, -0.5]))  # training may leave them so
    with torch.no_grad():
        probabilities = head.probabilities(head(torch.randn(64, 4) * 3))
    assert probabilities.shape == (64, 6)
    assert float(probabilities.min()) >= 0
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(64))


def test_lion_steps_by_the_sign_of_the_interpolated_momentum():
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    optimizer = LionOptimizer([weight], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    momentum = torch.zeros(3)
    expected = weight.detach().clone()
    for grad in ([0.3, -0.2, 0.0], [-1.0, -0.1, 2.0]):
        g = torch.tensor(grad)
        weight.grad = g.clone()
        optimizer.step()
        update = torch.sign(0.9 * momentum + 0.1 * g)
        expected = expected * (1 - 0.1 * 0.5) - 0.1 * update
        momentum = 0.99 * momentum + 0.01 * g
        assert torch.allclose(weight.detach(), expected)
    assert torch.allclose(optimizer.state[weight]["exp_avg"], momentum)


def test_lion_refuses_a_parameter_it_does_not_have():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Lion.Params(momentum=0.9)


def test_ordinal_refuses_an_image_target():
    assert Ordinal.check(Ordinal.Params(), Image()) != []


def test_product_targets_are_digit_times_number():
    interface = ProductDigit.interface(ProductDigit.Params(numbers=4))
    assert interface.targets["product"] == Classes(28)


def test_recipe_trains(tmp_path):
    summary = check_recipe("product", tmp_path)  # the installed plugin's recipe, by name
    assert set(summary["metrics"]["test"]) == {"digit", "product"}
