"""Hardware switches of ``[train]``: threads, bf16 mixed precision, channels_last, torch.compile.

compile pays off on CUDA only; bf16 on CUDA and on CPUs whose instructions do bf16 arithmetic
(AVX512-BF16, AMX: oneDNN's bf16 convolutions; measured on 2 AMD EPYC cores, a training step of
the original network at batch size 256 took a quarter less time); channels_last on CUDA and the
CPU. Elsewhere a switch is ignored, and the run says so in a note rather than failing (a recipe
written for a GPU machine still runs on a laptop).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from ..contracts import Batch
from ..recipe import TrainSection


@dataclass
class Acceleration:
    """What a run actually uses on its device, and why it ignores what it does not."""

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    #: torch.compile's mode: None for its default, "reduce-overhead" (CUDA graphs: one launch
    #: replays a whole step's kernels) or "max-autotune"
    compile_mode: str | None = None
    notes: list[str] = field(default_factory=list)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Mixed precision for forward and loss when bf16 is on; nothing otherwise."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move the model's 4-D weights to channels_last when asked (in place; returns it)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_batch(self, batch: Batch) -> Batch:
        """Images (4-D float tensors) in channels_last when asked; everything else as is."""
        if not self.channels_last:
            return batch
        return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 and v.is_floating_point() else v
                for k, v in batch.items()}  # fmt: skip

    def compiled(self, module: nn.Module) -> nn.Module:
        """``torch.compile(module, mode=compile_mode)`` when asked; the module itself otherwise."""
        if not self.compile:
            return module
        return torch.compile(module, mode=self.compile_mode) if self.compile_mode else torch.compile(module)


def plan(train: TrainSection, device: torch.device) -> Acceleration:
    """Decide which of the recipe's switches this device can use; a note for each it cannot."""
    acc = Acceleration(device)
    cuda = device.type == "cuda"
    where = f"on {device.type}"
    if train.precision == "bf16":
        if device.type == "cpu":
            if cpu_has_bf16():
                acc.autocast_dtype = torch.bfloat16
            else:
                acc.notes.append("train.precision = 'bf16' ignored: this CPU has no bf16 instructions (AVX512-BF16 or AMX)")
        elif not cuda:
            acc.notes.append(f"train.precision = 'bf16' ignored {where}: mixed precision is used on CUDA and CPU only")
        elif not torch.cuda.is_bf16_supported():
            acc.notes.append(f"train.precision = 'bf16' ignored: {torch.cuda.get_device_name(device)} has no bf16 support")
        else:
            acc.autocast_dtype = torch.bfloat16
    if train.channels_last:
        if device.type in ("cuda", "cpu"):
            # measured to pay on both: on the CPU, ATen's channels-last max-pool and oneDNN's
            # convolutions are 15-35 % faster per training step for the original network
            acc.channels_last = True
        else:
            acc.notes.append(f"train.channels_last ignored {where}: it is used on CUDA and CPU only")
    if train.compile:
        if not cuda:
            acc.notes.append(f"train.compile ignored {where}: torch.compile is used on CUDA only")
        elif importlib.util.find_spec("triton") is None:
            acc.notes.append("train.compile ignored: torch.compile needs the triton package, which is not installed")
        else:
            acc.compile = True
            acc.compile_mode = train.compile if isinstance(train.compile, str) else None
    return acc


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX); without, bf16 is emulated and slower."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cgroup cpusets), which
    ``os.cpu_count()`` ignores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(cores: int, local_ranks: int = 1, omp_num_threads: str | None = None) -> int:
    """The intra-op thread count of ``train.threads = 0``: one per usable core, split between
    the ``local_ranks`` processes of a torchrun run on this machine; ``$OMP_NUM_THREADS``
    (``omp_num_threads``), when set, wins (torchrun sets it to 1 unless the user did).

    It depends on the machine only, never on its load: the count changes the last bits of a
    result, and the same recipe and seed on the same machine must give the same bits.
    """
    if omp_num_threads:
        try:
            return max(1, int(omp_num_threads.split(",")[0]))
        except ValueError:
            pass  # a malformed value: libgomp ignores it too
    return max(1, cores // max(1, local_ranks))


def configure_threads(threads: int, local_ranks: int = 1) -> int:
    """Set torch's intra-op threads to ``threads`` when > 0, else to :func:`default_threads`;
    return the count in use."""
    count = threads or default_threads(usable_cores(), local_ranks, os.environ.get("OMP_NUM_THREADS"))
    if count != torch.get_num_threads():
        torch.set_num_threads(count)
    return torch.get_num_threads()
