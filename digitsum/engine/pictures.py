"""Pictures of a run: learning curves and a grid of test samples with their predictions.

Figures are plain matplotlib :class:`~matplotlib.figure.Figure` objects made without pyplot:
nothing here changes matplotlib's backend or global state, so a notebook shows them inline
(they render themselves as PNG) and a script can save them. The :class:`Pictures` callback,
among every run's default callbacks, writes ``curves.png`` and ``samples.png`` into the run
directory (atomically) when training ends. matplotlib is imported only here.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..contracts import Generator, Image, Images
from .batches import eval_batches
from .callbacks import Callback
from .rundir import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .model import DigitModel
    from .train import Trainer

#: How many test samples samples.png shows.
SAMPLES = 24
SAMPLE_COLUMNS = 6
WRONG_COLOR, RIGHT_COLOR = "#d62728", "#1a1a1a"


@functools.cache
def _picture_class() -> type:
    from matplotlib.figure import Figure

    class Picture(Figure):
        """A figure that shows itself inline in Jupyter, whatever matplotlib's backend."""

        def _repr_png_(self) -> bytes:
            return figure_png(self)

    return Picture


def new_figure(**options: Any) -> Figure:
    """A matplotlib figure that shows itself inline in Jupyter (as PNG), made without pyplot."""
    return _picture_class()(**options)


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes, drawn once: each figure lays itself out when it is made (fixed
    margins, or ``tight_layout``), since ``bbox_inches="tight"`` would draw it twice."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def save_figure(figure: Figure, path: Path) -> None:
    """Write a figure as PNG through :func:`atomic_write`."""
    data = figure_png(figure)
    atomic_write(path, lambda f: f.write(data))


def curves_figure(history: list[dict[str, Any]], primary: Mapping[str, str]) -> Figure:
    """Loss and primary metric per head per epoch, train (running mean, dashed), val (dotted,
    when held out) and test.

    ``history``: one ``{"epoch", "train": {head: metrics}, "test": {head: metrics}}`` per epoch
    (and ``"val"`` in a run that holds a validation split out).
    """
    heads = list(primary)
    figure = new_figure(figsize=(4 * len(heads), 6))
    axes = figure.subplots(2, len(heads), squeeze=False)
    epochs = [row["epoch"] for row in history]
    for column, head in enumerate(heads):
        for row, metric in enumerate(("loss", primary[head])):
            ax = axes[row][column]
            for split, style in (("train", "--"), ("val", ":"), ("test", "-")):
                if any(split not in entry for entry in history):
                    continue  # val: only in runs that hold a validation split out
                values = [entry[split].get(head, {}).get(metric) for entry in history]
                ax.plot(epochs, values, style, marker="o", label=split)
            ax.set_title(f"{head}: {metric}")
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            ax.legend()
    # fixed margins, in inches, for tick labels, titles and the x label: tight_layout would
    # draw the figure once more to measure them (about a third of the picture's time)
    width, height = figure.get_size_inches()
    figure.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.35 / height,
                           wspace=0.7 / 4, hspace=0.75 / 2.4)  # fmt: skip
    return figure


#: At most this many images of an ``Images`` input (a sequence) are drawn per sample.
SEQUENCE_SHOWN = 4
#: Captions show at most this many characters of a value (a long number is cut, with "…").
CAPTION_CHARS = 12


def _sample_images(value: Tensor) -> list[Tensor]:
    """One sample's images as ``[H, W]`` pictures: an ``Image`` input ``[C, H, W]`` gives one, an
    ``Images`` input ``[K, C, H, W]`` its first :data:`SEQUENCE_SHOWN`."""
    value = value.detach().float().cpu()
    return [value[0]] if value.dim() == 3 else [x[0] for x in value[:SEQUENCE_SHOWN]]


def format_value(value: Tensor) -> str:
    """A target or a prediction of one sample as a caption shows it: a class index as a number,
    a ``Digits`` value ``[length]`` as its digits (most significant first), cut to
    :data:`CAPTION_CHARS` characters."""
    if value.dim() == 0:
        return str(int(value))
    text = "".join(str(int(d)) for d in value.flatten())
    return text if len(text) <= CAPTION_CHARS else text[: CAPTION_CHARS - 1] + "…"


def image_row(batch: dict[str, Tensor], image_names: list[str], i: int) -> Tensor:
    """Sample ``i``'s images side by side, as one ``[H, W_total]`` grey picture, a bright
    two-pixel bar between them so that two digits never read as one (of a sequence input,
    its first :data:`SEQUENCE_SHOWN` images)."""
    images = [image for name in image_names for image in _sample_images(batch[name][i])]
    bar = torch.full((images[0].shape[0], 2), max(float(x.max()) for x in images))
    parts = [images[0]]
    for image in images[1:]:
        parts += [bar, image]
    return torch.cat(parts, dim=1)


@torch.no_grad()
def samples_figure(model: DigitModel, generator: Generator, seed: int, device: torch.device,
                   title: str, count: int = SAMPLES) -> Figure:  # fmt: skip
    """The first test samples: their images, targets and predictions; wrong ones in red."""
    inputs = generator.interface(generator.params).inputs
    image_names = [name for name, spec in inputs.items() if isinstance(spec, (Image, Images))]
    batch = next(eval_batches(generator, "test", seed, device))
    batch = {name: value[:count] for name, value in batch.items()}
    was_training = model.training
    model.eval()
    outputs = model(batch)
    model.train(was_training)
    predictions = {name: model.heads[name].predict(out).cpu() for name, out in outputs.items()}
    count = len(next(iter(batch.values())))
    rows = -(-count // SAMPLE_COLUMNS)
    shown = sum(min(getattr(inputs[name], "count", 1), SEQUENCE_SHOWN) for name in image_names)
    width = 1.6 * max(1, shown)
    figure = new_figure(figsize=(width * SAMPLE_COLUMNS, 2.2 * rows))
    axes = figure.subplots(rows, SAMPLE_COLUMNS, squeeze=False)
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
            target = batch[model.bindings[head].target][i].cpu()
            guess = prediction[i]
            same = torch.equal(guess.to(target.dtype), target)
            wrong |= not same
            lines.append(f"{head} {format_value(guess)}" + ("" if same else f" ≠ {format_value(target)}"))
        ax.set_title("\n".join(lines), fontsize=8, color=WRONG_COLOR if wrong else RIGHT_COLOR)
        if wrong:  # a red frame, visible at a glance in a full grid
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(WRONG_COLOR)
                spine.set_linewidth(2.5)
    figure.suptitle(f"{title}: first {count} test samples (prediction ≠ target in red)", fontsize=10)
    # fixed margins, in inches: the suptitle on top, each image's caption (up to three lines)
    # above it; tight_layout would draw the figure once more to measure them
    width, height = figure.get_size_inches()
    caption = 0.16 * (1 + len(predictions)) + 0.1
    figure.subplots_adjust(left=0.1 / width, right=1 - 0.1 / width, bottom=0.1 / height,
                           top=1 - (0.3 + caption) / height, hspace=caption / (height / rows - caption))  # fmt: skip
    return figure


def primary_metrics(recipe) -> dict[str, str]:
    """Each head's primary metric, by head name."""
    return {name: choice.cls.primary_metric for name, choice in recipe.heads.items()}


class Pictures(Callback):
    """Writes ``curves.png`` and ``samples.png`` into the run directory when training ends."""

    def on_end(self, trainer: Trainer, summary: dict) -> None:
        if not trainer.history:
            return  # nothing was evaluated: no curve to draw, no trained model to show
        recipe = trainer.recipe
        save_figure(curves_figure(trainer.history, primary_metrics(recipe)), trainer.run_dir / "curves.png")
        figure = samples_figure(trainer.model, trainer.generator, recipe.seed, trainer.device, recipe.name)
        save_figure(figure, trainer.run_dir / "samples.png")
