"""What the TensorBoard and MLflow loggers cost: the same short run with and without them.

Each configuration is `digitsum run RECIPE --set ... --out DIR` in a fresh interpreter, as a
user runs it, so the times include what a logger adds anywhere: importing its library, opening
its store, writing per epoch, copying artifacts at the end. The configurations are interleaved
round by round (none, tensorboard, mlflow, both, none, ...), so that a machine whose load
changes disturbs them alike; each is reported by its median over the rounds and by the median
of its per-round ratio to the run without loggers ("paired"), with the training
loop's own time (summary.json's seconds) and the CPU time the command used (user + system, all
its threads) beside its wall time: on a machine other processes share, the CPU time says best
what the loggers themselves cost, as it counts only this process's work. The MLflow store (SQLite,
in a temporary folder) is created by an untimed run first: creating one is a one-time cost,
reported apart. The load average is printed before and after, and each run's share of the
machine's CPU its hypervisor took (benchmarks/steal.py): on a shared machine, read the figures
with them.

    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/logging_overhead.py --set train.epochs=2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from steal import cpu_ticks, describe, steal_share

CONFIGURATIONS = {
    "none": [],
    "tensorboard": ["log.tensorboard=true"],
    "mlflow": ["log.mlflow=true"],
    "both": ["log.tensorboard=true", "log.mlflow=true"],
}


def run(recipe: str, overrides: list[str], out: Path, env: dict[str, str]) -> tuple[float, float, float, float | None]:
    """Wall seconds of the whole command, the training's own seconds (summary.json), the CPU
    seconds (user + system) the command used, and the hypervisor's steal share meanwhile."""
    sets = [arg for o in overrides for arg in ("--set", o)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    ticks = cpu_ticks()
    started = time.perf_counter()
    # in the temporary folder: MLflow keeps artifacts in ./mlruns of the working folder
    result = subprocess.run([sys.executable, "-m", "digitsum", "run", recipe, *sets, "--out", str(out)],
                            capture_output=True, text=True, env=env, cwd=out.parent)  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"digitsum run failed ({result.returncode}):\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, json.loads((out / "summary.json").read_text())["seconds"], cpu, steal_share(ticks, cpu_ticks())


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="original", help="recipe to run: a name or an absolute path (runs start in a temporary folder; default original)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every configuration (default 3)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key for every configuration, e.g. --set train.epochs=2")  # fmt: skip
    parser.add_argument("--only", action="append", choices=list(CONFIGURATIONS), help="time these configurations (default all)")
    args = parser.parse_args()
    wanted = {name: sets for name, sets in CONFIGURATIONS.items() if not args.only or name in args.only or name == "none"}

    print(f"load average before: {load()} ({os.cpu_count()} logical CPUs)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "COLUMNS": "120"}
        if any("log.mlflow=true" in sets for sets in wanted.values()):
            started = time.perf_counter()
            run(args.recipe, [*args.overrides, "log.mlflow=true", "train.epochs=1"], work / "store", env)
            print(f"creating the MLflow store (untimed warm-up run, 1 epoch): {time.perf_counter() - started:.1f} s wall", flush=True)
        times: dict[str, list[tuple[float, float, float, float | None]]] = {name: [] for name in wanted}
        for round_ in range(1, args.rounds + 1):
            for name, sets in wanted.items():
                times[name].append(run(args.recipe, [*args.overrides, *sets], work / f"{name}-{round_}", env))
                wall, trained, cpu, stolen = times[name][-1]
                print(f"  round {round_} {name:<12} {wall:7.2f} s wall, {trained:7.2f} s training, {cpu:7.2f} s CPU "
                      f"(load {os.getloadavg()[0]:.2f}, {describe(stolen)})", flush=True)  # fmt: skip
    base = [statistics.median(p[i] for p in times["none"]) for i in range(3)]
    print(f"\n{args.recipe} {' '.join(args.overrides)}: medians of {args.rounds} interleaved rounds")
    print(f"{'loggers':<12} {'wall s':>8} {'ratio':>7} {'paired':>7} {'training s':>11} {'ratio':>7} {'CPU s':>8} {'ratio':>7}")
    for name, points in times.items():
        wall, trained, cpu = (statistics.median(p[i] for p in points) for i in range(3))
        # each round's wall time over the same round's run without loggers: the machine's
        # drift from round to round (±15 % here) cancels out
        paired = statistics.median(p[0] / n[0] for p, n in zip(points, times["none"]))
        print(f"{name:<12} {wall:8.2f} {wall / base[0]:7.3f} {paired:7.3f} {trained:11.2f} {trained / base[1]:7.3f} "
              f"{cpu:8.2f} {cpu / base[2]:7.3f}")  # fmt: skip
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
