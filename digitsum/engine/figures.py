"""Figures drawn from plain data, with matplotlib and without torch: learning curves and a grid
of samples (engine/pictures.py makes the grid's data from a model's predictions).

Figures are made without pyplot: nothing here changes matplotlib's backend or global state, so a
notebook shows them inline (they render themselves as PNG) and a script can save them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..files import atomic_write

WRONG_COLOR, RIGHT_COLOR = "#d62728", "#1a1a1a"


class Picture(Figure):
    """A figure that shows itself inline in Jupyter, whatever matplotlib's backend."""

    def _repr_png_(self) -> bytes:
        return figure_png(self)


def new_figure(**options: Any) -> Figure:
    """A matplotlib figure that shows itself inline in Jupyter (as PNG), made without pyplot."""
    return Picture(**options)


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
    when held out) and test (each where evaluated).

    ``history``: one ``{"epoch", "train": {head: metrics}, "test": {head: metrics}}`` per epoch
    (and ``"val"`` in a run that holds a validation split out).
    """
    heads = list(primary)
    figure = new_figure(figsize=(4 * len(heads), 6))
    axes = figure.subplots(2, len(heads), squeeze=False)
    for column, head in enumerate(heads):
        for row, metric in enumerate(("loss", primary[head])):
            ax = axes[row][column]
            for split, style in (("train", "--"), ("val", ":"), ("test", "-")):
                # val: only in runs that hold a validation split out; val and test: only after
                # the epochs evaluated (train.eval_every)
                shown = [entry for entry in history if split in entry]
                if shown:
                    values = [entry[split].get(head, {}).get(metric) for entry in shown]
                    ax.plot([entry["epoch"] for entry in shown], values, style, marker="o", label=split)
            ax.set_title(f"{head}: {metric}")
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
            else:  # a run stopped in its first epoch: say so, rather than matplotlib's legend warning
                ax.text(0.5, 0.5, "no epoch completed", ha="center", va="center", transform=ax.transAxes)
    # fixed margins, in inches, for tick labels, titles and the x label: tight_layout would
    # draw the figure once more to measure them (about a third of the picture's time)
    width, height = figure.get_size_inches()
    figure.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.35 / height,
                           wspace=0.7 / 4, hspace=0.75 / 2.4)  # fmt: skip
    return figure


def samples_grid(grid: Mapping[str, Any]) -> Figure:
    """A grid of samples, each its images side by side and a caption above, red where a
    prediction is wrong. ``grid`` holds plain data (``pictures.samples_grid_data`` makes it from
    a model): ``title``, ``columns``, ``cell_width`` (inches), ``caption_lines`` and ``cells``,
    each with ``image`` (a 2-D array of grey values, or None), ``lines`` (the caption) and
    ``wrong``.

    The grid is drawn on one axes spanning the figure, in inches, each image placed by its
    extent: one axes per sample (24 of them, with their spines and tick machinery) took three
    times as long to make and draw, at every run's end."""
    import numpy as np
    from matplotlib.patches import Rectangle

    cells, columns = grid["cells"], grid["columns"]
    rows = -(-len(cells) // columns)
    figure = new_figure(figsize=(grid["cell_width"] * columns, 2.2 * rows))
    width, height = figure.get_size_inches()
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    # margins, in inches: the title on top, each image's caption (up to three lines) above it
    title, margin, gap = 0.3, 0.1, 0.15
    caption = 0.16 * grid["caption_lines"] + 0.1
    cell_width, cell_height = (width - 2 * margin) / columns, (height - title - margin) / rows
    for i, cell in enumerate(cells):
        row, column = divmod(i, columns)
        left, top = margin + column * cell_width, title + row * cell_height
        if cell["image"] is not None:
            image = np.asarray(cell["image"], dtype=np.float32)
            scale = min((cell_width - gap) / image.shape[1], (cell_height - caption - gap) / image.shape[0])
            w, h = image.shape[1] * scale, image.shape[0] * scale
            x = left + (cell_width - w) / 2
            ax.imshow(image, cmap="gray", extent=(x, x + w, top + caption + h, top + caption))
            if cell["wrong"]:  # a red frame, visible at a glance in a full grid
                ax.add_patch(Rectangle((x, top + caption), w, h, fill=False, edgecolor=WRONG_COLOR, linewidth=2.5))
        ax.text(left + cell_width / 2, top + caption - 0.05, "\n".join(cell["lines"]), ha="center", va="bottom",
                fontsize=8, color=WRONG_COLOR if cell["wrong"] else RIGHT_COLOR)  # fmt: skip
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # imshow set the limits to its image: the whole figure, y downwards
    figure.suptitle(f"{grid['title']}: first {len(cells)} test samples (prediction ≠ target in red)", fontsize=10)
    return figure
