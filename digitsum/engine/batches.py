"""Data order: which samples each step sees, and the random stream ``(seed, split, epoch, step)``
each batch is drawn with (docs/architecture.md, "Data order and randomness")."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..contracts import Generator
from ..seeding import make_rng, stream_seed

#: Samples per evaluation batch. Fixed, so the test pairings depend on the seed alone.
EVAL_BATCH = 1000


def steps_per_epoch(generator: Generator, batch_size: int, shards: int = 1) -> int:
    """Optimizer steps in one epoch: one per batch of ``batch_size``, the last one partial —
    left out when it would give one of the ``shards`` processes fewer than two samples (a batch
    norm cannot train on one, and a step on one sample is that sample's noise). Its samples are
    in other places of other epochs' orders."""
    full, rest = divmod(generator.size("train"), batch_size)
    return full + (rest > 0 and (rest >= 2 * shards or full == 0))


def train_batches(
    generator: Generator, batch_size: int, seed: int, epoch: int, device: torch.device, first_step: int = 0,
    shards: int = 1,
) -> Iterator[dict[str, Tensor]]:
    """One epoch of training batches (:func:`steps_per_epoch` of them): a fresh permutation and
    fresh draws every epoch.

    ``first_step`` skips the steps before it without drawing them (a resumed epoch).
    """
    n = generator.size("train")
    order = torch.randperm(n, generator=make_rng(torch.device("cpu"), stream_seed(seed, "order", epoch))).to(device)
    for step in range(first_step, steps_per_epoch(generator, batch_size, shards)):
        rng = make_rng(device, stream_seed(seed, "train", epoch, step))
        yield generator.draw("train", order[step * batch_size : (step + 1) * batch_size], rng)


def eval_batches(generator: Generator, split: str, seed: int, device: torch.device) -> Iterator[dict[str, Tensor]]:
    """A split in order, with draws fixed by the seed: the same batches at every evaluation."""
    n = generator.size(split)
    index = torch.arange(n, device=device)
    for step, start in enumerate(range(0, n, EVAL_BATCH)):
        rng = make_rng(device, stream_seed(seed, "eval", split, step))
        yield generator.draw(split, index[start : start + EVAL_BATCH], rng)
