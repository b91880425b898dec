"""Rich output for people: a progress bar per epoch, then a table of metrics per head."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import Tensor

from ..callbacks import Callback
from ..files import metric_text
from .pictures import primary_metrics
from .train import Trainer


class ConsoleReporter(Callback):
    """Shows a training run on a rich console."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task = None

    def on_start(self, trainer: Trainer) -> None:
        recipe, device, run_dir = trainer.recipe, trainer.device, trainer.run_dir
        parameters = sum(p.numel() for p in trainer.model.parameters())
        self.console.print(
            f"[bold]{recipe.name}[/]: {recipe.data.section.type} → {recipe.backbone.section.type} → "
            f"{', '.join(f'{n} ({c.section.type})' for n, c in recipe.heads.items())} · "
            f"{parameters:,} parameters · {device} · seed {recipe.seed}"
        )
        self.console.print(f"run directory: {run_dir}")
        for note in trainer.notes:
            self.console.print(f"note: {note}", highlight=False)
        self.primary = primary_metrics(recipe)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.started = self.shown_at = time.perf_counter()
        self.first_step = trainer.step  # a resumed epoch starts part-way
        self.epoch_label = f"epoch {epoch}/{trainer.epochs}"
        if self.console.is_jupyter:
            return  # a live bar needs ipywidgets in Jupyter: a notebook gets one line per epoch instead
        self.progress = Progress(
            TextColumn(self.epoch_label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} · {task.fields[speed]:,.0f} samples/s"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=trainer.steps_per_epoch, completed=trainer.step, loss=float("nan"), speed=0.0)

    def on_step(self, trainer: Trainer, epoch: int, step: int, loss: Tensor) -> None:
        now = time.perf_counter()
        if now - self.shown_at < 0.25 and step != trainer.steps_per_epoch - 1:
            return  # reading the loss waits for the device: only a few times a second
        self.shown_at = now
        self.speed = (step + 1 - self.first_step) * trainer.batch_size / (now - self.started)
        self.loss = float(loss.detach())
        if self.progress is not None:
            self.progress.update(self.task, completed=step + 1, loss=self.loss, speed=self.speed)

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None:
        parts = [f"{head} {self.primary[head]} {values[self.primary[head]]:.4f}" for head, values in test.items()]
        shown = f"test: {' · '.join(parts)}" if test else "not evaluated (train.eval_every)"
        if self.progress is not None:
            self.progress.stop()
            self.console.print(f"  {shown}")
        else:
            seconds = time.perf_counter() - self.started
            self.console.print(f"{self.epoch_label}: loss {self.loss:.4f} · {self.speed:,.0f} samples/s · {seconds:.1f} s · {shown}")

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        if self.progress is not None:
            self.progress.stop()  # a live bar must not stay on screen over the error message
            self.progress = None

    def on_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.stop()  # still running when the run stopped part-way through an epoch
        if not summary["metrics"]:
            return  # no epoch completed: nothing to tabulate
        table = Table(title=f"{summary['recipe']} after {summary['epochs']} epoch{'s' if summary['epochs'] != 1 else ''} ({summary['seconds']:.1f} s)")
        table.add_column("head")
        table.add_column("metric")
        table.add_column("train (running)", justify="right")
        val = summary["metrics"].get("val")
        if val is not None:
            table.add_column("val", justify="right")
        table.add_column("test", justify="right")
        train, test = summary["metrics"]["train"], summary["metrics"]["test"]
        for head, values in test.items():
            for metric, value in values.items():
                shown = [metric_text(val.get(head, {}).get(metric))] if val is not None else []
                table.add_row(head, metric, metric_text(train.get(head, {}).get(metric)), *shown, metric_text(value))
        self.console.print(table)

