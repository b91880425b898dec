"""The default thread count (digitsum/threads.py): one per usable core that other work leaves free."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from digitsum import threads
from digitsum.threads import busy_cores, default_threads, note_start, usable_cores


@pytest.mark.parametrize(
    ("cores", "ranks", "omp", "busy", "expected"),
    [
        (2, 1, None, 0.0, 2),  # one thread per usable core
        (1, 1, None, 0.0, 1),
        (8, 2, None, 0.0, 4),  # torchrun: the cores split between the local ranks
        (2, 4, None, 0.0, 1),  # never fewer than one
        (8, 1, "3", 0.0, 3),  # OMP_NUM_THREADS wins
        (8, 1, "3", 5.0, 3),  # ... over the load too
        (8, 2, "1", 0.0, 1),  # what torchrun sets
        (8, 1, "4,2", 0.0, 4),  # a nested list: the outer level counts
        (2, 1, "lots", 0.0, 2),  # malformed: ignored, as libgomp does
        (2, 1, "0", 0.0, 1),
        (2, 1, None, 0.3, 2),  # a little background work takes no core
        (2, 1, None, 0.6, 1),  # one busy process takes one
        (2, 1, None, 1.0, 1),
        (2, 1, None, 7.5, 1),  # a crowded machine: still one thread
        (16, 1, None, 1.0, 15),
        (16, 2, None, 2.0, 7),
    ],
)
def test_default_threads(cores, ranks, omp, busy, expected):
    assert default_threads(cores, ranks, omp, busy) == expected


def test_usable_cores_follow_the_affinity():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert usable_cores() == expected


def test_own_work_is_not_counted_as_other_work():
    note_start()
    time.sleep(0.5)
    idle = busy_cores()  # whatever else the machine does
    note_start()
    deadline = time.perf_counter() + 0.5
    while time.perf_counter() < deadline:  # this process busy, on one core
        pass
    assert busy_cores() < idle + 0.5  # counted, it would add a whole core


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the CPU counters are Linux's")
def test_a_busy_process_beside_is_counted():
    other = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # it has started
        note_start()
        time.sleep(0.7)
        busy = busy_cores()
    finally:
        other.kill()
        other.wait()
    assert busy >= threads.TAKEN  # one process busy all the window (the other core is idle)


def test_without_a_start_the_window_is_waited_out(monkeypatch):
    monkeypatch.setattr(threads, "_start", None)
    started = time.perf_counter()
    busy_cores()
    assert time.perf_counter() - started >= threads.MIN_WINDOW * 0.9


def test_without_cpu_counters_nothing_is_busy(monkeypatch):
    monkeypatch.setattr(threads, "_machine_busy_seconds", lambda stat="/proc/stat": None)
    note_start()
    assert busy_cores() == 0.0


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the CPU counters are Linux's")
def test_a_helper_process_counts_as_own_work():
    """A logger's sidecar importing its library while the run starts must not cost the run a
    thread: the process it counts as its own is left out of the busy cores."""
    helper = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        threads.count_as_own(helper.pid)
        note_start()
        time.sleep(0.7)
        busy = busy_cores()
    finally:
        helper.kill()
        helper.wait()
    assert busy < threads.TAKEN  # counted as another's, it would take a whole core
