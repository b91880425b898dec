"""How much CPU time the machine's hypervisor took from this virtual machine ("steal").

On a shared cloud machine another tenant's load shows as steal time in /proc/stat: the virtual
CPUs were ready to run but the host ran something else. A wall-clock figure measured while the
host took a third of the CPU is a third slower for reasons outside digitsum, so the benchmarks
that report seconds print the steal share of each measurement beside it.

No torch import: benchmarks that only start processes use this too.
"""

from __future__ import annotations

from pathlib import Path

PROC_STAT = Path("/proc/stat")


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks since boot over all CPUs; None where /proc/stat has none."""
    try:
        fields = PROC_STAT.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user/nice]
    ticks = [int(v) for v in fields[1:9]]
    return ticks[7], sum(ticks)


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU time the hypervisor took between two :func:`cpu_ticks`."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def describe(share: float | None) -> str:
    """``"steal 12 %"``, or ``"steal n/a"`` where it cannot be read."""
    return "steal n/a" if share is None else f"steal {100 * share:.0f} %"
