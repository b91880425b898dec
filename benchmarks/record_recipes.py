"""Train every built-in recipe at its shipped settings and record its test metrics in
digitsum/recipes/metrics.json, the table `digitsum list recipes` shows. The table is only ever
written by this script:

    DIGITSUM_DATA=/path/to/data .venv/bin/python benchmarks/record_recipes.py [--only NAME ...]

Each recipe is trained by `digitsum run NAME --out DIR` in a fresh process — the path a user
takes, whatever the engine looks like inside — and the metrics are read back from the run's
summary.json: each head's primary metric on the test split, the epochs and the seconds. A
record also holds the seed, the date, the machine, and a hash of the recipe's settings, so a
recipe changed since shows no figures until this script runs again. With --only, the other
records are kept. The `notebook` recipe is recorded too: its low figures are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digitsum.catalog import METRICS_FILE, recipe_entries, recorded_metrics, settings_digest
from digitsum.engine.rundir import write_json
from digitsum.recipe import load_recipe, recipe_document


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(name: str, workdir: Path) -> dict:
    """Train ``name`` as shipped in a subprocess; its record for the table."""
    recipe = load_recipe(name)
    primary = {head: choice.cls.primary_metric for head, choice in recipe.heads.items()}
    out = workdir / name
    load = os.getloadavg()[0]  # other people's work on a shared machine slows a run: say how busy it was
    result = subprocess.run([sys.executable, "-m", "digitsum", "run", name, "--out", str(out)],
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})  # fmt: skip
    summary_path = out / "summary.json"
    # exit 1 is the watch's verdict on a run that does not learn (the notebook): it still finished
    if result.returncode not in (0, 1) or not summary_path.is_file():
        sys.exit(f"digitsum run {name} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    summary = json.loads(summary_path.read_text())
    if summary.get("stopped"):
        sys.exit(f"digitsum run {name} stopped early: {summary['stopped']}")
    test = summary["metrics"]["test"]
    return {
        "seed": summary["seed"],
        "epochs": summary["epochs"],
        "test": {head: {metric: round(test[head][metric], 4)} for head, metric in primary.items()},
        "seconds": round(summary["seconds"], 1),
        "measured": time.strftime("%Y-%m-%d"),
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, device {summary['device']}, load average {load:.1f} at the start",
        "settings": settings_digest(recipe_document(name)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="record these recipes only, keeping the other records")
    parser.add_argument("--table", type=Path, default=METRICS_FILE, help=f"the table to write (default {METRICS_FILE})")
    args = parser.parse_args()
    names = [e.name for e in recipe_entries() if e.builtin]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        sys.exit(f"not built-in recipes: {', '.join(unknown)} (built-ins: {', '.join(names)})")
    table = recorded_metrics() if args.table == METRICS_FILE else {}
    if args.table != METRICS_FILE and args.table.is_file():
        table = json.loads(args.table.read_text())
    table = {k: v for k, v in table.items() if k in names}  # records of removed recipes go
    with tempfile.TemporaryDirectory(prefix="digitsum-record-") as workdir:
        for name in args.only or names:
            print(f"training {name} ...", end=" ", flush=True)
            table[name] = record(name, Path(workdir))
            print(json.dumps(table[name]["test"]), f"{table[name]['seconds']} s", flush=True)
            write_json(args.table, dict(sorted(table.items())))  # after each: an interrupted run keeps what it has
    print(f"wrote {args.table}")


if __name__ == "__main__":
    main()
