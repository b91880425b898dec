"""Pictures of a run: learning curves and a grid of test samples with their predictions.

A :class:`Pictures` callback is among every run's default callbacks: at the end of training
it writes ``curves.png`` and ``samples.png`` into the run directory (atomically). matplotlib
is imported only here, with the Agg backend, so nothing else pays for it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..contracts import Image
from .rundir import atomic_write
from .train import Callback, Trainer, eval_batches

#: How many test samples samples.png shows.
SAMPLES = 24
SAMPLE_COLUMNS = 6
WRONG_COLOR, RIGHT_COLOR = "#d62728", "#1a1a1a"


def pyplot():
    """matplotlib.pyplot with the Agg backend (files only), imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> None:
    """Write a matplotlib figure as PNG through :func:`atomic_write`, then close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(figure)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def plot_curves(history: list[dict[str, Any]], primary: dict[str, str], path: Path) -> None:
    """Loss and primary metric per head per epoch, train (running mean) and test."""
    plt = pyplot()
    heads = list(primary)
    figure, axes = plt.subplots(2, len(heads), figsize=(4 * len(heads), 6), squeeze=False)
    epochs = [row["epoch"] for row in history]
    for column, head in enumerate(heads):
        for row, metric in enumerate(("loss", primary[head])):
            ax = axes[row][column]
            for split, style in (("train", "--"), ("test", "-")):
                values = [entry[split].get(head, {}).get(metric) for entry in history]
                ax.plot(epochs, values, style, marker="o", label=split)
            ax.set_title(f"{head}: {metric}")
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            ax.legend()
    figure.tight_layout()
    save_figure(figure, path)


def image_row(batch: dict[str, Tensor], image_names: list[str], i: int) -> Tensor:
    """Sample ``i``'s images side by side, as one ``[H, W_total]`` grey picture, a bright
    two-pixel bar between them so that two digits never read as one."""
    images = [batch[name][i, 0].detach().float().cpu() for name in image_names]
    bar = torch.full((images[0].shape[0], 2), max(float(x.max()) for x in images))
    parts = [images[0]]
    for image in images[1:]:
        parts += [bar, image]
    return torch.cat(parts, dim=1)


@torch.no_grad()
def plot_samples(trainer: Trainer, path: Path, count: int = SAMPLES) -> None:
    """The first test samples: their images, targets and predictions; wrong ones in red."""
    plt = pyplot()
    model, generator = trainer.model, trainer.generator
    inputs = trainer.recipe.interface().inputs
    image_names = [name for name, spec in inputs.items() if isinstance(spec, Image)]
    batch = next(eval_batches(generator, "test", trainer.recipe.seed, trainer.device))
    batch = {name: value[:count] for name, value in batch.items()}
    model.eval()
    outputs = model(batch)
    model.train()
    predictions = {name: model.heads[name].predict(out).cpu() for name, out in outputs.items()}
    count = len(next(iter(batch.values())))
    rows = -(-count // SAMPLE_COLUMNS)
    width = 1.6 * max(1, len(image_names))
    figure, axes = plt.subplots(rows, SAMPLE_COLUMNS, figsize=(width * SAMPLE_COLUMNS, 2.2 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        if image_names:
            ax.imshow(image_row(batch, image_names, i).numpy(), cmap="gray")
        lines, wrong = [], False
        caption = generator.describe(batch, i)
        if caption:
            lines.append(caption)
        for head, prediction in predictions.items():
            target = int(batch[model.bindings[head].target][i])
            guess = int(prediction[i])
            wrong |= guess != target
            lines.append(f"{head} {guess}" + ("" if guess == target else f" ≠ {target}"))
        color = WRONG_COLOR if wrong else RIGHT_COLOR
        ax.set_title("\n".join(lines), fontsize=8, color=color)
        if wrong:  # a red frame, visible at a glance in a full grid
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(WRONG_COLOR)
                spine.set_linewidth(2.5)
    figure.suptitle(f"{trainer.recipe.name}: first {count} test samples (prediction ≠ target in red)", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


class Pictures(Callback):
    """Writes ``curves.png`` and ``samples.png`` into the run directory when training ends."""

    def on_end(self, trainer: Trainer, summary: dict) -> None:
        if not trainer.history:
            return  # nothing was evaluated: no curve to draw, no trained model to show
        primary = {name: choice.cls.primary_metric for name, choice in trainer.recipe.heads.items()}
        plot_curves(trainer.history, primary, trainer.run_dir / "curves.png")
        plot_samples(trainer, trainer.run_dir / "samples.png")
