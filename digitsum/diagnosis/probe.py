"""The probe: what the checks share (recipe, generator, model at init, batches, held-out samples)
and how a model is scored on them. The short training runs the checks measure with are
:mod:`.short_run`'s. Checks that train work on copies of the model, so a probe can be handed the
model a run is about to train (the preflight does).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cached_property
from itertools import islice
from typing import Any

import torch
from torch import Tensor, nn

from ..contracts import Batch, Generator, Image, Images
from ..listing import plain
from ..recipe import Recipe
from ..engine.batches import train_batches
from ..seeding import make_rng, stream_seed
from ..engine.build import build, build_model
from ..engine.model import DigitModel
from ..engine.warmstart import load_init
from .findings import Finding

#: Samples drawn for data statistics and activation probes: enough for stable figures, fast on a CPU.
SAMPLE = 2048
#: Held-out samples each head is scored on after a short run: a validation split the doctor holds
#: out of the training data (the recipe's own ``data.val`` when it has one), not the test split.
HELD_OUT = 1000
#: The most of the training split the doctor takes for it (a tenth): a training split too small
#: to spare HELD_OUT samples as this share (tiny data) is judged on the test split instead.
HELD_OUT_SHARE = 1 / 10
#: Checks that compare samples judge nothing on fewer training or held-out samples than this: so
#: small a split cannot tell memorising from learning.
MIN_JUDGED = 32
#: The fewest samples a short training run sees, however many images each holds (steps_for).
MIN_RUN_SAMPLES = 1600


def for_diagnosis(recipe: Recipe) -> Recipe:
    """The recipe whose model the doctor builds: the backbone's and heads' params marked
    evaluation-only at their defaults (``Params.for_diagnosis``). The probe keeps the recipe as
    given: what the doctor reports and repairs is the user's recipe."""
    heads = {name: replace(head, params=head.params.for_diagnosis()) for name, head in recipe.heads.items()}
    return replace(recipe, backbone=replace(recipe.backbone, params=recipe.backbone.params.for_diagnosis()), heads=heads)


def too_few(check: str, probe: Probe, *counts: int) -> Finding | None:
    """An info finding when fewer than MIN_JUDGED samples are there to judge by, else None."""
    if min(counts) >= MIN_JUDGED:
        return None
    return Finding(check, "info", f"too few samples to judge ({min(counts)}; {MIN_JUDGED} needed)",
                   f"{counts[0]} training and {counts[-1]} held-out samples drawn from {probe.recipe.data.section.type}")  # fmt: skip


#: A head learns when its held-out accuracy (``predict == target``) beats the best constant guess
#: by more than chance could explain: LEARN_SIGMAS standard errors of that guess's accuracy on
#: the held-out samples (about 4 points on 1000 samples at 10 %), and LEARN_MIN_POINTS at least.
LEARN_SIGMAS, LEARN_MIN_POINTS = 4.0, 0.03


class Probe:
    """What the checks share: recipe, generator, model at init, and batches drawn on demand."""

    def __init__(self, recipe: Recipe, generator: Generator, model: DigitModel, device: torch.device) -> None:
        self.recipe, self.generator, self.model, self.device = recipe, generator, model, device
        self.interface = recipe.interface()
        self.batch_size = recipe.data.section.batch_size
        self.cache: dict[str, Any] = {}  # results checks share (the short run's, say), by name

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> Probe:
        """Build the recipe on the CPU as ``digitsum run`` would (same seed, same init), but for
        evaluation-only params (:func:`for_diagnosis`)."""
        cpu_recipe = replace(recipe, train=recipe.train.model_copy(update={"device": "cpu"}))
        built = build(for_diagnosis(cpu_recipe))
        if cpu_recipe.init is not None:  # the weights the run starts from: a source it cannot use is an error here too
            load_init(built.model, cpu_recipe.init)
        n = built.generator.size("train")  # loads the data: a missing data set is a user error here, not in a check
        probe = cls(cpu_recipe, built.generator, built.model, built.device)
        if not cpu_recipe.data.section.val:
            probe.generator = probe._holding_out(n)
        return probe

    def _holding_out(self, n: int) -> Generator:
        """The recipe's generator with a validation split held out of its ``n`` training samples,
        as ``data.val`` holds one out: what the doctor judges and chooses fixes by (choices are
        made on a validation split, not on the test set), which no training step of the probe
        sees. ``data.val`` counts training images for MNIST's generators; a sample of several
        images asks for that many. A training split too small to spare them (HELD_OUT_SHARE), or a
        generator that gives no validation split (one written before they existed), is judged on
        its test split."""
        samples = self.scaled(HELD_OUT)
        if samples > n * HELD_OUT_SHARE:
            return self.generator
        section = self.recipe.data.section.model_copy(update={"val": math.ceil(samples * self.images_per_sample)})
        recipe = replace(self.recipe, data=replace(self.recipe.data, section=section))
        try:
            generator = build(for_diagnosis(recipe)).generator
            if generator.size("val") >= samples:
                return generator
        except Exception:  # noqa: BLE001 - no validation split: the test split, as before
            pass
        return self.generator

    def variant(self, keys: dict[str, Any]) -> Probe:
        """The probe of this recipe with ``keys`` set (dotted recipe keys), built the same way;
        the generator is reused when no ``data.`` key changes (no second load of the data)."""
        from ..recipe import load_recipe

        recipe = load_recipe(self.recipe.to_dict(), dict(keys), label=f"recipe {self.recipe.name!r}")
        recipe = replace(recipe, train=recipe.train.model_copy(update={"device": "cpu"}))
        if any(k.startswith("data.") for k in keys):
            return Probe.from_recipe(recipe)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            model = build_model(for_diagnosis(recipe))
        # the same weights as this probe's model where the change keeps their shapes (it was built
        # from the same seed; a model handed to the probe may have been changed since)
        mine, theirs = self.model.state_dict(), model.state_dict()
        if mine.keys() == theirs.keys() and all(mine[k].shape == theirs[k].shape for k in mine):
            model.load_state_dict(mine)
        return type(self)(recipe, self.generator, model.to(self.device), self.device)

    @cached_property
    def images_per_sample(self) -> float:
        """How many 28×28 images' worth of pixels one sample's inputs hold (at least 1): a sample
        of MNIST addition at N = 100 holds 200 images, and the probe draws that many times fewer
        samples, so every check costs about what it costs on one image per sample."""
        pixels = 0
        for spec in self.interface.inputs.values():
            if isinstance(spec, (Image, Images)):
                pixels += getattr(spec, "count", 1) * spec.channels * spec.height * spec.width
        return max(1.0, pixels / (28 * 28))

    def steps_for(self, images: int, bounds: tuple[int, int]) -> int:
        """Training steps at the recipe's batch size for ``images`` one-image samples' worth (a
        batch of 16 samples of 8 images each counts as 128), never fewer than MIN_RUN_SAMPLES
        samples (a sample of 200 images still carries one label), within ``bounds``."""
        lo, hi = bounds
        steps = max(lo, min(hi, int(max(images / (self.batch_size * self.images_per_sample), MIN_RUN_SAMPLES / self.batch_size))))
        if steps * self.batch_size < MIN_RUN_SAMPLES and MIN_RUN_SAMPLES * self.images_per_sample <= images:
            # a small batch (data.batch_size = 1): the step cap would leave too few samples to judge,
            # and MIN_RUN_SAMPLES of them are no more images than asked, so no dearer than a full run
            steps = math.ceil(MIN_RUN_SAMPLES / self.batch_size)
        return steps

    def scaled(self, count: int) -> int:
        """``count`` samples of one image each, as samples of this generator (never under MIN_JUDGED)."""
        return max(MIN_JUDGED, int(count / self.images_per_sample))

    def batch_of(self, count: int) -> int:
        """A training batch of ``count`` one-image samples, as samples of this generator (at least 1)."""
        return max(1, int(count / self.images_per_sample))

    @cached_property
    def sample(self) -> Batch:
        """``SAMPLE`` training samples at random positions (fewer for samples of many images:
        :meth:`scaled`), drawn with a fixed stream."""
        n = self.generator.size("train")
        order = torch.randperm(n, generator=make_rng(torch.device("cpu"), stream_seed(self.recipe.seed, "doctor")))
        index = order[: min(self.scaled(SAMPLE), n)].to(self.device)
        return self.generator.draw("train", index, make_rng(self.device, stream_seed(self.recipe.seed, "doctor", 1)))

    @cached_property
    def held_out(self) -> Batch:
        """Samples no training step of the probe sees: the validation split's (see
        :meth:`_holding_out`; the test split's when the generator gives none, the training
        split's last ones when it has no test split either)."""
        split = self.held_out_split
        n = self.generator.size(split)
        count = min(self.scaled(HELD_OUT), n if split != "train" else max(1, n // 10))
        start = n - count if split == "train" else 0
        index = torch.arange(start, start + count, device=self.device)
        return self.generator.draw(split, index, make_rng(self.device, stream_seed(self.recipe.seed, "doctor", "held_out")))

    @property
    def held_out_split(self) -> str:
        """The split :attr:`held_out` draws from: "val", else "test", else "train"."""
        names = self.generator.split_names() if hasattr(self.generator, "split_names") else getattr(self.generator, "splits", ("train", "test"))
        return next(split for split in ("val", "test", "train") if split in names)

    def train_batches(self, steps: int) -> list[Batch]:
        """The first ``steps`` training batches of the run (epochs repeat when the split is small)."""
        cached = self.cache.get("batches")
        if cached is not None and len(cached) >= steps:
            return cached[:steps]
        batches: list[Batch] = []
        epoch = 1
        while len(batches) < steps:
            epoch_batches = train_batches(self.generator, self.batch_size, self.recipe.seed, epoch, self.device)
            drawn = list(islice(epoch_batches, steps - len(batches)))
            if not drawn:
                break  # an empty split: nothing to draw
            batches += drawn
            epoch += 1
        self.cache["batches"] = batches
        return batches

    def target_of(self, head: str) -> str:
        return self.model.bindings[head].target

    def weight_of(self, head: str) -> float:
        return self.model.bindings[head].weight

    def classes_of(self, head: str) -> int | None:
        """How many classes the head predicts, one per sample, as it declares them
        (``Head.prediction_space``: the parity of a sum has 2); None for another prediction."""
        space = self.model.heads[head].prediction_space()
        return space.classes if space.length is None else None

    def expected(self, head: str, batch: Batch) -> Tensor:
        """What the head's right predictions on ``batch`` equal: its target, or the value its
        declared prediction space derives from it (``PredictionSpace.expected``)."""
        return self.model.heads[head].prediction_space().expected(batch[self.target_of(head)])

    def output_kind(self, head: str) -> str:
        """How the head declares its output (``Head.output_kind``): ``class_logits`` heads give
        ``[B, classes]`` logits to a cross-entropy-like loss; any other kind is judged through
        its ``predict`` and metrics only."""
        return getattr(self.model.heads[head], "output_kind", "class_logits")

    def logits_head(self, head: str, output: Tensor | None = None) -> bool:
        """Whether the head is judged as ``[B, classes]`` logits: declared so, and shaped so."""
        classes = self.classes_of(head)
        if self.output_kind(head) != "class_logits" or classes is None:
            return False
        return output is None or (output.dim() == 2 and output.shape[1] == classes)

    def trained_heads(self) -> list[str]:
        return [name for name in self.model.heads if self.weight_of(name) > 0]

    def chance(self, head: str) -> float:
        """The held-out accuracy of always guessing the most frequent right prediction(s)."""
        return self.model.heads[head].prediction_space().chance(self.expected(head, self.held_out))


@contextmanager
def seeded(probe: Probe, name: str) -> Iterator[None]:
    """torch's random stream fixed by the recipe's seed and ``name`` inside the block, and put
    back after it: a check that trains (dropout draws from that stream) gives the same verdict
    on every call and in every process, whatever ran before it."""
    with torch.random.fork_rng(devices=[probe.device] if probe.device.type == "cuda" else []):
        torch.manual_seed(stream_seed(probe.recipe.seed, "doctor", name))
        yield


def fresh_copy(model: DigitModel) -> DigitModel:
    """A copy to train, so that checks leave the model they were given untouched."""
    twin = copy.deepcopy(model)
    twin.train()
    return twin


def slice_batch(batch: Batch, n: int) -> Batch:
    return {k: v[:n] for k, v in batch.items()}


def batch_len(batch: Batch) -> int:
    return len(next(iter(batch.values())))


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside the block, in the mode it had after it."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


@torch.no_grad()
def eval_outputs(model: DigitModel, batch: Batch) -> dict[str, Tensor]:
    """The model's outputs on ``batch`` in eval mode, computed once for :func:`scores`,
    :func:`log_losses` and :func:`held_losses`."""
    with evaluating(model):
        return model(batch)


@torch.no_grad()
def log_losses(probe: Probe, model: DigitModel, batch: Batch, outputs: dict[str, Tensor]) -> dict[str, float | None]:
    """Each head's held-out log-loss (mean -ln p of the true class) through its own
    ``probabilities``: one yardstick across changes of loss settings, and far more sensitive
    than accuracy early in training. None for a head that gives no class probabilities.
    ``outputs``: the model's on ``batch`` (:func:`eval_outputs`)."""
    result: dict[str, float | None] = {}
    with evaluating(model):
        for head, out in outputs.items():
            target = probe.expected(head, batch)
            try:
                p = model.heads[head].probabilities(out)
            except Exception:
                p = None
            if p is None or p.dim() != 2 or p.shape[0] != len(target) or target.dim() != 1 or int(target.max()) >= p.shape[1]:
                result[head] = None
                continue
            picked = p.float().gather(1, target.long()[:, None]).squeeze(1)
            value = float(-picked.clamp_min(1e-12).log().mean())
            result[head] = value if math.isfinite(value) else None
            result[f"{head}:argmax"] = float((p.argmax(dim=1) == target).float().mean())
    return result


@torch.no_grad()
def held_losses(model: DigitModel, batch: Batch, outputs: dict[str, Tensor]) -> dict[str, float]:
    """Each head's own loss on ``batch`` in eval mode (``outputs``: as for :func:`log_losses`)."""
    with evaluating(model):
        return {h: float(v) for h, v in model.losses(outputs, batch).items()}


def entropy_of(values: Tensor) -> float:
    """The log-loss of the best constant distribution: the entropy of the values' frequencies."""
    _, counts = torch.unique(values.reshape(len(values), -1), dim=0, return_counts=True)
    share = counts.float() / len(values)
    return float(-(share * share.log()).sum())


@torch.no_grad()
def scores(probe: Probe, model: DigitModel, batch: Batch, outputs: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Each head's accuracy on ``batch`` through its own ``predict`` (any output shape;
    ``outputs``: as for :func:`log_losses`, when already computed)."""
    outputs = eval_outputs(model, batch) if outputs is None else outputs
    result = {}
    with evaluating(model):
        for head, out in outputs.items():
            space = model.heads[head].prediction_space()
            right = space.right(model.heads[head].predict(out), space.expected(batch[probe.target_of(head)]))
            result[head] = float(right.float().mean())
    return result


def learns(score: float, chance: float, n: int = HELD_OUT) -> bool:
    """Held-out accuracy on ``n`` samples clearly above the best constant guess's ``chance``."""
    se = math.sqrt(max(chance * (1 - chance), 1e-4) / max(n, 1))
    return math.isfinite(score) and score >= chance + max(LEARN_MIN_POINTS, LEARN_SIGMAS * se)


def off_defaults(params: Any) -> list[tuple[str, Any, Any]]:
    """``(name, default, value)`` of each setting of a component's ``params`` that has a default
    and differs from it (tuples read as lists): the settings the doctor resets one at a time, to
    see whether one alone explains a finding or is its fix."""
    found = []
    for name, spec in type(params).model_fields.items():
        if spec.is_required():
            continue
        default, value = spec.get_default(call_default_factory=True), getattr(params, name)
        if plain(default) != plain(value):
            found.append((name, default, value))
    return found
