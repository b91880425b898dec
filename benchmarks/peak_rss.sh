#!/usr/bin/env bash
# Peak RSS and wall time of a whole `digitsum run` (GNU time), into a throw-away run directory.
#   DIGITSUM_DATA=../shared/data benchmarks/peak_rss.sh [recipe] [--set ...]
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=${1:-recipes/original.toml}
shift || true
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
command time -v .venv/bin/digitsum run "$recipe" "$@" --out "$out/run" >"$out/stdout" 2>"$out/time"
grep -E "Maximum resident set size|Elapsed \(wall clock\)" "$out/time"
python3 -c "import json,sys; m=json.load(open(sys.argv[1]))['metrics']['test']; print('test accuracy:', {h: round(v['accuracy'], 4) for h, v in m.items()})" "$out/run/summary.json"
