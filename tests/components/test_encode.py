"""Generator.encode on every built-in: raw inputs prepared exactly as draw prepares its own."""

from __future__ import annotations

import pytest
import torch

from digitsum.contracts import Generator, Image, Images
from digitsum.data import DataContext, mnist_pixels
from digitsum.seeding import make_rng
from digitsum.registry import datasets
from digitsum.testing import raw_inputs

GENERATORS = datasets.names()


def generator(name: str, root, **params):
    cls = datasets.get(name)
    return cls(cls.Params(**params), DataContext(root, download=False))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("name", GENERATORS)
def test_encode_returns_the_declared_inputs_only_and_leaves_its_arguments(name, normalize, tiny_root):
    cls = datasets.get(name)
    if "normalize" not in cls.Params.model_fields and not normalize:
        pytest.skip(f"{name} has no normalize parameter")
    gen = generator(name, tiny_root, **({"normalize": normalize} if "normalize" in cls.Params.model_fields else {}))
    inputs = type(gen).interface(gen.params).inputs
    raw = raw_inputs(inputs, gen.data.mnist("test").images[:6])
    kept = {k: v.clone() for k, v in raw.items()}
    encoded = gen.encode(raw)
    assert set(encoded) == set(inputs)
    assert all(torch.equal(raw[k], kept[k]) for k in raw)
    for key, spec in inputs.items():
        if isinstance(spec, (Image, Images)):
            if cls.encode is not Generator.encode:
                continue  # its own preparation: compared with its draw by check_generator
            expected = (raw[key] - 0.1307) / 0.3081 if normalize else raw[key]
            assert encoded[key].dtype == torch.float32 and torch.allclose(encoded[key], expected)
            assert encoded[key] is not raw[key]
        else:
            assert encoded[key].dtype == torch.int64 and torch.equal(encoded[key], raw[key])


@pytest.mark.parametrize("normalize", [True, False])
def test_single_digit_draws_through_encode(normalize, tiny_root):
    gen = generator("single_digit", tiny_root, normalize=normalize)
    index = torch.tensor([5, 0, 17])
    batch = gen.draw("test", index, make_rng(torch.device("cpu"), 0))
    raw = {"image": mnist_pixels(gen.data.mnist("test").images[index]), "number": batch["number"]}
    encoded = gen.encode(raw)
    assert torch.equal(batch["image"], encoded["image"]) and torch.equal(batch["number"], encoded["number"])


@pytest.mark.parametrize("normalize", [True, False])
def test_two_images_draws_through_encode(normalize, tiny_root):
    gen = generator("two_images", tiny_root, normalize=normalize)
    index = torch.tensor([3, 9])
    batch = gen.draw("test", index, make_rng(torch.device("cpu"), 0))
    raw = mnist_pixels(gen.data.mnist("test").images[index])
    assert torch.equal(batch["image_a"], gen.encode({"image_a": raw, "image_b": raw})["image_a"])


def test_noisy_digits_adds_its_noise_in_draw_only(tiny_root):
    noisy, clean = generator("noisy_digits", tiny_root), generator("single_digit", tiny_root)
    index = torch.arange(8)
    raw = {"image": mnist_pixels(clean.data.mnist("test").images[index]), "number": torch.arange(8)}
    # prediction sees the user's image as it is: encoded as single_digit encodes it, and the same every time
    assert torch.equal(noisy.encode(raw)["image"], clean.encode(raw)["image"])
    assert torch.equal(noisy.encode(raw)["image"], noisy.encode(raw)["image"])
    drawn = noisy.draw("test", index, make_rng(torch.device("cpu"), 0))["image"]
    assert not torch.equal(drawn, clean.encode(raw)["image"])  # training images are corrupted


def test_the_corruption_hook_is_the_identity_for_single_digit(tiny_root):
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(generator("single_digit", tiny_root).corrupt(x, make_rng(torch.device("cpu"), 0)), x)
    noisy = generator("noisy_digits", tiny_root).corrupt(x, make_rng(torch.device("cpu"), 0))
    assert not torch.equal(noisy, x) and float(noisy.min()) >= 0 and float(noisy.max()) <= 1
