"""Every registered component against its contract, on tiny data: parametrised over the
registries, so a new built-in is tested as soon as it is registered."""

from __future__ import annotations

import pytest
import torch

from digitsum.contracts import Categorical, Classes, Digits, Image, Images
from digitsum.data import DataContext
from digitsum.seeding import make_rng
from digitsum.errors import RecipeError
from digitsum.recipe import load_recipe
from digitsum.registry import datasets, fusions, heads

from ..conftest import RECIPES

GENERATORS = datasets.names()
FUSIONS = fusions.names()
HEADS = heads.names()


def draw(generator_name: str, root, n: int = 8, seed: int = 0, split: str = "train", **params):
    cls = datasets.get(generator_name)
    gen = cls(cls.Params(**params), DataContext(root))
    return gen, gen.draw(split, torch.arange(n), make_rng(torch.device("cpu"), seed))


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_batches_match_the_declared_interface(name, tiny_root):
    cls = datasets.get(name)
    interface = cls.interface(cls.Params())
    gen, batch = draw(name, tiny_root, n=8)
    assert set(batch) == set(interface.inputs) | set(interface.targets)
    for key, spec in {**interface.inputs, **interface.targets}.items():
        value = batch[key]
        if isinstance(spec, Image):
            assert value.shape == (8, spec.channels, spec.height, spec.width) and value.is_floating_point(), key
        elif isinstance(spec, Images):
            assert value.shape == (8, spec.count, spec.channels, spec.height, spec.width) and value.is_floating_point(), key
        elif isinstance(spec, Digits):
            assert value.shape == (8, spec.length) and value.dtype == torch.int64, key
            assert 0 <= int(value.min()) and int(value.max()) < spec.base, key
        else:
            assert value.shape == (8,) and value.dtype == torch.int64, key
            assert 0 <= int(value.min()) and int(value.max()) < spec.classes, key
    assert isinstance(gen.describe(batch, 0), str)


#: Generators whose test draws use no randomness at all (their examples are fixed, as a
#: benchmark's are: mnist_addition's groups of images come from its pairing_seed).
FIXED_TEST_DRAWS = {"mnist_addition"}


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_draws_are_fixed_by_the_rng_seed(name, tiny_root):
    _, a = draw(name, tiny_root, seed=3, split="test")
    _, b = draw(name, tiny_root, seed=3, split="test")
    _, c = draw(name, tiny_root, seed=4, split="test")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # every other built-in draws something at random (a number, a partner, noise)
    assert all(torch.equal(a[k], c[k]) for k in a) == (name in FIXED_TEST_DRAWS)


def test_two_images_targets_are_the_partners_labels(tiny_root):
    _, batch = draw("two_images", tiny_root, n=64)
    assert torch.equal(batch["sum"], batch["digit_a"] + batch["digit_b"])
    _, single = draw("single_digit", tiny_root, n=64)
    assert torch.equal(batch["image_a"], single["image"])  # sample i is image_a, unchanged
    assert not torch.equal(batch["image_a"], batch["image_b"])


def test_noisy_digits_without_corruption_is_single_digit(tiny_root):
    _, clean = draw("noisy_digits", tiny_root, sigma=0.0, salt_pepper=0.0, occlusion=0)
    _, single = draw("single_digit", tiny_root)
    assert all(torch.equal(clean[k], single[k]) for k in single)


@pytest.mark.parametrize("corruption", [{"sigma": 0.5}, {"salt_pepper": 0.3}, {"occlusion": 10}])
def test_each_noisy_digits_corruption_changes_images_and_keeps_the_range(corruption, tiny_root):
    off = {"sigma": 0.0, "salt_pepper": 0.0, "occlusion": 0, "normalize": False}
    _, clean = draw("noisy_digits", tiny_root, **off)
    _, noisy = draw("noisy_digits", tiny_root, **{**off, **corruption})
    changed = (noisy["image"] != clean["image"]).float().mean()
    assert changed > 0.01, corruption
    assert float(noisy["image"].min()) >= 0.0 and float(noisy["image"].max()) <= 1.0
    assert torch.equal(noisy["digit"], clean["digit"])  # labels are never corrupted


@pytest.mark.parametrize("edit, key", [("data.sigma=-1", "data.sigma"), ("data.salt_pepper=1.5", "data.salt_pepper"),
                                       ("data.occlusion=29", "data.occlusion"), ("data.sigmaa=0.1", "did you mean 'sigma'")])  # fmt: skip
def test_bad_noise_parameters_are_refused_naming_the_key(edit, key):
    with pytest.raises(RecipeError) as e:
        load_recipe(RECIPES / "noisy.toml", [edit])
    assert key in e.value.message


def _pairs():
    """Every (fusion, generator) pair, marked by whether the fusion says it can serve it."""
    for fusion in FUSIONS:
        cls = fusions.get(fusion)
        for generator in GENERATORS:
            gen = datasets.get(generator)
            inputs = gen.interface(gen.Params()).inputs
            yield pytest.param(fusion, generator, not cls.check(cls.Params(), inputs), id=f"{fusion}-{generator}")


@pytest.mark.parametrize("fusion, generator, serves", list(_pairs()))
def test_fusion_forward_and_backward_on_every_generator_it_serves(fusion, generator, serves, tiny_root):
    gen_cls = datasets.get(generator)
    inputs = gen_cls.interface(gen_cls.Params()).inputs
    if not serves:
        pytest.skip(f"{fusion} refuses {generator} (tested at recipe check)")
    cls = fusions.get(fusion)
    model = cls(cls.Params(), inputs)
    _, batch = draw(generator, tiny_root, n=5)
    features = model(batch)
    assert features.shape == (5, model.out_features)
    features.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{fusion}: {name} gets no gradient"


def test_the_inputs_reach_the_features(tiny_root):
    """Changing only the number changes every number-using backbone's features."""
    _, batch = draw("single_digit", tiny_root, n=4)
    other = {**batch, "number": (batch["number"] + 1) % 10}
    cls = datasets.get("single_digit")
    inputs = cls.interface(cls.Params()).inputs
    torch.manual_seed(0)
    for name in FUSIONS:
        cls = fusions.get(name)
        if cls.check(cls.Params(), inputs):
            continue  # it refuses these inputs (digit_cnn: images only)
        model = cls(cls.Params(), inputs)
        if name == "film":  # FiLM starts as the identity; give it some conditioning first
            for layer in model.film:
                torch.nn.init.normal_(layer.weight)
        assert not torch.allclose(model(batch), model(other)), name


@pytest.mark.parametrize("join", ["concat", "add"])
def test_embedding_joins_serve_one_or_two_images(join, tiny_root):
    cls = fusions.get("embedding")
    for generator in ("single_digit", "two_images"):
        inputs = datasets.get(generator).interface(datasets.get(generator).Params()).inputs
        model = cls(cls.Params(join=join), inputs)
        _, batch = draw(generator, tiny_root, n=3)
        assert model(batch).shape == (3, model.out_features)


def test_film_without_a_number_input_is_refused_at_recipe_check_naming_fusions_that_fit():
    with pytest.raises(RecipeError) as e:
        load_recipe(RECIPES / "two-images.toml", ["backbone.type=film"])
    message = e.value.message
    assert "backbone.type" in message and "fusion 'film' cannot use the inputs" in message
    assert "number input" in message
    fitting = message.split("fusions that fit:")[1]
    assert "concat" in fitting and "embedding" in fitting and "film" not in fitting


@pytest.mark.parametrize("name", HEADS)
def test_every_head_has_a_finite_loss_that_decreases_on_a_tiny_problem(name):
    torch.manual_seed(0)
    target_spec = Classes(19)
    features = torch.randn(256, 16)
    target = (features[:, :4].sum(dim=1) * 3 + 9).round().clamp(0, 18).long()  # learnable from features
    cls = heads.get(name)
    if cls.check(cls.Params(), target_spec):
        assert cls.check(cls.Params(), Digits(3)) == [], f"{name} predicts neither classes nor digits"
        pytest.skip(f"{name} predicts Digits targets only (tests/components/test_addition.py)")
    head = cls(cls.Params(), 16, target_spec)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    first = head.loss(head(features), target)
    assert torch.isfinite(first)
    for _ in range(100):
        loss = head.loss(head(features), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    output = head(features).detach()
    assert float(head.loss(output, target)) < 0.7 * float(first.detach()), name
    metrics = head.metrics(output, target)
    assert cls.primary_metric in metrics
    assert all(v.shape == (256,) for v in metrics.values())
    prediction = head.predict(output)
    assert prediction.shape == target.shape and prediction.dtype == target.dtype


@pytest.mark.parametrize("name", HEADS)
def test_every_head_refuses_a_target_that_is_not_classes(name):
    cls = heads.get(name)
    assert cls.check(cls.Params(), Categorical(10))


def test_regress_predicts_the_rounded_value_within_range_and_scores_it():
    cls = heads.get("regress")
    head = cls(cls.Params(), 4, Classes(19))
    output = torch.tensor([-3.0, 2.4, 2.6, 17.5, 40.0])
    target = torch.tensor([0, 2, 2, 18, 18])
    assert head.predict(output).tolist() == [0, 2, 3, 18, 18]
    metrics = head.metrics(output, target)
    assert metrics["rounded_accuracy"].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert torch.allclose(metrics["mae"], torch.tensor([3.0, 0.4, 0.6, 0.5, 22.0]))


def test_regress_huber_is_gentler_than_mse_on_outliers():
    cls = heads.get("regress")
    output, target = torch.tensor([0.0]), torch.tensor([10])
    mse = cls(cls.Params(loss="mse"), 4, Classes(19)).loss(output, target)
    huber = cls(cls.Params(loss="huber", delta=1.0), 4, Classes(19)).loss(output, target)
    assert float(mse) == 100.0 and float(huber) == 9.5


@pytest.mark.parametrize("hidden", [0, 8])
def test_regress_outputs_one_value_per_sample_starting_mid_range(hidden):
    cls = heads.get("regress")
    head = cls(cls.Params(hidden=hidden), 4, Classes(19))
    with torch.no_grad():
        for p in head.parameters():
            p.zero_() if p.dim() > 1 else None  # weights at 0: the output is the bias path alone
    out = head(torch.randn(5, 4))
    assert out.shape == (5,)
    assert torch.allclose(out, torch.full((5,), 9.0))  # (19 - 1) / 2: the middle of the range
    assert sum(p.numel() for p in head.parameters()) == (5 if hidden == 0 else 4 * 8 + 8 + 8 + 1)


SHIFTING = [name for name in GENERATORS if "shift" in datasets.get(name).Params.model_fields]


@pytest.mark.parametrize("name", SHIFTING)
def test_shift_moves_training_images_only_and_0_changes_nothing(name, tiny_root):
    cls = datasets.get(name)
    images = [key for key, spec in cls.interface(cls.Params()).inputs.items() if isinstance(spec, (Image, Images))]
    for split in ("train", "test"):
        _, plain = draw(name, tiny_root, split=split, seed=5)
        _, unshifted = draw(name, tiny_root, split=split, seed=5, shift=0)
        _, shifted = draw(name, tiny_root, split=split, seed=5, shift=2)
        assert all(torch.equal(plain[k], unshifted[k]) for k in plain), "shift = 0 is the generator as it was"
        same_images = all(torch.equal(plain[k], shifted[k]) for k in images)
        assert same_images == (split == "test"), f"{split}: images moved only in training"
        assert all(torch.equal(plain[k], shifted[k]) for k in plain if k not in images), "labels and other inputs unchanged"


@pytest.mark.parametrize("modulated", [False, True])
def test_shared_cnn_in_channels_last_computes_what_contiguous_weights_compute(modulated):
    """ConvFeatures keeps its weights channels-last for speed: the same features and gradients
    as the contiguous layout (float rounding apart), with and without FiLM's modulation."""
    from digitsum.components.fusions.common import ConvFeatures

    torch.manual_seed(0)
    fast = ConvFeatures(1, [6, 12])
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    plain = ConvFeatures(1, [6, 12]).to(memory_format=torch.contiguous_format)
    plain.load_state_dict(fast.state_dict())
    assert all(p.is_contiguous() for p in plain.parameters())
    images = torch.rand(5, 1, 28, 28)
    modulation = [(torch.rand(5, c) + 0.5, torch.rand(5, c)) for c in (6, 12)] if modulated else None
    outputs = []
    for cnn in (fast, plain):
        x = images.clone().requires_grad_()
        features = cnn(x, modulation)
        features.square().sum().backward()
        outputs.append((features, x.grad))
    assert outputs[0][0].shape == (5, 12 * 4 * 4)
    torch.testing.assert_close(outputs[0][0], outputs[1][0])
    torch.testing.assert_close(outputs[0][1], outputs[1][1])
