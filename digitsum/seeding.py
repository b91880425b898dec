"""Random streams: every random draw of a run is a function of its seed and where it happens,
so that any draw can be recomputed without replaying the ones before it (docs/architecture.md).
"""

from __future__ import annotations

import hashlib

import torch


def stream_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one random stream, e.g. ``(seed, "train", epoch, step)``."""
    key = "/".join(map(str, (seed, *parts))).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def make_rng(device: torch.device, seed: int) -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    rng = torch.Generator(device=device)
    rng.manual_seed(seed)
    return rng
