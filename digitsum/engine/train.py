"""Training and evaluation, top to bottom.

Data order and every random draw are functions of (seed, split, epoch, step): a run is
reproducible on the same machine, the test split sees the same pairings at every evaluation,
and a batch can be recomputed without replaying anything before it.
"""

from __future__ import annotations

import hashlib
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from .. import __version__
from ..contracts import Generator
from ..data import DataContext, default_root
from ..recipe import Recipe
from .model import DigitModel, build_model, pick_device
from .rundir import RUN_FORMAT, MetricsLog, atomic_write, write_json, write_text

#: Samples per evaluation batch. Fixed, so the test pairings depend on the seed alone.
EVAL_BATCH = 1000


def stream_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one random stream, e.g. ``(seed, "train", epoch, step)``."""
    key = "/".join(map(str, (seed, *parts))).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def make_rng(device: torch.device, seed: int) -> torch.Generator:
    rng = torch.Generator(device=device)
    rng.manual_seed(seed)
    return rng


def train_batches(
    generator: Generator, batch_size: int, seed: int, epoch: int, device: torch.device
) -> Iterator[dict[str, Tensor]]:
    """One epoch of training batches: a fresh permutation and fresh draws every epoch."""
    n = generator.size("train")
    order = torch.randperm(n, generator=make_rng(torch.device("cpu"), stream_seed(seed, "order", epoch))).to(device)
    for step, start in enumerate(range(0, n, batch_size)):
        rng = make_rng(device, stream_seed(seed, "train", epoch, step))
        yield generator.draw("train", order[start : start + batch_size], rng)


def eval_batches(generator: Generator, split: str, seed: int, device: torch.device) -> Iterator[dict[str, Tensor]]:
    """A split in order, with draws fixed by the seed: the same batches at every evaluation."""
    n = generator.size(split)
    index = torch.arange(n, device=device)
    for step, start in enumerate(range(0, n, EVAL_BATCH)):
        rng = make_rng(device, stream_seed(seed, "eval", split, step))
        yield generator.draw(split, index[start : start + EVAL_BATCH], rng)


@dataclass
class Tally:
    """Sums of per-head losses and per-sample metrics, kept on the device until read."""

    count: int = 0
    sums: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    @torch.no_grad()
    def add(self, model: DigitModel, outputs: dict[str, Tensor], losses: dict[str, Tensor], batch: dict[str, Tensor]) -> None:
        n = len(next(iter(batch.values())))
        self.count += n
        for name, output in outputs.items():
            values = {"loss": losses[name].detach() * n}
            target = batch[model.bindings[name].target]
            values.update({k: v.sum() for k, v in model.heads[name].metrics(output, target).items()})
            head = self.sums.setdefault(name, {})
            for key, value in values.items():
                head[key] = head[key] + value if key in head else value.clone()

    def means(self) -> dict[str, dict[str, float]]:
        return {head: {k: float(v) / max(self.count, 1) for k, v in values.items()} for head, values in self.sums.items()}


@torch.no_grad()
def evaluate(model: DigitModel, generator: Generator, split: str, seed: int, device: torch.device) -> dict[str, dict[str, float]]:
    """Per-head mean loss and metrics over a whole split."""
    model.eval()
    tally = Tally()
    for batch in eval_batches(generator, split, seed, device):
        outputs = model(batch)
        tally.add(model, outputs, model.losses(outputs, batch), batch)
    model.train()
    return tally.means()


class Reporter(Protocol):
    """What the training loop tells whoever watches it (the CLI's progress bar, a test...)."""

    def start(self, recipe: Recipe, device: torch.device, run_dir: Path, parameters: int) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, steps_done: int, loss: float, samples_per_s: float) -> None: ...
    def epoch_end(self, epoch: int, train: dict, test: dict) -> None: ...
    def finish(self, summary: dict) -> None: ...


class SilentReporter:
    """A reporter that says nothing (library use and tests)."""

    def start(self, *args: Any) -> None: ...
    def epoch_start(self, *args: Any) -> None: ...
    def step(self, *args: Any) -> None: ...
    def epoch_end(self, *args: Any) -> None: ...
    def finish(self, *args: Any) -> None: ...


def make_optimizer(recipe: Recipe, model: DigitModel) -> torch.optim.Optimizer:
    t = recipe.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def make_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, total_steps: int):
    schedule = recipe.train.schedule
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.train.lr, total_steps=total_steps, pct_start=0.25)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def provenance(device: torch.device) -> dict[str, str]:
    """Versions and machine that made a run, stored in its resolved recipe."""
    from importlib import metadata

    from ..registry import REGISTRIES

    plugins = {}
    for registry in REGISTRIES.values():
        for entry in registry.entries():
            if entry.origin.distribution and not entry.origin.builtin:
                plugins[entry.origin.distribution] = entry.origin.version or "?"
    info = {
        "digitsum": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        info["torchvision"] = metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        pass
    if plugins:
        info["plugins"] = ", ".join(f"{k} {v}" for k, v in sorted(plugins.items()))
    return info


def save_checkpoint(path: Path, model: DigitModel, optimizer, scheduler, epoch: int, recipe: Recipe) -> None:
    state = {
        "format": RUN_FORMAT,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "recipe": recipe.to_dict(),
    }
    atomic_write(path, lambda f: torch.save(state, f))


def run(recipe: Recipe, run_dir: Path, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train and evaluate a recipe, writing the run directory; return the summary."""
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    device = pick_device(recipe.train.device)
    torch.manual_seed(recipe.seed)

    root = Path(recipe.data.section.root).expanduser() if recipe.data.section.root else default_root()
    data = DataContext(root, device, recipe.data.section.download)
    generator = recipe.data.cls(recipe.data.params, data)
    model = build_model(recipe).to(device)
    optimizer = make_optimizer(recipe, model)
    batch_size, epochs = recipe.data.section.batch_size, recipe.train.epochs
    steps_per_epoch = math.ceil(generator.size("train") / batch_size)
    scheduler = make_scheduler(recipe, optimizer, epochs * steps_per_epoch)

    write_text(run_dir / "recipe.toml", recipe.to_toml(provenance(device)))
    log = MetricsLog(run_dir / "metrics.jsonl")
    reporter.start(recipe, device, run_dir, sum(p.numel() for p in model.parameters()))

    history: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        reporter.epoch_start(epoch, epochs, steps_per_epoch)
        epoch_started = time.perf_counter()
        tally, shown_at, samples = Tally(), time.perf_counter(), 0
        for step, batch in enumerate(train_batches(generator, batch_size, recipe.seed, epoch, device)):
            outputs = model(batch)
            losses = model.losses(outputs, batch)
            loss = model.total_loss(losses)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            tally.add(model, outputs, losses, batch)
            samples += len(batch[next(iter(batch))])
            now = time.perf_counter()
            if now - shown_at > 0.25 or step == steps_per_epoch - 1:  # reading the loss syncs a GPU
                reporter.step(step + 1, float(loss), samples / (now - epoch_started))
                shown_at = now
        train_seconds = time.perf_counter() - epoch_started
        train_metrics = tally.means()
        test_metrics = evaluate(model, generator, "test", recipe.seed, device)
        log.append({"epoch": epoch, "split": "train", "heads": train_metrics, "seconds": round(train_seconds, 3),
                    "samples_per_s": round(samples / train_seconds, 1), "lr": scheduler.get_last_lr()[0]})  # fmt: skip
        log.append({"epoch": epoch, "split": "test", "heads": test_metrics})
        history.append({"epoch": epoch, "train": train_metrics, "test": test_metrics})
        save_checkpoint(run_dir / "checkpoint.pt", model, optimizer, scheduler, epoch, recipe)
        reporter.epoch_end(epoch, train_metrics, test_metrics)

    summary = {
        "format": RUN_FORMAT,
        "recipe": recipe.name,
        "seed": recipe.seed,
        "device": str(device),
        "epochs": epochs,
        "metrics": {"train": history[-1]["train"], "test": history[-1]["test"]},
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(run_dir / "summary.json", summary)
    reporter.finish(summary)
    return summary
