"""The default thread count and OpenMP wait policy (digitsum/threads.py): pure decisions."""

from __future__ import annotations

import os

import pytest

from digitsum.threads import WAIT_VARIABLES, default_threads, prefer_passive_waiting, usable_cores


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


def test_passive_waiting_is_set_when_nothing_says_otherwise():
    env: dict[str, str] = {}
    assert prefer_passive_waiting(env) is True
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.parametrize("name", WAIT_VARIABLES)
def test_a_wait_setting_of_the_user_is_kept(name):
    env = {name: "ACTIVE" if name == "OMP_WAIT_POLICY" else "1000"}
    assert prefer_passive_waiting(env) is False
    assert list(env) == [name]


def test_too_late_once_torch_is_imported(monkeypatch):
    import torch  # noqa: F401  (libgomp has read its settings)

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    for name in WAIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert prefer_passive_waiting() is False
    assert "OMP_WAIT_POLICY" not in os.environ
