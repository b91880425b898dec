"""The probe: what the checks share (recipe, generator, model at init, batches), and the short
training runs they measure with (:func:`short_run`: the one yardstick of "it learns" for every
check and every verified fix). Checks that train work on copies of the model, so a probe can be
handed the model a run is about to train (the preflight does).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import islice
from typing import Any

import torch
from torch import Tensor, nn

from ..contracts import Batch, Generator, Image, Images
from ..recipe import Recipe
from ..engine.batches import train_batches
from ..seeding import make_rng, stream_seed
from ..engine.build import build, build_model
from ..engine.model import DigitModel
from ..engine.progress import fell
from ..engine.train import make_optimizer, make_scheduler
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


#: A head also learns when its held-out log-loss beats the best constant distribution's (the
#: targets' entropy) by this many nats: about 3 standard errors of a mean log-loss on 1000 samples.
NLL_MARGIN = 0.1
#: A run's steps grow without bound (RunTrace.step_growth) when their size at the end is above
#: STEP_GROWTH_FLOOR lrs and STEP_GROWTH times their size around the middle (measured in
#: docs/doctor.md, "Steps that grow without bound").
STEP_GROWTH_FLOOR, STEP_GROWTH = 1.0, 3.0
#: A head without class probabilities learns when its own held-out loss falls by this share.
HELD_LOSS_FALL = 0.2


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


def _flat(parameters: list[Tensor]) -> Tensor:
    """Every parameter's values in one new vector, outside autograd (reshape: a channels-last
    weight does not view)."""
    return torch.cat([p.detach().reshape(-1) for p in parameters])


@dataclass
class RunTrace:
    """What a short run measured."""

    steps: int
    losses: Tensor  # [steps] total loss before each step
    head_losses: dict[str, Tensor]  # per head, [steps]
    before: dict[str, float]  # held-out accuracy per head before training
    after: dict[str, float]  # and after
    chance: dict[str, float]
    model: DigitModel | None = None
    grad_norms: dict[str, Tensor] = field(default_factory=dict)  # per layer, [steps]
    nll: dict[str, float | None] = field(default_factory=dict)  # held-out log-loss per head after the run
    held_loss: dict[str, tuple[float, float]] = field(default_factory=dict)  # each head's own loss on held-out samples, before and after
    entropy: dict[str, float] = field(default_factory=dict)  # the best constant distribution's log-loss
    warmed: bool = False  # the lr rose through the recipe's warm-up before it was held at its peak
    step_sizes: Tensor = field(default_factory=lambda: torch.zeros(0))  # per step, RMS parameter change / lr

    def step_growth(self) -> tuple[float, float] | None:
        """(mid, end) when the optimizer's steps grow without bound: the mean step, in units of
        the lr, over the last tenth of the run is above STEP_GROWTH_FLOOR and STEP_GROWTH times
        the one around its middle (40-50 %); else None. It shows long before the loss does."""
        n = len(self.step_sizes)
        if n < 40 or not torch.isfinite(self.step_sizes).all():
            return None
        mid = float(self.step_sizes[int(0.4 * n) : int(0.5 * n)].mean())
        end = float(self.step_sizes[int(0.9 * n) :].mean())
        return (mid, end) if end > STEP_GROWTH_FLOOR and end > STEP_GROWTH * mid else None

    def learning(self) -> dict[str, bool]:
        """A head learns when its held-out accuracy, its held-out log-loss, or (without class
        probabilities) its own held-out loss beats the best constant guess by more than noise."""
        return {h: learns(self.after[h], self.chance[h]) or self._beats_entropy(h) or self._own_loss_fell(h) for h in self.after}

    def _own_loss_fell(self, head: str) -> bool:
        """For a head with no class probabilities only (a sum of 101 digits is right only once
        nearly every digit is, long after a short run): its own loss on held-out samples fell
        by HELD_LOSS_FALL of the way to 0, so what it learns carries over to unseen samples."""
        if self.nll.get(head) is not None or head not in self.held_loss:
            return False
        before, after = self.held_loss[head]
        return before > 0 and fell(before, after, HELD_LOSS_FALL)

    def _beats_entropy(self, head: str) -> bool:
        nll = self.nll.get(head)
        return nll is not None and head in self.entropy and nll < self.entropy[head] - NLL_MARGIN

    def probability_accuracy(self, head: str) -> float | None:
        """Held-out accuracy of the argmax of the head's ``probabilities`` (None without them)."""
        return self.nll.get(f"{head}:argmax")

    def skill(self, head: str) -> float:
        """How far the head got from the best constant guess towards perfect, on held-out samples:
        by log-loss when the head gives probabilities, else by accuracy. Comparable across changes."""
        nll = self.nll.get(head)
        if nll is not None and self.entropy.get(head, 0) > 0:
            return 1.0 - nll / self.entropy[head]
        chance = self.chance[head]
        return (self.after[head] - chance) / max(1e-6, 1 - chance)

    @property
    def finite(self) -> bool:
        return bool(torch.isfinite(self.losses).all()) if len(self.losses) else True


def layer_params(model: nn.Module) -> dict[str, list[Tensor]]:
    """Trainable parameters grouped by the module that owns them."""
    layers: dict[str, list[Tensor]] = {}
    for path, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            layers[path] = own
    return layers


def norm_of_grads(params: list[Tensor]) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return torch.sqrt(sum(g.pow(2).sum() for g in grads)) if grads else torch.zeros((), device=params[0].device)


def schedule_warms_up(probe: Probe, steps: int) -> bool:
    """Whether the recipe's schedule, compressed to ``steps``, starts below its peak lr: a
    warm-up (one-cycle's rise, a plugin's ramp) leads the network up to the peak."""
    optimizer = make_optimizer(probe.recipe, fresh_copy(probe.model))
    make_scheduler(probe.recipe, optimizer, steps)
    return any(group["lr"] < 0.5 * probe.recipe.optimizer.params.lr for group in optimizer.param_groups)


def short_run(probe: Probe, steps: int, *, optimizer_of: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
              grad_norms: bool = False, keep_model: bool = False, scheduled: bool = False,
              warmed: bool = False) -> RunTrace:  # fmt: skip
    """Train a fresh copy of the probe's model for ``steps`` batches of the run, at the recipe's
    optimizer and its peak lr held constant (a schedule reaches it at some point; if that rate
    kills the network, it does so then), and score every head on held-out samples before and after.
    ``scheduled``: the recipe's schedule instead, compressed to the ``steps`` of the run.
    ``warmed``: that compressed schedule while it rises, then its peak held to the end: the
    network meets the peak as the recipe's warm-up brings it there, and stays at it.

    The same batches, in the same order, and the same random draws inside the model (dropout),
    for every call on one probe and in every process: runs with one change each differ in that
    change only. Stops early on a non-finite loss.
    """
    with seeded(probe, "short_run"):  # dropout's masks: the same in every short run
        model = fresh_copy(probe.model)
        optimizer = optimizer_of(model) if optimizer_of else make_optimizer(probe.recipe, model)
        held_out = probe.held_out
        outputs = eval_outputs(model, held_out)  # one forward for every figure at the start
        before = scores(probe, model, held_out, outputs)
        loss_before = held_losses(model, held_out, outputs)
        scheduler = make_scheduler(probe.recipe, optimizer, steps) if scheduled or warmed else None
        highest = [group["lr"] for group in optimizer.param_groups]
        layers = layer_params(model) if grad_norms else {}
        totals: list[Tensor] = []
        per_head: dict[str, list[Tensor]] = {h: [] for h in model.heads}
        norms: list[Tensor] = []
        trained = [p for p in model.parameters() if p.requires_grad]
        sizes: list[Tensor] = []
        for batch in probe.train_batches(steps):
            losses = model.losses(model(batch), batch)
            loss = model.total_loss(losses)
            if not isinstance(loss, Tensor):
                loss = torch.tensor(float(loss))
            for h, value in losses.items():
                per_head[h].append(value.detach())
            totals.append(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
            if grad_norms:
                norms.append(torch.stack([norm_of_grads(layers[name]) for name in layers]))
            if not torch.isfinite(loss.detach()):
                break
            was, rate = _flat(trained) if trained else None, optimizer.param_groups[0]["lr"]
            optimizer.step()
            if was is not None:  # how far the step moved the weights: RMS per weight, in units of the lr
                moved = (_flat(trained) - was).float().pow(2).mean().sqrt()
                sizes.append(moved / rate if rate > 0 else torch.full_like(moved, float("nan")))
            if scheduler is not None:
                scheduler.step()
            if warmed:  # past the peak, hold it: no annealing to hide a rate that kills
                for i, group in enumerate(optimizer.param_groups):
                    highest[i] = group["lr"] = max(highest[i], group["lr"])
        outputs = eval_outputs(model, held_out)  # ... and at the end
        after = scores(probe, model, held_out, outputs)
        stacked = torch.stack(norms).T if norms else None
        return RunTrace(
            steps=len(totals),
            losses=torch.stack(totals) if totals else torch.zeros(0),
            head_losses={h: torch.stack(v) if v else torch.zeros(0) for h, v in per_head.items()},
            before=before, after=after, chance={h: probe.chance(h) for h in model.heads},
            model=model if keep_model else None,
            nll=log_losses(probe, model, held_out, outputs),
            held_loss={h: (loss_before[h], v) for h, v in held_losses(model, held_out, outputs).items()},
            entropy={h: entropy_of(probe.expected(h, held_out)) for h in model.heads},
            grad_norms={name: stacked[i] for i, name in enumerate(layers)} if stacked is not None else {},
            warmed=warmed,
            step_sizes=torch.stack(sizes).float().cpu() if sizes else torch.zeros(0),
        )  # fmt: skip
