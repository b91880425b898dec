"""The doctor on every shipped recipe (and every installed plugin's): exit code, errors and
warnings, and the seconds each whole `digitsum doctor NAME` process takes.

What issue 12 asks of it: exit 0 and no warning on each, at most 30 s each on this machine.
Each recipe runs in a fresh process, one after another (so that the seconds are a quiet
machine's when the machine is quiet); the load average and the hypervisor's steal share (benchmarks/steal.py) are printed with each.

    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/doctor_recipes.py [--only add-15 add-100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from steal import cpu_ticks, describe, steal_share

REPO = Path(__file__).resolve().parents[1]
LIMIT_S = 30.0


def recipes() -> list[str]:
    """Every recipe `digitsum list recipes` shows: built-in and from plugins."""
    listed = subprocess.run([sys.executable, "-m", "digitsum", "list", "recipes", "--json"], capture_output=True, text=True, check=True)
    return [row["name"] if row["origin"] == "built-in" else f"{row['distribution']}:{row['name']}" for row in json.loads(listed.stdout)]


def doctor(name: str) -> dict:
    ticks = cpu_ticks()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "digitsum", "doctor", name, "--json"], capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    row = {"recipe": name, "exit": done.returncode, "seconds": round(seconds, 1), "steal": steal_share(ticks, cpu_ticks())}
    try:
        report = json.loads(done.stdout)
        row.update(errors=report["counts"].get("error", 0), warnings=report["counts"].get("warning", 0),
                   flagged=[f"{f['severity']}: {f['check']}: {f['title']}" for f in report["findings"] if f["severity"] != "info"])  # fmt: skip
    except (json.JSONDecodeError, KeyError):
        row.update(errors=None, warnings=None, flagged=[done.stderr.strip()[-500:]])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these recipes only")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    if not os.environ.get("DIGITSUM_DATA"):
        print("note: DIGITSUM_DATA is not set; digitsum looks for MNIST in its cache folder", file=sys.stderr)
    names = args.only or recipes()
    rows = []
    print(f"{'recipe':<28} {'exit':>4} {'errors':>6} {'warnings':>8} {'seconds':>8}  load  steal")
    for name in names:
        load = os.getloadavg()[0]
        row = doctor(name)
        rows.append(row)
        print(f"{name:<28} {row['exit']:>4} {row['errors']!s:>6} {row['warnings']!s:>8} {row['seconds']:>8.1f}  {load:.1f}  {describe(row['steal']).removeprefix('steal ')}", flush=True)
        for line in row["flagged"]:
            print(f"    {line}")
    ok = [r for r in rows if r["exit"] == 0 and r["warnings"] == 0 and r["seconds"] <= LIMIT_S]
    print(f"{len(ok)} of {len(rows)} recipes: exit 0, no warning, at most {LIMIT_S:.0f} s; "
          f"slowest {max(r['seconds'] for r in rows):.1f} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
