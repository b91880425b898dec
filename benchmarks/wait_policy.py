"""Training throughput by thread count and OpenMP wait policy, quiet and beside one busy process.

Each setting runs in a fresh process (libgomp reads its wait policy once, when torch loads):
`Trainer.train_epoch` of a recipe at batch size 128, the best of two timings of ``--samples``
samples after a warm-up, in samples/s. Settings are interleaved round by round so that the
machine's jitter hits them alike; the busy condition starts one pure-Python busy loop (one
core) for the duration of the setting's process.

    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/wait_policy.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = {  # label: (environment, threads)
    "2 threads, libgomp's default wait": ({}, 2),
    "2 threads, OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2),
    "1 thread": ({}, 1),
}
CHILD = """
import sys, time
sys.path.insert(0, {here!r})
import torch
torch.set_num_threads({threads})
from common import digitsum_trainer, time_digitsum, warm_up
trainer = digitsum_trainer(128, "cpu", [], {recipe!r})
warm_up(trainer)
print({samples} / min(time_digitsum(trainer, {samples}, epoch=1) for _ in range(2)))
"""


@contextlib.contextmanager
def busy_loop():
    process = subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"])
    time.sleep(0.5)
    try:
        yield
    finally:
        process.kill()
        process.wait()


def measure(env: dict[str, str], threads: int, recipe: str, samples: int) -> float:
    code = CHILD.format(here=str(HERE), threads=threads, recipe=recipe, samples=samples)
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(HERE.parent / "recipes" / "speedrun.toml"))
    parser.add_argument("--samples", type=int, default=15_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} at the start; samples/s, best of 2 x {args.samples} per process", flush=True)
    figures: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for label, (env, threads) in SETTINGS.items():
            for busy in (False, True):
                with busy_loop() if busy else contextlib.nullcontext():
                    value = measure(env, threads, args.recipe, args.samples)
                figures.setdefault((label, busy), []).append(value)
                print(f"  {label}, {'busy' if busy else 'quiet'}: {value:,.0f}", flush=True)
    print(f"{'setting':<40} {'quiet (median)':>15} {'+ busy loop (median)':>21}")
    for label in SETTINGS:
        quiet, busy = statistics.median(figures[(label, False)]), statistics.median(figures[(label, True)])
        print(f"{label:<40} {quiet:>15,.0f} {busy:>21,.0f}")


if __name__ == "__main__":
    main()
