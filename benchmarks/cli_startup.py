"""Whole-process wall time of quick CLI commands (median of 5): they must not wait for torch.

    .venv/bin/python benchmarks/cli_startup.py [--runs 5] [-- extra commands, e.g. "list"]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

VENV_DIGITSUM = Path(sys.executable).with_name("digitsum")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("commands", nargs="*", default=["--help", "--version"], help='default: "--help" "--version"')
    args = parser.parse_args()
    exe = str(VENV_DIGITSUM) if VENV_DIGITSUM.exists() else shutil.which("digitsum")
    if exe is None:
        raise SystemExit("no digitsum console script next to this python or on PATH: install digitsum first")
    print(f"{exe}: median of {args.runs} whole-process runs")
    for command in args.commands:
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run([exe, *command.split()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - started)
        print(f"  digitsum {command:<12} {statistics.median(times):.3f} s  (min {min(times):.3f}, max {max(times):.3f})")


if __name__ == "__main__":
    main()
