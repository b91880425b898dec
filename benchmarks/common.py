"""What the benchmarks share: digitsum's own Trainer on the original recipe, timers, a report.

The digitsum side is always digitsum's code (``load_recipe``, ``Trainer.train_epoch``,
``Trainer.train_step``): a benchmark never carries a copy of the training loop.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from digitsum.data import default_root
from digitsum.engine.batches import train_batches
from digitsum.callbacks import Callback
from digitsum.engine.train import Trainer
from digitsum.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
ORIGINAL = REPO / "recipes" / "original.toml"
EPOCH = 60_000  # samples in one MNIST training epoch: every time is scaled to this


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--recipe", type=Path, default=ORIGINAL, help="digitsum's recipe (default recipes/original.toml)")
    parser.add_argument("--device", default="auto", help="train.device for both pipelines (default auto)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both pipelines (default 0: torch's choice)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time each measurement this many times, interleaved, and keep the fastest (default 1); "
                             "on a busy machine the fastest round is the least disturbed")
    parser.add_argument("--lean-notebook", action="store_true",
                        help="give the notebook a leaner per-sample Dataset (reads each sample once, no copies)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of recipes/original.toml for digitsum, e.g. --set train.precision=bf16")
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line and apply ``--threads`` to both pipelines alike."""
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def data_root() -> Path:
    root = default_root()
    if not (root / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST not found under {root}: set DIGITSUM_DATA (the folder holding MNIST/raw/)")
    return root


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}{gpu}; {os.cpu_count()} logical CPUs; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); python {platform.python_version()}")  # fmt: skip


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def digitsum_trainer(batch_size: int, device: str = "auto", overrides: list[str] = (), recipe_path: Path = ORIGINAL) -> Trainer:
    """A Trainer for the recipe (recipes/original.toml) at ``batch_size``, without a run directory:
    the benchmarks drive its steps and epochs themselves and write nothing."""
    settings = [f"data.batch_size={batch_size}", f"train.device='{device}'", f"train.threads={torch.get_num_threads()}"]
    recipe = load_recipe(recipe_path, [*settings, *overrides])
    return Trainer(recipe, None)


class StopAfter(Callback):
    """Ends a training epoch once ``samples`` samples have been trained on."""

    def __init__(self, samples: int) -> None:
        self.samples = samples

    def on_step(self, trainer: Trainer, epoch: int, step: int, loss) -> None:
        if (step + 1) * trainer.batch_size >= self.samples:
            trainer.request_stop("benchmark sample budget reached")


def time_digitsum(trainer: Trainer, samples: int, epoch: int = 1) -> float:
    """Seconds for ``samples`` samples of ``Trainer.train_epoch`` — data drawn, trained, tallied."""
    trainer.callbacks = [StopAfter(samples)]
    trainer.stop_reason = None
    trainer.rewind_epoch()  # each timing trains an epoch from its first step
    sync(trainer.device)
    started = time.perf_counter()
    trainer.train_epoch(epoch)
    sync(trainer.device)
    seconds = time.perf_counter() - started
    trainer.callbacks, trainer.stop_reason = [], None
    return seconds


def time_floor(trainer: Trainer, samples: int, epoch: int = 1) -> float:
    """Seconds for ``samples`` samples of ``Trainer.train_step`` alone, on batches drawn beforehand.

    The compute floor: forward, backward and optimizer step on tensors already in memory; no
    data drawing, no metric tallies, no callbacks.
    """
    batches = []
    for batch in train_batches(trainer.generator, trainer.batch_size, trainer.recipe.seed, epoch, trainer.device):
        batches.append(batch)
        if len(batches) * trainer.batch_size >= samples:
            break
    sync(trainer.device)
    started = time.perf_counter()
    for batch in batches:
        trainer.train_step(batch)
    sync(trainer.device)
    return time.perf_counter() - started


def warm_up(trainer: Trainer) -> None:
    """A few steps first, so that one-off costs (allocations, kernel choice) are not timed."""
    time_digitsum(trainer, 8 * trainer.batch_size, epoch=0)


def fastest(rounds: int, *measurements):
    """Run each measurement (a function returning seconds) ``rounds`` times, interleaved; the
    fastest time of each. Interleaving makes a busy spell on the machine hit all of them alike."""
    best = [float("inf")] * len(measurements)
    for _ in range(rounds):
        for i, measure in enumerate(measurements):
            best[i] = min(best[i], measure())
    return best


def trained(samples: int, batch_size: int, size: int = EPOCH) -> int:
    """Samples actually trained when stopping after the step that reaches ``samples``."""
    return min(-(-samples // batch_size) * batch_size, size)


def per_epoch(seconds: float, samples: int) -> float:
    """Seconds for ``samples`` trained samples, scaled to one 60 000-sample epoch."""
    return seconds * EPOCH / samples
