"""The default thread count (``train.threads = 0``, engine/accel.py): one per usable core,
whatever else the machine is doing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from digitsum.engine.accel import default_threads, usable_cores
from digitsum.recipe import load_recipe

from .conftest import RECIPES
from .runs import tiny_args


@pytest.mark.parametrize(
    ("cores", "ranks", "omp", "expected"),
    [
        (2, 1, None, 2),  # one thread per usable core
        (1, 1, None, 1),
        (8, 2, None, 4),  # torchrun: the cores split between the local ranks
        (2, 4, None, 1),  # never fewer than one
        (8, 1, "3", 3),  # OMP_NUM_THREADS wins
        (8, 2, "1", 1),  # what torchrun sets
        (8, 1, "4,2", 4),  # a nested list: the outer level counts
        (2, 1, "lots", 2),  # malformed: ignored, as libgomp does
        (2, 1, "0", 1),
    ],
)
def test_default_threads(cores, ranks, omp, expected):
    assert default_threads(cores, ranks, omp) == expected


def test_usable_cores_follow_the_affinity():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert usable_cores() == expected


@pytest.fixture
def busy_process():
    """A pure-Python busy loop (one core, all the time), running once the fixture yields."""
    busy = subprocess.Popen([sys.executable, "-c", "print('ready', flush=True)\nwhile True: pass"], stdout=subprocess.PIPE, text=True)
    try:
        assert busy.stdout.readline().strip() == "ready"
        yield busy
    finally:
        busy.kill()
        busy.wait()


def test_the_default_does_not_follow_the_load(busy_process):
    quiet = default_threads(usable_cores())
    assert busy_process.poll() is None  # the competing process is running
    assert default_threads(usable_cores()) == quiet == usable_cores()


def _trained_heads(root, out) -> list[dict]:
    from digitsum.engine.runner import start

    recipe = load_recipe(RECIPES / "original.toml", tiny_args(root, 1, 64, "train.threads=0"))
    start(recipe, out, progress=False, preflight=False)
    return [json.loads(line)["heads"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def quiet_run(tiny_root, tmp_path, monkeypatch):
    """``original``'s metrics after one tiny epoch with the default threads, trained before any
    busy process starts; torch's thread count is put back afterwards."""
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield _trained_heads(tiny_root, tmp_path / "quiet")
    torch.set_num_threads(before)


def test_the_same_recipe_and_seed_give_the_same_bits_beside_a_busy_process(quiet_run, busy_process, tiny_root, tmp_path):
    assert _trained_heads(tiny_root, tmp_path / "busy") == quiet_run  # every metric, to the last bit
