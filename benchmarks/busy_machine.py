"""A default `digitsum run` on a quiet machine and beside one CPU-bound process: the slowdown.

Starts the competing process itself (a pure-Python busy loop: one core, all the time), and
times whole `digitsum run RECIPE --set train.epochs=E` processes — the path a user takes, with
its default `train.threads = 0` — alternately quiet and busy, keeping the median of each.
The figure of merit is busy / quiet wall time (target ≤ 2.2×), and the default against two
threads on the quiet machine (it must lose nothing there). ``--causes`` also times the settings
that explain it, each quiet and busy: one thread, two threads (what the default picks on a quiet
machine; libgomp's own waiting: spin, then sleep), and two threads that sleep at once
(``OMP_WAIT_POLICY=PASSIVE``). The default is one thread per core whatever the load (a
load-following count was tried and removed: it made results depend on the machine's load).

    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/busy_machine.py [--epochs 1] [--rounds 3] [--causes]

"Quiet" is only as quiet as the machine: on a shared machine other people's work loads both
sides alike; the load average printed with each figure says how busy it was.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUSY_LOOP = "while True:\n    pass\n"


@dataclass
class Variant:
    """One way of running digitsum: extra environment variables and recipe overrides."""

    label: str
    env: dict[str, str] = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)


DEFAULT = Variant("default (train.threads = 0)")
CAUSES = [
    Variant("train.threads = 1", sets=["train.threads=1"]),
    Variant("train.threads = 2", sets=["train.threads=2"]),
    Variant("2 threads, OMP_WAIT_POLICY=PASSIVE", env={"OMP_WAIT_POLICY": "PASSIVE"}, sets=["train.threads=2"]),
]


def run_once(recipe: str, epochs: int, variant: Variant, workdir: Path) -> float:
    """Wall seconds of one whole `digitsum run` process."""
    out = workdir / "run"
    command = [sys.executable, "-m", "digitsum", "run", recipe, "--out", str(out), "--force",
               "--set", f"train.epochs={epochs}", *[a for s in variant.sets for a in ("--set", s)]]  # fmt: skip
    env = {**os.environ, "COLUMNS": "120", **variant.env}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    json.loads((out / "summary.json").read_text())  # it finished and wrote its summary
    return seconds


class Competitor:
    """One CPU-bound process (a pure-Python busy loop) for as long as the ``with`` lasts."""

    def __enter__(self) -> Competitor:
        self.process = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        time.sleep(0.5)  # let it get going
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="original", help="recipe name or path (default original)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per setting and condition; the median is kept (default 3)")
    parser.add_argument("--causes", action="store_true", help="also time one thread, two threads, and two threads that sleep at once")
    args = parser.parse_args()
    if not os.environ.get("DIGITSUM_DATA"):
        print("note: DIGITSUM_DATA is not set; digitsum looks for MNIST in its cache folder", file=sys.stderr)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cores} usable cores; load average {os.getloadavg()[0]:.1f} at the start; "
          f"`digitsum run {args.recipe} --set train.epochs={args.epochs}`, median of {args.rounds}", flush=True)  # fmt: skip
    variants = [DEFAULT, *(CAUSES if args.causes else [])]
    times: dict[tuple[str, bool], list[float]] = {}
    loads: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="digitsum-busy-") as workdir:
        for _ in range(args.rounds):
            for variant in variants:  # interleaved: a busy spell of the machine hits every setting alike
                for busy in (False, True):
                    with Competitor() if busy else contextlib.nullcontext():
                        loads[busy].append(os.getloadavg()[0])
                        seconds = run_once(args.recipe, args.epochs, variant, Path(workdir))
                    times.setdefault((variant.label, busy), []).append(seconds)
                    print(f"  {variant.label}, {'busy' if busy else 'quiet'}: {seconds:.1f} s "
                          f"(load average {loads[busy][-1]:.1f})", flush=True)  # fmt: skip
    print(f"{'setting':<38} {'quiet s':>8} {'busy s':>8} {'busy/quiet':>10}")
    for variant in variants:
        quiet = statistics.median(times[(variant.label, False)])
        busy = statistics.median(times[(variant.label, True)])
        print(f"{variant.label:<38} {quiet:>8.1f} {busy:>8.1f} {busy / quiet:>9.2f}x")
    print(f"load average at the runs' starts: quiet {statistics.mean(loads[False]):.1f}, "
          f"busy {statistics.mean(loads[True]):.1f} (the competitor included)")  # fmt: skip


if __name__ == "__main__":
    main()
