#!/usr/bin/env bash
# Every benchmark, one after the other (never two trainings at once), from the repository root:
#   DIGITSUM_DATA=../shared/data benchmarks/run_all.sh [--threads N] [--device cpu|cuda]
# The options go to epoch_speed and compute_floor. Each takes up to ~3 minutes on 2 quiet cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export DIGITSUM_DATA=${DIGITSUM_DATA:-../shared/data}
PY=.venv/bin/python
echo "== epoch_speed (issue 2)";      $PY benchmarks/epoch_speed.py "$@"
echo "== compute_floor";              $PY benchmarks/compute_floor.py "$@"
echo "== time_to_accuracy";           $PY benchmarks/time_to_accuracy.py --recipe speedrun
echo "== threads";                    $PY benchmarks/threads.py
echo "== busy_machine";               $PY benchmarks/busy_machine.py --causes
echo "== cli_startup";                $PY benchmarks/cli_startup.py
echo "== peak_rss of digitsum run";   benchmarks/peak_rss.sh recipes/original.toml
