"""MNIST addition over seeds: each add-N recipe trained with seeds 0..k-1, the test accuracy of
the sum (and the digit accuracy that emerges) as mean ± std, and the wall time per run.

    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/addition.py \\
        [--recipes add-1 add-2 ...] [--seeds 5] [--jobs 2] [--out DIR] [--set KEY=VALUE ...]

Each run is `nice -n 1 python -m digitsum run NAME --set seed=K --set train.threads=1 --out
DIR/NAME/seed-K` in a fresh process — the path a user takes — ``--jobs`` at a time (each
single-threaded). Its figures are read back from the run's summary.json and appended to
DIR/results.jsonl as it ends; a run already recorded there is not run again, so an
interrupted benchmark continues where it stopped. The table is printed from results.jsonl
(``--table`` prints it without running anything). Wall time is the process's, start to end,
evaluation and pictures included; on a shared machine it is inflated by the other load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RECIPES = ["add-1", "add-2", "add-4", "add-15", "add-100", "add-1-neural"]


def run_one(name: str, seed: int, out: Path, overrides: list[str]) -> dict:
    """Train ``name`` with ``seed`` in a fresh process; its test figures and wall time."""
    run_dir = out / name / f"seed-{seed}"
    command = ["nice", "-n", "1", sys.executable, "-m", "digitsum", "run", name, "--set", f"seed={seed}",
               "--set", "train.threads=1", *[a for o in overrides for a in ("--set", o)], "--out", str(run_dir), "--force"]  # fmt: skip
    started = time.perf_counter()
    # a session of its own: under the kernel's autogroup scheduling, each run then gets its own
    # share of the CPUs, as a run started from its own terminal would
    done = subprocess.run(command, capture_output=True, text=True, start_new_session=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"recipe": name, "seed": seed, "failed": (done.stderr or done.stdout)[-2000:], "wall_s": round(wall, 1)}
    summary = json.loads((run_dir / "summary.json").read_text())
    test = summary["metrics"]["test"]
    return {
        "recipe": name,
        "seed": seed,
        "sum_accuracy": test["sum"]["accuracy"],
        "digit_accuracy": test.get("digits", {}).get("accuracy"),  # measured only (weight 0); none for the neural baseline
        "epochs": summary["epochs"],
        "train_s": summary["seconds"],
        "wall_s": round(wall, 1),
        "overrides": overrides,
        "command": " ".join("python" if a == sys.executable else a for a in command),  # no machine's path
    }


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}"


def table(results: list[dict], order: list[str]) -> str:
    """The markdown table: per recipe, seeds, sum and digit accuracy (%), wall time per run."""
    lines = ["| recipe | seeds | sum accuracy % | digit accuracy % | wall s / run (mean, max) |", "|---|---|---|---|---|"]
    for name in order:
        rows = [r for r in results if r["recipe"] == name and "failed" not in r]
        failed = [r for r in results if r["recipe"] == name and "failed" in r]
        if not rows and not failed:
            continue
        digits = [r["digit_accuracy"] for r in rows if r.get("digit_accuracy") is not None]
        walls = [r["wall_s"] for r in rows]
        wall = f"{statistics.fmean(walls):.0f}, {max(walls):.0f}" if walls else "—"
        seeds = ",".join(str(r["seed"]) for r in sorted(rows, key=lambda r: r["seed"]))
        note = f" ({len(failed)} failed)" if failed else ""
        lines.append(f"| {name} | {seeds}{note} | {_mean_std([r['sum_accuracy'] for r in rows])} | {_mean_std(digits)} | {wall} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=RECIPES, help=f"recipes to run (default: {' '.join(RECIPES)})")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..SEEDS-1 per recipe (default 5)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, each single-threaded (default 2)")
    parser.add_argument("--out", type=Path, default=Path("addition-runs"), help="run directories and results.jsonl (default ./addition-runs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    parser.add_argument("--table", action="store_true", help="print the table of results.jsonl and run nothing")
    args = parser.parse_args()
    if not args.table and not os.environ.get("DIGITSUM_DATA"):
        raise SystemExit("set DIGITSUM_DATA to the folder holding MNIST/raw/")
    args.out.mkdir(parents=True, exist_ok=True)
    record = args.out / "results.jsonl"
    results = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    if not args.table:
        done = {(r["recipe"], r["seed"]) for r in results if "failed" not in r and r.get("overrides", []) == args.overrides}
        todo = [(name, seed) for seed in range(args.first_seed, args.first_seed + args.seeds) for name in args.recipes
                if (name, seed) not in done]  # fmt: skip
        with ThreadPoolExecutor(args.jobs) as pool:
            for result in pool.map(lambda job: run_one(*job, args.out, args.overrides), todo):
                results.append(result)
                with record.open("a") as f:
                    f.write(json.dumps(result) + "\n")
                shown = "FAILED" if "failed" in result else f"sum {result['sum_accuracy']:.4f} digits {result['digit_accuracy']}"
                print(f"{result['recipe']} seed {result['seed']}: {shown} ({result['wall_s']:.0f} s)", flush=True)
    order = RECIPES + sorted({r["recipe"] for r in results} - set(RECIPES))
    print(table(results, order))


if __name__ == "__main__":
    main()
