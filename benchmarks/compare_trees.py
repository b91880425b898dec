"""Two versions of digitsum, the same command: whole `python -m digitsum run RECIPE` processes
from two source trees, alternated round by round (A B, B A, ...), so that a machine whose speed
drifts from one hour to the next disturbs both alike. Prints each run's wall time and test
figures, the medians, and the median of the per-round ratios (second tree over first).

    git worktree add ../before <commit>
    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/compare_trees.py ../before . speedrun --rounds 4

Each tree is put first on PYTHONPATH; the installed digitsum's entry points name the modules,
which then load from that tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(tree: Path, recipe: str, overrides: list[str]) -> tuple[float, dict]:
    """Seconds of one whole command from ``tree``, and its summary's test figures."""
    out = Path(tempfile.mkdtemp(prefix="digitsum-trees-")) / "run"
    sets = [a for s in overrides for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    if "DIGITSUM_DATA" in env:  # the runs start in the temporary folder: a relative path would name nothing there
        env["DIGITSUM_DATA"] = os.path.abspath(env["DIGITSUM_DATA"])
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "digitsum", "run", recipe, "--out", str(out), *sets], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())  # fmt: skip
    wall = time.perf_counter() - started
    return wall, json.loads((out / "summary.json").read_text())["metrics"]["test"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="the first source tree (e.g. a git worktree of the older commit)")
    parser.add_argument("second", type=Path, help="the second source tree")
    parser.add_argument("recipe", help="a recipe name or file")
    parser.add_argument("--rounds", type=int, default=4, help="rounds; each runs both trees once (default 4)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    trees = {"first": args.first, "second": args.second}
    times: dict[str, list[float]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for name in order:
            wall, test = run_once(trees[name], args.recipe, args.overrides)
            times[name].append(wall)
            figures = " ".join(f"{head} {values.get('accuracy', values.get('loss')):.4f}" for head, values in test.items())
            print(f"round {round_ + 1} {name:<6} {wall:6.2f} s  test {figures}", flush=True)
    ratios = [b / a for a, b in zip(times["first"], times["second"])]
    print(f"median first {statistics.median(times['first']):.2f} s, second {statistics.median(times['second']):.2f} s; "
          f"per-round second/first: median {statistics.median(ratios):.3f} ({' '.join(f'{r:.3f}' for r in ratios)})")  # fmt: skip


if __name__ == "__main__":
    main()
