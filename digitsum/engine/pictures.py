"""Pictures of a run: the data of its sample grid, made from a model's predictions on the first
test samples, and the :class:`Pictures` callback that writes ``curves.png`` and ``samples.png``.

engine/figures.py draws them; it (and matplotlib with it) is imported only when a picture is
drawn, so that matplotlib's import stays out of every run's start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..contracts import Generator, Image, Images
from .batches import eval_batches
from ..callbacks import Callback
from ..components.loggers import PICTURES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .model import DigitModel
    from .train import Trainer

#: How many test samples samples.png shows.
SAMPLES = 24
SAMPLE_COLUMNS = 6
#: At most this many images of an ``Images`` input (a sequence) are drawn per sample.
SEQUENCE_SHOWN = 4
#: Captions show at most this many characters of a value (a long number is cut, with "…").
CAPTION_CHARS = 12


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
    images = []
    for name in image_names:
        value = batch[name][i].detach().float().cpu()  # an Image [C, H, W] or Images [K, C, H, W]
        images += [value[0]] if value.dim() == 3 else [x[0] for x in value[:SEQUENCE_SHOWN]]
    bar = torch.full((images[0].shape[0], 2), max(float(x.max()) for x in images))
    parts = [images[0]]
    for image in images[1:]:
        parts += [bar, image]
    return torch.cat(parts, dim=1)


@torch.no_grad()
def samples_grid_data(model: DigitModel, generator: Generator, seed: int, device: torch.device,
                      title: str, count: int = SAMPLES) -> dict[str, Any]:  # fmt: skip
    """The first test samples as :func:`figures.samples_grid` draws them (plain data): their
    images, targets and predictions, wrong ones marked."""
    inputs = generator.interface(generator.params).inputs
    image_names = [name for name, spec in inputs.items() if isinstance(spec, (Image, Images))]
    batch = next(eval_batches(generator, "test", seed, device))
    batch = {name: value[:count] for name, value in batch.items()}
    was_training = model.training
    model.eval()
    outputs = model(batch)
    model.train(was_training)
    predictions = {name: model.heads[name].predict(out).cpu() for name, out in outputs.items()}
    # what a right prediction equals: the target, or what the head's declared space derives from it
    spaces = {name: model.heads[name].prediction_space() for name in outputs}
    expected = {name: spaces[name].expected(batch[model.bindings[name].target]).cpu() for name in outputs}
    count = len(next(iter(batch.values())))
    shown = sum(min(getattr(inputs[name], "count", 1), SEQUENCE_SHOWN) for name in image_names)
    cells = []
    for i in range(count):
        lines, wrong = [], False
        caption = generator.describe(batch, i)
        if caption:
            lines.append(caption)
        for head, prediction in predictions.items():
            target = expected[head][i]
            guess = prediction[i]
            same = bool(spaces[head].right(guess[None], target[None]))
            wrong |= not same
            lines.append(f"{head} {format_value(guess)}" + ("" if same else f" ≠ {format_value(target)}"))
        image = image_row(batch, image_names, i).numpy() if image_names else None
        cells.append({"image": image, "lines": lines, "wrong": wrong})
    return {"title": title, "columns": SAMPLE_COLUMNS, "cell_width": 1.6 * max(1, shown),
            "caption_lines": 1 + len(predictions), "cells": cells}  # fmt: skip


def samples_figure(model: DigitModel, generator: Generator, seed: int, device: torch.device,
                   title: str, count: int = SAMPLES) -> Figure:  # fmt: skip
    """The first test samples: their images, targets and predictions; wrong ones in red."""
    from .figures import samples_grid

    return samples_grid(samples_grid_data(model, generator, seed, device, title, count))


def primary_metrics(recipe) -> dict[str, str]:
    """Each head's primary metric, by head name."""
    return {name: choice.cls.primary_metric for name, choice in recipe.heads.items()}


class Pictures(Callback):
    """Writes ``curves.png`` and ``samples.png`` into the run directory when training ends
    (before the loggers' ``on_end``, which upload them)."""

    writes = PICTURES

    def on_end(self, trainer: Trainer, summary: dict) -> None:
        if not trainer.history:
            return  # no epoch completed: no curve to draw, no trained model to show
        from .figures import curves_figure, save_figure

        recipe = trainer.recipe
        save_figure(curves_figure(trainer.history, primary_metrics(recipe)), trainer.run_dir / "curves.png")
        save_figure(samples_figure(trainer.model, trainer.generator, recipe.seed, trainer.device, recipe.name),
                    trainer.run_dir / "samples.png")  # fmt: skip
