"""MNIST addition: the carry recursion against enumeration, the generator's fixed pairing, the
wiring rules of measured targets, and learning digits from sums alone on tiny data."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from digitsum.components.digits import IMPOSSIBLE, add_digits, argmax_sum, most_probable_sum, sum_log_likelihood
from digitsum.contracts import Digits, Images
from digitsum.data import DataContext
from digitsum.seeding import make_rng
from digitsum.engine.build import build_model
from digitsum.errors import RecipeError, UserError
from digitsum.recipe import load_recipe
from digitsum.registry import datasets, heads
from digitsum.testing import check_component



def _number(digits) -> int:
    return int("".join(str(int(d)) for d in digits))


def _digits(value: int, length: int) -> list[int]:
    return [int(c) for c in str(value).zfill(length)]


def _random_log_probs(batch: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    # peaked and flat distributions alike: logits of random scale
    scale = torch.rand(batch, n, 1, generator=rng, dtype=torch.float64) * 6
    log_a = (torch.randn(batch, n, 10, generator=rng, dtype=torch.float64) * scale).log_softmax(-1)
    log_b = (torch.randn(batch, n, 10, generator=rng, dtype=torch.float64) * scale).log_softmax(-1)
    return log_a, log_b


def _enumerate_sums(log_a: torch.Tensor, log_b: torch.Tensor) -> dict[int, float]:
    """P(a + b = s) for one sample, by enumerating every pair of N-digit numbers."""
    n = log_a.shape[0]
    pa = {_number(a): math.exp(sum(float(log_a[i, d]) for i, d in enumerate(a))) for a in itertools.product(range(10), repeat=n)}
    pb = {_number(b): math.exp(sum(float(log_b[i, d]) for i, d in enumerate(b))) for b in itertools.product(range(10), repeat=n)}
    sums: dict[int, float] = {}
    for a, p in pa.items():
        for b, q in pb.items():
            sums[a + b] = sums.get(a + b, 0.0) + p * q
    return sums


@pytest.mark.parametrize("n", [1, 2, 3])
def test_the_carry_recursion_is_the_exact_likelihood_of_every_sum(n):
    batch = 3 if n < 3 else 2
    log_a, log_b = _random_log_probs(batch, n, seed=n)
    for i in range(batch):
        exact = _enumerate_sums(log_a[i], log_b[i])
        assert math.isclose(sum(exact.values()), 1.0, rel_tol=1e-9)
        values = sorted(exact)  # every sum two N-digit numbers can make: 0 .. 2·(10^N - 1)
        assert values == list(range(2 * (10**n - 1) + 1))
        totals = torch.tensor([_digits(v, n + 1) for v in values])
        found = sum_log_likelihood(log_a[i : i + 1].expand(len(values), -1, -1), log_b[i : i + 1].expand(len(values), -1, -1), totals)
        assert torch.allclose(found.exp(), torch.tensor([exact[v] for v in values], dtype=torch.float64), rtol=1e-9, atol=1e-15)


def test_a_sum_no_two_numbers_make_is_impossible_and_its_loss_stays_finite():
    log_a, log_b = _random_log_probs(2, 2, seed=0)
    log_a.requires_grad_(True)
    total = torch.tensor([[2, 0, 0], [1, 9, 8]])  # 200 > 99 + 99; 198 = 99 + 99 is possible
    found = sum_log_likelihood(log_a, log_b, total)
    assert float(found[0].detach()) == IMPOSSIBLE and float(found[1].detach()) > IMPOSSIBLE / 2
    (-found.mean()).backward()
    assert torch.isfinite(log_a.grad).all()


def test_add_digits_is_integer_addition():
    rng = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 10, (64, 7), generator=rng), torch.randint(0, 10, (64, 7), generator=rng)
    total = add_digits(a, b)
    assert total.shape == (64, 8)
    assert [_number(t) for t in total] == [_number(x) + _number(y) for x, y in zip(a, b)]


def test_predictions_of_confident_digits_are_the_exact_sum():
    rng = torch.Generator().manual_seed(1)
    a, b = torch.randint(0, 10, (16, 5), generator=rng), torch.randint(0, 10, (16, 5), generator=rng)
    # 90 % on the right digit, the rest spread: both ways of predicting give the true sum
    log_a = torch.full((16, 5, 10), 0.1 / 9).scatter(2, a[..., None], 0.9).log()
    log_b = torch.full((16, 5, 10), 0.1 / 9).scatter(2, b[..., None], 0.9).log()
    truth = add_digits(a, b)
    assert torch.equal(argmax_sum(log_a, log_b), truth)
    assert torch.equal(most_probable_sum(log_a, log_b), truth)


@pytest.mark.parametrize("n", [1, 2])
def test_viterbi_prediction_is_at_least_as_likely_as_the_argmax_sum_on_average(n):
    log_a, log_b = _random_log_probs(200, n, seed=5)
    viterbi = sum_log_likelihood(log_a, log_b, most_probable_sum(log_a, log_b))
    argmax = sum_log_likelihood(log_a, log_b, argmax_sum(log_a, log_b))
    assert float(viterbi.exp().mean()) >= float(argmax.exp().mean())
    for i in range(5):  # and each is a sum the digits can make
        assert float(viterbi[i]) > IMPOSSIBLE / 2


# -- the generator -----------------------------------------------------------------------------------


def _generator(root, **params):
    cls = datasets.get("mnist_addition")
    return cls(cls.Params(**params), DataContext(root, download=False))


@pytest.mark.parametrize("n", [1, 2, 5])
def test_fixed_pairing_uses_each_image_once_and_sums_the_labels(n, tiny_root):
    gen = _generator(tiny_root, n=n)
    for split in ("train", "test"):
        digits = gen.data.mnist(split)
        size = gen.size(split)
        assert size == len(digits) // (2 * n)
        batch = gen.draw(split, torch.arange(size), make_rng(torch.device("cpu"), 0))
        images = torch.cat([batch["a"], batch["b"]], dim=1).flatten(0, 1)  # [size·2N, 1, 28, 28]
        # each image of the split appears at most once: as many distinct images as examples x 2N
        assert len(torch.unique(images.flatten(1), dim=0)) == size * 2 * n
        labels = batch["digits"]
        assert [_number(s) for s in batch["sum"]] == [_number(x[:n]) + _number(x[n:]) for x in labels]
        again = _generator(tiny_root, n=n).draw(split, torch.arange(size), make_rng(torch.device("cpu"), 7))
        assert all(torch.equal(batch[k], again[k]) for k in batch)  # fixed: not redrawn by the rng


def test_the_pairing_seed_and_redrawn_pairing_change_the_groups(tiny_root):
    index, rng = torch.arange(16), lambda s: make_rng(torch.device("cpu"), s)
    base = _generator(tiny_root, n=2).draw("train", index, rng(0))
    other_seed = _generator(tiny_root, n=2, pairing_seed=1).draw("train", index, rng(0))
    assert not torch.equal(base["digits"], other_seed["digits"])
    redrawn = _generator(tiny_root, n=2, pairing="redrawn")
    first, second = redrawn.draw("train", index, rng(0)), redrawn.draw("train", index, rng(1))
    assert not torch.equal(first["digits"], second["digits"])
    test = [redrawn.draw("test", index, rng(s))["digits"] for s in (0, 1)]
    assert torch.equal(*test)  # the test examples stay fixed


def test_the_interface_declares_sequences_and_digit_targets():
    cls = datasets.get("mnist_addition")
    interface = cls.interface(cls.Params(n=4))
    assert interface.inputs == {"a": Images(4), "b": Images(4)}
    assert interface.targets == {"sum": Digits(5), "digits": Digits(8)}
    assert interface.measured == {"digits"}
    assert cls.interface(cls.Params(n=4, supervision="digits")).measured == frozenset()


@pytest.mark.parametrize("params", [{}, {"n": 3}, {"n": 2, "pairing": "redrawn"}])
def test_the_generator_conforms(params):
    check_component(datasets.get("mnist_addition"), datasets.get("mnist_addition").Params(**params))


@pytest.mark.parametrize("name", ["addition", "per_digit"])
def test_the_heads_conform_on_longer_numbers(name):
    check_component(heads.get(name), target=Digits(6))


# -- wiring -----------------------------------------------------------------------------------------


def test_a_measured_target_cannot_be_trained_on():
    with pytest.raises(RecipeError) as e:
        load_recipe("add-1", ["heads.digits.weight=1"])
    assert "heads.digits.weight" in e.value.message and "measured only" in e.value.message
    recipe = load_recipe("add-1", ["heads.digits.weight=1", "data.supervision='digits'"])  # for comparison: allowed
    assert recipe.heads["digits"].section.weight == 1


def test_a_head_that_reads_per_image_logits_needs_a_backbone_that_gives_them():
    recipe = load_recipe("add-2", ["heads.sum.target='digits'", "data.supervision='digits'"])  # 4 digits: the head reads 2 x 3 images
    with pytest.raises(UserError) as e:
        build_model(recipe)
    message = e.value.message
    assert "heads.sum" in message and "reads 60 features" in message and "gives 40" in message


def test_digit_cnn_refuses_a_number_input():
    with pytest.raises(RecipeError) as e:
        load_recipe("original", ["backbone.type='digit_cnn'"])
    assert "no use for the input(s) number" in e.value.message


# -- learning from sums alone, and what the engine does with a trained model -------------------------


@pytest.fixture(scope="module")
def tiny_addition_run(tmp_path_factory, tiny_root):
    """add-1 trained on the tiny data (256 pairs), on sums alone (a few seconds)."""
    import digitsum

    overrides = [f"data.root='{tiny_root}'", "data.download=false", "train.device='cpu'", "train.epochs=5",
                 "data.batch_size=16", "backbone.conv_channels=[8, 16]", "backbone.hidden=32", "train.optimizer.lr=3e-3",
                 "train.threads=1"]  # one thread: two fight each other on a busy machine  # fmt: skip
    out = tmp_path_factory.mktemp("addition") / "run"
    digitsum.train("add-1", out, overrides=overrides, progress=False, preflight=False)
    return digitsum.load_run(out)


def test_a_sum_only_run_on_tiny_data_learns_the_digits(tiny_addition_run):
    test = tiny_addition_run.summary["metrics"]["test"]
    # the digits were never a label (weight 0, a measured target): chance is 10 %
    assert test["digits"]["accuracy"] > 0.5, test
    assert test["sum"]["accuracy"] > 0.3, test
    assert (tiny_addition_run.run_dir / "samples.png").is_file()


def test_prediction_takes_sequences_of_images_and_gives_the_sums_digits(tiny_addition_run, tiny_root):
    run = tiny_addition_run
    digits = run.generator.data.mnist("test")
    images = [digits.images[i].numpy() for i in range(4)]
    one = run.predict(a=[images[0]], b=[images[1]], preprocess=False)
    assert not one.batched and one.batch_size == 1
    total = one["sum"].value(0)
    assert isinstance(total, list) and len(total) == 2 and all(0 <= d <= 9 for d in total)
    assert one["sum"].probability(0) is None  # digits, not one class: no class probabilities
    assert len(one["digits"].value(0)) == 2
    assert f"sum: {''.join(map(str, total))}" in repr(one)
    many = run.predict(a=[[images[0]], [images[2]]], b=[[images[1]], [images[3]]], preprocess=False)
    assert many.batched and many.batch_size == 2 and many["sum"].value(0) == total
    with pytest.raises(UserError, match="input 'a' takes 1 image"):
        run.predict(a=[images[0], images[1]], b=[images[1]], preprocess=False)


def test_the_samples_figure_captions_digit_targets(tiny_addition_run):
    from digitsum.engine.pictures import format_value

    assert format_value(torch.tensor([0, 1, 7])) == "017" and format_value(torch.tensor(7)) == "7"
    assert format_value(torch.arange(20) % 10) == "01234567890…"
    figure = tiny_addition_run.samples(count=4)
    captions = [text.get_text() for ax in figure.axes for text in ax.texts]
    assert len(captions) == 4 and all(c.splitlines()[1].startswith("sum ") for c in captions)


def test_export_describes_sequence_inputs(tiny_addition_run, tmp_path):
    exported = tiny_addition_run.export("torchscript", tmp_path / "model.pt")
    import json

    sidecar = json.loads(exported.sidecar.read_text())
    inputs = {row["name"]: row for row in sidecar["inputs"]}
    assert inputs["a"]["kind"] == "images" and inputs["a"]["shape"] == ["batch", 1, 1, 28, 28]
    assert exported.max_difference <= exported.tolerance


def test_digit_cnn_test_shifts_average_log_probabilities_in_evaluation_only():
    from digitsum.components.fusions.digit_cnn import DigitCNN

    torch.manual_seed(0)
    inputs = {"a": Images(2)}
    plain = DigitCNN(DigitCNN.Params(conv_channels=[4, 8], hidden=16), inputs)
    shifted = DigitCNN(DigitCNN.Params(conv_channels=[4, 8], hidden=16, test_shifts=1), inputs)
    shifted.load_state_dict(plain.state_dict())
    x = torch.randn(3, 2, 1, 28, 28)
    batch = {"a": x}
    assert torch.equal(shifted.train()(batch), plain.train()(batch))  # training sees each image once
    plain.eval(), shifted.eval()
    views = [torch.roll(x, m, dims=(3, 4)) for m in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))]
    expected = torch.stack([torch.log_softmax(plain({"a": v}).view(3, 2, 10), -1) for v in views]).mean(0)
    assert torch.allclose(shifted(batch).view(3, 2, 10), expected, atol=1e-5)
    assert not torch.allclose(shifted(batch), plain(batch))


def test_digit_cnn_last_layer_scale_shrinks_the_random_start_and_zero_reads_every_image_as_uniform():
    from digitsum.components.fusions.digit_cnn import DigitCNN

    inputs = {"a": Images(2)}
    torch.manual_seed(0)
    full = DigitCNN(DigitCNN.Params(conv_channels=[4, 8], hidden=16), inputs)
    torch.manual_seed(0)
    tenth = DigitCNN(DigitCNN.Params(conv_channels=[4, 8], hidden=16, last_layer_scale=0.1), inputs)
    for name, value in full.state_dict().items():  # only the last layer differs, by the factor
        scale = 0.1 if name.startswith("classifier.2.") else 1.0
        assert torch.allclose(tenth.state_dict()[name], value * scale), name
    torch.manual_seed(0)
    model = DigitCNN(DigitCNN.Params(conv_channels=[4, 8], hidden=16, last_layer_scale=0), inputs)
    batch = {"a": torch.randn(3, 2, 1, 28, 28)}
    assert torch.equal(model(batch), torch.zeros(3, 20))  # equal logits: the uniform distribution
    default = DigitCNN(DigitCNN.Params(conv_channels=[4, 8], hidden=16), inputs)
    assert default(batch).abs().sum() > 0  # the random initialisation reads images unevenly
    # the gradient reaches the hidden layers only through the last layer: one step moves it off zero
    loss = -torch.log_softmax(model(batch).view(3, 2, 10), -1)[..., 3].mean()
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert model(batch).view(3, 2, 10).argmax(-1).eq(3).all()
