"""`digitsum list` and `digitsum plugins` with a warm listing cache against a cold one, and against
Python's own start-up.

Whole processes, median of N runs each, all in this one run (the machine's load varies):

    .venv/bin/python benchmarks/list_speed.py [--runs 5]

The cache lives in a temporary XDG_CACHE_HOME, so the user's cache is not touched. "cold"
removes the cache before each run (components imported, torch included); "warm" keeps it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    cache = Path(tempfile.mkdtemp(prefix="digitsum-cache-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "COLUMNS": "120"}
    digitsum = [sys.executable, "-m", "digitsum"]
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "digitsum --help": [*digitsum, "--help"],
        "digitsum --version": [*digitsum, "--version"],
        "digitsum list (warm cache)": [*digitsum, "list"],
        "digitsum list --json (warm cache)": [*digitsum, "list", "--json"],
        "digitsum list (cold cache)": [*digitsum, "list"],
        "digitsum plugins (warm cache)": [*digitsum, "plugins"],
        "digitsum plugins (cold cache)": [*digitsum, "plugins"],
    }
    subprocess.run([*digitsum, "list"], check=True, env=env, stdout=subprocess.DEVNULL)  # warm it
    results = {}
    for name, args in cases.items():
        times = []
        for _ in range(runs):
            if "cold" in name:
                shutil.rmtree(cache / "digitsum", ignore_errors=True)
            times.append(timed(args, env))
        results[name] = statistics.median(times)
    shutil.rmtree(cache, ignore_errors=True)
    for name, median in results.items():
        print(f"{name:36s} median {median:6.3f} s over {runs} runs")
    warm, cold = results["digitsum list (warm cache)"], results["digitsum list (cold cache)"]
    print(f"cold / warm list: {cold / warm:.1f}x; warm list - python start-up: {warm - results['python -c pass']:.3f} s")
    warm, cold = results["digitsum plugins (warm cache)"], results["digitsum plugins (cold cache)"]
    print(f"cold / warm plugins: {cold / warm:.1f}x")


if __name__ == "__main__":
    main()
