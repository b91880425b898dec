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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import __version__
from ..contracts import Generator
from ..data import DataContext, default_root
from ..recipe import Recipe
from . import distributed
from .accel import configure_threads, plan
from .distributed import World
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

    def reduce(self, world: World) -> None:
        """Add up the sums and counts of every rank of a data-parallel run (no-op in one process)."""
        self.count = distributed.all_reduce_sums(self.count, self.sums, world)

    def means(self) -> dict[str, dict[str, float]]:
        return {head: {k: float(v) / max(self.count, 1) for k, v in values.items()} for head, values in self.sums.items()}


@torch.no_grad()
def evaluate(
    model: DigitModel, generator: Generator, split: str, seed: int, device: torch.device, world: World = World()
) -> dict[str, dict[str, float]]:
    """Per-head mean loss and metrics over a whole split (each rank evaluates its share)."""
    model.eval()
    tally = Tally()
    for batch in eval_batches(generator, split, seed, device):
        batch = world.shard(batch)
        outputs = model(batch)
        tally.add(model, outputs, model.losses(outputs, batch), batch)
    model.train()
    tally.reduce(world)
    return tally.means()


class Callback:
    """Hooks into a training run; override what you need. Reporters, watches and pictures are
    callbacks. ``on_step`` runs every step: read tensors there only now and then (a read
    waits for the GPU). A callback ends a run with ``trainer.request_stop(reason)``."""

    def on_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...
    def on_step(self, trainer: Trainer, epoch: int, step: int, loss: Tensor) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None: ...
    def on_end(self, trainer: Trainer, summary: dict) -> None: ...


def make_optimizer(recipe: Recipe, model: DigitModel) -> torch.optim.Optimizer:
    t = recipe.train
    if t.optimizer == "sgd":
        cls, options = torch.optim.SGD, {"lr": t.lr, "momentum": t.momentum, "weight_decay": t.weight_decay}
    else:
        cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
        options = {"lr": t.lr, "weight_decay": t.weight_decay}
    # One fused kernel for all parameters instead of several small ops per tensor: for a small
    # model the per-op overhead is most of the optimizer's time (7x less at batch size 32 on a CPU).
    device = next(model.parameters()).device
    if device.type in ("cpu", "cuda"):
        try:
            return cls(model.parameters(), fused=True, **options)
        except (RuntimeError, TypeError, ValueError):  # an older torch, or a dtype it cannot fuse
            pass
    return cls(model.parameters(), **options)


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


class Trainer:
    """One recipe's model, data, optimizer and schedule, and the loop that trains them."""

    def __init__(self, recipe: Recipe, run_dir: Path | None, callbacks: Sequence[Callback] = ()) -> None:
        """``run_dir`` may be None only on ranks other than 0 of a data-parallel run (they write nothing)."""
        self.recipe = recipe
        self.run_dir = run_dir
        self.callbacks = list(callbacks)
        self.world = distributed.current()
        self.device = distributed.rank_device(self.world, pick_device(recipe.train.device))
        distributed.start(self.world, self.device)
        self.threads = configure_threads(recipe.train.threads, self.world.local_size)
        self.accel = plan(recipe.train, self.device)
        self.notes = list(self.accel.notes)  # shown by the console reporter
        torch.manual_seed(recipe.seed)

        section = recipe.data.section
        root = Path(section.root).expanduser() if section.root else default_root()
        self.generator = recipe.data.cls(recipe.data.params, DataContext(root, self.device, section.download))
        self.model = self.accel.prepare_model(build_model(recipe).to(self.device))
        # what a training step calls: DDP under torchrun, compiled when asked; self.model otherwise
        self.step_model = self.accel.compiled(distributed.wrap(self.model, self.world, self.device))
        self.optimizer = make_optimizer(recipe, self.model)
        self.batch_size, self.epochs = section.batch_size, recipe.train.epochs
        self.steps_per_epoch = math.ceil(self.generator.size("train") / self.batch_size)
        self.scheduler = make_scheduler(recipe, self.optimizer, self.epochs * self.steps_per_epoch)
        self.history: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.failed = False

    def request_stop(self, reason: str, *, failed: bool = False) -> None:
        """End training after the current step (callbacks call this).

        ``failed``: the model is no longer good (e.g. the loss became NaN): the current epoch is
        neither evaluated nor checkpointed, so the last good checkpoint stays.
        """
        self.stop_reason = self.stop_reason or reason
        self.failed = self.failed or failed

    def _emit(self, hook: str, *args: Any) -> None:
        if not self.world.is_main:
            return  # rank 0 speaks for a data-parallel run
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _stop_now(self, step: int | None = None) -> bool:
        """Whether to stop; in a data-parallel run all ranks take rank 0's decision together,
        every few steps (``step``) and at the end of an epoch (``step=None``)."""
        if self.world.active:
            if step is not None and (step + 1) % distributed.STOP_CHECK_EVERY and step + 1 != self.steps_per_epoch:
                return False
            self.stop_reason, self.failed = distributed.agree_to_stop(self.world, self.stop_reason, self.failed, self.device)
        return bool(self.stop_reason)

    def train_step(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        batch = self.accel.prepare_batch(batch)
        with self.accel.autocast():
            outputs = self.step_model(batch)
            losses = self.model.losses(outputs, batch)
            loss = self.model.total_loss(losses)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return outputs, losses, loss

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        started, tally = time.perf_counter(), Tally()
        for step, batch in enumerate(train_batches(self.generator, self.batch_size, self.recipe.seed, epoch, self.device)):
            batch = self.world.shard(batch)
            outputs, losses, loss = self.train_step(batch)
            tally.add(self.model, outputs, losses, batch)
            self._emit("on_step", epoch, step, loss)
            if self._stop_now(step):
                break
        tally.reduce(self.world)
        seconds = time.perf_counter() - started
        return {"heads": tally.means(), "samples": tally.count, "seconds": round(seconds, 3),
                "samples_per_s": round(tally.count / seconds, 1),
                "lr": self.scheduler.get_last_lr()[0]}  # fmt: skip

    def evaluate(self, split: str = "test") -> dict[str, dict[str, float]]:
        with self.accel.autocast():
            return evaluate(self.model, self.generator, split, self.recipe.seed, self.device, self.world)

    def fit(self) -> dict[str, Any]:
        """Train every epoch, evaluating and checkpointing after each; write the run directory."""
        started = time.perf_counter()
        writes = self.world.is_main  # in a data-parallel run, rank 0 alone writes the run directory
        if writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.run_dir / "recipe.toml", self.recipe.to_toml(provenance(self.device)))
        log = MetricsLog(self.run_dir / "metrics.jsonl") if writes else None
        self._emit("on_start")
        for epoch in range(1, self.epochs + 1):
            self._emit("on_epoch_start", epoch)
            train = self.train_epoch(epoch)
            if self.failed:
                break
            test = self.evaluate("test")
            self.history.append({"epoch": epoch, "train": train["heads"], "test": test})
            if writes:
                log.append({"epoch": epoch, "split": "train", **train})
                log.append({"epoch": epoch, "split": "test", "heads": test})
                save_checkpoint(self.run_dir / "checkpoint.pt", self.model, self.optimizer, self.scheduler, epoch, self.recipe)
            self._emit("on_epoch_end", epoch, train["heads"], test)
            if self._stop_now():
                break
        summary = {
            "format": RUN_FORMAT,
            "recipe": self.recipe.name,
            "seed": self.recipe.seed,
            "device": str(self.device),
            "epochs": len(self.history),
            "metrics": {"train": self.history[-1]["train"], "test": self.history[-1]["test"]} if self.history else {},
            "seconds": round(time.perf_counter() - started, 3),
        }
        if self.world.active:
            summary["world_size"] = self.world.size
        if self.stop_reason:
            summary["stopped"] = self.stop_reason
        if writes:
            write_json(self.run_dir / "summary.json", summary)
        self._emit("on_end", summary)
        return summary


def run(recipe: Recipe, run_dir: Path | None, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train and evaluate a recipe, writing the run directory; return the summary."""
    try:
        return Trainer(recipe, run_dir, callbacks).fit()
    finally:
        distributed.stop()
