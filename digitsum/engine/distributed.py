"""Data-parallel training on PyTorch's own engine: ``torchrun ... -m digitsum run RECIPE`` (docs/scale-out.md).

:func:`current` and :attr:`World.is_main` read the environment only (no torch), so the CLI can
ask them before importing anything heavy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where the work happens, not on import
    import torch
    from torch import Tensor

#: Steps between the moments ranks agree whether a callback on rank 0 asked to stop: each
#: agreement is a collective that waits for every rank, so not every step.
STOP_CHECK_EVERY = 16


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run; ``size == 1`` is a plain run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run directory and prints."""
        return self.rank == 0

    def shard(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """This rank's slice of a global batch: every ``size``-th sample from ``rank``."""
        if not self.active:
            return batch
        return {key: value[self.rank :: self.size] for key, value in batch.items()}


def current() -> World:
    """The world torchrun describes in the environment (a single process when it says nothing)."""
    env = os.environ

    def number(key: str, default: int) -> int:
        try:
            return int(env.get(key, default))
        except ValueError:
            return default

    return World(
        rank=number("RANK", 0),
        size=number("WORLD_SIZE", 1),
        local_rank=number("LOCAL_RANK", 0),
        local_size=number("LOCAL_WORLD_SIZE", 1),
    )


def rank_device(world: World, device: torch.device) -> torch.device:
    """One GPU per local rank: ``cuda`` becomes ``cuda:<local rank>`` under torchrun."""
    import torch

    if world.active and device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)  # NCCL and DDP use the current device of each rank
    return device


def start(world: World, device: torch.device) -> None:
    """Join the process group torchrun set up: NCCL between GPUs, gloo on the CPU."""
    import torch.distributed as dist

    from ..errors import UserError

    if not world.active or dist.is_initialized():
        return
    if "MASTER_ADDR" not in os.environ:
        raise UserError(
            f"WORLD_SIZE={world.size} is set but MASTER_ADDR is not: start data-parallel runs with "
            "torchrun, e.g. torchrun --nproc_per_node=2 -m digitsum run RECIPE"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size)


def barrier(world: World) -> None:
    """Wait for every rank. Ranks leave a run together: gloo can abort a rank that leaves the
    group while another still works (rank 0 drawing the pictures, say)."""
    if world.active:
        import torch.distributed as dist

        dist.barrier()


def stop() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The module a training step calls: DistributedDataParallel under torchrun, else the model."""
    if not world.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_sums(count: int, sums: dict[str, dict[str, Tensor]]) -> int:
    """Add ``count`` and every tensor of ``sums`` (in place) up across the ranks of a data-parallel
    run; return the total count. One collective for everything: the scalars travel packed in one tensor."""
    import torch
    import torch.distributed as dist

    keys = [(head, key) for head, values in sums.items() for key in values]
    device = next((sums[h][k].device for h, k in keys), None)
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    packed = torch.stack([sums[h][k].double().reshape(()) for h, k in keys] + [torch.tensor(float(count), device=device, dtype=torch.float64)])
    dist.all_reduce(packed)
    for i, (head, key) in enumerate(keys):
        sums[head][key] = packed[i].to(sums[head][key].dtype)
    return int(packed[-1].item())


def agree_to_stop(reason: str | None, failed: bool, device: torch.device) -> tuple[str | None, bool]:
    """Rank 0's stop decision, given to every rank of a data-parallel run (callbacks run on rank 0 only)."""
    import torch
    import torch.distributed as dist

    flags = torch.tensor([float(reason is not None), float(failed)], device=device)
    dist.broadcast(flags, src=0)
    stopping, failing = bool(flags[0].item()), bool(flags[1].item())
    if stopping and reason is None:
        reason = "stopped on rank 0"
    return (reason if stopping else None), failing
