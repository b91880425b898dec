"""Helpers shared by the resume, checkpoint and hostile-input tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from digitsum.callbacks import Callback
from digitsum.engine.train import Trainer
from digitsum.recipe import load_recipe

from .conftest import RECIPES

#: Fields of summary.json and metrics.jsonl that measure time; everything else must match exactly.
TIMING_FIELDS = {"seconds", "samples_per_s"}


def tiny_args(root: Path, epochs: int = 2, batch_size: int = 64, *extra: str) -> list[str]:
    return [f"data.root='{root}'", "data.download=false", f"train.epochs={epochs}", f"data.batch_size={batch_size}", *extra]


class StopAt(Callback):
    """Requests a stop after a given step, as a first Ctrl-C does."""

    def __init__(self, epoch: int, step: int) -> None:
        self.at = (epoch, step)

    def on_step(self, trainer, epoch, step, loss) -> None:
        if (epoch, step) == self.at:
            trainer.request_stop("interrupted by test")


class CrashAt(Callback):
    """Raises after a given step: a process killed without a checkpoint of its own."""

    def __init__(self, epoch: int, step: int) -> None:
        self.at = (epoch, step)

    def on_step(self, trainer, epoch, step, loss) -> None:
        if (epoch, step) == self.at:
            raise RuntimeError("killed")


def fit(recipe, run_dir: Path, callbacks=()) -> dict:
    """Train with the given callbacks and the pictures only (the loop, without the CLI's
    reporter, preflight and watch); return the summary."""
    from digitsum.engine.pictures import Pictures

    return Trainer(recipe, run_dir, [*callbacks, Pictures()]).fit()


def train(root: Path, run_dir: Path, *extra: str, callbacks=(), epochs: int = 2, batch_size: int = 64) -> Trainer:
    recipe = load_recipe(RECIPES / "original.toml", tiny_args(root, epochs, batch_size, *extra))
    trainer = Trainer(recipe, run_dir, callbacks)
    trainer.fit()
    return trainer


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def outcome(run_dir: Path) -> tuple[Any, Any]:
    """summary.json and metrics.jsonl of a run, timing fields left out."""
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return without_timing(summary), without_timing(metrics)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with a hash of its bytes."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }
