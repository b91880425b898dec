"""How many CPU threads a run uses by default, and how they wait: decided without torch.

torch runs its CPU operations on an OpenMP (libgomp) thread pool. A small convnet's operations
are short and each ends in a barrier; by default an idle OpenMP thread *spins* there for a while
before it sleeps. On a quiet machine that is harmless. When another process holds a core, a
spinning thread burns the time slice its partner needs to finish, and every step crawls —
measured on a 2-core machine beside other jobs: 443 samples/s with two spinning threads, 4 524
with one thread, 5 146 with two threads that sleep instead (``OMP_WAIT_POLICY=PASSIVE``;
see docs/performance.md). libgomp reads its wait policy once, when torch is imported, so
:func:`prefer_passive_waiting` must run before that: the CLI calls it first thing, and so do
``digitsum.train`` and ``digitsum.resume`` (too late, and harmless, when the caller imported
torch already).

This module imports no torch: the CLI calls it before anything heavy is loaded.
"""

from __future__ import annotations

import os
import sys

#: Environment variables that already say how OpenMP threads wait: if one is set, digitsum
#: leaves the choice to it.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def prefer_passive_waiting(environ: dict[str, str] | None = None) -> bool:
    """Ask OpenMP threads to sleep rather than spin while they wait (``OMP_WAIT_POLICY=PASSIVE``),
    unless the environment already sets a wait policy (:data:`WAIT_VARIABLES`).

    Returns whether it takes effect: torch not imported yet, and no policy set by the user.
    ``environ`` defaults to ``os.environ`` (tests pass a dict).
    """
    env = os.environ if environ is None else environ
    if any(name in env for name in WAIT_VARIABLES):
        return False
    if environ is None and "torch" in sys.modules:
        return False  # libgomp has read its settings already: changing them now does nothing
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cgroup cpusets), which
    ``os.cpu_count()`` ignores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(cores: int, local_ranks: int = 1, omp_num_threads: str | None = None) -> int:
    """The intra-op thread count of ``train.threads = 0``.

    ``cores``: the usable cores (:func:`usable_cores`); ``local_ranks``: processes of one
    data-parallel run on this machine, which share the cores; ``omp_num_threads``: the value of
    ``$OMP_NUM_THREADS`` if set, which wins (torchrun sets it to 1 unless the user did).
    """
    if omp_num_threads:
        try:
            return max(1, int(omp_num_threads.split(",")[0]))
        except ValueError:
            pass  # a malformed value: libgomp ignores it too
    return max(1, cores // max(1, local_ranks))
