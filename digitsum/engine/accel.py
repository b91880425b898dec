"""Hardware switches of ``[train]``: threads, bf16 mixed precision, channels_last, torch.compile.

The GPU switches pay off on CUDA only; elsewhere they are ignored, and the run says so in a
note rather than failing (a recipe written for a GPU machine still runs on a laptop).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..contracts import Batch
from ..recipe import TrainSection


@dataclass
class Acceleration:
    """What a run actually uses on its device, and why it ignores what it does not."""

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    notes: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision for forward and loss when bf16 is on; nothing otherwise."""
        if self.autocast_dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            yield

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move the model's 4-D weights to channels_last when asked (in place; returns it)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_batch(self, batch: Batch) -> Batch:
        """Images (4-D float tensors) in channels_last when asked; everything else as is."""
        if not self.channels_last:
            return batch
        return {k: _channels_last(v) for k, v in batch.items()}

    def compiled(self, module: nn.Module) -> nn.Module:
        """``torch.compile(module)`` when asked; the module itself otherwise."""
        return torch.compile(module) if self.compile else module


def _channels_last(value: Tensor) -> Tensor:
    if value.dim() == 4 and value.is_floating_point():
        return value.contiguous(memory_format=torch.channels_last)
    return value


def plan(train: TrainSection, device: torch.device) -> Acceleration:
    """Decide which of the recipe's switches this device can use; a note for each it cannot."""
    acc = Acceleration(device)
    cuda = device.type == "cuda"
    where = f"on {device.type}"
    if train.precision == "bf16":
        if not cuda:
            acc.notes.append(f"train.precision = 'bf16' ignored {where}: mixed precision is used on CUDA only")
        elif not torch.cuda.is_bf16_supported():
            acc.notes.append(f"train.precision = 'bf16' ignored: {torch.cuda.get_device_name(device)} has no bf16 support")
        else:
            acc.autocast_dtype = torch.bfloat16
    if train.channels_last:
        if cuda:
            acc.channels_last = True
        else:
            acc.notes.append(f"train.channels_last ignored {where}: it speeds up convolutions on CUDA only")
    if train.compile:
        if not cuda:
            acc.notes.append(f"train.compile ignored {where}: torch.compile is used on CUDA only")
        elif importlib.util.find_spec("triton") is None:
            acc.notes.append("train.compile ignored: torch.compile needs the triton package, which is not installed")
        else:
            acc.compile = True
    return acc


def configure_threads(threads: int, local_ranks: int = 1) -> int:
    """Set torch's intra-op threads: ``threads`` when > 0, else a share of the cores per rank.

    ``0`` keeps torch's default (one thread per core) in a single process; under torchrun
    the cores are split between the local ranks unless ``OMP_NUM_THREADS`` says otherwise,
    since ranks that each use every core slow each other down. Returns the count in use.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    elif local_ranks > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_ranks))
    return torch.get_num_threads()
