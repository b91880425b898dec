"""Make the pretrained weights of every built-in recipe, or check them against full MNIST.

    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/zoo_weights.py [--recipes NAME ...] [--from-runs DIR]
    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/zoo_weights.py --check
    .venv/bin/python benchmarks/zoo_weights.py --table    # the table of docs/api.md

Making: each recipe is trained as shipped, at its own seed, by `digitsum run NAME` in a fresh
process (the path a user takes; every recipe's seed is 0 except `notebook`'s 3, the seed at which
its network is known to collapse, so its weights show what its recipe does), or read from DIR/NAME/ with --from-runs, then written
by `digitsum export RUN --format safetensors` into digitsum/recipes/weights/ (the tensors and
their record, see docs/api.md#pretrained-models). The script says, per recipe, whether the
weights changed (sha256) and their test metrics. Checking (--check): each recipe's weights are
loaded by name, as a user would, evaluated on the test split, and compared with their record:
the figures must be the same to the recorded digits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FOLDER = Path(__file__).resolve().parent.parent / "digitsum" / "recipes" / "weights"


def _digitsum(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitsum", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "120"})  # fmt: skip


def make(names: list[str], runs: Path | None) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            run_dir = runs / name if runs else Path(scratch, name)
            if runs is None:
                started = time.perf_counter()
                trained = _digitsum("run", name, "--out", str(run_dir))
                print(f"{name}: trained in {time.perf_counter() - started:.0f} s (exit {trained.returncode})")
            before = _sha256(name)
            exported = _digitsum("export", str(run_dir), "--format", "safetensors", "--out", str(FOLDER), "--force")
            if exported.returncode != 0:
                print(f"{name}: FAILED: {exported.stderr.strip()[-400:]}")
                continue
            record = json.loads((FOLDER / f"{name}.json").read_text())
            change = "new" if before is None else "unchanged" if before == record["sha256"] else "CHANGED"
            print(f"{name}: {change}, {record['bytes'] / 1e6:.2f} MB, test {_metrics(record['test'])}")


def check(names: list[str]) -> int:
    """Evaluate each recipe's weights on the test split; the count that do not match their record."""
    import digitsum

    failures = 0
    for name in names:
        started = time.perf_counter()
        run = digitsum.load(name)
        found = run.evaluate("test")
        recorded = run.weights.test
        same = run.weights.reproduced_by(found)
        failures += not same
        print(f"{name}: {'same' if same else 'DIFFERENT'} — recorded {_metrics(recorded)}; "
              f"evaluated {_metrics(found)} ({time.perf_counter() - started:.0f} s)")  # fmt: skip
    return failures


def table() -> str:
    """The markdown table of the built-in weights that docs/api.md shows (a test keeps it true)."""
    from digitsum.weights import read_record

    rows = ["| recipe | size | seed | test | epochs |", "|---|---|---|---|---|"]
    for path in sorted(FOLDER.glob("*.json"), key=lambda p: p.stem):
        record = read_record(path)
        rows.append(f"| `{record.recipe}` | {record.bytes / 1e6:.2f} MB | {record.seed} | {_metrics(record.test)} | {record.epochs} |")
    return "\n".join(rows)


def _sha256(name: str) -> str | None:
    try:
        return json.loads((FOLDER / f"{name}.json").read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return None


def _metrics(test: dict) -> str:
    return ", ".join(f"{h} {m} {v:.4f}" for h, values in test.items() for m, v in values.items() if m != "loss")


def main() -> None:
    from digitsum.catalog import recipe_entries

    builtin = [e.name for e in recipe_entries() if e.builtin]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=builtin, choices=builtin, metavar="NAME")
    parser.add_argument("--from-runs", type=Path, help="read DIR/NAME/ instead of training")
    parser.add_argument("--check", action="store_true", help="evaluate the shipped weights against their records")
    parser.add_argument("--table", action="store_true", help="print the markdown table of docs/api.md")
    args = parser.parse_args()
    if args.table:
        print(table())
        return
    if args.check:
        sys.exit(1 if check(args.recipes) else 0)
    make(args.recipes, args.from_runs)


if __name__ == "__main__":
    main()
