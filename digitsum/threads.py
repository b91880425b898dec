"""How many CPU threads a run uses by default: one per usable core that other work leaves free.

torch runs its CPU operations on an OpenMP thread pool. A small convnet's operations are short
and each ends in a barrier, where an idle thread spins for a while before it sleeps. On a quiet
machine one thread per core is fastest, and the spinning is what makes it fast (measured on this
project's 2-core machine, ``benchmarks/wait_policy.py``: 12 400 samples/s with two threads,
9 400 with two threads told to sleep at once, ``OMP_WAIT_POLICY=PASSIVE``, 9 200 with one).
When another process holds a core, the thread that shares it with that process arrives late
at every barrier and the whole step waits for it: two threads beside one busy process gave
4 200 samples/s, one thread 9 300 (docs/performance.md).

So ``train.threads = 0`` counts the cores in the process's CPU affinity and leaves out those
that other processes kept busy while this one started: :func:`note_start` reads the machine's
CPU counters first thing (the CLI calls it before importing anything heavy; so do
``digitsum.train`` and ``digitsum.resume``), and :func:`busy_cores` reads them again when the
threads are set, after torch's import and the data's loading — a window of a second or more,
with this process's own CPU time (and its helpers': a logger's sidecar) taken out. Decided
once, before the first step: the thread count changes the last bits of a result, so it never
changes during a run (and a resumed run keeps the count its checkpoint was trained with).

This module imports no torch.
"""

from __future__ import annotations

import os
import time

#: A core counts as taken by other work when that work used at least this share of it.
TAKEN = 0.6
#: The shortest window :func:`busy_cores` measures over (it waits out the rest, idle).
MIN_WINDOW = 0.25

_start: tuple[float, float, float] | None = None  # wall, machine busy CPU seconds, own CPU seconds


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cgroup cpusets), which
    ``os.cpu_count()`` ignores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _machine_busy_seconds(stat: str = "/proc/stat") -> float | None:
    """CPU seconds spent busy (not idle, not waiting for I/O) since boot, summed over the cores
    this process may use; None where the kernel does not say (not Linux)."""
    try:
        cpus = os.sched_getaffinity(0)
        with open(stat) as file:
            text = file.read()
    except (AttributeError, OSError):
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = 0
    for line in text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        busy += sum(values) - values[3] - values[4]
    return busy / tick


#: Processes this one started to work for it (a logger's sidecar): their CPU time is the run's own.
_helpers: set[int] = set()


def count_as_own(pid: int) -> None:
    """Count the CPU time of the process ``pid``, started by this one to work for it, as this
    process's own: a logger's sidecar importing its library while the run starts is not another
    process's work that should cost the run a thread."""
    _helpers.add(pid)


def _own_seconds(proc: str = "/proc") -> float:
    """CPU seconds of this process and of its helpers (:func:`count_as_own`) while they live."""
    times = os.times()
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    helpers = 0
    for pid in list(_helpers):
        try:
            with open(f"{proc}/{pid}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()  # after "pid (name)": a name may hold spaces
            helpers += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            _helpers.discard(pid)  # ended (or no /proc here)
    return times.user + times.system + helpers / tick


def note_start() -> None:
    """Read the CPU counters: the start of the window :func:`busy_cores` measures over."""
    global _start
    machine = _machine_busy_seconds()
    _start = None if machine is None else (time.perf_counter(), machine, _own_seconds())


def busy_cores() -> float:
    """Cores' worth of CPU time that other processes used since :func:`note_start` (0.0 where it
    cannot be measured). A window shorter than :data:`MIN_WINDOW` is waited out first."""
    if _start is None:
        note_start()
        if _start is None:
            return 0.0
    wall, machine, own = _start
    elapsed = time.perf_counter() - wall
    if elapsed < MIN_WINDOW:
        time.sleep(MIN_WINDOW - elapsed)
    now_machine = _machine_busy_seconds()
    if now_machine is None:
        return 0.0
    others = (now_machine - machine) - (_own_seconds() - own)
    return max(0.0, others / (time.perf_counter() - wall))


def default_threads(cores: int, local_ranks: int = 1, omp_num_threads: str | None = None, busy: float = 0.0) -> int:
    """The intra-op thread count of ``train.threads = 0``.

    ``cores``: the usable cores (:func:`usable_cores`); ``local_ranks``: processes of one
    data-parallel run on this machine, which share the cores; ``omp_num_threads``: the value of
    ``$OMP_NUM_THREADS`` if set, which wins (torchrun sets it to 1 unless the user did);
    ``busy``: cores' worth of other work (:func:`busy_cores`): each core it takes up to
    :data:`TAKEN` or more is left to it.
    """
    if omp_num_threads:
        try:
            return max(1, int(omp_num_threads.split(",")[0]))
        except ValueError:
            pass  # a malformed value: libgomp ignores it too
    taken = int(busy + (1 - TAKEN))
    return max(1, (cores - taken) // max(1, local_ranks))
