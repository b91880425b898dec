"""Fine-tuning against training from scratch: `noisy` after 1 epoch, started from `original`'s
pretrained weights (the recipe `noisy-from-original`, its [init]) or from a random initialisation.

    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/finetune.py [--seeds 0 1 2] [--epochs 1]

Each arm is trained through the CLI in a fresh process, as a user would:
`digitsum run noisy-from-original --set train.epochs=1 --set seed=S` and
`digitsum run noisy --set train.epochs=1 --set seed=S`, and noisy with the fine-tuned recipe's own
network (`--set "backbone.conv_channels=[6, 12]"`) from scratch, into a temporary folder; the script
reads each run's summary.json and prints every head's test accuracy per seed, then the means.
Changing train.epochs shortens the one-cycle schedule alike for both arms.
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

#: arm -> (recipe, overrides). "same network" is noisy-from-original's own network (the original's
#: narrower convolutions) from a random initialisation: the fine-tuning's gain alone.
ARMS = {
    "fine-tuned": ("noisy-from-original", []),
    "from scratch": ("noisy", []),
    "same network": ("noisy", ["backbone.conv_channels=[6, 12]"]),
}


def run(recipe: str, overrides: list[str], seed: int, epochs: int, out: Path) -> tuple[dict[str, float], float]:
    started = time.perf_counter()
    sets = [x for o in overrides for x in ("--set", o)]
    done = subprocess.run([sys.executable, "-m", "digitsum", "run", recipe, "--set", f"train.epochs={epochs}",
                           "--set", f"seed={seed}", *sets, "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"digitsum run {recipe} (seed {seed}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    accuracy = {head: values["accuracy"] for head, values in summary["metrics"]["test"].items()}
    return accuracy, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    if not os.environ.get("DIGITSUM_DATA"):
        raise SystemExit("set DIGITSUM_DATA to the folder holding MNIST/raw/")
    print(f"noisy after {args.epochs} epoch(s), test accuracy per head; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            for number, (arm, (recipe, overrides)) in enumerate(ARMS.items()):
                accuracy, seconds = run(recipe, overrides, seed, args.epochs, Path(scratch, f"{number}-{seed}"))
                results[arm].append(accuracy)
                shown = " · ".join(f"{head} {value:.4f}" for head, value in accuracy.items())
                print(f"seed {seed}  {arm:<12}  {shown}  ({seconds:.1f} s, whole command)", flush=True)
    print(f"mean over seeds {', '.join(map(str, args.seeds))}:")
    for arm, runs in results.items():
        heads = runs[0].keys()
        shown = " · ".join(f"{head} {sum(r[head] for r in runs) / len(runs):.4f}" for head in heads)
        recipe, overrides = ARMS[arm]
        print(f"  {arm:<12}  {shown}  ({' '.join([recipe, *(f'--set {o}' for o in overrides)])})")


if __name__ == "__main__":
    main()
